"""Peak traced memory measured in a fresh interpreter.

tracemalloc counts every thread's allocations, and a test session's background threads
(thread pools, writers, the viewer's) count into an in-process peak: a bound that holds
alone failed in full runs. The script runs in its own interpreter and prints its figures.
"""

from __future__ import annotations

import subprocess
import sys

from tests._paths import REPO_ROOT


def fresh_figures(script: str, timeout: float = 120) -> list[int]:
    """The whitespace-separated integers ``script`` prints, run by this Python in the repository."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return [int(value) for value in done.stdout.split()]
