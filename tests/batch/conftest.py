"""Fixtures for cohort tests: tiny volumes, a corrupt file, a DICOM folder, a 2-worker cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_medseg.io import write_volume
from napari_medseg.types import Geometry
from tests.tiny_models import tiny_bundle

SHAPES = [(6, 20, 18), (7, 16, 16), (5, 24, 20), (8, 18, 22)]


def write_scans(folder: Path, shapes, seed: int = 0) -> list[Path]:
    """Random small int16 volumes ``case<i>.nii.gz`` (1.5 x 1 x 1 mm)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, shape in enumerate(shapes):
        array = (rng.random(shape) * 100).astype(np.int16)
        geometry = Geometry((1.5, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
        paths.append(write_volume(folder / f"case{index}.nii.gz", array, geometry))
    return paths


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("models"))


@pytest.fixture
def cohort_folder(tmp_path, pydicom_files) -> Path:
    """Six cases: four NIfTI volumes, one corrupt NIfTI, one DICOM series folder."""
    folder = tmp_path / "scans"
    good = write_scans(folder, SHAPES)
    (folder / "broken.nii.gz").write_bytes(good[0].read_bytes()[:200])  # cut inside the gzip stream
    shutil.copytree(pydicom_files / "dicomdirtests" / "98892001" / "CT5N", folder / "dicom" / "CT5N")
    return folder


@pytest.fixture(scope="session")
def client():
    """A local cluster with two worker processes, shared by the cohort tests (the test that kills
    a worker runs last: its module sorts last)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as dask_client:
            yield dask_client
