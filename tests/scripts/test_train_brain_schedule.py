"""The learning-rate schedule of ``scripts/train_brain.py``: one cosine or warm restarts."""

from __future__ import annotations

import pytest

from tests._paths import scripts_module


@pytest.fixture(scope="module")
def clock_class():
    return scripts_module("train_brain").TrainingClock


def _factors(clock, fractions):
    out = []
    for fraction in fractions:
        clock.fraction = fraction
        out.append(clock.lr_factor())
    return out


def test_one_cycle_warms_up_then_decays_to_the_floor(clock_class):
    clock = clock_class(steps=1000, max_minutes=60)
    start, peak, middle, end = _factors(clock, [0.0, clock.WARMUP, 0.5, 1.0])
    assert start == pytest.approx(0.05)
    assert peak == pytest.approx(1.0)
    assert 0.4 < middle < 0.6
    assert end == pytest.approx(clock.FLOOR)
    assert "cycles" not in clock.describe()


def test_three_cycles_restart_with_halved_peaks_and_shrinking_lengths(clock_class):
    clock = clock_class(steps=1000, max_minutes=60, cycles=3)
    ends = clock.cycle_ends
    assert ends[-1] == pytest.approx(1.0)
    lengths = [ends[0], ends[1] - ends[0], ends[2] - ends[1]]
    assert lengths[1] / lengths[0] == pytest.approx(clock.CYCLE_LENGTH)
    assert lengths[2] / lengths[1] == pytest.approx(clock.CYCLE_LENGTH)
    grid = [i / 2000 for i in range(2001)]
    factors = _factors(clock, grid)
    for cycle, (begin, end) in enumerate(zip([0.0, *ends[:-1]], ends)):
        inside = [f for x, f in zip(grid, factors) if begin < x <= end]
        assert max(inside) == pytest.approx(clock.CYCLE_PEAK**cycle, rel=0.01)
        assert inside[-1] == pytest.approx(clock.CYCLE_PEAK**cycle * clock.FLOOR, rel=0.05)
    # just after a restart the next cycle warms up again from 5% of its own peak
    assert _factors(clock, [ends[0] + 1e-9])[0] == pytest.approx(clock.CYCLE_PEAK * 0.05, rel=0.01)
    assert "3 cycles" in clock.describe()


def test_cycles_must_be_positive(clock_class):
    with pytest.raises(ValueError, match="cycles 0"):
        clock_class(steps=10, max_minutes=1, cycles=0)
