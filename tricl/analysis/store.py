"""Storage of analysis artifacts: atomic files that carry their own provenance, and a lock.

Every array artifact is one ``.npz`` file whose ``__meta__`` entry is a JSON object holding the key
it was computed for (weights hash, dataset, split), its stage's version and its parameters; a file
whose meta does not match what is asked for is stale and gets recomputed
(:mod:`tricl.analysis.stages`). Tables are CSV files with a JSON
sidecar that records the same meta plus the SHA-256 of the CSV bytes, so a reader can never pair a
table with the wrong sidecar. Arrays are read with ``np.load(allow_pickle=False)`` only.

The readers are typed: a file that is torn, garbage, or valid JSON / npz of the wrong type (a meta
that is a list, a sidecar without its hash) reads as None, exactly like a missing file, so the
caller recomputes a cache instead of failing on it.

Writers hold an exclusive ``fcntl`` lock on ``<dir>/.lock`` while they compute and write; each file
is written to a temporary name and renamed into place (``tricl.runs.atomic_path``), so readers that
do not lock still only ever see whole files.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.runs import atomic_path, atomic_write_bytes

META_KEY = "__meta__"
LOCK_FILE = ".lock"
# What reading a torn or garbage file raises (numpy, zipfile, json, pandas' parser)
_UNREADABLE = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    csv.Error,
)


class AnalysisError(ValueError):
    """Analysis cannot run or its inputs disagree; the one-line message names problem and fix."""


def dataset_slug(spec: str) -> str:
    """A folder-name-safe form of a dataset spec (``folder:/a/b`` -> ``folder-a-b``).

    Args:
        spec: a dataset spec as :func:`tricl.data.parse_dataset` accepts it.

    Returns:
        The slug, at most 60 characters plus an 8-digit hash when shortened.
    """
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", spec).strip("-")
    if len(slug) > 60:
        slug = f"{slug[:51]}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"
    return slug


def analysis_dir(run_path: Path, split: str, dataset_override: str | None = None) -> Path:
    """Folder of one run's artifacts for one evaluation split.

    The run's own dataset lives in ``RUN/analysis/<split>/``; another dataset given with
    ``--dataset`` gets ``RUN/analysis/<split>@<dataset slug>/`` so it never overwrites the default.
    """
    name = split if dataset_override is None else f"{split}@{dataset_slug(dataset_override)}"
    return Path(run_path) / "analysis" / name


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the duration of the block.

    The lock is an ``fcntl.flock`` on ``folder/.lock``; the kernel releases it if the process dies.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in artifact meta")


def to_json(obj: Any) -> str:
    """JSON text with numpy scalars converted (keys sorted, so equal meta compares equal)."""
    return json.dumps(obj, sort_keys=True, default=_json_default)


def normalise_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The meta as it reads back from disk (tuples become lists, numpy scalars numbers)."""
    return json.loads(to_json(meta))


def save_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write arrays and their meta to ``path`` atomically.

    Args:
        path: target ``.npz`` file.
        arrays: name -> array; object arrays are refused (they would need pickle to read).
        meta: JSON-serialisable provenance (key, params, ...).
    """
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"array {name!r} has dtype object; store strings as a 'U' array")
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{META_KEY: np.array(to_json(meta))})
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Read an artifact written by :func:`save_npz`.

    Returns:
        ``(arrays, meta)``, or None when the file is missing, unreadable, has no meta or a meta
        that is not a JSON object.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop(META_KEY)))
    except _UNREADABLE:
        return None
    return (arrays, meta) if isinstance(meta, dict) else None


def load_npz_meta(path: Path) -> dict[str, Any] | None:
    """The meta of an artifact written by :func:`save_npz`, without reading its arrays (a
    freshness check); None as for :func:`load_npz`."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz[META_KEY]))
    except _UNREADABLE:
        return None
    return meta if isinstance(meta, dict) else None


def save_table(path: Path, table: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write a table as CSV plus a JSON sidecar (``<path>.json``) holding meta and the CSV's hash.

    The CSV is renamed into place first and the sidecar second; :func:`load_table` rejects a pair
    whose hash disagrees, so a reader that runs between the two renames sees "missing", never a
    mismatched table.
    """
    data = table.to_csv(index=False, na_rep="nan").encode()
    # text columns (numpy object or pandas' string dtype) are recorded as "|O"
    dtypes = {
        str(c): t.str if isinstance(t := table[c].dtype, np.dtype) else "|O" for c in table.columns
    }
    side = {"meta": meta, "sha256": hashlib.sha256(data).hexdigest(), "dtypes": dtypes}
    atomic_write_bytes(path, data)
    atomic_write_bytes(_sidecar(path), to_json(side).encode())


def load_table(path: Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """Read a table written by :func:`save_table`; None when missing, torn or inconsistent."""
    side_path = _sidecar(path)
    if not (path.is_file() and side_path.is_file()):
        return None
    try:
        side = json.loads(side_path.read_text())
        data = path.read_bytes()
    except _UNREADABLE:
        return None
    if not (
        isinstance(side, dict)
        and isinstance(side.get("meta"), dict)
        and isinstance(side.get("dtypes", {}), dict)
        and side.get("sha256") == hashlib.sha256(data).hexdigest()
    ):
        return None
    try:
        return _typed_table(data, side.get("dtypes", {})), side["meta"]
    except _UNREADABLE:
        return None


def _typed_table(data: bytes, dtypes: dict[str, str]) -> pd.DataFrame:
    # read every column as text, then restore the recorded dtypes: a run named "123" or "NA"
    # stays a string, and "nan" becomes NaN only in float columns
    table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    for col, dtype in dtypes.items():
        kind = np.dtype(dtype).kind
        if col not in table.columns:
            continue
        if kind == "b":
            table[col] = table[col] == "True"
        elif kind in "iuf":
            table[col] = table[col].astype(np.dtype(dtype))
    return table


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_json(path: Path, obj: Any) -> None:
    """Write a JSON document atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(obj))


def load_json(path: Path) -> Any | None:
    """Read a JSON document; None when missing or unreadable (the caller checks its type)."""
    try:
        return json.loads(path.read_text())
    except _UNREADABLE:
        return None
