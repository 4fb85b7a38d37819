"""napari sample-data contribution: the shipped MNI152 brain T1."""

from __future__ import annotations


def make_sample_brain() -> list[tuple]:
    """The MNI ICBM152 2009a T1 (brain-extracted, 1 mm) as an image layer."""
    from ._layers import image_layer_data
    from .io import read_volume
    from .resources import sample_volume_path

    from dataclasses import replace

    volume = replace(read_volume(sample_volume_path()), modality="MR")
    return [image_layer_data(volume, name="MNI152 T1")]
