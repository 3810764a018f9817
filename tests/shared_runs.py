"""Fixture runs built once per test session, whichever pytest-xdist worker asks first.

Training and analysing the fixture runs is the suite's most expensive setup, so every worker of a
session shares one copy: it lives beside the workers' own temporary folders, and the first
worker builds it under a file lock while the others wait, then read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def session_dir(tmp_path_factory, name: str) -> Path:
    """``name`` under the session's temporary folder, shared by its xdist workers (each worker's
    own base folder is ``<session>/popen-gwN``)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / name


@contextlib.contextmanager
def built_once(root: Path) -> Iterator[bool]:
    """Hold the build lock of ``root``; yields whether it still has to be built (no
    ``root/.done``). Write ``root/.done`` last, inside the block."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield not (root / ".done").exists()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
