"""train(config) -> Run: epochs, progress bar, AMP on GPU, DDP, atomic checkpoints and resume."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tricl import distributed as dist_utils
from tricl.config import RunConfig
from tricl.losses import LossTerms, compute_loss
from tricl.models import Encoder
from tricl.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    Run,
    RunError,
    atomic_write_text,
    default_runs_root,
    file_sha256,
    load_state_file,
    read_weights,
    recover_checkpoint,
    weights_to_bytes,
    write_checkpoint,
)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became non-finite); the message names the fix."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks this rank's CUDA device when there is one, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            f"--device {name} asked for CUDA but none is available; use --device cpu"
        )
    return dev


def default_run_name(cfg: RunConfig) -> str:
    """``<method>_<dataset>_<backbone>_k<k>_seed<seed>`` (a folder dataset contributes its name)."""
    if cfg.name:
        return cfg.name
    ds = cfg.dataset
    if ds.startswith("folder:"):
        ds = "folder-" + (Path(ds.split(":", 1)[1]).name or "root")
    return f"{cfg.method}_{ds}_{cfg.backbone}_k{cfg.proj_dim}_seed{cfg.seed}"


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    Groups with ``lars_exclude=True`` (biases, norms, importance logits) take plain SGD steps, as in
    solo-learn's LARS wrapper with ``exclude_bias_n_norm``.
    """

    def __init__(
        self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02
    ) -> None:
        if lr <= 0 or eta <= 0:
            raise ValueError(f"LARS needs lr > 0 and eta > 0, got lr={lr}, eta={eta}")
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "weight_decay": weight_decay,
                "eta": eta,
                "lars_exclude": False,
            },
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if group["weight_decay"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    p_norm, g_norm = torch.norm(p), torch.norm(d_p)
                    if p_norm > 0 and g_norm > 0:
                        # trust ratio, clipped so LARS never raises the step above the base lr
                        trust = group["eta"] * p_norm / g_norm
                        d_p = d_p * torch.clamp(trust, max=1.0)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])


def param_groups(encoder: Encoder, cfg: RunConfig) -> list[dict[str, Any]]:
    """Weights (decayed), biases and norms (not decayed), and S's logits with their own lr factor.

    S is always handed to the optimizer unless ``s_frozen`` asks for the official code's behaviour.
    """
    decay, no_decay = [], []
    for name, p in encoder.named_parameters():
        if name == "importance_logits" or not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"name": "weights", "params": decay, "lr_mult": 1.0, "weight_decay": cfg.weight_decay},
        {
            "name": "bias_norm",
            "params": no_decay,
            "lr_mult": 1.0,
            "weight_decay": 0.0,
            "lars_exclude": True,
        },
    ]
    if encoder.importance_logits is not None and not cfg.s_frozen:
        groups.append(
            {
                "name": "importance",
                "params": [encoder.importance_logits],
                "lr_mult": cfg.s_lr_mult,
                "weight_decay": 0.0,
                "lars_exclude": True,
            }
        )
    return groups


def build_optimizer(encoder: Encoder, cfg: RunConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names, over :func:`param_groups`."""
    groups = param_groups(encoder, cfg)
    if cfg.optimizer == "adamw":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    return LARS(groups, lr=cfg.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def step_loss(model: nn.Module, x1: Tensor, x2: Tensor, cfg: RunConfig) -> LossTerms:
    """Forward both views, gather them from every rank (gradients kept), and compute the loss.

    Args:
        model: the Encoder, possibly wrapped in DistributedDataParallel.
        x1: first views of this rank's samples. Shape: (B_local, C, H, W).
        x2: second views of the same samples. Shape: (B_local, C, H, W).
        cfg: the run's configuration (method, temperature, tau, S placement).
    """
    encoder: Encoder = model.module if hasattr(model, "module") else model
    z = model(torch.cat([x1, x2]))  # (2 * B_local, k)
    z1, z2 = z.chunk(2)  # (B_local, k) each
    z1 = dist_utils.gather_with_grad(z1)  # (B_global, k)
    z2 = dist_utils.gather_with_grad(z2)  # (B_global, k)
    return compute_loss(
        cfg.method,
        z1,
        z2,
        encoder.importance(),
        temperature=cfg.temperature,
        tau=cfg.tau,
        s_placement=cfg.s_placement,
        decorrelation=cfg.decorrelation,
    )


def _git_commit() -> str:
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


def _versions() -> dict[str, str]:
    import torchvision

    from tricl import __version__

    return {
        "tricl": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _s_stats(encoder: Encoder) -> dict[str, float]:
    s = encoder.importance()
    if s is None:
        return {}
    s = s.detach().float()
    return {
        "s_min": s.min().item(),
        "s_max": s.max().item(),
        "s_mean": s.mean().item(),
        "s_std": s.std().item(),
    }


def train(
    cfg: RunConfig | None = None,
    *,
    runs_root: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
) -> Run:
    """Train an encoder and return its run directory.

    Args:
        cfg: what to train. Ignored when ``resume`` is given (the run's own config is used).
        runs_root: folder that holds run directories (default ``$TRICL_RUNS`` or ``checkpoints``).
        resume: an existing run directory to continue from its last finished epoch.
        progress: draw a tqdm progress bar (loss terms, images/s, ETA).
        stop_after_epoch: stop (as if killed) once this epoch is checkpointed; for tests and for
            training in slices.

    Returns:
        The :class:`~tricl.runs.Run` (complete, or partial when ``stop_after_epoch`` stopped it).
    """
    from tricl.data import build_augmentation, load_dataset

    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / CONFIG_FILE).is_file():
            raise RunError(
                f"cannot resume {run_dir}: it has no {CONFIG_FILE}; check the path"
                " (`tricl runs` lists runs)"
            )
        info = json.loads((run_dir / CONFIG_FILE).read_text())
        cfg = RunConfig.from_dict(info["config"])
    elif cfg is None:
        raise ValueError("train() needs a RunConfig or resume=RUN_DIR")
    else:
        root = Path(runs_root) if runs_root is not None else default_runs_root()
        run_dir = root / default_run_name(cfg)

    device = resolve_device(cfg.device)
    dist_utils.init_from_env(device)
    world, rank = dist_utils.world_size(), dist_utils.rank()
    if cfg.batch_size % world:
        raise TrainingError(
            f"batch_size {cfg.batch_size} is not divisible by {world} processes;"
            f" pick a multiple of {world}"
        )

    # refuse an existing run before the (possibly long) data load
    if resume is None and rank == 0 and (run_dir / CONFIG_FILE).exists():
        raise RunError(
            f"run directory {run_dir} already exists; continue it with"
            f" `tricl train --resume {run_dir}` or pick another --name/--seed"
        )
    # rank 0 loads (and on first use downloads) the data before the others read it
    if dist_utils.is_distributed() and rank != 0:
        torch.distributed.barrier()
    data = load_dataset(cfg.dataset, image_size=cfg.image_size)
    if dist_utils.is_distributed() and rank == 0:
        torch.distributed.barrier()
    if resume is None and rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "format": "tricl-run-1",
            "config": cfg.to_dict(),
            "dataset": {
                "in_channels": data.channels,
                "image_size": data.image_size,
                "classes": list(data.classes),
                "num_train": len(data.train_y),
                "num_test": len(data.test_y),
                "family": data.family,
            },
            "versions": _versions(),
            "git_commit": _git_commit(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(info, indent=2))
    if dist_utils.is_distributed():
        torch.distributed.barrier()

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    encoder = Encoder.from_config(cfg, data.channels).to(device)
    if encoder.importance_logits is not None and cfg.s_frozen:
        encoder.importance_logits.requires_grad_(False)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(encoder, cfg)

    steps_per_epoch = len(data.train_y) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(
            f"batch_size {cfg.batch_size} is larger than the {len(data.train_y)}"
            f" training images of {cfg.dataset}; lower --batch-size"
        )
    start_epoch = 0
    if resume is not None:
        recover_checkpoint(run_dir)
        start_epoch = _load_resume_state(run_dir, encoder, optimizer, device)
        if start_epoch >= cfg.epochs:
            return Run.load(run_dir)
    else:
        # a fresh run: per-rank augmentation streams that a seed fixes
        torch.manual_seed(cfg.seed * 1000 + rank)

    model: nn.Module = encoder
    if dist_utils.is_distributed():
        model = nn.parallel.DistributedDataParallel(
            encoder, device_ids=[device.index] if device.type == "cuda" else None
        )
    augment = build_augmentation(data).to(device)
    train_x = data.train_x.to(device)  # uint8 (N, C, H, W), stays on the training device
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    local_bs = cfg.batch_size // world
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else (contextlib.nullcontext())
    )

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total_steps,
            initial=start_epoch * steps_per_epoch,
            unit="step",
            desc=f"{run_dir.name}",
            dynamic_ncols=True,
        )
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        # data order depends only on (seed, epoch): a resumed run sees the same batches
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(len(train_x), generator=gen).to(device)
        sums = {"loss": 0.0, "contrastive": 0.0, "decorrelation": 0.0}
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for g in optimizer.param_groups:
                g["lr"] = (
                    cfg.lr * g.get("lr_mult", 1.0) * lr_factor(step, total_steps, warmup_steps)
                )
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            idx = idx[rank * local_bs : (rank + 1) * local_bs]  # this rank's share of the batch
            xb = train_x[idx]
            x1, x2 = augment(xb), augment(xb)  # (B_local, C, H, W) float each
            if device.type == "cuda":
                x1 = x1.contiguous(memory_format=torch.channels_last)
                x2 = x2.contiguous(memory_format=torch.channels_last)
            with amp:
                terms = step_loss(model, x1, x2, cfg)
            if not torch.isfinite(terms.total):
                if bar is not None:
                    bar.close()
                raise TrainingError(
                    f"loss became non-finite ({terms.total.item()}) at epoch {epoch + 1} step"
                    f" {i + 1}; lower --lr (now {cfg.lr}) or raise --temperature; {run_dir} keeps"
                    f" its last good checkpoint (epoch {epoch})"
                )
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            sums["loss"] += terms.total.item()
            sums["contrastive"] += terms.contrastive.item()
            sums["decorrelation"] += terms.decorrelation.item()
            if bar is not None:
                elapsed = time.perf_counter() - t0
                bar.set_postfix(
                    epoch=f"{epoch + 1}/{cfg.epochs}",
                    loss=f"{terms.total.item():.4f}",
                    con=f"{terms.contrastive.item():.4f}",
                    dec=f"{terms.decorrelation.item():.4f}",
                    img_s=f"{(i + 1) * cfg.batch_size / max(elapsed, 1e-9):.0f}",
                )
                bar.update(1)
        seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            **{k: v / steps_per_epoch for k, v in sums.items()},
            "lr": optimizer.param_groups[0]["lr"],
            **_s_stats(encoder),
            "seconds": seconds,
            "images_per_s": steps_per_epoch * cfg.batch_size / seconds,
        }
        if rank == 0:
            _save_epoch(run_dir, encoder, optimizer, epoch + 1, row, device)
        if dist_utils.is_distributed():
            torch.distributed.barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    if bar is not None:
        bar.close()
    return Run.load(run_dir)


def _save_epoch(
    run_dir: Path, encoder: Encoder, optimizer, epoch: int, row: dict, device: torch.device
) -> None:
    weights = weights_to_bytes(encoder.state_dict(), {"epoch": str(epoch), "format": "tricl-1"})
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "rng": _rng_state(device)}
    # metrics first: a crash after it re-runs this epoch, and resume trims rows past the checkpoint
    metrics = run_dir / METRICS_FILE
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    lines = [ln for ln in lines if ln.strip() and json.loads(ln).get("epoch", 0) < epoch]
    atomic_write_text(metrics, "\n".join([*lines, json.dumps(row)]) + "\n")
    write_checkpoint(run_dir, weights, state)


def _load_resume_state(run_dir: Path, encoder: Encoder, optimizer, device: torch.device) -> int:
    """Restore weights, optimizer and RNG from the last checkpoint; return the epochs done."""
    if not (run_dir / WEIGHTS_FILE).exists():
        return 0  # killed before the first checkpoint: start over
    if not (run_dir / STATE_FILE).exists():
        done = int(read_weights(run_dir / WEIGHTS_FILE)[1].get("epoch", 0))
        if done >= json.loads((run_dir / CONFIG_FILE).read_text())["config"]["epochs"]:
            return done  # a finished run shipped without its optimizer state
        raise RunError(
            f"cannot resume {run_dir}: {STATE_FILE} is missing after epoch {done};"
            " restore it, or train a new run with the same settings"
        )
    state = load_state_file(run_dir / STATE_FILE)
    if state.get("model_sha256") != file_sha256(run_dir / WEIGHTS_FILE):
        raise RunError(
            f"{run_dir / WEIGHTS_FILE} does not match {STATE_FILE} (tampered or mixed"
            " from another run); restore both files from one checkpoint, or retrain"
        )
    tensors, _ = read_weights(run_dir / WEIGHTS_FILE)
    encoder.load_state_dict(tensors)
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"], device)
    return int(state["epoch"])
