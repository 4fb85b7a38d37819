"""One real nnU-Net results tree for every test module here: built once per session (about a
minute: nnU-Net's own planner, preprocessing and trainer code, in its own process). Its
checkpoints allow the mirror axes nnU-Net's trainer sets, so "with mirroring" mirrors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._paths import REPO_ROOT


@pytest.fixture(scope="session")
def nnunet_results_root(tmp_path_factory) -> Path:
    """The root of the built tree (``results/`` inside it); read-only for the tests: a test
    that needs a changed folder copies it."""
    pytest.importorskip("nnunetv2")
    root = tmp_path_factory.mktemp("nnunet")
    command = [sys.executable, "-m", "tests.models.external.nnunet_folder", str(root), "--mirroring"]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=900)
    return root
