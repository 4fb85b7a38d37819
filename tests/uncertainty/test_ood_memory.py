"""The OOD score visits the volume in slabs: the same signals as a whole-volume pass (up
to float64 rounding of the sums), with slab-sized working arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_medseg.uncertainty import ood
from napari_medseg.uncertainty.decompose import entropy
from tests.fresh_peak import fresh_figures

# The means are sums over slabs instead of one float64 sum: equal to about 1e-15 here;
# a threshold decision can change only for a score within this of the threshold.
REL_TOLERANCE = 1e-12


def _reference(p: np.ndarray, spacing, channel_axis: int, epistemic) -> dict:
    """The whole-volume computation the slabbed one replaces."""
    k = p.shape[channel_axis]
    foreground = np.argmax(p, axis=channel_axis) != 0
    count = int(foreground.sum())
    score = float(entropy(p, axis=channel_axis)[foreground].mean(dtype=np.float64) / math.log(k)) if count else 1.0
    mi = float(epistemic[foreground].mean(dtype=np.float64)) if count else 0.0
    return {
        ood.MAIN_SCORE: min(max(score, 0.0), 1.0),
        "foreground_fraction": count / foreground.size,
        "foreground_ml": count * float(np.prod(spacing)) / 1000.0,
        "foreground_epistemic": mi,
    }


def _softmax(shape, seed: int, axis: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 2, shape).astype(np.float32)
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("channel_axis", [0, -1])
@pytest.mark.parametrize("spatial", [(37, 11, 13), (23, 29)])
@pytest.mark.parametrize("slab_voxels", [1, 150, 1 << 20])
def test_slabbed_signals_match_the_whole_volume(monkeypatch, channel_axis, spatial, slab_voxels):
    monkeypatch.setattr(ood, "SLAB_VOXELS", slab_voxels)
    shape = (4, *spatial) if channel_axis == 0 else (*spatial, 4)
    p = _softmax(shape, 0, channel_axis)
    epistemic = np.random.default_rng(1).random(spatial).astype(np.float32)
    spacing = (1.2, 0.9, 0.7)[: len(spatial)]
    got = ood.ood_score(p, spacing=spacing, channel_axis=channel_axis, epistemic=epistemic)
    want = _reference(p, spacing, channel_axis, epistemic)
    assert got["foreground_fraction"] == want["foreground_fraction"]
    assert got["foreground_ml"] == pytest.approx(want["foreground_ml"], rel=1e-12)  # summed per slab
    for key in (ood.MAIN_SCORE, "foreground_epistemic"):
        assert got[key] == pytest.approx(want[key], rel=REL_TOLERANCE, abs=0)


_PEAK_SCRIPT = """
import tracemalloc
import numpy as np
from napari_medseg.uncertainty import ood
ood.SLAB_VOXELS = 1 << 14
logits = np.random.default_rng(2).normal(0, 2, (4, 64, 64, 64)).astype(np.float32)
e = np.exp(logits - logits.max(axis=0, keepdims=True))
p = e / e.sum(axis=0, keepdims=True)
del logits, e
tracemalloc.start()
ood.ood_score(p)
print(tracemalloc.get_traced_memory()[1], p.nbytes)
"""


def test_scoring_holds_slabs_not_volumes():
    peak, nbytes = fresh_figures(_PEAK_SCRIPT)  # a fresh interpreter: see tests/fresh_peak.py
    assert nbytes == 4 << 20  # 4 MiB of probabilities
    assert peak < nbytes / 5, f"peak {peak} bytes for probabilities of {nbytes}"
