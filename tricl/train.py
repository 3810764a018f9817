"""train(config) -> Run: epochs, progress bar, AMP on GPU, DDP, atomic checkpoints and resume.

:func:`train` is three steps: :func:`setup` checks everything (config, device, dataset, batch size)
before the run directory is written, then :func:`train_epoch` and :func:`save_epoch` alternate.
Data order depends only on (seed, epoch) and the RNG state is checkpointed, so a resumed run ends
with the same weights as an uninterrupted one, bit for bit on a CPU.

The loop knows no method by name: the run's :class:`tricl.methods.Method` builds the model and
the loss, gives the parameter groups, computes a step's loss terms and runs its end-of-training
hook. What a batch is comes from the method's pair kind (:data:`PAIR_KINDS`, keyed by
:data:`tricl.methods.PAIRS`): ``views`` (two augmented views of each image) or ``caption`` (one
augmented view and its caption's token ids); a pair kind loads its data and makes a batch.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tricl import distributed as dist_utils
from tricl import runs
from tricl.catalog import parse_dataset
from tricl.config import RunConfig
from tricl.losses import LossTerms
from tricl.methods import Method, get_method
from tricl.optim import OPTIMIZER_BUILDERS, lr_factor
from tricl.runs import Run, default_runs_root


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became non-finite); the message names the fix."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks this rank's CUDA device when there is one, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            f"--device {name} asked for CUDA but none is available; use --device cpu"
        )
    if dev.type not in ("cpu", "cuda"):
        raise TrainingError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def default_run_name(cfg: RunConfig) -> str:
    """``<method>_<dataset>_<backbone>_k<k>_seed<seed>``.

    A dataset with a path contributes its kind and the path's last name, never the path itself
    (``folder:/d/pets`` -> ``folder-pets``, ``captions:/d/pairs.csv`` -> ``captions-pairs``), so
    the name is one folder and seeds of one dataset differ only in their seed.
    """
    if cfg.name:
        return cfg.name
    kind, arg = parse_dataset(cfg.dataset)
    ds = cfg.dataset
    if arg is not None:
        path = Path(arg)
        # a folder keeps its whole name (dots included); a file drops its extension
        ds = f"{kind}-" + ((path.name if kind == "folder" else path.stem) or "root")
    return f"{cfg.method}_{ds}_{cfg.backbone}_k{cfg.proj_dim}_seed{cfg.seed}"


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names (:data:`tricl.optim.OPTIMIZER_BUILDERS`), over the
    method's parameter groups (:meth:`tricl.methods.Method.param_groups`)."""
    groups = get_method(cfg.method).param_groups(model, cfg)
    return OPTIMIZER_BUILDERS[cfg.optimizer](groups, cfg.lr)


def _augmented_pairs(s: Session, passes: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Two augmented views of every train image in batches, ``passes`` times over the train set
    (what a method's end-of-training hook averages over). Shapes: (B, C, H, W) each."""
    for _ in range(passes):
        for start in range(0, len(s.train_x), s.cfg.batch_size):
            xb = s.train_x[start : start + s.cfg.batch_size]
            yield s.augment(xb), s.augment(xb)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def dataset_facts(data) -> dict[str, Any]:
    """What config.json records about the training data (see :func:`tricl.runs.create_run_dir`)."""
    return {
        "in_channels": data.channels,
        "image_size": data.image_size,
        "classes": list(data.classes),
        "num_train": len(data.train_y),
        "num_test": len(data.test_y),
        "family": data.family,
    }


@dataclass
class Session:
    """A training run in progress: what :func:`setup` built and the epochs read and update."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    method: Method
    encoder: nn.Module  # Encoder, or ImageTextModel for caption methods
    model: nn.Module  # the encoder, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[..., LossTerms]  # the method's loss, built (and validated) once
    augment: nn.Module
    train_x: Tensor  # uint8 (N, C, H, W) on the training device
    steps_per_epoch: int
    start_epoch: int
    rank: int
    world: int
    pair: PairKind
    captions: Tensor | None = None  # caption methods: int64 token ids (N, L) on the device
    bar: Any = None
    hold: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # the training lock


@dataclass
class TrainData:
    """What a pair kind's loader gives :func:`setup`.

    Attributes:
        images: the :class:`tricl.data.ImageData` (train images, classes, augmentation family).
        context: keyword arguments of the method's ``build_model`` (e.g. ``text_config``).
        files: files the new run directory gets besides config.json (name -> bytes).
        info: more top-level keys for config.json (e.g. ``text_encoder``).
        captions: token ids of the training captions, int64. Shape: (N, L); None for views.
    """

    images: Any
    context: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    captions: Tensor | None = None


@dataclass(frozen=True)
class PairKind:
    """What a training pair is (:data:`tricl.methods.PAIRS`): its data and its batches.

    Attributes:
        load: ``load(cfg, resume_dir, progress) -> TrainData``; ``resume_dir`` is the run being
            resumed (its saved tokenizer is reused), else None.
        batch: ``batch(session, idx)``, the batch of this rank's samples ``idx`` that the
            method's ``loss_terms`` takes (augmented outside autocast).
    """

    load: Callable[[RunConfig, Path | None, bool], TrainData]
    batch: Callable[[Session, Tensor], tuple[Tensor, Tensor]]


def _load_images(cfg: RunConfig, resume_dir: Path | None, progress: bool) -> TrainData:
    from tricl.data import load_dataset

    return TrainData(load_dataset(cfg.dataset, image_size=cfg.image_size, progress=progress))


def _views_batch(s: Session, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Two augmented views of each image. Shapes: (B_local, C, H, W) float each."""
    xb = s.train_x[idx]
    x1, x2 = s.augment(xb), s.augment(xb)
    return (
        x1.contiguous(memory_format=torch.channels_last),
        x2.contiguous(memory_format=torch.channels_last),
    )


def _caption_batch(s: Session, idx: Tensor) -> tuple[Tensor, Tensor]:
    """One augmented view of each image (B_local, C, H, W) and its caption's token ids
    (B_local, L'), the padding past the longest caption trimmed (the text encoder ignores it)."""
    from tricl.text.tokenizer import trim_padding

    x = s.augment(s.train_x[idx])  # (B_local, C, H, W) float
    return x.contiguous(memory_format=torch.channels_last), trim_padding(s.captions[idx])


def _load_captions(cfg: RunConfig, resume_dir: Path | None, progress: bool) -> TrainData:
    """Images with captions, the run's BPE tokenizer (trained on the training captions, or the
    saved one on resume) and the text encoder config it fixes."""
    from tricl.text.captions import load_image_text
    from tricl.text.encoder import text_encoder_config
    from tricl.text.tokenizer import TOKENIZER_FILE, train_tokenizer

    data = load_image_text(cfg.dataset, image_size=cfg.image_size)
    if resume_dir is not None:
        text_config = runs.read_text_config(resume_dir)
        tokenizer = runs.load_run_tokenizer(resume_dir, text_config)
    else:
        tokenizer = train_tokenizer(
            data.train_captions, cfg.text_vocab_size, cfg.text_context_length
        )
        text_config = text_encoder_config(
            tokenizer, cfg.proj_dim, width=cfg.text_width, layers=cfg.text_layers,
            heads=cfg.text_heads, proj_hidden_dim=cfg.proj_hidden_dim,
        )  # fmt: skip
    encoded = tokenizer.encode(data.train_captions)
    if encoded.truncated and progress:
        print(f"tricl train: {encoded.summary()}; raise --text-context-length to keep them whole")
    return TrainData(
        data.images,
        context={"text_config": text_config},
        files={TOKENIZER_FILE: tokenizer.tokenizer.to_str().encode()},
        info={"text_encoder": asdict(text_config)},
        captions=encoded.ids,
    )


PAIR_KINDS: dict[str, PairKind] = {
    "views": PairKind(_load_images, _views_batch),
    "caption": PairKind(_load_captions, _caption_batch),
}


def _target(
    cfg: RunConfig | None, runs_root: str | Path | None, resume: str | Path | None
) -> tuple[RunConfig, Path]:
    """The run's config and directory; reads config.json on resume, writes nothing."""
    if resume is not None:
        run_dir = Path(resume)
        if (run_dir / runs.CONFIG_FILE).is_file():
            return runs.read_run_info(run_dir)[1], run_dir
        runs.open_for_resume(run_dir)  # raises the one-line reason
    if cfg is None:
        raise ValueError("train() needs a RunConfig or resume=RUN_DIR")
    root = Path(runs_root) if runs_root is not None else default_runs_root()
    run_dir = root / default_run_name(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # before the process group exists
        runs.ensure_new_run(
            run_dir,
            f"continue it with `tricl train --resume {run_dir}` or pick another --name/--seed",
        )
    return cfg, run_dir


def _checkpoint(run_dir: Path, rank: int) -> runs.ResumePoint:
    """Rank 0 recovers an interrupted write first; the other ranks then read the result."""
    if rank == 0:
        point = runs.open_for_resume(run_dir)
    if dist_utils.is_distributed():
        torch.distributed.barrier()
    return point if rank == 0 else runs.open_for_resume(run_dir)


def _load_data(
    cfg: RunConfig, kind: PairKind, resume_dir: Path | None, progress: bool
) -> TrainData:
    """Load the data (rank 0 first: it may download) and check the batch against it."""
    rank, world = dist_utils.rank(), dist_utils.world_size()
    if cfg.batch_size % world:
        raise TrainingError(
            f"batch_size {cfg.batch_size} is not divisible by {world} processes;"
            f" pick a multiple of {world}"
        )
    if dist_utils.is_distributed() and rank != 0:
        torch.distributed.barrier()
    data = kind.load(cfg, resume_dir, progress and rank == 0)
    if dist_utils.is_distributed() and rank == 0:
        torch.distributed.barrier()
    if len(data.images.train_y) // cfg.batch_size == 0:
        raise TrainingError(
            f"batch_size {cfg.batch_size} is larger than the {len(data.images.train_y)}"
            f" training images of {cfg.dataset}; lower --batch-size"
        )
    return data


def setup(
    cfg: RunConfig | None,
    *,
    runs_root: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> Session:
    """Check everything, then create (or reopen) the run directory and build the model.

    Nothing is written before the config, device, dataset and batch size have passed their checks.
    The session holds the run's training lock (:func:`tricl.runs.training_lock`) from before
    its checkpoint is read until :func:`train` ends, so no second process trains it meanwhile.
    """
    cfg, run_dir = _target(cfg, runs_root, resume)
    if not get_method(cfg.method).trainable:
        raise TrainingError(
            f"{cfg.method!r} runs are encoders opened with tricl import and cannot be trained"
            " here; train a new run with a training method (e.g. --method simclr)"
        )
    device = resolve_device(cfg.device)
    dist_utils.init_from_env(device)
    hold = contextlib.ExitStack()  # the run's training lock, released by train() or on error
    try:
        session = _open_session(cfg, run_dir, device, resume, progress, hold)
    except BaseException:
        hold.close()
        raise
    session.hold = hold
    return session


def _open_session(
    cfg: RunConfig,
    run_dir: Path,
    device: torch.device,
    resume: str | Path | None,
    progress: bool,
    hold: contextlib.ExitStack,
) -> Session:
    """:func:`setup` after the device: lock, reopen or create the run, then build the model."""
    from tricl.data import build_augmentation

    world, rank = dist_utils.world_size(), dist_utils.rank()
    if resume is not None and rank == 0:  # before recovering or reading its checkpoint
        hold.enter_context(runs.training_lock(run_dir))
    point = _checkpoint(run_dir, rank) if resume is not None else None
    method = get_method(cfg.method)
    kind = PAIR_KINDS[method.pair]
    data = _load_data(cfg, kind, run_dir if point is not None else None, progress)
    if point is None and rank == 0:
        facts = dataset_facts(data.images)
        runs.create_run_dir(
            run_dir.parent, cfg, facts, name=run_dir.name, info=data.info, files=data.files
        )
        hold.enter_context(runs.training_lock(run_dir))
    if dist_utils.is_distributed():
        torch.distributed.barrier()

    encoder, optimizer = _build_model(cfg, method, data, device)
    augment = build_augmentation(data.images).to(device)
    # per-rank augmentation streams that a seed fixes; a checkpoint's RNG state replaces it, so a
    # run resumed before its first checkpoint trains exactly like a fresh one
    torch.manual_seed(cfg.seed * 1000 + rank)
    start_epoch = 0
    if point is not None and point.state is not None:
        encoder.load_state_dict(point.weights)
        optimizer.load_state_dict(point.state["optimizer"])
        _set_rng_state(point.state["rng"], device)
        start_epoch = point.epoch
    if point is not None and rank == 0:
        runs.trim_metrics(run_dir, start_epoch)
    model: nn.Module = encoder
    if dist_utils.is_distributed():
        model = nn.parallel.DistributedDataParallel(
            encoder, device_ids=[device.index] if device.type == "cuda" else None
        )
    steps = len(data.images.train_y) // cfg.batch_size
    captions = data.captions.to(device) if data.captions is not None else None
    session = Session(
        cfg, run_dir, device, method, encoder, model, optimizer, method.build_loss(cfg), augment,
        data.images.train_x.to(device), steps, start_epoch, rank, world, kind, captions,
    )  # fmt: skip
    if progress and rank == 0 and start_epoch < cfg.epochs:
        session.bar = _progress_bar(session)
    return session


def _build_model(
    cfg: RunConfig, method: Method, data: TrainData, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The method's modules (identical initial weights on every rank) and their optimizer."""
    torch.manual_seed(cfg.seed)
    encoder = method.build_model(cfg, data.images.channels, **data.context).to(device)
    # channels-last convolutions are faster on a GPU and on a CPU (oneDNN): a bf16 step of the
    # small CNN takes 0.60x the time of the default layout here (benchmarks/bench_train.py [6])
    encoder = encoder.to(memory_format=torch.channels_last)
    return encoder, OPTIMIZER_BUILDERS[cfg.optimizer](method.param_groups(encoder, cfg), cfg.lr)


def _progress_bar(s: Session):
    from tqdm.auto import tqdm

    return tqdm(
        total=s.cfg.epochs * s.steps_per_epoch,
        initial=s.start_epoch * s.steps_per_epoch,
        unit="step",
        desc=s.run_dir.name,
        dynamic_ncols=True,
    )


def train_step(s: Session, epoch: int, i: int, perm: Tensor, amp) -> LossTerms:
    """One optimizer step on batch ``i`` of the epoch's permutation."""
    cfg = s.cfg
    total_steps = cfg.epochs * s.steps_per_epoch
    step = epoch * s.steps_per_epoch + i
    factor = lr_factor(step, total_steps, cfg.warmup_epochs * s.steps_per_epoch)
    for g in s.optimizer.param_groups:
        g["lr"] = cfg.lr * g.get("lr_mult", 1.0) * factor
    local_bs = cfg.batch_size // s.world
    idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
    idx = idx[s.rank * local_bs : (s.rank + 1) * local_bs]  # this rank's share of the batch
    batch = s.pair.batch(s, idx)  # augmented outside autocast
    with amp:
        terms = s.method.loss_terms(s.model, batch, s.loss_fn)
    if not torch.isfinite(terms.total):
        raise TrainingError(
            f"loss became non-finite ({terms.total.item()}) at epoch {epoch + 1} step {i + 1};"
            f" lower --lr (now {cfg.lr}) or raise --temperature; {s.run_dir} keeps its last good"
            f" checkpoint (epoch {epoch})"
        )
    s.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    s.optimizer.step()
    return terms


def amp_context(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Mixed precision of a training step (``RunConfig.precision``).

    'auto' is bf16 autocast on CUDA and nothing on a CPU; 'bf16' is bf16 autocast on any device
    (no loss scaling needed, unlike fp16); 'fp32' is nothing. The losses compute in float32
    inside it (tricl.losses)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _postfix(
    s: Session, epoch: int, sums: dict[str, float], steps: int, seconds: float
) -> dict[str, str]:
    """The progress bar's numbers: the epoch's running means of the loss and of the terms the
    method has (``Method.terms``), so the bar's last values are the epoch means that
    metrics.jsonl and the closing summary show."""
    out = {"epoch": f"{epoch + 1}/{s.cfg.epochs}", "mean_loss": f"{sums['loss'] / steps:.4f}"}
    out |= {f"mean_{short}": f"{sums[name] / steps:.4f}" for name, short in s.method.terms}
    return out | {"img_s": f"{steps * s.cfg.batch_size / max(seconds, 1e-9):.0f}"}


def train_epoch(s: Session, epoch: int) -> dict[str, Any]:
    """Train epoch ``epoch`` (0-based) and return its metrics row."""
    cfg = s.cfg
    t0 = time.perf_counter()
    # data order depends only on (seed, epoch): a resumed run sees the same batches
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = torch.randperm(len(s.train_x), generator=gen).to(s.device)
    amp = amp_context(s.device, cfg.precision)
    # every row has all three terms (metrics.jsonl keeps one format); the bar shows the method's
    sums = {"loss": 0.0, "contrastive": 0.0, "decorrelation": 0.0}
    s.model.train()
    for i in range(s.steps_per_epoch):
        terms = train_step(s, epoch, i, perm, amp)
        for k in sums:
            sums[k] += getattr(terms, "total" if k == "loss" else k).item()
        if s.bar is not None:
            s.bar.set_postfix(_postfix(s, epoch, sums, i + 1, time.perf_counter() - t0))
            s.bar.update(1)
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        **{k: v / s.steps_per_epoch for k, v in sums.items()},
        "lr": s.optimizer.param_groups[0]["lr"],
        **s.method.train_stats(s.encoder),
        "seconds": seconds,
        "images_per_s": s.steps_per_epoch * cfg.batch_size / seconds,
    }


def save_epoch(s: Session, row: dict[str, Any], checkpoint: bool = True) -> None:
    """Log the epoch ``row`` ends and, if ``checkpoint``, save weights and state (rank 0 writes;
    every rank waits for it).

    Without a checkpoint only the metrics line is written: a run killed later resumes from its
    last checkpoint, whose resume drops the lines past it (:func:`tricl.runs.trim_metrics`) and
    trains those epochs again, exactly as before (data order and RNG state come from the epoch).
    """
    if s.rank == 0:
        if checkpoint:
            state = {"optimizer": s.optimizer.state_dict(), "rng": _rng_state(s.device)}
            runs.save_epoch(s.run_dir, s.encoder.state_dict(), state, row)
        else:
            runs.log_epoch(s.run_dir, row)
    if dist_utils.is_distributed():
        torch.distributed.barrier()


def checkpoint_due(cfg: RunConfig, epochs_done: int) -> bool:
    """Whether the epoch that makes ``epochs_done`` is checkpointed: every ``save_every``-th
    epoch, and the last."""
    return epochs_done % cfg.save_every == 0 or epochs_done >= cfg.epochs


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
        runs_root: folder that holds run directories (default :func:`tricl.runs.default_runs_root`:
            ``$TRICL_RUNS`` or ``./runs``).
        resume: an existing run directory to continue from its last finished epoch.
        progress: draw progress bars (dataset loading; loss terms, images/s, ETA).
        stop_after_epoch: stop (as if killed) once this epoch is checkpointed (it is, whatever
            ``save_every`` says); for tests and for training in slices.

    Returns:
        The :class:`~tricl.runs.Run` (complete, or partial when ``stop_after_epoch`` stopped it).

    Raises:
        RunError, ConfigError, DatasetError, TrainingError: one-line reasons with the fix.
    """
    s = setup(cfg, runs_root=runs_root, resume=resume, progress=progress)
    if s.start_epoch >= s.cfg.epochs and s.rank == 0:
        print(
            f"tricl train: {s.run_dir} was already complete ({s.cfg.epochs}/{s.cfg.epochs}"
            " epochs); nothing to train"
        )
    try:
        for epoch in range(s.start_epoch, s.cfg.epochs):
            row = train_epoch(s, epoch)
            if epoch + 1 == s.cfg.epochs:
                s.method.end_of_training(s.encoder, partial(_augmented_pairs, s))
            stop = stop_after_epoch is not None and epoch + 1 >= stop_after_epoch
            save_epoch(s, row, checkpoint=stop or checkpoint_due(s.cfg, epoch + 1))
            if stop:
                break
    finally:
        if s.bar is not None:
            s.bar.close()
        s.hold.close()
    return Run.load(s.run_dir)
