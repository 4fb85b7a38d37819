"""Which cases a cohort holds: files, DICOM folders, folders, CSV lists and BIDS datasets.

Every input becomes one or more :class:`Case` objects with a case id that is a safe folder
name (the case's outputs go to ``OUTDIR/<case id>/``):

- a volume file (NIfTI, NRRD, MHA/MHD, DICOM): one case, id = the file's stem;
- a folder: scanned recursively; every volume file is a case and every DICOM series is a
  case (id = the series' folder name, ``_2``, ``_3``, ... for further series there);
- a BIDS dataset (a folder with ``dataset_description.json`` or ``sub-*`` folders): one case
  per ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``, id ``sub-XX[_ses-YY]`` (the file name's entities);
- a ``.csv`` file with a ``path`` column (optional ``case_id`` and ``series_uid`` columns);
  relative paths are taken from the CSV's folder.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["Case", "discover_cases"]

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PATH_COLUMNS = ("path", "image", "file")
_ID_COLUMNS = ("case_id", "case", "id")


@dataclass(frozen=True)
class Case:
    """One scan of a cohort.

    Attributes:
        case_id: the output folder's name, unique within the cohort.
        path: the file or DICOM folder to read (absolute).
        series_uid: the series to read from a DICOM folder, else None.
        files: the input files (hashed into the case's manifest); for a DICOM series its
            members, otherwise ``(path,)``.
    """

    case_id: str
    path: str
    series_uid: str | None = None
    files: tuple[str, ...] = ()

    @property
    def stem(self) -> str:
        """The stem ``medseg segment`` would give this input's files."""
        from ..io.reader import volume_stem

        return volume_stem(self.path)


def discover_cases(inputs: Sequence[str | os.PathLike], *, exclude: str | os.PathLike | None = None) -> list[Case]:
    """All cases of ``inputs``, in a stable order, with unique ids.

    Args:
        inputs: files, folders (DICOM, plain or BIDS) and CSV files (see the module docstring).
        exclude: a folder never scanned (the cohort's output folder may lie inside an input).

    Raises:
        FileNotFoundError: an input does not exist (named).
        ValueError: a CSV without a path column, or two cases that would share a folder.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Case] = []
    for item in inputs:
        path = Path(item).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"cohort input {item}: no such file or folder")
        if path.is_file() and path.suffix.lower() == ".csv":
            found.extend(_csv_cases(path))
        elif path.is_dir() and _is_bids(path):
            found.extend(_bids_cases(path))
        elif path.is_dir():
            found.extend(_folder_cases(path, skip))
        else:
            found.append(_file_case(path))
    return _unique(found)


def safe_case_id(text: str) -> str:
    """``text`` as a folder name: letters, digits, ``.``, ``_``, ``-``; never hidden or empty."""
    cleaned = _UNSAFE.sub("_", text).strip("._") or "case"
    return cleaned


def _file_case(path: Path, case_id: str | None = None, series_uid: str | None = None) -> Case:
    from ..io.reader import volume_stem

    return Case(safe_case_id(case_id or volume_stem(path)), str(path), series_uid, (str(path),))


def _is_volume_file(name: str) -> bool:
    return name.lower().endswith(_VOLUME_SUFFIXES)


def _folder_cases(folder: Path, skip: Path | None) -> list[Case]:
    """Volume files and DICOM series anywhere under ``folder`` (the output folder skipped)."""
    from ..io.sitk_images import quiet_itk
    from ..io.dicom import find_series

    cases = []
    for directory, subfolders, files in os.walk(folder):
        here = Path(directory)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and (skip is None or here / d != skip))
        cases.extend(_file_case(here / name) for name in sorted(files) if _is_volume_file(name))
    with quiet_itk():  # GDCM warns about every folder without a series
        series = find_series(folder)
    return cases + _series_cases(series, skip)


def _series_cases(series: Iterable, skip: Path | None) -> list[Case]:
    """One case per DICOM series: its members' common folder, the series UID to pick."""
    per_folder: dict[Path, int] = defaultdict(int)
    cases = []
    for info in series:
        files = tuple(sorted(info.files))
        if skip is not None and any(skip in Path(f).parents for f in files):
            continue
        if _is_volume_file(files[0]):
            continue  # GDCM reads some NIfTI as a "series"; those are cases of their own already
        if len(files) == 1:
            cases.append(Case(safe_case_id(Path(files[0]).stem), files[0], None, files))
            continue
        home = Path(os.path.commonpath(files))
        per_folder[home] += 1
        suffix = "" if per_folder[home] == 1 else f"_{per_folder[home]}"
        cases.append(Case(safe_case_id(home.name + suffix), str(home), info.uid, files))
    return cases


def _is_bids(folder: Path) -> bool:
    return (folder / "dataset_description.json").is_file() or any(folder.glob("sub-*/anat")) or any(
        folder.glob("sub-*/ses-*/anat")
    )


def _bids_cases(root: Path) -> list[Case]:
    """``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``; the id is the file name without ``_T1w``."""
    files = sorted({*root.glob("sub-*/anat/*_T1w.nii*"), *root.glob("sub-*/ses-*/anat/*_T1w.nii*")})
    cases = []
    for path in files:
        if not path.name.endswith((".nii", ".nii.gz")):
            continue
        entities = path.name.split("_T1w", 1)[0]
        cases.append(_file_case(path, case_id=entities))
    if not cases:
        raise ValueError(f"BIDS dataset {root}: no sub-*/anat/*_T1w.nii.gz found")
    return cases


def _csv_cases(path: Path) -> list[Case]:
    """Rows of a CSV file with a path column; relative paths start at the CSV's folder."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or ()}
        path_column = next((columns[c] for c in _PATH_COLUMNS if c in columns), None)
        if path_column is None:
            raise ValueError(
                f"cohort list {path}: no path column (one of {', '.join(_PATH_COLUMNS)}); "
                f"columns found: {sorted(columns.values())}"
            )
        id_column = next((columns[c] for c in _ID_COLUMNS if c in columns), None)
        uid_column = columns.get("series_uid")
        rows = list(reader)
    cases = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        text = (row.get(path_column) or "").strip()
        if not text:
            raise ValueError(f"cohort list {path}, line {number}: empty {path_column!r}")
        target = (path.parent / Path(text).expanduser()).resolve()
        case_id = (row.get(id_column) or "").strip() if id_column else ""
        series_uid = (row.get(uid_column) or "").strip() or None if uid_column else None
        cases.append(_file_case(target, case_id=case_id or None, series_uid=series_uid))
    return cases


def _unique(cases: list[Case]) -> list[Case]:
    """Drop repeats of the same input; prefix the parent folder's name where ids collide."""
    seen: dict[tuple[str, str | None], Case] = {}
    for case in cases:
        seen.setdefault((case.path, case.series_uid), case)
    cases = list(seen.values())
    counts = defaultdict(int)
    for case in cases:
        counts[case.case_id] += 1
    renamed = [
        case if counts[case.case_id] == 1 else
        Case(safe_case_id(f"{Path(case.path).parent.name}_{case.case_id}"), case.path, case.series_uid, case.files)
        for case in cases
    ]  # fmt: skip
    owners: dict[str, Case] = {}
    for case in renamed:
        if case.case_id in owners:
            raise ValueError(
                f"cases {owners[case.case_id].path} and {case.path} would both write to folder "
                f"{case.case_id!r}; list them in a CSV with a case_id column"
            )
        owners[case.case_id] = case
    return sorted(renamed, key=lambda c: c.case_id)
