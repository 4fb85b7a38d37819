"""What napari calls through the manifest (``napari.yaml``): the reader, the writers and the
sample data, with the conversion between volumes and layers (:mod:`.layers`) and the
axis order layers are shown in (:mod:`.layer_geometry`). Qt is never imported here."""
