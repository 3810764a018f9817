"""Why trained feature axes are not identifiable: the loss's rotation drive against batch noise.

Across seeds the top features of a run span the same subspace but do not match rank for rank, so
the objective leaves the *rotation* among them loosely pinned. This module measures how loosely.
For two adjacent features of a trained run (ranks r and r + 1 in its importance order) it rotates
the pair of projector outputs by a Givens angle theta in BOTH views and asks the run's own loss
how much worse (or better) that is:

    D_b(theta) = L_b(theta) - L_b(0)         (the same batch b of augmented pairs on both sides)
    drive = mean_b D_b,   noise = std_b D_b,   snr = |drive| / noise
    steps_needed = (noise / drive)^2          (batches SGD must average before the sign shows)

``steps_needed`` is the number of batches whose mean D has a standard error equal to the drive
(snr 1): far more than the run trained for means SGD never saw which rotation the loss prefers;
the rotation then stays where initialisation and noise left it, and seeds disagree. SimCLR's drive
is exactly zero (NT-Xent of L2-normalised rows is invariant to every rotation of z); the tri-factor
losses (triCL, tri-spectral) feel a rotation only through the spread of S (their decorrelation
terms are rotation invariant too); NeuralEF-CLR's per-feature normalisation and ordered penalty
are not rotation invariant, but its value is symmetric under a swap of two adjacent features (the
order lives in its stop-gradients). So the slope ``dL_b/dtheta`` at each angle, through the loss's
own autograd (the force SGD applies), is measured beside the finite difference, with its own noise
and ``slope_steps = (slope_noise / slope)^2``.

    python -m tricl.experiments.rotation_snr RUN [RUN ...] --out /tmp/snr_out
    python -m tricl.experiments.rotation_snr RUN --batch-sizes 256 1024   # noise vs batch size
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tricl.experiments.rotation_report import (
    angle_summary,
    fmt_table,
    replace_section,
    rotation_snr_markdown,
    summarize,
    sweep_summary,
)
from tricl.runs import Run, RunError

if TYPE_CHECKING:
    from torch import Tensor, nn

ANGLES = (math.pi / 4, math.pi / 2)
# The losses compute in float32 (tricl.losses), so a paired difference cannot resolve changes
# below a few float32 ulps of the loss; a pair whose every |D_b| stays under this fraction of the
# loss has no drive the loss can express (SimCLR: exactly none) and gets steps_needed = inf.
ROUNDOFF = 1e-6


class SNRError(ValueError):
    """A measurement setting is invalid; the one-line message names it and the fix."""


def givens(z: Tensor, a: int, b: int, theta: float | Tensor) -> Tensor:
    """Rotates columns ``a`` and ``b`` of ``z`` by ``theta`` (radians) in their plane.

    ``z'_a = cos(theta) z_a - sin(theta) z_b`` and ``z'_b = sin(theta) z_a + cos(theta) z_b``;
    every other column is kept. At theta = pi/2 the columns swap (``z'_a = -z_b``, ``z'_b = z_a``),
    and a sign flip of a whole column changes none of the losses here.

    Args:
        z: features, one row per sample. Shape: (N, k).
        a: first column.
        b: second column (not ``a``).
        theta: the angle; a tensor that requires grad gives the loss's slope in theta.

    Returns:
        A new tensor. Shape: (N, k).
    """
    import torch

    th = torch.as_tensor(theta, dtype=z.dtype)
    c, s = torch.cos(th), torch.sin(th)
    out = z.clone()
    out[:, a] = c * z[:, a] - s * z[:, b]  # (N,)
    out[:, b] = s * z[:, a] + c * z[:, b]  # (N,)
    return out


@dataclass(frozen=True)
class BatchDrive:
    """One batch's loss and how rotations change it.

    Attributes:
        loss: L(0), the loss of the trained features.
        diff: ``L(theta) - L(0)`` per pair and angle. Shape: (P, T).
        slope: ``dL/dtheta`` at each angle, through the loss's own autograd (so NeuralEF-CLR's
            stop-gradients hold: this is the force SGD applies, where the value's change is not).
            Shape: (P, T).
    """

    loss: float
    diff: np.ndarray
    slope: np.ndarray


def paired_differences(
    loss_fn: Any,
    z1: Tensor,
    z2: Tensor,
    importance: Tensor | None,
    slots: Sequence[tuple[int, int]],
    angles: Sequence[float],
) -> BatchDrive:
    """The loss of one batch, its change and its slope under every (pair, angle) rotation of both
    views.

    S is not rotated: slot a keeps s_a, so a rotation moves the features between importance slots.

    Args:
        loss_fn: the run's loss, ``loss_fn(z1, z2, importance) -> LossTerms``.
        z1: raw projector outputs of view 1 (no grad). Shape: (B, k).
        z2: raw projector outputs of view 2, row i the same image. Shape: (B, k).
        importance: the diagonal of S, or None for a method without S. Shape: (k,).
        slots: the feature columns (a, b) of each pair.
        angles: rotation angles in radians.

    Returns:
        The :class:`BatchDrive`, P = len(slots), T = len(angles).
    """
    import torch

    with torch.no_grad():
        base = float(loss_fn(z1, z2, importance).total)
    diff, slope = np.empty((len(slots), len(angles))), np.empty((len(slots), len(angles)))
    with torch.enable_grad():  # also when the caller runs under no_grad
        for p, (a, b) in enumerate(slots):
            for t, angle in enumerate(angles):
                theta = torch.tensor(float(angle), requires_grad=True)
                r1, r2 = givens(z1, a, b, theta), givens(z2, a, b, theta)  # (B, k) each
                loss = loss_fn(r1, r2, importance).total
                (grad,) = torch.autograd.grad(loss, theta)
                diff[p, t], slope[p, t] = float(loss.detach()) - base, float(grad)
    return BatchDrive(base, diff, slope)


@dataclass(frozen=True, eq=False)
class Probe:
    """A trained run made ready for measurement (built once; reused across batch sizes).

    Attributes:
        run: the run.
        arm: its recipe's name, the first part of the run's name (``tricl-whiten`` for a
            ``tricl-whiten_...`` run; the method for a default name).
        encoder: its image encoder, in eval mode.
        loss_fn: its own loss, ``build_loss(run.config)``.
        importance: the diagonal of S, or None. Shape: (k,).
        augment: its training augmentation (uint8 views in, normalised float out).
        train_x: its train split, uint8. Shape: (N, C, H, W).
        order: feature columns in the run's importance order. Shape: (k,).
        steps_trained: optimizer steps the weights had: epochs done x steps per epoch.
    """

    run: Run
    arm: str
    encoder: nn.Module
    loss_fn: Any
    importance: Tensor | None
    augment: nn.Module
    train_x: Tensor
    order: np.ndarray
    steps_trained: int


def prepare(run: Run, data: Any = None) -> Probe:
    """Load what :func:`rotation_drive` needs from a run (``data``: its ImageData, if loaded)."""
    from tricl.analysis.features import extract
    from tricl.data import build_augmentation
    from tricl.experiments.common import importance_order
    from tricl.losses import build_loss

    if run.image_text:
        raise SNRError(f"{run.path} is a {run.config.method} run; pass a two-view image run")
    data = run.load_data() if data is None else data
    encoder = run.encoder()  # eval mode
    z, _ = extract(encoder, data.train_x, data.preprocess)  # (N, k)
    s = encoder.importance()
    steps_per_epoch = len(data.train_y) // run.config.batch_size
    return Probe(
        run=run,
        arm=run.name.split("_", 1)[0],
        encoder=encoder,
        loss_fn=build_loss(run.config),
        importance=None if s is None else s.detach(),
        augment=build_augmentation(data),
        train_x=data.train_x,
        order=importance_order(run, z),
        steps_trained=run.epochs_done * steps_per_epoch,
    )


def _batches(
    probe: Probe, batches: int, batch_size: int, seed: int, progress: bool
) -> Iterator[tuple[Tensor, Tensor]]:
    """Fresh augmented pairs: ``batches`` times two views of ``batch_size`` distinct train images,
    through the encoder once each. Yields ``(z1, z2)``, Shape: (B, k) each."""
    import torch
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    # the augmentation draws from torch's global RNG: seed it for repeatable views, and give the
    # caller's stream back afterwards
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in tqdm(range(batches), desc=probe.run.name, disable=not progress, leave=False):
            idx = torch.randperm(len(probe.train_x), generator=gen)[:batch_size]  # (B,)
            xb = probe.train_x[idx]  # (B, C, H, W) uint8
            # no_grad, not inference_mode: the rotations' slopes need autograd on these features;
            # and not around the yield, which would leave the caller in no_grad
            with torch.no_grad():
                x = torch.cat([probe.augment(xb), probe.augment(xb)])  # (2B, C, H, W)
                z = probe.encoder(x).float()  # (2B, k)
            yield z.chunk(2)  # (B, k) each


def _check(probe: Probe, ranks: int, angles: Sequence[float], batches: int, batch: int) -> None:
    k, n = len(probe.order), len(probe.train_x)
    if not 2 <= ranks <= k:
        raise SNRError(f"ranks must be in 2..{k} (the run's features), got {ranks}")
    if batches < 2:
        raise SNRError(f"batches must be >= 2 to measure the noise, got {batches}; try 48")
    if not 2 <= batch <= n:
        raise SNRError(f"batch size must be in 2..{n} (the train images), got {batch}")
    if not angles or not all(math.isfinite(t) and t != 0 for t in angles):
        raise SNRError(f"angles must be finite and non-zero, got {list(angles)}; try pi/4 pi/2")


def _measure(
    probe: Probe,
    *,
    ranks: int,
    angles: Sequence[float],
    batches: int,
    batch_size: int | None,
    seed: int,
    progress: bool,
) -> pd.DataFrame:
    """:func:`rotation_drive` on a prepared run."""
    batch = probe.run.config.batch_size if batch_size is None else batch_size
    _check(probe, ranks, angles, batches, batch)
    slots = [(int(probe.order[r]), int(probe.order[r + 1])) for r in range(ranks - 1)]
    drives = [
        paired_differences(probe.loss_fn, z1, z2, probe.importance, slots, angles)
        for z1, z2 in _batches(probe, batches, batch, seed, progress)
    ]
    return _frame(probe, drives, slots, angles, batch)


def _stats(values: np.ndarray, floor: float) -> tuple[float, float, bool, float]:
    """Mean, std, whether any value is above the float32 ``floor``, and (std / mean)^2 (inf when
    none is). Shape: (n,)."""
    mean, std = float(values.mean()), float(values.std(ddof=1))
    felt = bool(np.abs(values).max() > floor)
    return mean, std, felt, (std / mean) ** 2 if felt and mean != 0 else math.inf


def _frame(
    probe: Probe,
    drives: list[BatchDrive],
    slots: list[tuple[int, int]],
    angles: Sequence[float],
    batch: int,
) -> pd.DataFrame:
    """One row per (pair, angle) from every batch's :class:`BatchDrive`."""
    s = None if probe.importance is None else probe.importance.numpy()
    losses = np.array([d.loss for d in drives])  # (n,)
    diffs = np.stack([d.diff for d in drives])  # (n, P, T)
    slopes = np.stack([d.slope for d in drives])  # (n, P, T)
    floor = ROUNDOFF * float(np.abs(losses).mean())
    rows = []
    for p, (a, b) in enumerate(slots):
        for t, theta in enumerate(angles):
            drive, noise, felt, steps = _stats(diffs[:, p, t], floor)
            slope, slope_noise, _, slope_steps = _stats(slopes[:, p, t], floor)
            row = {
                "run": probe.run.name, "arm": probe.arm, "method": probe.run.config.method,
                "seed": probe.run.config.seed, "rank": p + 1, "pair": f"{p + 1}-{p + 2}",
                "slot_a": a, "slot_b": b, "theta": float(theta),
                "angle": f"{math.degrees(theta):g}°", "batch_size": batch,
                "batches": len(drives), "loss": float(losses.mean()), "drive": drive,
                "noise": noise, "snr": abs(drive) / noise if felt and noise > 0 else 0.0,
                "steps_needed": steps, "steps_trained": probe.steps_trained,
                "train_images": len(probe.train_x), "felt": felt, "slope": slope,
                "slope_noise": slope_noise, "slope_steps": slope_steps,
            }  # fmt: skip
            if s is not None:
                row |= {"s_a": float(s[a]), "s_b": float(s[b])}
            rows.append(row)
    return pd.DataFrame(rows)


def rotation_drive(
    run: Run,
    *,
    ranks: int = 8,
    angles: Sequence[float] = ANGLES,
    batches: int = 48,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    data: Any = None,
) -> pd.DataFrame:
    """How strongly the run's loss prefers its trained rotation of adjacent features, and how
    noisy that preference is from batch to batch.

    For each adjacent pair of ranks (r, r + 1), r = 1..ranks-1, of the run's importance order
    (:func:`tricl.experiments.common.importance_order` on its train features: S, index or
    variance), the two columns of the raw projector outputs of both views are rotated by each
    angle (:func:`givens`; S stays with its slot) and the run's own loss
    (``build_loss(run.config)``, with ``encoder.importance()``) is evaluated on every batch.

    Estimator and assumptions:

    - Paired differences: ``D_b = L_b(theta) - L_b(0)`` on the same batch, so the batch's own
      loss level (which images, which augmentations) cancels and only the noise in the
      *preference* remains. That is the noise SGD sees: a step follows one batch's gradient.
    - ``steps_needed = (noise / drive)^2`` assumes independent batches (fresh images and views
      each time) and counts batches until the mean's standard error equals the drive. SGD does
      not take finite differences but follows slopes; along the path from 0 to theta the mean
      slope is ``D / theta`` and its batch noise ``std D / theta``, so the ratio is the same.
      Drive and noise are those of the final weights; earlier in training they may differ.
    - Eval mode, no gradients: the features are those of the final weights (batch norm on its
      running statistics, so a sample's features do not depend on its batch mates), one forward
      pass per batch; the rotations act on those features, so the CNN is not re-run per angle.
    - Slopes: NeuralEF-CLR's value does not change when two adjacent features swap (its
      ordering lives in stop-gradients, not in the value), so for it the finite difference at
      90 degrees is zero although SGD is pushed; the slope ``dL_b/dtheta`` at each angle, through
      the loss's own autograd, is that push, reported with its own noise and steps.
    - float32: the losses compute in float32; a pair whose every ``|D_b|`` is below
      :data:`ROUNDOFF` x the loss is not felt by the loss at all (``felt`` False, snr 0,
      steps_needed inf). SimCLR is exactly there.

    Args:
        run: a trained two-view image run.
        ranks: top features whose adjacent pairs are measured (ranks - 1 pairs).
        angles: rotation angles in radians (pi/2 swaps the two features).
        batches: batches of fresh augmented pairs to average over (>= 2).
        batch_size: images per batch (default: the run's own training batch size).
        seed: fixes the batches' images and augmentations.
        progress: draw a progress bar over batches.
        data: the run's ImageData if already loaded (runs of one dataset share it).

    Returns:
        One row per (pair, angle): run, arm, method, seed, rank (r), pair ("r-(r+1)"), slot_a,
        slot_b (the feature columns), theta, angle, batch_size, batches, loss (mean L_b(0)),
        drive, noise, snr, steps_needed, steps_trained, train_images, felt, slope (mean
        dL_b/dtheta at the angle: > 0 pushes back towards the trained rotation), slope_noise,
        slope_steps ((slope_noise / slope)^2); and s_a, s_b for a run with S.

    Raises:
        SNRError: for settings the run cannot meet (ranks beyond k, one batch, batch > N, an
            image-text run).
    """
    probe = prepare(run, data)
    return _measure(
        probe, ranks=ranks, angles=angles, batches=batches, batch_size=batch_size, seed=seed,
        progress=progress,
    )  # fmt: skip


def batch_size_sweep(
    run: Run, batch_sizes: Sequence[int], *, data: Any = None, **kwargs: Any
) -> pd.DataFrame:
    """:func:`rotation_drive` at each batch size (the run prepared once); rows of all of them.

    ``kwargs`` are :func:`rotation_drive`'s (ranks, angles, batches, seed, progress).
    """
    probe = prepare(run, data)
    kwargs = {"ranks": 8, "angles": ANGLES, "batches": 48, "seed": 0, "progress": False} | kwargs
    return pd.concat([_measure(probe, batch_size=b, **kwargs) for b in batch_sizes])


# ------------------------------------------------------------------------------ command line

HELP = """\
Measures why a run's trained feature axes are not pinned down: rotate two adjacent features
(ranks r, r+1 of the run's importance order: S, index or variance) by an angle in both views and
compare the run's own loss on the same batch of fresh augmented pairs, D_b = L_b(theta) - L_b(0).

  drive          mean of D_b over batches (> 0: the loss prefers the trained rotation)
  noise          std of D_b over batches (what one SGD step sees of that preference)
  snr            |drive| / noise
  steps_needed   (noise / drive)^2: batches SGD must average before the drive's sign shows;
                 inf where the loss does not feel the rotation (SimCLR: exactly invariant)
  steps_trained  epochs x steps per epoch the run trained for
  resolved       share of pairs with steps_needed < steps_trained
  slope          mean dL_b/dtheta at the angle through the loss's autograd (the push SGD feels;
                 > 0: back towards the trained rotation); slope_steps = (std / mean)^2 of it.
                 NeuralEF-CLR needs it: its value does not change when two features swap.

--batch-sizes repeats the measurement at several batch sizes; the noise of independent samples
falls as B^-0.5, and the fitted exponents tell how much a larger batch would help.
"""


def _parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m tricl.experiments.rotation_snr",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="trained two-view runs")
    p.add_argument("--ranks", type=int, default=8, help="top ranks whose adjacent pairs rotate")
    p.add_argument(
        "--batches", type=int, default=48,
        help="batches per measurement (48: the noise to ~10%%; fewer makes steps_needed noisy)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None, help="default: each run's own")
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=None, metavar="B",
        help="also measure at these batch sizes (e.g. 256 1024) to fit the noise exponent",
    )  # fmt: skip
    p.add_argument(
        "--sweep", type=Path, nargs="+", default=None, metavar="RUN",
        help="the RUNs --batch-sizes measures (default: all; each takes about B/256 x a run)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="fixes the batches' images and views")
    p.add_argument(
        "--out", type=Path, default=None,
        help="write RESULTS.md (this section, replaced in place), figures/ and the CSVs here",
    )  # fmt: skip
    p.add_argument(
        "--report", type=Path, default=None, metavar="DIR",
        help="measure nothing: rewrite DIR's report from the CSVs an earlier --out DIR wrote",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    return p


def _read_csvs(out: Path) -> tuple[list[pd.DataFrame], pd.DataFrame | None]:
    """The frames and sweep an earlier ``--out`` wrote."""
    path = out / "rotation_drive.csv"
    if not path.is_file():
        raise SNRError(f"{path} does not exist; measure first with RUN ... --out {out}")
    table = pd.read_csv(path)
    sweep_path = out / "batch_sweep.csv"
    sweep = pd.read_csv(sweep_path) if sweep_path.is_file() else None
    return [part for _, part in table.groupby("run", sort=False)], sweep


def _measure_all(args: Any) -> tuple[list[pd.DataFrame], pd.DataFrame | None]:
    """Every run at its batch size, and the --sweep runs at every --batch-sizes."""
    sweep_runs = {p.resolve() for p in (args.sweep or args.runs)} if args.batch_sizes else set()
    unknown = sweep_runs - {p.resolve() for p in args.runs}
    if unknown:
        raise SNRError(f"--sweep {sorted(unknown)[0]} is not among the RUNs; list it there too")
    loaded: dict[tuple[str, int], Any] = {}  # runs of one dataset share its images
    frames, swept = [], []
    kw = {"ranks": args.ranks, "angles": ANGLES, "batches": args.batches, "seed": args.seed}
    kw["progress"] = not args.no_progress
    for path in args.runs:
        run = Run.load(path)
        key = (run.config.dataset, run.config.image_size)
        if key not in loaded:
            loaded[key] = run.load_data()
        probe = prepare(run, loaded[key])
        frames.append(_measure(probe, batch_size=args.batch_size, **kw))
        if path.resolve() in sweep_runs:
            own = int(frames[-1]["batch_size"].iloc[0])
            for b in args.batch_sizes:  # the same seed and size give the same batches: reuse
                swept.append(frames[-1] if b == own else _measure(probe, batch_size=b, **kw))
        print(f"{run.name}: done", flush=True)
    return frames, (pd.concat(swept, ignore_index=True) if swept else None)


def _write(out: Path, frames: list[pd.DataFrame], sweep: pd.DataFrame | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_csv(out / "rotation_drive.csv", index=False)
    if sweep is not None:
        sweep.to_csv(out / "batch_sweep.csv", index=False)
    results = out / "RESULTS.md"
    section = rotation_snr_markdown(frames, sweep, out / "figures")
    old = results.read_text() if results.exists() else ""
    tmp = results.with_name(results.name + ".tmp")
    tmp.write_text(replace_section(old, section))
    tmp.replace(results)  # atomic: a reader never sees half a report


def main(argv: list[str] | None = None) -> int:
    import sys
    import time

    from tricl.data import DatasetError, set_progress

    args = _parser().parse_args(argv)
    set_progress(not args.no_progress)
    t0 = time.perf_counter()
    try:
        if args.report is not None:
            frames, sweep = _read_csvs(args.report)
            args.out = args.report
        elif not args.runs:
            raise SNRError("no RUN given; pass run directories (or --report DIR)")
        else:
            frames, sweep = _measure_all(args)
    except (RunError, DatasetError, SNRError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(fmt_table(summarize(frames)).to_string(index=False))
        print(fmt_table(angle_summary(frames)).to_string(index=False))
        if sweep is not None:
            print(fmt_table(sweep_summary(sweep)).to_string(index=False))
    if args.out is not None:
        _write(args.out, frames, sweep)
        print(f"wrote {args.out / 'RESULTS.md'}")
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
