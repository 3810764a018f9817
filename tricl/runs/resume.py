"""Resuming a run: the training lock, recovering a torn checkpoint, reading the last one."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.config import RunConfig
from tricl.io import file_sha256
from tricl.runs.files import (
    CONFIG_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    RunError,
    load_state_file,
    read_weights,
    recover_checkpoint,
    weights_epoch,
)
from tricl.runs.record import read_run_info

if TYPE_CHECKING:
    import torch


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
