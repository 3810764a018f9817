"""Run directories: create, checkpoint, recover, load (weights only, never code), list, import.

This module is the only writer of a run directory (DESIGN.md)::

    <run>/config.json        RunConfig + dataset facts + library versions + git commit
                             (+ ``parent`` and ``aligned`` for a run derived by ``tricl align``)
    <run>/model.safetensors  encoder weights; metadata holds the epoch (image-text methods: the
                             prefixes ``image.``, ``text.`` and ``logit_scale``)
    <run>/tokenizer.json     image-text methods only: the BPE tokenizer of the training captions
    <run>/train_state.pt     optimizer + RNG state for --resume, loaded with weights_only=True
    <run>/metrics.jsonl      one JSON line per epoch
    <run>/analysis/          artifacts of tricl.analysis

Every file is written to a temporary name in the same folder, flushed and renamed into place, and a
new run is assembled in a hidden folder that is renamed into place, so a crash or Ctrl-C never
leaves half a file or half a run. New runs go to the user's runs root (``$TRICL_RUNS`` or
``./runs``); the runs shipped with the repository live in :data:`SHIPPED_RUNS_ROOT`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.config import ConfigError, RunConfig

if TYPE_CHECKING:  # torch is imported where weights or states are read, not to list runs
    import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
TOKENIZER_FILE = "tokenizer.json"  # = tricl.text.tokenizer.TOKENIZER_FILE (that module needs torch)
METRICS_FILE = "metrics.jsonl"
FORMAT_VERSION = "tricl-run-1"
WEIGHTS_FORMAT = "tricl-1"
SHIPPED_RUNS_ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
# test hook: SIGKILL this process at the N-th fault point (a torn temporary write or a rename)
FAULT_ENV = "TRICL_FAULT_KILL_AT_WRITE"
_faults_seen = 0


class RunError(ValueError):
    """A run directory or checkpoint is missing, broken or refused; the message names the fix."""


def default_runs_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where new runs go: ``$TRICL_RUNS`` if set, else ``./runs`` (never the shipped runs).

    Args:
        environ: the environment to read (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    return Path(env.get("TRICL_RUNS") or "runs")


def run_roots() -> list[Path]:
    """The roots listed by default: the user's runs, then the shipped ones (when both exist)."""
    roots = [default_runs_root()]
    if SHIPPED_RUNS_ROOT.is_dir() and SHIPPED_RUNS_ROOT.resolve() != roots[0].resolve():
        roots.append(SHIPPED_RUNS_ROOT)
    return roots


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` is one of the runs shipped with the repository."""
    return Path(path).resolve().parent == SHIPPED_RUNS_ROOT


def _fault_point() -> None:
    """Count a fault point; at the one ``$TRICL_FAULT_KILL_AT_WRITE`` names, die like a crash."""
    global _faults_seen
    target = os.environ.get(FAULT_ENV)
    if not target:
        return
    _faults_seen += 1
    if _faults_seen == int(target):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_temp(tmp: Path, data: bytes) -> None:
    """Write and flush ``data`` to a temporary file (a fault here leaves it torn)."""
    with open(tmp, "wb") as fh:
        half = len(data) // 2
        fh.write(data[:half])
        if os.environ.get(FAULT_ENV):
            fh.flush()
            _fault_point()
        fh.write(data[half:])
        fh.flush()
        os.fsync(fh.fileno())


def _rename(tmp: Path, path: Path) -> None:
    _fault_point()
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path, tmp_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed and renamed onto ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(tmp_name or f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write_temp(tmp, data)
        _rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def weights_to_bytes(state: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Serialise a state dict to safetensors bytes (tensors only: nothing executable)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return save(tensors, metadata=metadata)


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
        raise _corrupt(path, _first_line(exc)) from None
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
        raise _state_refused(path, _first_line(exc)) from None
    keys = {"epoch": int, "optimizer": dict, "rng": dict, "model_sha256": str}
    if not isinstance(state, dict) or not all(isinstance(state.get(k), t) for k, t in keys.items()):
        raise _state_refused(path, f"it lacks one of {sorted(keys)}")
    return state


def state_to_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _sweep_temporaries(run_dir: Path) -> None:
    """Remove the hidden temporaries of :func:`atomic_write_bytes` a crash left behind."""
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
                _fsync_dir(run_dir)
    for tmp in (model_tmp, state_tmp):
        tmp.unlink(missing_ok=True)
    _sweep_temporaries(run_dir)


def write_checkpoint(run_dir: Path, weights: bytes, state: dict[str, Any]) -> None:
    """Write weights and train state as one consistent pair (see :func:`recover_checkpoint`)."""
    model_tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    state_tmp = run_dir / (STATE_FILE + ".tmp")
    state = {**state, "model_sha256": hashlib.sha256(weights).hexdigest()}
    _write_temp(model_tmp, weights)
    _write_temp(state_tmp, state_to_bytes(state))
    _rename(model_tmp, run_dir / WEIGHTS_FILE)
    _rename(state_tmp, run_dir / STATE_FILE)
    _fsync_dir(run_dir)


def save_epoch(run_dir: Path, weights: Mapping[str, torch.Tensor], state: dict, row: dict) -> None:
    """Checkpoint the end of epoch ``row["epoch"]``: its metrics line, then weights and state.

    Metrics go first: a crash after them re-runs the epoch, and resume trims lines past the
    checkpoint (:func:`trim_metrics`).
    """
    epoch = int(row["epoch"])
    rows = [r for r in read_metrics(run_dir) if r["epoch"] < epoch]
    text = "".join(json.dumps(r) + "\n" for r in [*rows, row])
    atomic_write_text(run_dir / METRICS_FILE, text)
    meta = {"epoch": str(epoch), "format": WEIGHTS_FORMAT}
    write_checkpoint(run_dir, weights_to_bytes(weights, meta), {**state, "epoch": epoch})


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
        atomic_write_text(p, text)


def git_commit() -> str:
    """The commit of the tricl checkout (``unknown`` outside git)."""
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return "unknown"


def library_versions() -> dict[str, str]:
    import torch
    import torchvision

    from tricl import __version__

    return {
        "tricl": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def ensure_new_run(run_dir: Path, fix: str) -> None:
    """Refuse a run name that is taken; ``fix`` says what to do instead."""
    if run_dir.exists():
        raise RunError(f"run directory {run_dir} already exists; {fix}")


def _sweep_partial_runs(root: Path) -> None:
    """Remove hidden half-built run folders whose builder process is gone (killed)."""
    for tmp in root.glob(".new-*"):
        pid = tmp.name.rsplit(".", 2)[-2] if tmp.name.count(".") >= 3 else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


def create_run_dir(
    root: Path,
    cfg: RunConfig,
    dataset: Mapping[str, Any],
    *,
    name: str,
    parent: Mapping[str, Any] | str | None = None,
    info: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Create the run directory ``root/name``: config.json (+ ``files``), all or nothing.

    The folder is assembled under a hidden name and renamed into place, so a crash never leaves a
    half-made run. Call it only after every argument check has passed.

    Args:
        root: the runs root.
        cfg: the run's configuration.
        dataset: dataset facts (``in_channels``, ``image_size``, ``classes``, ...).
        name: the folder name.
        parent: the run this one is derived from, if any: its path, or (``tricl align``) its
            ``name``, ``path`` and ``weights_hash``.
        info: more top-level keys for config.json (e.g. ``imported_from``).
        files: more files to put in the new folder (name -> bytes), e.g. imported weights.

    Returns:
        The run directory.
    """
    run_dir = root / name
    ensure_new_run(run_dir, "pick another --name")
    record: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "dataset": dict(dataset),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **(info or {}),
    }
    if parent is not None:
        record["parent"] = parent if isinstance(parent, str) else dict(parent)
    root.mkdir(parents=True, exist_ok=True)
    _sweep_partial_runs(root)
    tmp_dir = root / f".new-{name}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    tmp_dir.mkdir()
    try:
        atomic_write_text(tmp_dir / CONFIG_FILE, json.dumps(record, indent=2))
        for fname, data in (files or {}).items():
            atomic_write_bytes(tmp_dir / fname, data)
        _rename(tmp_dir, run_dir)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return run_dir


def read_run_info(run_dir: Path) -> tuple[dict[str, Any], RunConfig]:
    """Read and check ``config.json``: the record and its :class:`RunConfig`.

    Raises:
        RunError: the file is missing, not JSON, or lacks or mistypes a required value.
    """
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise RunError(
            f"{run_dir} has no {CONFIG_FILE}, so it is not a tricl run; train one with"
            " `tricl train` or convert a checkpoint with `tricl import`"
        )
    try:
        info = json.loads(cfg_path.read_bytes())
        if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
            raise ConfigError("no 'config' object")
        dataset = info.get("dataset")
        if not isinstance(dataset, dict) or not isinstance(dataset.get("in_channels"), int):
            raise ConfigError("no 'dataset' object with in_channels")
        config = RunConfig.from_dict(info["config"])
        _check_aligned_record(info)
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, ConfigError
        raise RunError(
            f"{cfg_path} is unreadable ({_first_line(exc)}); restore it or retrain"
        ) from None
    return info, config


def _check_aligned_record(info: Mapping[str, Any]) -> None:
    """An ``aligned`` record must name its feature count and come with its ``parent``."""
    aligned = info.get("aligned")
    if aligned is None:
        return
    dim = aligned.get("dim") if isinstance(aligned, dict) else None
    if not (isinstance(dim, int) and dim > 0) or not isinstance(info.get("parent"), dict):
        raise ConfigError("its 'aligned' record lacks a positive 'dim' or a 'parent' object")


def is_image_text(cfg: RunConfig) -> bool:
    """Whether ``cfg``'s method trains on image-caption pairs (weights of image and text)."""
    from tricl.methods import get_method

    return get_method(cfg.method).pair == "caption"


def read_text_config(run_dir: Path):
    """The :class:`~tricl.text.encoder.TextEncoderConfig` recorded in an image-text run.

    Raises:
        RunError: config.json has no valid ``text_encoder`` record.
    """
    from tricl.text.encoder import TextEncoderConfig

    info, _ = read_run_info(run_dir)
    record = info.get("text_encoder")
    try:
        return TextEncoderConfig(**record)
    except (TypeError, ValueError) as exc:
        raise RunError(
            f"{run_dir / CONFIG_FILE} has no valid text_encoder record ({_first_line(exc)});"
            " restore it or retrain"
        ) from None


def load_run_tokenizer(run_dir: Path, text_config):
    """The run's tokenizer.json, checked against the text encoder it was trained with.

    Raises:
        RunError: the file is missing, unreadable, or not the one the weights were trained with
            (another hash, vocab size or context length), in one line naming the file.
    """
    from tricl.text.tokenizer import TokenizerError, load_tokenizer

    try:
        tokenizer = load_tokenizer(run_dir, expected_sha256=text_config.tokenizer_sha256 or None)
    except TokenizerError as exc:
        raise RunError(str(exc)) from None
    path = run_dir / TOKENIZER_FILE
    if tokenizer.vocab_size != text_config.vocab_size:
        raise RunError(
            f"{path} has {tokenizer.vocab_size} tokens but the text encoder was built for"
            f" {text_config.vocab_size}; restore the run's own tokenizer.json"
        )
    if tokenizer.context_length != text_config.context_length:
        raise RunError(
            f"{path} has context length {tokenizer.context_length} but the text encoder was"
            f" built for {text_config.context_length}; restore the run's own tokenizer.json"
        )
    return tokenizer


@dataclass
class BrokenRun:
    """A folder under the runs root that is not a usable run, and why."""

    path: Path
    reason: str

    @property
    def name(self) -> str:
        return self.path.name


class Run:
    """One run directory. Use :meth:`Run.load`; nothing is read until asked for."""

    def __init__(self, path: Path, config: RunConfig, info: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        self.info = info
        self._hash_key: tuple[int, int] | None = None
        self._hash = ""

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Open a run directory and check it cheaply: config complete, weights and train state
        structurally whole (headers only; :meth:`state_dict` reads the tensors)."""
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"run directory {path} does not exist; list runs with `tricl runs`")
        info, config = read_run_info(path)
        if not (path / WEIGHTS_FILE).is_file():
            raise RunError(
                f"{path} has no {WEIGHTS_FILE} yet (training stopped before its first epoch ended);"
                f" continue with `tricl train --resume {path}` or delete the folder"
            )
        read_weights_header(path / WEIGHTS_FILE)
        aligned = info.get("aligned") is not None  # an aligned copy keeps only the image side
        if is_image_text(config) and not aligned and not (path / TOKENIZER_FILE).is_file():
            raise RunError(
                f"{path} has no {TOKENIZER_FILE}, which its {config.method} text encoder needs;"
                " restore the run's tokenizer.json or retrain"
            )
        if (path / STATE_FILE).exists():
            check_state_file(path / STATE_FILE)
        return cls(path, config, info)

    @property
    def shipped(self) -> bool:
        """Whether this is one of the runs shipped with the repository."""
        return is_shipped(self.path)

    @property
    def aligned(self) -> bool:
        """Whether ``tricl align`` derived this run (its features: its parent's spectral basis)."""
        return self.info.get("aligned") is not None

    @property
    def aligned_dim(self) -> int:
        """Features of an aligned run's fixed aligner layer (0: not an aligned run)."""
        return int(self.info["aligned"]["dim"]) if self.aligned else 0

    @property
    def parent(self) -> dict[str, Any] | None:
        """The run this one was derived from (``name``, ``path``, ``weights_hash`` as recorded), or
        None."""
        parent = self.info.get("parent")
        if isinstance(parent, str):  # recorded as a bare path
            return {"name": Path(parent).name, "path": parent}
        return dict(parent) if isinstance(parent, dict) else None

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def weights_hash(self) -> str:
        """SHA-256 of ``model.safetensors`` (first 16 hex digits); cached per file version."""
        st = self.weights_path.stat()
        key = (st.st_mtime_ns, st.st_size)
        if key != self._hash_key:
            self._hash = file_sha256(self.weights_path)[:16]
            self._hash_key = key
        return self._hash

    @property
    def dataset_info(self) -> dict[str, Any]:
        return self.info.get("dataset", {})

    @property
    def in_channels(self) -> int:
        return int(self.dataset_info.get("in_channels", 3))

    @property
    def classes(self) -> list[str]:
        return list(self.dataset_info.get("classes", []))

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return read_weights(self.weights_path)

    @property
    def epochs_done(self) -> int:
        """The epochs the weights hold (from their header, not from the metrics log)."""
        return weights_epoch(self.weights_path)

    @property
    def image_text(self) -> bool:
        """Whether the run trained on image-caption pairs (clip, triclip)."""
        return is_image_text(self.config)

    def _load_into(self, module, tensors: Mapping[str, torch.Tensor]) -> None:
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise RunError(
                f"{self.weights_path} does not match config.json ({_first_line(exc)}); the files"
                " come from different runs: restore the matching pair"
            ) from None

    def _weights(self, prefix: str) -> dict[str, torch.Tensor]:
        """The weights under ``prefix`` (image-text runs; ``""``: all of them), prefix removed."""
        tensors, _ = self.state_dict()
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """The image encoder's tensors, as :meth:`encoder` loads them (an image-text run keeps
        them under ``image.``; an aligned copy of one holds only its image encoder)."""
        return self._weights("image." if self.image_text and not self.aligned else "")

    def encoder(self, device: str | torch.device = "cpu"):
        """The trained image encoder in eval mode, rebuilt from ``config.json`` and the weights.

        For an image-text run this is its image encoder, so every image analysis reads it as it
        reads a two-view run's encoder.
        """
        from tricl.methods import build_encoder

        enc = build_encoder(self.config, self.in_channels, aligned_dim=self.aligned_dim)
        self._load_into(enc, self.encoder_weights())
        return enc.to(device).eval()

    def _require_image_text(self, what: str) -> None:
        if not self.image_text:
            raise RunError(
                f"{self.path} is a {self.config.method} run, trained on images only, so it has no"
                f" {what}; train clip or triclip for one"
            )
        if self.aligned:
            raise RunError(
                f"{self.path} is an aligned copy of {self.parent['name']} holding only its image"
                f" encoder, so it has no {what}; read it from the parent run"
            )

    def tokenizer(self):
        """The run's :class:`~tricl.text.tokenizer.TextTokenizer` (image-text runs).

        Raises:
            RunError: not an image-text run, or a tokenizer.json that does not match the weights.
        """
        self._require_image_text("tokenizer")
        return load_run_tokenizer(self.path, read_text_config(self.path))

    def text_encoder(self, device: str | torch.device = "cpu"):
        """The trained :class:`~tricl.text.encoder.TextEncoder` in eval mode (image-text runs),
        rebuilt from config.json's ``text_encoder`` record and checked against tokenizer.json.

        Raises:
            RunError: not an image-text run, or weights, config and tokenizer that do not match.
        """
        from tricl.text.encoder import TextEncoder

        self._require_image_text("text encoder")
        text_config = read_text_config(self.path)
        load_run_tokenizer(self.path, text_config)
        tensors = self._weights("text.")
        rows = tensors.get("token_embedding.weight")
        if rows is not None and rows.shape[0] != text_config.vocab_size:
            raise RunError(
                f"{self.path / TOKENIZER_FILE} has {text_config.vocab_size} tokens but"
                f" {self.weights_path} has {rows.shape[0]} embedding rows; restore the matching"
                " pair"
            )
        enc = TextEncoder.from_config(text_config)
        self._load_into(enc, tensors)
        return enc.to(device).eval()

    def logit_scale(self) -> float:
        """The learned ``exp(logit_scale)`` = 1/T of an image-text run."""
        self._require_image_text("logit scale")
        tensors, _ = self.state_dict()
        return float(tensors["logit_scale"].exp())

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows of ``metrics.jsonl`` up to the epoch the weights hold."""
        return read_metrics(self.path, upto=self.epochs_done)

    def load_data(self, **kwargs: Any):
        """The run's images, an :class:`~tricl.data.ImageData` (see
        :func:`tricl.data.load_dataset`); for an image-text run, the images of its captions."""
        kwargs.setdefault("image_size", self.config.image_size)
        if self.image_text:
            return self.load_image_text(image_size=kwargs["image_size"]).images
        from tricl.data import load_dataset

        return load_dataset(self.config.dataset, **kwargs)

    def load_image_text(self, **kwargs: Any):
        """The images with their captions, :class:`~tricl.text.captions.ImageTextData`."""
        from tricl.text.captions import load_image_text

        self._require_image_text("captions")
        kwargs.setdefault("image_size", self.config.image_size)
        return load_image_text(self.config.dataset, **kwargs)

    def summary(self) -> dict[str, Any]:
        """One row for run tables: method, dataset, seed, epochs, final loss."""
        done = self.epochs_done
        rows = read_metrics(self.path, upto=done)
        last = rows[-1] if rows and rows[-1]["epoch"] == done else {}
        return {
            "run": self.name,
            "method": self.config.method,
            "dataset": self.config.dataset,
            "backbone": self.config.backbone,
            "k": self.config.proj_dim,
            "seed": self.config.seed,
            "epochs": f"{done}/{self.config.epochs}",
            "final_loss": last.get("loss"),
            "shipped": self.shipped,
            "aligned": self.aligned,
        }


def list_runs(root: str | Path | None = None) -> list[Run | BrokenRun]:
    """Every run under ``root`` (folders starting with ``_`` or ``.`` are skipped), by name."""
    root = Path(root) if root is not None else default_runs_root()
    if not root.is_dir():
        return []
    out: list[Run | BrokenRun] = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name.startswith(("_", ".")):
            continue
        try:
            out.append(Run.load(p))
        except RunError as exc:
            out.append(BrokenRun(p, str(exc)))
    return out


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues: its record, config, and the last checkpoint (none: epoch 0).

    Attributes:
        weights: the encoder's tensors at ``epoch`` (None before the first checkpoint).
        state: optimizer and RNG state at ``epoch`` (None before the first checkpoint).
    """

    info: dict[str, Any]
    config: RunConfig
    epoch: int
    weights: dict[str, torch.Tensor] | None
    state: dict[str, Any] | None


@contextlib.contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for one trainer while the block runs.

    An exclusive ``fcntl`` lock on the run folder itself, so nothing is written (a refused resume
    leaves the folder exactly as it was); the kernel releases it if the process dies, so a killed
    training never blocks its resume. A second trainer of the same run (two ``tricl train
    --resume``, or a restarted study while the first one's workers still run) would interleave
    checkpoints and metric rows; it gets a one-line RunError instead. A path that is not a folder
    is left to :func:`open_for_resume`, which says why it cannot be resumed.

    Raises:
        RunError: another process holds the run; the message names its pid where Linux's
            ``/proc/locks`` shows it, and the fix.
    """
    if not run_dir.is_dir():
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(
                f"run {run_dir} is being trained by another process{_lock_holder(run_dir)}; wait"
                " for it to finish, or stop that process and resume"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_holder(path: Path) -> str:
    """ " (pid N)" for the process holding a flock on ``path``, from ``/proc/locks``; "" elsewhere.

    A line there reads ``1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF``.
    """
    with contextlib.suppress(OSError, IndexError):
        inode = str(path.stat().st_ino)
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == inode:
                return f" (pid {fields[4]})"
    return ""


def open_for_resume(run_dir: Path) -> ResumePoint:
    """Recover an interrupted checkpoint write, then read and check the last checkpoint.

    Raises:
        RunError: not a run, a damaged file, or nothing to resume (a finished run without its
            train state, such as a shipped run); the message names what to do.
    """
    if not run_dir.is_dir():
        raise RunError(f"cannot resume {run_dir}: no such run; `tricl runs` lists runs")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(
            f"cannot resume {run_dir}: it has no {CONFIG_FILE}, so it is not a tricl run; check"
            " the path (`tricl runs` lists runs)"
        )
    info, cfg = read_run_info(run_dir)
    if info.get("aligned") is not None:
        raise RunError(
            f"cannot resume {run_dir}: it is an aligned copy of {info['parent'].get('name')}"
            " made by `tricl align` (its last layer is fixed); resume or retrain the parent,"
            " then align it again"
        )
    weights_file, state_file = run_dir / WEIGHTS_FILE, run_dir / STATE_FILE
    recover_checkpoint(run_dir)
    if not weights_file.exists():
        if state_file.exists():
            raise RunError(
                f"cannot resume {run_dir}: it has {STATE_FILE} but no {WEIGHTS_FILE}; restore"
                " the weights, or delete the folder and train again"
            )
        return ResumePoint(info, cfg, 0, None, None)  # killed before the first checkpoint
    done = weights_epoch(weights_file)
    if not state_file.exists():
        if done >= cfg.epochs:
            raise RunError(
                f"{run_dir} is finished ({done}/{cfg.epochs} epochs) and has no {STATE_FILE}"
                " (shipped runs come without optimizer state), so there is nothing to resume;"
                f" train a new run instead: `tricl train --method {cfg.method} --dataset"
                f" {cfg.dataset} --seed {cfg.seed}` (add --epochs N, --name NEW to vary it)"
            )
        raise RunError(
            f"cannot resume {run_dir}: {STATE_FILE} is missing after epoch {done};"
            " restore it, or train a new run with the same settings"
        )
    state = load_state_file(state_file)
    if state["model_sha256"] != file_sha256(weights_file) or state["epoch"] != done:
        raise RunError(
            f"{weights_file} does not match {STATE_FILE} (tampered or mixed from another run);"
            " restore both files from one checkpoint, or retrain"
        )
    tensors, _ = read_weights(weights_file)
    return ResumePoint(info, cfg, done, tensors, state)
