"""Map layers read at a glance in a real, shown viewer: range from the map inside the
foreground, low values transparent over the anatomy, the colour bar shown."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.contributions.layers import image_layer_data
from napari_medseg.display import map_contrast_limits, scan_foreground
from napari_medseg.widgets.layers import show_map
from tests.small_real import small_real_scan, tiny_uncertainty

pytestmark = pytest.mark.gui


def _colour(rgb: np.ndarray) -> np.ndarray:
    return np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])


def test_uncertainty_layer_has_foreground_range_colorbar_and_shows_the_anatomy(make_napari_viewer, shared_data, artifacts_dir):
    import imageio.v3 as iio

    scan = small_real_scan(shared_data)
    total = tiny_uncertainty(scan)
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = image_layer_data(scan, name="scan")
    image = viewer.add_image(data, **kwargs)
    viewer.dims.set_point(0, float(image.data_to_world([scan.shape[0] // 2, 0, 0])[0]))
    viewer.reset_view()

    layer = show_map(viewer, image, total, "scan total uncertainty", kind="uncertainty")
    layer.visible = False  # the anatomy alone, on the same canvas (the colour bar resizes it)
    anatomy = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    layer.visible = True
    low, high = layer.contrast_limits
    assert (low, high) == pytest.approx(map_contrast_limits(total, scan_foreground(scan.array)))
    assert low < high and np.ptp(total) > 0
    assert layer.colorbar.visible
    assert layer.blending == "translucent" and layer.colormap.colors[0, 3] == 0.0 and layer.colormap.colors[-1, 3] == 1.0
    np.testing.assert_allclose(layer.data_to_world([3, 4, 5]), image.data_to_world([3, 4, 5]))

    shot = viewer.screenshot(canvas_only=True, flash=False)
    iio.imwrite(artifacts_dir / "viewer_map_layer.png", shot)
    rgb = shot[..., :3].astype(int)
    head = anatomy.max(axis=-1) > 40
    assert _colour(rgb)[head].mean() > 3 * max(_colour(anatomy)[head].mean(), 1)  # the map adds colour to the head


def test_cohort_case_maps_open_with_their_range_and_colorbar(make_napari_viewer, qtbot, shared_data, tmp_path):
    from napari_medseg.batch.case import run_case
    from napari_medseg.batch.inputs import discover_cases
    from napari_medseg.batch.plan import make_plan
    from napari_medseg.batch.review import case_layers
    from napari_medseg.batch.table import make_table, read_table, write_table
    from napari_medseg.io import read_volume, write_volume
    from napari_medseg.models import load_model
    from napari_medseg.widgets.cohort import CohortWidget
    from tests.small_real import tiny_coarse_bundle

    scan = small_real_scan(shared_data)
    (tmp_path / "scans").mkdir()
    (case,) = discover_cases([write_volume(tmp_path / "scans" / "dev4mm.nii.gz", scan.array, scan)])
    bundle = tiny_coarse_bundle(tmp_path / "models")
    out = tmp_path / "cohort"
    row = run_case(case, out, make_plan(str(bundle), uncertainty="mc-dropout", samples=2), load_model(bundle), worker="w")
    write_table(make_table([row]), out)

    layers = case_layers(out, read_table(out).iloc[0].to_dict())
    maps = {kwargs["name"]: (values, kwargs) for values, kwargs, kind in layers if kind == "image"}
    values, kwargs = maps[f"{case.case_id} entropy"]
    assert values.shape == scan.shape and kwargs["metadata"]["medseg"]["map_kind"] == "uncertainty"
    assert kwargs["contrast_limits"] == map_contrast_limits(values, scan_foreground(read_volume(case.path).array))

    viewer = make_napari_viewer(show=True)
    widget = CohortWidget(viewer)
    qtbot.addWidget(widget)
    widget._on_case_loaded(layers)
    entropy = viewer.layers[f"{case.case_id} entropy"]
    assert entropy.colorbar.visible and entropy.colormap.colors[0, 3] == 0.0
    assert tuple(entropy.contrast_limits) == pytest.approx(kwargs["contrast_limits"])
