"""The OOD score, its calibration and the bundle's threshold."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from napari_medseg.uncertainty import calibrate_ood, ood_calibration, ood_flag, ood_score, ood_threshold
from napari_medseg.uncertainty.ood import MAIN_SCORE, assess_ood
from tests.tiny_models import tiny_config


def _probabilities(foreground_p: float, shape=(4, 6, 5)) -> np.ndarray:
    """Half the voxels confidently background, half class 1 with probability ``foreground_p``."""
    p = np.zeros((3, *shape), dtype=np.float32)
    p[0] = 1.0
    half = shape[0] // 2
    p[:, :half] = 0.0
    p[1, :half] = foreground_p
    p[0, :half] = p[2, :half] = (1 - foreground_p) / 2
    return p


def test_score_is_the_mean_normalised_entropy_over_the_predicted_foreground():
    p = _probabilities(0.6)
    q = (0.6, 0.2, 0.2)
    expected = -sum(v * math.log(v) for v in q) / math.log(3)
    signals = ood_score(p, spacing=(2.0, 1.0, 1.0))
    assert signals[MAIN_SCORE] == pytest.approx(expected, rel=1e-5)
    assert signals["foreground_fraction"] == pytest.approx(0.5)
    assert signals["foreground_ml"] == pytest.approx(60 * 2 / 1000)
    assert signals["foreground_epistemic"] is None
    last_axis = ood_score(np.moveaxis(p, 0, -1), channel_axis=-1)
    assert last_axis[MAIN_SCORE] == pytest.approx(signals[MAIN_SCORE])
    # a field of view with more air (confident background) does not dilute the score
    padded = np.concatenate([p, _probabilities(0.6)[:, 2:]], axis=1)
    assert ood_score(padded)[MAIN_SCORE] == pytest.approx(signals[MAIN_SCORE], rel=1e-5)
    assert ood_score(_probabilities(0.95))[MAIN_SCORE] < signals[MAIN_SCORE]


def test_no_foreground_scores_maximal_and_epistemic_is_averaged_on_foreground():
    p = np.zeros((2, 3, 3, 3), dtype=np.float32)
    p[0] = 1
    assert ood_score(p)[MAIN_SCORE] == 1.0
    q = _probabilities(0.9)
    epistemic = np.zeros(q.shape[1:], dtype=np.float32)
    epistemic[:2] = 0.3
    assert ood_score(q, epistemic=epistemic)["foreground_epistemic"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="epistemic"):
        ood_score(q, epistemic=epistemic[:1])


def test_class_volumes_count_only_the_located_brain_and_the_score_reads_everything():
    """A whole head: the network's tissue on scalp slices lies outside the locator's brain
    mask; the brain-volume test reads what the labels keep, the score the whole prediction."""
    p = _probabilities(0.7)  # 60 foreground voxels of class 1 in z 0-1
    within = np.zeros(p.shape[1:], dtype=bool)
    within[0, :3] = True  # 15 of them, plus background elsewhere
    within[3] = True
    whole, inside = ood_score(p, spacing=(2.0, 1.0, 1.0)), ood_score(p, spacing=(2.0, 1.0, 1.0), within=within)
    assert whole["class_ml"] == pytest.approx([60 * 2 / 1000, 60 * 2 / 1000, 0.0])
    assert inside["class_ml"] == pytest.approx([30 * 2 / 1000, 15 * 2 / 1000, 0.0])
    for name in (MAIN_SCORE, "foreground_fraction", "foreground_ml"):
        assert inside[name] == whole[name]
    last_axis = ood_score(np.moveaxis(p, 0, -1), spacing=(2.0, 1.0, 1.0), channel_axis=-1, within=within)
    assert last_axis["class_ml"] == pytest.approx(inside["class_ml"])
    with pytest.raises(ValueError, match="within of shape"):
        ood_score(p, within=within[:1])


def test_calibration_rule_and_record():
    scores = [0.10, 0.12, 0.11, 0.13, 0.09]
    threshold = calibrate_ood(scores)
    assert threshold == pytest.approx((np.mean(scores) + 3 * np.std(scores, ddof=1)) * 1.5)
    assert calibrate_ood(scores, margin=0.0) == pytest.approx(np.mean(scores) + 3 * np.std(scores, ddof=1))
    assert calibrate_ood([0.1, 0.1, 0.1], margin=0.0) == pytest.approx(0.1)  # never below the largest score
    entry = ood_calibration(scores, source="test")
    assert entry["score"] == MAIN_SCORE and entry["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert entry["calibration"]["n"] == 5
    with pytest.raises(ValueError, match="at least 2"):
        calibrate_ood([0.1])
    with pytest.raises(ValueError, match="finite"):
        calibrate_ood([0.1, float("nan")])
    with pytest.raises(ValueError, match="margin -0.1"):
        calibrate_ood(scores, margin=-0.1)


def test_threshold_lives_in_the_bundle_config_and_flags():
    config = tiny_config()
    assert ood_threshold(config) is None
    entry = ood_calibration([0.1, 0.12, 0.11])
    config = dataclasses.replace(config, extra={**config.extra, "ood": entry})
    assert ood_threshold(config) == pytest.approx(entry["threshold"])
    assert ood_flag(entry["threshold"] + 0.01, ood_threshold(config)) is True
    assert ood_flag(0.05, ood_threshold(config)) is False
    assert ood_flag(float("nan"), 0.5) is True
    assert ood_flag(0.9, None) is None
    result = assess_ood(_probabilities(0.4), config, spacing=(1.0, 1.0, 1.0))
    assert result.flag is True and result.as_dict()["threshold"] == result.threshold


def test_malformed_or_unknown_threshold_entries():
    config = tiny_config()
    bad = dataclasses.replace(config, extra={"ood": {"score": MAIN_SCORE, "threshold": "high"}})
    with pytest.raises(ValueError, match="'high'"):
        ood_threshold(bad)
    with pytest.raises(ValueError, match="'score' and 'threshold'"):
        ood_threshold(dataclasses.replace(config, extra={"ood": {"threshold": 0.3}}))
    unknown = dataclasses.replace(config, extra={"ood": {"score": "energy-v9", "threshold": 0.3}})
    assert ood_threshold(unknown) is None
