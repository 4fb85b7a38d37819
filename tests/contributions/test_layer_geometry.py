"""napari world coordinates equal physical coordinates, oblique directions included."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.contributions.layer_geometry import display_axes, geometry_from_layer, inverse_axes, layer_transform, permute_geometry
from napari_medseg.contributions.layers import image_layer_data, source_volume_from_state
from napari_medseg.io import read_volume
from napari_medseg.types import Geometry


def test_napari_world_equals_sitk_physical_on_oblique_subject(shared_data):
    from napari.layers import Image

    path = shared_data / "dev-subject" / "t1.nii.gz"
    volume = read_volume(path)
    data, kwargs, _ = image_layer_data(volume)
    layer = Image(data, **kwargs)
    reference = sitk.ReadImage(str(path))
    rng = np.random.default_rng(0)
    for index in rng.integers(0, volume.shape, size=(20, 3)):
        world = np.asarray(layer.data_to_world(index))
        z, y, x = (int(v) for v in index)
        expected = np.array(reference.TransformIndexToPhysicalPoint((x, y, z)))[::-1]
        np.testing.assert_allclose(world, expected, atol=1e-6)


def test_layer_transform_inverts(shared_data):
    volume = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    transform = layer_transform(volume.geometry)
    back = geometry_from_layer(transform["scale"], transform["translate"], transform["affine"])
    np.testing.assert_allclose(back.origin, volume.geometry.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction_matrix, volume.geometry.direction_matrix, atol=1e-12)
    assert back.spacing == volume.geometry.spacing


def test_layer_state_recovers_exact_geometry_and_header(shared_data):
    from napari.layers import Labels

    volume = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    data, kwargs, _ = image_layer_data(volume)
    labels = Labels(np.zeros(volume.shape, np.uint8), **{k: kwargs[k] for k in ("scale", "translate", "affine", "metadata")})
    recovered = source_volume_from_state(labels.data, labels._get_state())
    assert recovered.geometry == volume.geometry
    assert recovered.meta["nifti_fields"] == volume.meta["nifti_fields"]


def test_moved_layer_is_written_where_it_is_shown(shared_data):
    from napari.layers import Labels

    volume = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    _, kwargs, _ = image_layer_data(volume)
    labels = Labels(np.zeros(volume.shape, np.uint8), **{k: kwargs[k] for k in ("scale", "translate", "affine", "metadata")})
    labels.translate = np.asarray(labels.translate) + [5.0, 0.0, 0.0]
    recovered = source_volume_from_state(labels.data, labels._get_state())
    assert "nifti_fields" not in recovered.meta
    shift = recovered.geometry.index_to_physical([0, 0, 0]) - volume.geometry.index_to_physical([0, 0, 0])
    np.testing.assert_allclose(shift[0], volume.geometry.direction_matrix @ [5.0, 0.0, 0.0], atol=1e-9)


def test_sheared_layer_refused():
    with pytest.raises(ValueError, match="shear"):
        geometry_from_layer((1, 1, 1), (0, 0, 0), np.eye(4), np.eye(3), (0.5, 0, 0))


@pytest.fixture(scope="module")
def sagittal_scan(shared_data, tmp_path_factory):
    """The dev subject stored with its axes permuted and flipped, as a sagittal acquisition
    or FreeSurfer's LIA is: the image's axes are not the world's."""
    image = sitk.ReadImage(str(shared_data / "dev-subject" / "t1.nii.gz"))
    image = sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [False, True, False])
    path = tmp_path_factory.mktemp("sagittal") / "sagittal_t1.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_display_axes_follow_the_world():
    swapped = Geometry((1.0, 1.2, 2.0), (5.0, 6.0, 7.0), ((0, 0, -1), (0, -1, 0), (1, 0, 0)))
    assert display_axes(swapped) == (2, 1, 0)
    assert display_axes(Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))) == (0, 1, 2)
    shown = permute_geometry(swapped, display_axes(swapped))
    assert np.allclose(np.abs(shown.direction_matrix), np.eye(3))
    assert permute_geometry(shown, inverse_axes((2, 1, 0))) == swapped


def test_permuted_scan_shows_in_2d_at_its_physical_place(sagittal_scan, make_napari_viewer):
    from napari.layers import Image

    volume = read_volume(sagittal_scan)
    assert display_axes(volume.geometry) != (0, 1, 2)
    data, kwargs, _ = image_layer_data(volume)
    layer = Image(data, **kwargs)
    reference = sitk.ReadImage(str(sagittal_scan))
    shown_axes = display_axes(volume.geometry)
    for index in np.random.default_rng(1).integers(0, volume.shape, size=(20, 3)):
        shown = [int(index[a]) for a in shown_axes]
        assert data[tuple(shown)] == volume.array[tuple(index)]
        z, y, x = (int(v) for v in index)
        expected = np.array(reference.TransformIndexToPhysicalPoint((x, y, z)))[::-1]
        np.testing.assert_allclose(np.asarray(layer.data_to_world(shown)), expected, atol=1e-6)
    viewer = make_napari_viewer()
    viewer.add_layer(layer)
    viewer.dims.ndisplay = 2
    assert viewer.screenshot(canvas_only=True).std() > 0


def test_permuted_layer_gives_back_the_source_order_and_header(sagittal_scan, tmp_path):
    from napari.layers import Labels

    from napari_medseg._writer import write_labels

    volume = read_volume(sagittal_scan)
    data, kwargs, _ = image_layer_data(volume)
    grid = {k: kwargs[k] for k in ("scale", "translate", "affine", "metadata")}
    labels = Labels((data > np.percentile(data, 90)).astype(np.uint8), **grid)
    recovered = source_volume_from_state(labels.data, labels._get_state())
    assert recovered.geometry == volume.geometry
    assert recovered.meta["nifti_fields"] == volume.meta["nifti_fields"]
    np.testing.assert_array_equal(recovered.array, volume.array > np.percentile(volume.array, 90))
    written = write_labels(str(tmp_path / "mask.nii.gz"), labels.data, labels._get_state())
    back = read_volume(written[0])
    assert back.geometry == volume.geometry
    np.testing.assert_array_equal(back.array, recovered.array)


def test_a_sagittal_scan_runs_through_the_workflow_in_its_own_voxel_order(make_napari_viewer, qtbot, shared_data, home, tmp_path):
    """Axes permuted against the world (sagittal acquisitions, FreeSurfer's LIA): the layers
    show a transposed view; results, corrections and exports keep the file's voxel order."""
    import SimpleITK as sitk

    from napari_medseg.contributions.layers import from_layer_layout, to_layer_layout
    from napari_medseg.widgets.autosave import load_corrections
    from tests.tiny_models import tiny_bundle

    source_path = tmp_path / "sagittal_t1.nii.gz"
    reference = sitk.ReadImage(str(shared_data / "dev-subject" / "t1.nii.gz"))
    sitk.WriteImage(sitk.Flip(sitk.PermuteAxes(reference, [2, 0, 1]), [False, True, False]), str(source_path))
    source = read_volume(source_path)
    bundle = tiny_bundle(home / "models", name="tiny-sagittal-model")
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(source_path), plugin="napari-medseg")
    assert image.data.shape != source.shape  # shown in the world's axis order
    viewer.dims.ndisplay = 2
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(bundle)
    panel.session.device = "cpu"

    panel.segment_section.run()
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=180_000)
    result = panel.session.segmentations[image.name]
    assert result.labels.shape == source.shape
    seg_layer = viewer.layers["sagittal_t1 segmentation"]
    np.testing.assert_array_equal(seg_layer.data, to_layer_layout(result.labels, image.metadata))

    corrections = panel.correct_section.create()
    assert corrections.data.shape == image.data.shape
    data = corrections.data
    data[60, 80:90, 60:70] = 3
    corrections.data = data
    viewer.dims.set_point(0, float(image.data_to_world([61, 0, 0])[0]))
    assert panel.correct_section.accept_current_slice() > 0
    panel.correct_section.autosave_now()
    restored = load_corrections(source, str(source_path))
    np.testing.assert_array_equal(restored, from_layer_layout(corrections.data, corrections.metadata))

    panel.export_section.folder_edit.setText(str(tmp_path / "export"))
    written = panel.export_section.export()
    exported = read_volume(next(p for p in written if p.name.startswith("sagittal_t1_segmentation")))
    assert exported.geometry == source.geometry
    np.testing.assert_array_equal(exported.array, result.labels)
