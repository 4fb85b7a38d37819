"""Paths the tests share."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ARTIFACTS = Path(os.environ.get("MEDSEG_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
