"""The code at another commit, for benchmarks that compare side by side with it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def baseline_worktree(revision: str, parent: Path) -> Iterator[Path]:
    """A detached ``git worktree`` of ``revision`` at ``parent/baseline``, removed on exit
    (the working tree of this checkout is not touched). Run its code with ``cwd`` and
    ``PYTHONPATH`` set to the yielded folder, so its package is imported first."""
    tree = Path(parent) / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
