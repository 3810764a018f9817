"""File I/O primitives: atomic writes (temporary name, fsync, rename), hashing, a fault hook.

Every file tricl writes goes through :func:`atomic_write_bytes` or :func:`atomic_path`: the data
is written to a hidden temporary beside the target, flushed to disk and renamed onto it, so a
crash or Ctrl-C leaves the old file or the new one, never half of one. The fault hook
(``$TRICL_FAULT_KILL_AT_WRITE=N``) SIGKILLs the process at the N-th torn write or rename, which is
how ``tests/faults/`` kills training at every write.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

# test hook: SIGKILL this process at the N-th fault point (a torn temporary write or a rename)
FAULT_ENV = "TRICL_FAULT_KILL_AT_WRITE"
_faults_seen = 0


def fault_point() -> None:
    """Count a fault point; at the one ``$TRICL_FAULT_KILL_AT_WRITE`` names, die like a crash."""
    global _faults_seen
    target = os.environ.get(FAULT_ENV)
    if not target:
        return
    _faults_seen += 1
    if _faults_seen == int(target):
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be
    opened."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_temp(tmp: Path, data: bytes) -> None:
    """Write and flush ``data`` to a temporary file (a fault here leaves it torn)."""
    with open(tmp, "wb") as fh:
        half = len(data) // 2
        fh.write(data[:half])
        if os.environ.get(FAULT_ENV):
            fh.flush()
            fault_point()
        fh.write(data[half:])
        fh.flush()
        os.fsync(fh.fileno())


def rename(tmp: Path, path: Path) -> None:
    """``os.replace(tmp, path)``, a fault point."""
    fault_point()
    os.replace(tmp, path)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path, tmp_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed and renamed onto ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(tmp_name) if tmp_name else _temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        rename(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        write_temp(tmp, data)
        rename(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 160 characters), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def check_folder_name(name: str, what: str) -> str:
    """Return ``name`` if it is one visible folder name, else raise a one-line ValueError.

    A name holding ``/``, ``\\`` or NUL, ``.``, ``..``, one starting with ``.`` or ``_`` (hidden
    from listings) or longer than 255 bytes would write somewhere else than one folder inside its
    parent, or make a folder nobody lists.

    Args:
        name: the folder name to check.
        what: what the name is, for the message (e.g. ``"run name"``).
    """
    bad = next((c for c in ("/", "\\", "\0") if c in name), None)
    if bad is not None or name in ("", ".", "..") or name.startswith((".", "_")):
        why = f"it contains {bad!r}" if bad is not None else "it is empty, or starts with . or _"
        raise ValueError(
            f"{what} {name!r} is not a single folder name ({why}); use letters, digits, '-', '_'"
            " and '.', with no '/' or '\\', not starting with '.' or '_'"
        )
    if len(name.encode()) > 255:
        raise ValueError(f"{what} {name[:40]!r}... is longer than 255 bytes; use a shorter name")
    return name
