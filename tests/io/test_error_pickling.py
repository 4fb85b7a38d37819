"""io errors survive pickling, as they must on their way back from a worker process."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from napari_medseg.io.errors import VolumeReadError, VolumeWriteError
from napari_medseg.io.limits import AllocationError

ERRORS = [
    VolumeReadError("/data/scan.nii.gz", "the file is truncated"),
    VolumeWriteError("out/scan_seg.nii.gz", "disk full"),
    AllocationError("big.nrrd", "voxel data", (4096, 4096, 4096), 1 << 36, "more than this machine can hold"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_error_round_trips_with_its_fields(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def _raise_read_error(path: str) -> None:
    raise VolumeReadError(path, "not a valid NIfTI file")


def test_error_raised_in_another_process_reaches_the_caller():
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_raise_read_error, "cases/corrupt.nii.gz")
        with pytest.raises(VolumeReadError, match="cases/corrupt.nii.gz: not a valid NIfTI file") as info:
            future.result(timeout=60)
    assert info.value.path == "cases/corrupt.nii.gz"
