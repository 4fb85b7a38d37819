"""Result files written as a set, under a lock on the output folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from napari_medseg.export import result_set
from napari_medseg.io.folder_lock import FolderLock, FolderLockedError
from napari_medseg.export.result_set import LOCK_NAME, ResultSet, ResultSetError, ResultsExistError

FAMILY = ["case_seg.txt", "case_extra_*.txt", "case_report.json"]


def _text(content: str):
    return lambda path: path.write_text(content)


def _write_set(folder, content: str, names=("case_seg.txt", "case_report.json"), overwrite: bool = False):
    with ResultSet(folder, FAMILY, overwrite=overwrite) as results:
        for name in names:
            results.write(name, _text(content))
        return results.commit(last="case_report.json")


def _listing(folder) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_a_set_appears_complete_and_leaves_no_lock_or_staging(tmp_path):
    paths = _write_set(tmp_path / "out", "new")
    assert list(paths) == ["case_seg.txt", "case_report.json"]
    assert _listing(tmp_path / "out") == {"case_report.json": "new", "case_seg.txt": "new"}


@pytest.mark.parametrize(
    ("overwrite", "expected"),
    [
        (False, {"case_extra_a.txt": "old", "case_report.json": "old", "case_seg.txt": "old"}),
        # the old extra file is not part of the new set: removed, so no old file sits beside it
        (True, {"case_report.json": "new", "case_seg.txt": "new"}),
    ],
)
def test_earlier_results_are_kept_unless_overwrite(tmp_path, overwrite, expected):
    folder = tmp_path / "out"
    _write_set(folder, "old", names=("case_seg.txt", "case_extra_a.txt", "case_report.json"))
    if overwrite:
        _write_set(folder, "new", overwrite=True)
    else:
        with pytest.raises(ResultsExistError, match=r"case_extra_a.txt already exists \(and 2 more\).*--overwrite"):
            _write_set(folder, "new")
    assert _listing(folder) == expected


def test_other_cases_in_the_folder_are_not_earlier_results(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "other_seg.txt").write_text("other")
    _write_set(folder, "new")
    assert _listing(folder)["other_seg.txt"] == "other"


@pytest.mark.parametrize("failing", ["case_seg.txt", "case_report.json"])
def test_a_failed_write_keeps_the_old_set_and_names_the_file(tmp_path, failing):
    folder = tmp_path / "out"
    _write_set(folder, "old")

    def disk_full(path):
        raise OSError(28, "No space left on device", str(path))

    with pytest.raises(ResultSetError, match=rf"could not write {folder / failing}: No space left on device"):
        with ResultSet(folder, FAMILY, overwrite=True) as results:
            for name in ("case_seg.txt", "case_report.json"):
                results.write(name, disk_full if name == failing else _text("new"))
            results.commit(last="case_report.json")
    assert _listing(folder) == {"case_report.json": "old", "case_seg.txt": "old"}


def test_an_error_before_the_commit_leaves_nothing(tmp_path):
    folder = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with ResultSet(folder, FAMILY) as results:
            results.write("case_seg.txt", _text("new"))
            raise KeyboardInterrupt
    assert _listing(folder) == {}


def test_ctrl_c_during_the_commit_is_held_back_until_the_set_is_in(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    _write_set(folder, "old")
    real_replace = os.replace

    def replace_then_interrupt(source, target):
        real_replace(source, target)
        if not (folder / "case_report.json").exists():
            os.kill(os.getpid(), signal.SIGINT)  # arrives between two renames

    monkeypatch.setattr(result_set.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _write_set(folder, "new", overwrite=True)
    assert _listing(folder) == {"case_report.json": "new", "case_seg.txt": "new"}


def test_a_held_lock_refuses_at_once_naming_the_lock_and_holder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with FolderLock(folder / LOCK_NAME):
        with pytest.raises(FolderLockedError, match=rf"in use by process {os.getpid()} on .*lock file {folder / LOCK_NAME}"):
            _write_set(folder, "new")
    assert _listing(folder) == {}
    _write_set(folder, "new")  # released: free again


def test_a_lock_held_by_another_process(tmp_path):
    """Two real processes: the second fails at once; after the first is killed its lock is taken over."""
    folder = tmp_path / "out"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from napari_medseg.io.folder_lock import FolderLock
            lock = FolderLock({str(folder / LOCK_NAME)!r})
            lock.acquire()
            print("held", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"process {holder.pid} "):
            _write_set(folder, "new")
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == holder.pid  # left behind by the kill
    _write_set(folder, "new")
    assert _listing(folder) == {"case_report.json": "new", "case_seg.txt": "new"}


def test_a_stale_lock_and_staging_folder_are_taken_over_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "out"
    (folder / ".medseg-staging-0123").mkdir(parents=True)
    (folder / ".medseg-staging-0123" / "case_seg.txt").write_text("half")
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "here", "created": "then"}))
    _write_set(folder, "new")
    assert "taking over lock file" in caplog.text and "999999" in caplog.text
    assert _listing(folder) == {"case_report.json": "new", "case_seg.txt": "new"}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that folder permissions apply to")
def test_a_read_only_folder_is_refused_before_anything_is_written(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OSError, match=str(folder)):
            _write_set(folder, "new")
    finally:
        folder.chmod(0o755)


def test_an_unwritable_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """As the read-only test above, for users (root) whom folder permissions do not stop."""
    folder = tmp_path / "out"
    folder.mkdir()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ResultSetError, match=f"could not write into output folder {folder}: Permission denied"):
        _write_set(folder, "new")
    monkeypatch.undo()
    assert _listing(folder) == {}
