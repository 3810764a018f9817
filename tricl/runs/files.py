"""The files of a run directory: their names, the weights (safetensors), the train state and the
metrics log; writing a checkpoint and recovering one a crash tore.

Everything is written through :mod:`tricl.io` (temporary name, fsync, rename); weights are
safetensors with their header's keys in a fixed order, so the same tensors give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.io import atomic_write_text, file_sha256, first_line, fsync_dir, rename, write_temp

if TYPE_CHECKING:  # torch is imported where weights or states are read, not to list runs
    import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
TOKENIZER_FILE = "tokenizer.json"  # = tricl.text.tokenizer.TOKENIZER_FILE (that module needs torch)
METRICS_FILE = "metrics.jsonl"
FORMAT_VERSION = "tricl-run-1"
WEIGHTS_FORMAT = "tricl-1"


class RunError(ValueError):
    """A run directory or checkpoint is missing, broken or refused; the message names the fix."""


def weights_to_bytes(state: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Serialise a state dict to safetensors bytes (tensors only: nothing executable).

    safetensors orders the tensors but writes the metadata in hash-map order, which changes from
    process to process; the header is rewritten with the metadata keys sorted, so equal tensors
    and metadata always give equal bytes (and one weights hash, the analysis caches' key).
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return canonical_safetensors(save(tensors, metadata=metadata))


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its ``__metadata__`` keys sorted; tensors untouched.

    The header is compact JSON padded with spaces to a multiple of 8 bytes, as safetensors writes
    it; the tensors' byte ranges are relative to the end of the header, so they stay valid.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | header
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def _corrupt(path: Path, reason: str) -> RunError:
    return RunError(
        f"{path} is truncated or corrupt ({reason}); restore it from a copy, or retrain the run"
    )


def read_weights_header(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, after a cheap structural check (header only).

    The 8-byte header length, the JSON header and the tensors' byte ranges must agree with the file
    size, so a truncated, emptied or foreign file is caught without reading the tensors.

    Raises:
        RunError: the file is missing, truncated or not a tricl weights file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little") if size >= 8 else -1
            if not 0 < n <= min(size - 8, 100_000_000):
                raise _corrupt(path, f"{size} bytes, no safetensors header")
            header = json.loads(fh.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, first_line(exc)) from None
    if not isinstance(header, dict):
        raise _corrupt(path, "the header is not a JSON object")
    ends = []
    for key, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if key != "__metadata__":
            if not (isinstance(offsets, list) and all(isinstance(o, int) for o in offsets)):
                raise _corrupt(path, f"tensor {key!r} has no byte range")
            ends.append(offsets[-1] if offsets else -1)
    if max(ends, default=0) != size - 8 - n:
        raise _corrupt(path, "the tensors do not fill the file")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not str(meta.get("epoch", "")).isdigit():
        raise _corrupt(path, "no epoch in its metadata; it was not written by tricl")
    return meta


def weights_epoch(path: Path) -> int:
    """The epochs of training the weights hold (from the header; cheap)."""
    return int(read_weights_header(path)["epoch"])


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file fully; a truncated or corrupt file raises :class:`RunError`."""
    from safetensors import safe_open

    read_weights_header(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for a damaged header/body
        raise _corrupt(path, type(exc).__name__) from None
    return tensors, metadata


def _state_refused(path: Path, reason: str) -> RunError:
    return RunError(
        f"{path} cannot be loaded safely ({reason}); it is truncated, tampered with or not a"
        " tricl train state: delete it to keep the weights (no --resume then), or retrain"
    )


def check_state_file(path: Path) -> None:
    """Cheap check of ``train_state.pt`` (a complete zip archive, as torch.save writes)."""
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        raise _state_refused(path, "not a complete torch.save archive")


def load_state_file(path: Path) -> dict[str, Any]:
    """Load ``train_state.pt`` with ``weights_only=True``: a checkpoint never executes code."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _state_refused(path, first_line(exc)) from None
    keys = {"epoch": int, "optimizer": dict, "rng": dict, "model_sha256": str}
    if not isinstance(state, dict) or not all(isinstance(state.get(k), t) for k, t in keys.items()):
        raise _state_refused(path, f"it lacks one of {sorted(keys)}")
    return state


def state_to_bytes(state: dict[str, Any]) -> bytes:
    """``torch.save`` bytes of a train state (tensors and plain containers only)."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _sweep_temporaries(run_dir: Path) -> None:
    """Remove the hidden temporaries of :func:`tricl.io.atomic_write_bytes` a crash left."""
    for name in (CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, STATE_FILE):
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def recover_checkpoint(run_dir: Path) -> None:
    """Finish or undo a checkpoint write that a crash interrupted.

    :func:`write_checkpoint` writes both temporaries, then renames the model, then the state. A
    complete state temporary (it loads, and it names the hash of the model temporary, or of the
    model in place when that rename already happened) means the checkpoint was fully written: roll
    it forward. Anything else is an unfinished write: drop it. Call only while no trainer runs.
    """
    model_tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    state_tmp = run_dir / (STATE_FILE + ".tmp")
    if state_tmp.exists():
        with contextlib.suppress(RunError):
            digest = load_state_file(state_tmp)["model_sha256"]
            model = model_tmp if model_tmp.exists() else run_dir / WEIGHTS_FILE
            if model.exists() and file_sha256(model) == digest:
                if model == model_tmp:
                    os.replace(model_tmp, run_dir / WEIGHTS_FILE)
                os.replace(state_tmp, run_dir / STATE_FILE)
                fsync_dir(run_dir)
    for tmp in (model_tmp, state_tmp):
        tmp.unlink(missing_ok=True)
    _sweep_temporaries(run_dir)


def write_checkpoint(run_dir: Path, weights: bytes, state: dict[str, Any]) -> None:
    """Write weights and train state as one consistent pair (see :func:`recover_checkpoint`)."""
    model_tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    state_tmp = run_dir / (STATE_FILE + ".tmp")
    state = {**state, "model_sha256": hashlib.sha256(weights).hexdigest()}
    write_temp(model_tmp, weights)
    write_temp(state_tmp, state_to_bytes(state))
    rename(model_tmp, run_dir / WEIGHTS_FILE)
    rename(state_tmp, run_dir / STATE_FILE)
    fsync_dir(run_dir)


def save_epoch(run_dir: Path, weights: Mapping[str, torch.Tensor], state: dict, row: dict) -> None:
    """Checkpoint the end of epoch ``row["epoch"]``: its metrics line, then weights and state.

    Metrics go first: a crash after them re-runs the epoch, and resume trims lines past the
    checkpoint (:func:`trim_metrics`).
    """
    epoch = int(row["epoch"])
    log_epoch(run_dir, row)
    meta = {"epoch": str(epoch), "format": WEIGHTS_FORMAT}
    write_checkpoint(run_dir, weights_to_bytes(weights, meta), {**state, "epoch": epoch})


def log_epoch(run_dir: Path, row: dict[str, Any]) -> None:
    """Write epoch ``row["epoch"]``'s metrics line, replacing that epoch's and later lines (a
    re-run epoch after a resume), atomically."""
    rows = [r for r in read_metrics(run_dir) if r["epoch"] < int(row["epoch"])]
    write_metrics(run_dir, [*rows, row])


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` with ``rows``, one JSON line each (atomically)."""
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: Path, upto: int | None = None) -> list[dict[str, Any]]:
    """The per-epoch rows of ``metrics.jsonl``: unreadable lines (a torn or damaged log) are
    skipped, and so are rows past ``upto`` (epochs the weights do not hold)."""
    p = run_dir / METRICS_FILE
    try:
        lines = p.read_bytes().decode(errors="replace").splitlines() if p.is_file() else []
    except OSError:
        return []
    rows = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                rows.append(row)
    return [r for r in rows if upto is None or r["epoch"] <= upto]


def trim_metrics(run_dir: Path, epoch: int) -> None:
    """Drop metrics lines past ``epoch`` (written just before a crash, for an unsaved epoch)."""
    p = run_dir / METRICS_FILE
    rows = read_metrics(run_dir, upto=epoch)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not p.is_file() or p.read_bytes() != text.encode():
        write_metrics(run_dir, rows)
