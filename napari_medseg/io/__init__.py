"""Reading and writing volumes with their geometry (the only layer that knows file formats)."""

from .errors import VolumeReadError, VolumeWriteError
from .reader import SUPPORTED_SUFFIXES, file_format, read_volume, volume_stem
from .writer import WRITABLE_SUFFIXES, write_volume

__all__ = [
    "SUPPORTED_SUFFIXES",
    "WRITABLE_SUFFIXES",
    "VolumeReadError",
    "VolumeWriteError",
    "file_format",
    "read_volume",
    "volume_stem",
    "write_volume",
]
