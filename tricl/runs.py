"""Run directories: create, load (weights only, never code), list, import foreign checkpoints.

A run directory (DESIGN.md)::

    <run>/config.json        RunConfig + dataset facts + library versions + git commit
    <run>/model.safetensors  encoder weights; metadata holds the epoch
    <run>/train_state.pt     optimizer + RNG state for --resume, loaded with weights_only=True
    <run>/metrics.jsonl      one JSON line per epoch
    <run>/analysis/          artifacts of tricl.analysis

Every file is written to a temporary name in the same folder, flushed and renamed into place, so a
crash or Ctrl-C never leaves half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tricl.config import ConfigError, RunConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
FORMAT_VERSION = "tricl-run-1"


class RunError(ValueError):
    """A run directory or checkpoint is missing, broken or refused; the message names the fix."""


def default_runs_root() -> Path:
    """Where runs live: ``$TRICL_RUNS`` if set, else ``./checkpoints``."""
    return Path(os.environ.get("TRICL_RUNS", "checkpoints"))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_to_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Serialise a state dict to safetensors bytes (tensors only: nothing executable)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return save(tensors, metadata=metadata)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a truncated or corrupt file raises :class:`RunError`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for a damaged header/body
        raise RunError(
            f"{path} is truncated or corrupt ({type(exc).__name__}); restore it, or retrain the run"
            " with `tricl train --resume` from an intact copy"
        ) from None
    return tensors, metadata


def load_state_file(path: Path) -> dict[str, Any]:
    """Load ``train_state.pt`` with ``weights_only=True``: a checkpoint never executes code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise RunError(
            f"{path} cannot be loaded safely ({reason}); it is truncated, tampered with or not a"
            " tricl train state: delete it to keep the weights, or retrain"
        ) from None


def state_to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def recover_checkpoint(run_dir: Path) -> None:
    """Finish or undo a checkpoint write that a crash interrupted.

    The trainer writes ``model.safetensors.tmp`` then ``train_state.pt.tmp``, then renames the
    model, then the state. A lone state temporary means the crash fell between the two renames:
    roll it forward. Any other leftover temporary belongs to an unfinished write: drop it.
    """
    model_tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    state_tmp = run_dir / (STATE_FILE + ".tmp")
    if state_tmp.exists() and not model_tmp.exists():
        os.replace(state_tmp, run_dir / STATE_FILE)
    for tmp in (model_tmp, state_tmp):
        tmp.unlink(missing_ok=True)


def write_checkpoint(run_dir: Path, weights: bytes, state: dict[str, Any]) -> None:
    """Write weights and train state as one consistent pair (see :func:`recover_checkpoint`)."""
    model_tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    state_tmp = run_dir / (STATE_FILE + ".tmp")
    state = {**state, "model_sha256": hashlib.sha256(weights).hexdigest()}
    for tmp, data in ((model_tmp, weights), (state_tmp, state_to_bytes(state))):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(model_tmp, run_dir / WEIGHTS_FILE)
    os.replace(state_tmp, run_dir / STATE_FILE)
    _fsync_dir(run_dir)


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
        """Open a run directory and check that it can be used (config readable, weights present)."""
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"run directory {path} does not exist; list runs with `tricl runs`")
        cfg_path = path / CONFIG_FILE
        if not cfg_path.is_file():
            raise RunError(
                f"{path} has no {CONFIG_FILE}, so it is not a tricl run; train one with"
                " `tricl train` or convert a checkpoint with `tricl import`"
            )
        try:
            info = json.loads(cfg_path.read_text())
            config = RunConfig.from_dict(info["config"])
        except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunError(f"{cfg_path} is unreadable ({msg}); restore it or retrain") from None
        if not (path / WEIGHTS_FILE).is_file():
            raise RunError(
                f"{path} has no {WEIGHTS_FILE} yet (training stopped before its first epoch ended);"
                f" continue with `tricl train --resume {path}` or delete the folder"
            )
        return cls(path, config, info)

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
        _, meta = read_weights(self.weights_path)
        return int(meta.get("epoch", 0))

    def encoder(self, device: str | torch.device = "cpu"):
        """The trained encoder in eval mode, rebuilt from ``config.json`` and the weights."""
        from tricl.models import Encoder

        enc = Encoder.from_config(self.config, self.in_channels)
        tensors, _ = self.state_dict()
        try:
            enc.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise RunError(
                f"{self.weights_path} does not match config.json ({first}); the files come from"
                " different runs: restore the matching pair"
            ) from None
        return enc.to(device).eval()

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows of ``metrics.jsonl`` (a torn last line is skipped)."""
        p = self.path / METRICS_FILE
        if not p.exists():
            return []
        rows = []
        for line in p.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
        return rows

    def load_data(self, **kwargs: Any):
        """The run's dataset (see :func:`tricl.data.load_dataset`)."""
        from tricl.data import load_dataset

        kwargs.setdefault("image_size", self.config.image_size)
        return load_dataset(self.config.dataset, **kwargs)

    def summary(self) -> dict[str, Any]:
        """One row for run tables: method, dataset, seed, epochs, final loss."""
        rows = self.metrics()
        last = rows[-1] if rows else {}
        # the weights file is read only for runs without metrics (imported ones)
        done = rows[-1].get("epoch", 0) if rows else self.epochs_done
        return {
            "run": self.name,
            "method": self.config.method,
            "dataset": self.config.dataset,
            "backbone": self.config.backbone,
            "k": self.config.proj_dim,
            "seed": self.config.seed,
            "epochs": f"{done}/{self.config.epochs}",
            "final_loss": last.get("loss"),
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


class _Inert:
    """Stand-in for any class or function a foreign checkpoint names (argparse, omegaconf, ...).

    It records what the pickle passes and runs nothing, so loading cannot execute code.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value


def load_foreign_checkpoint(path: Path) -> dict[str, Any]:
    """Load a Lightning / solo-learn checkpoint with ``weights_only=True``.

    Globals outside torch's allowlist (hyper-parameter containers, or anything malicious) are bound
    to :class:`_Inert` stand-ins, so their code never runs; only tensors are used afterwards.
    """
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; check the path")
    names: list[str] = []
    try:
        names = get_unsafe_globals_in_checkpoint(str(path))
        stand_ins = [(type(n.rsplit(".", 1)[-1], (_Inert,), {}), n) for n in names]
        with safe_globals(stand_ins):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "blocked" in str(exc):
            raise RunError(
                f"{path} was refused: it references {', '.join(names)}, which could execute"
                " code, and tricl never runs code from a checkpoint; re-export it with torch.save"
            ) from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise RunError(
            f"{path} is not a readable PyTorch checkpoint ({first}); pass a solo-learn / triCL"
            " .ckpt file saved by torch.save"
        ) from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        return ckpt
    if isinstance(ckpt, dict) and any(str(k).startswith("backbone.") for k in ckpt):
        return {"state_dict": ckpt}
    raise RunError(
        f"{path} holds no state_dict with backbone.* weights; export the Lightning"
        " checkpoint of a solo-learn / triCL pretraining run"
    )


def _hyper(ckpt: dict[str, Any], key: str) -> Any:
    """A value from the checkpoint's hyper-parameters when they are plain dicts, else None."""
    hp = ckpt.get("hyper_parameters")
    if isinstance(hp, dict):
        if key in hp and isinstance(hp[key], int | float):
            return hp[key]
        mk = hp.get("method_kwargs")
        if isinstance(mk, dict) and isinstance(mk.get(key), int | float):
            return mk[key]
    return None


def import_checkpoint(
    path: str | Path,
    *,
    runs_root: str | Path | None = None,
    dataset: str = "cifar10",
    method: str | None = None,
    name: str = "",
) -> Run:
    """Turn a solo-learn / official triCL checkpoint into a run directory.

    Backbone (ResNet-18/50, CIFAR stem or not), projector widths (with or without batch norm) and
    input channels are read from the tensor shapes; ``scale_param`` becomes S's logits. The run
    records the official code's behaviour: S on the first view's rows, S frozen.
    """
    path = Path(path)
    ckpt = load_foreign_checkpoint(path)
    sd = {str(k): v for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
    backbone_sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    proj_sd = {k: v for k, v in sd.items() if k.startswith("projector.")}
    conv1 = backbone_sd.get("conv1.weight")
    if conv1 is None or not proj_sd:
        raise RunError(
            f"{path} lacks backbone.conv1.weight or projector.* weights; only ResNet"
            " checkpoints of solo-learn / triCL with a projector can be imported"
        )
    deep = any(k.startswith("layer1.0.conv3") for k in backbone_sd)
    cifar_stem = conv1.shape[-1] == 3
    if deep and cifar_stem:
        raise RunError(
            f"{path} is a ResNet-50 with a CIFAR stem, which tricl has no backbone for;"
            " use a ResNet-18 CIFAR or an ImageNet-stem checkpoint"
        )
    backbone = "resnet50" if deep else ("resnet18_cifar" if cifar_stem else "resnet18")
    linears = sorted(k for k, v in proj_sd.items() if k.endswith(".weight") and v.ndim == 2)
    batchnorm = any(k.endswith("running_mean") for k in proj_sd)
    hidden, k_dim = proj_sd[linears[0]].shape[0], proj_sd[linears[-1]].shape[0]
    has_s = "scale_param" in sd
    method = method or ("tricl" if has_s else "simclr")
    cfg = RunConfig(
        method=method,
        dataset=dataset,
        backbone=backbone,
        proj_hidden_dim=int(hidden),
        proj_dim=int(k_dim),
        proj_batchnorm=batchnorm,
        epochs=int(ckpt.get("epoch", 0) or 0) + 1 if isinstance(ckpt.get("epoch"), int) else 1,
        temperature=float(_hyper(ckpt, "temperature") or 0.2),
        tau=float(_hyper(ckpt, "tau") or 1.0),
        s_placement="first_view",
        s_frozen=True,
        name=name or path.stem,
        extra={"imported_from": str(path)},
    )
    from tricl.models import Encoder

    enc = Encoder.from_config(cfg, in_channels=int(conv1.shape[1]))
    state = {f"backbone.{k}": v for k, v in backbone_sd.items() if not k.startswith("fc.")}
    if batchnorm:  # solo-learn: Linear, BN, ReLU, Linear -> our indices match
        state.update(proj_sd)
    else:  # Linear, ReLU, Linear
        state.update(
            {
                f"projector.{i}.{k.split('.', 2)[2]}": v
                for i, key in ((0, linears[0]), (2, linears[-1]))
                for k, v in proj_sd.items()
                if k.startswith(key.rsplit(".", 1)[0] + ".")
            }
        )
    if enc.importance_logits is not None:
        if not has_s:
            raise RunError(
                f"--method {method} needs S, but {path} has no scale_param; use"
                " --method simclr or spectral"
            )
        state["importance_logits"] = sd["scale_param"]
    try:
        enc.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RunError(
            f"{path} does not fit a {backbone} encoder"
            f" ({str(exc).splitlines()[0][:160]}); it is not a supported layout"
        ) from None
    root = Path(runs_root) if runs_root is not None else default_runs_root()
    run_dir = root / cfg.name
    if run_dir.exists():
        raise RunError(
            f"run directory {run_dir} already exists; pass --name to import under another name"
        )
    # build in a hidden temporary folder and rename it into place: never half a run
    tmp_dir = root / f".import-{cfg.name}-{uuid.uuid4().hex[:6]}"
    tmp_dir.mkdir(parents=True)
    try:
        info = {
            "format": FORMAT_VERSION,
            "config": cfg.to_dict(),
            "dataset": {"in_channels": int(conv1.shape[1]), "image_size": 0, "classes": []},
            "imported_from": str(path),
        }
        atomic_write_text(tmp_dir / CONFIG_FILE, json.dumps(info, indent=2))
        meta = {"epoch": str(cfg.epochs), "format": "tricl-1", "imported": "1"}
        atomic_write_bytes(tmp_dir / WEIGHTS_FILE, weights_to_bytes(enc.state_dict(), meta))
        atomic_write_text(tmp_dir / METRICS_FILE, "")
        os.replace(tmp_dir, run_dir)
    except BaseException:
        import shutil

        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return Run.load(run_dir)
