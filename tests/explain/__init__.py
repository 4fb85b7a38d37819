"""Tests of napari_medseg.explain."""

from __future__ import annotations

import contextlib

import pytest
import torch


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread, restoring the count afterwards.

    The models here are tiny: on a loaded 2-core machine a second thread made a 30-step toy
    training 40x slower (thread contention), never faster.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test of this package on one torch thread (see :func:`one_thread`)."""
    with one_thread():
        yield
