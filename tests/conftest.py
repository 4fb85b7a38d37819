"""Shared fixtures: paths to the real test data carried by installed packages and shared/."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest

from tests._paths import ARTIFACTS, SHARED_DATA

# One Qt binding per process: napari (through qtpy) must use the one pytest-qt drives.
# PYTEST_QT_API chooses (default: qt_api in pyproject.toml, PyQt6); QT_API follows unless set.
os.environ.setdefault("QT_API", os.environ.get("PYTEST_QT_API", "pyqt6"))


def _pydicom_files() -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


def _pydicom_data_files() -> Path:
    return Path(metadata.distribution("pydicom-data").locate_file("data_store/data"))


@pytest.fixture(scope="session")
def pydicom_files() -> Path:
    """pydicom's own test files (CT_small.dcm, MR_small.dcm, dicomdirtests/, ...)."""
    return _pydicom_files()


@pytest.fixture(scope="session")
def pydicom_data_files() -> Path:
    """The pydicom-data wheel's files (emri_small.dcm, eCT_Supplemental.dcm, ...)."""
    path = _pydicom_data_files()
    assert path.is_dir(), f"pydicom-data files not found at {path}"
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared validation data (dev subject, full-head scans)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared validation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep screenshots and other artifacts for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def _user_folders(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user-folders")


@pytest.fixture(autouse=True)
def _own_user_folder(request, _user_folders, monkeypatch):
    """Each test gets its own, still empty user folder (NAPARI_MEDSEG_HOME), never the real
    one: segmenting with an nnU-Net folder or MONAI bundle records its OOD calibration there,
    and one test's records must not give another test a threshold. A test that looks into
    its user folder asks for ``home``."""
    import hashlib

    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(_user_folders / hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh user folder for bundles, versions and autosaves (NAPARI_MEDSEG_HOME)."""
    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
