"""napari sample-data contributions: the shipped sample volumes as image layers.

Both are T1-weighted MRI at 1 mm (uint8); their sources and licences are in
``resources/sample/NOTICE.md``. Layers get the file's geometry (``scale`` = spacing,
``translate`` = origin, the direction in ``affine``), so world coordinates are physical
(z, y, x) millimetres.
"""

from __future__ import annotations

HEAD_LAYER = "Adult head T1"
TEMPLATE_LAYER = "MNI152 average template T1"


def _sample_layer(key: str, name: str) -> list[tuple]:
    from dataclasses import replace

    from .contributions.layers import image_layer_data
    from .io import read_volume
    from .resources import sample_volume_path

    volume = replace(read_volume(sample_volume_path(key)), modality="MR")
    return [image_layer_data(volume, name=name)]


def make_sample_head() -> list[tuple]:
    """A real adult head T1 (skull and scalp, face cropped; 232 x 172 x 172 voxels at 1 mm)."""
    return _sample_layer("adult_head_t1", HEAD_LAYER)


def make_sample_template() -> list[tuple]:
    """The MNI ICBM152 2009a T1: an average of 152 adult brains, brain-extracted
    (159 x 189 x 153 voxels at 1 mm)."""
    return _sample_layer("mni152_template_t1", TEMPLATE_LAYER)
