"""check_options: each bad fine-tune option is refused by name, before any work."""

from __future__ import annotations

import pytest

from napari_medseg.training.options import check_options
from tests.tiny_models import tiny_config

GOOD = dict(
    images=1, label_volumes=1, steps=1, batch_size=1, lr=1e-3, forgetting="distill", distill_target="segmentation",
    distill_weight=1.0, l2sp_weight=0.0, precision="auto", num_classes=4, class_weights=None, patch=None,
)  # fmt: skip


def test_good_options_pass():
    check_options(tiny_config(), **GOOD)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("steps", 0, r"steps 0 must be a positive int \(at least 1\)"),
        ("steps", -3, r"steps -3 must be a positive int"),
        ("steps", 2.5, r"steps 2.5 must be a positive int"),
        ("steps", True, r"steps True must be a positive int"),
        ("batch_size", 0, r"batch_size 0 must be a positive int"),
    ],
)
def test_counts_must_be_at_least_one(option, value, message):
    with pytest.raises(ValueError, match=message):
        check_options(tiny_config(), **{**GOOD, option: value})
