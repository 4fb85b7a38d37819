"""The plugin in a real, shown napari viewer (run under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.contributions.layers import from_layer_layout
from napari_medseg.io import read_volume

pytestmark = pytest.mark.gui


def _save_png(path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, image)


def _assert_not_blank(shot: np.ndarray) -> None:
    rgb = shot[..., :3].astype(np.float64)
    assert rgb.std() > 10, f"screenshot looks blank (std {rgb.std():.2f})"
    assert (rgb.max(axis=-1) > 30).mean() > 0.05, "less than 5% of the screenshot is lit"


@pytest.mark.parametrize(
    ("key", "name", "last"),
    [("adult_head_t1", "Adult head T1", [171, 231, 171]), ("mni152_template_t1", "MNI152 average template T1", [158, 188, 152])],
)
def test_samples_open_on_their_geometry(make_napari_viewer, key, name, last):
    """Both samples from napari's File > Open Sample: world = the file's physical (z, y, x) mm."""
    from napari_medseg.resources import sample_volume_path

    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open_sample("napari-medseg", key)
    assert image.name == name
    geometry = read_volume(sample_volume_path(key)).geometry
    assert image.metadata["medseg"]["geometry"] == geometry
    assert image.data.shape == tuple(np.add(last, 1))
    for index in ([0, 0, 0], [10, 50, 70], last):
        np.testing.assert_allclose(image.data_to_world(index), geometry.index_to_physical(index)[0], atol=1e-9)


def test_sample_with_labels_in_shown_viewer(make_napari_viewer, artifacts_dir):
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open_sample("napari-medseg", "adult_head_t1")

    mask = (np.asarray(image.data) > np.percentile(image.data, 85)).astype(np.uint8)
    labels = viewer.add_labels(
        mask, name="bright", scale=image.scale, translate=image.translate, affine=image.affine, opacity=0.6
    )
    np.testing.assert_allclose(labels.data_to_world([5, 6, 7]), image.data_to_world([5, 6, 7]))
    viewer.dims.set_point(0, float(image.data_to_world([image.data.shape[0] // 2, 0, 0])[0]))
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    _save_png(artifacts_dir / "viewer_sample_labels.png", shot)
    _assert_not_blank(shot)
    # the labels overlay adds colour to a grey image
    rgb = shot[..., :3].astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2]) > 40).mean() > 0.005


def test_open_oblique_file_through_plugin(make_napari_viewer, shared_data):
    import SimpleITK as sitk

    viewer = make_napari_viewer(show=True)
    path = shared_data / "dev-subject" / "t1.nii.gz"
    (layer,) = viewer.open(str(path), plugin="napari-medseg")
    reference = sitk.ReadImage(str(path))
    for z, y, x in ([0, 0, 0], [70, 90, 60], [141, 177, 141]):
        expected = np.array(reference.TransformIndexToPhysicalPoint((x, y, z)))[::-1]
        np.testing.assert_allclose(layer.data_to_world([z, y, x]), expected, atol=1e-6)
    low, high = layer.contrast_limits
    assert 0 <= low < high <= 255


def test_open_dicom_folder_through_plugin(make_napari_viewer, pydicom_files):
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(pydicom_files / "dicomdirtests"), plugin="napari-medseg")
    assert layer.metadata["medseg"]["modality"] == "MR"
    # the files are the source's first axis; this sagittal series is shown in the world's axis order
    source = from_layer_layout(layer.data, layer.metadata)
    assert source.shape[0] == layer.metadata["medseg"]["series"][0]["n_files"]
    assert layer.metadata["medseg"]["display_axes"] != [0, 1, 2]
    viewer.dims.ndisplay = 2
    assert viewer.screenshot(canvas_only=True).std() > 0


def test_ct_gets_soft_tissue_window(make_napari_viewer, pydicom_files):
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(pydicom_files / "CT_small.dcm"), plugin="napari-medseg")
    assert tuple(layer.contrast_limits) == (-160.0, 240.0)


def test_bad_file_reports_error_and_viewer_keeps_working(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((4, 4, 4)), name="user work")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + np.random.default_rng(0).bytes(100))
    with pytest.raises(Exception, match="broken.nii.gz"):
        viewer.open(str(bad), plugin="napari-medseg")
    assert [layer.name for layer in viewer.layers] == ["user work"]
    viewer.add_labels(np.zeros((4, 4, 4), np.uint8))
    assert len(viewer.layers) == 2


def test_reader_declines_what_it_does_not_handle(tmp_path):
    from napari_medseg._reader import napari_get_reader

    (tmp_path / "photo.png").write_bytes(b"png")
    images = tmp_path / "pngs"
    images.mkdir()
    (images / "a.png").write_bytes(b"png")
    assert napari_get_reader(str(tmp_path / "photo.png")) is None
    assert napari_get_reader(str(images)) is None
    assert napari_get_reader(str(tmp_path / "x.nii.gz")) is not None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert napari_get_reader(str(empty)) is not None  # claimed, to say clearly that it is empty


def test_writer_keeps_source_geometry(make_napari_viewer, shared_data, tmp_path):
    import napari

    viewer = make_napari_viewer(show=True)
    source_path = shared_data / "dev-subject" / "t1.nii.gz"
    (image,) = viewer.open(str(source_path), plugin="napari-medseg")
    mask = (np.asarray(image.data) > 80).astype(np.uint8)
    labels = viewer.add_labels(
        mask, name="mask", scale=image.scale, translate=image.translate, affine=image.affine, metadata=image.metadata
    )
    source = read_volume(source_path)
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        written = napari.save_layers(str(tmp_path / f"mask{suffix}"), [labels], plugin="napari-medseg")
        back = read_volume(written[0])
        assert back.geometry == source.geometry
        assert back.array.dtype == np.uint8
        np.testing.assert_array_equal(back.array, mask)
    written = napari.save_layers(str(tmp_path / "image.nrrd"), [image], plugin="napari-medseg")
    back = read_volume(written[0])
    assert back.array.dtype == np.float32 and back.geometry == source.geometry


def test_panel_docks_and_describes_selected_image(make_napari_viewer, shared_data):
    viewer = make_napari_viewer(show=True)
    widget, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    assert "Open a volume" in panel.info_text.toPlainText()
    viewer.open(str(shared_data / "dev-subject" / "t1.nii.gz"), plugin="napari-medseg")
    text = panel.info_text.toPlainText()
    assert "142 x 178 x 142" in text and "oblique" in text
    assert panel.image_combo.currentText() == "t1"
