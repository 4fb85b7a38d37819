"""Volumes as napari layer data and back, without importing napari: the layer tuples the
reader, the writers, the sample data and the panel use (:mod:`.layers`) and the axis order
layers are shown in (:mod:`.layer_geometry`). The contributions themselves (``_reader``,
``_writer``, ``_sample_data``) sit at the package's top, with the widgets the only modules
that import napari or Qt."""
