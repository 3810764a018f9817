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

from tricl.runs import Run, RunError

if TYPE_CHECKING:
    from torch import Tensor, nn

ANGLES = (math.pi / 4, math.pi / 2)
# The losses compute in float32 (tricl.losses), so a paired difference cannot resolve changes
# below a few float32 ulps of the loss; a pair whose every |D_b| stays under this fraction of the
# loss has no drive the loss can express (SimCLR: exactly none) and gets steps_needed = inf.
ROUNDOFF = 1e-6
SECTION_TITLE = "## Rotation drive against batch noise"


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
    from tricl.methods import build_loss

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


# ------------------------------------------------------------------------------ summaries


def summarize(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One row per recipe (arm) and angle, over its seeds and rank pairs.

    The two angles measure different things (a half-way rotation, a swap of the two features),
    so they are not pooled.

    Args:
        frames: :func:`rotation_drive` results (any runs, one batch size each).

    Returns:
        Columns arm, angle, runs, pairs, loss (mean), drive (mean, signed: > 0 means the loss
        prefers the trained rotation), abs_drive, noise, snr (means), steps_needed (median),
        steps_trained (median), resolved (share of pairs with steps_needed < steps_trained),
        prefers_trained (share of pairs whose drive is felt and > 0), and the same read from
        the slopes: slope_steps (median), slope_resolved (share below steps trained),
        pushes_back (share of pairs whose mean slope is > 0, towards the trained rotation).
    """
    t = pd.concat(frames, ignore_index=True)
    rows = []
    for (arm, angle), part in t.groupby(["arm", "angle"], sort=False):
        rows.append(
            {
                "arm": arm, "angle": angle, "runs": part["run"].nunique(), "pairs": len(part),
                "loss": part["loss"].mean(), "drive": part["drive"].mean(),
                "abs_drive": part["drive"].abs().mean(), "noise": part["noise"].mean(),
                "snr": part["snr"].mean(), "steps_needed": part["steps_needed"].median(),
                "steps_trained": part["steps_trained"].median(),
                "resolved": (part["steps_needed"] < part["steps_trained"]).mean(),
                "prefers_trained": (part["felt"] & (part["drive"] > 0)).mean(),
                "slope_steps": part["slope_steps"].median(),
                "slope_resolved": (part["slope_steps"] < part["steps_trained"]).mean(),
                "pushes_back": (np.isfinite(part["slope_steps"]) & (part["slope"] > 0)).mean(),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def preferred_angles(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per run and pair, the rotation the loss prefers, read from the 45° and 90° rows.

    To first order in s_a - s_b the similarities are affine in (cos 2θ, sin 2θ), so
    ``L(θ) - L(0) ≈ A (cos 2θ - 1) + B sin 2θ`` with ``A = -D(90°)/2`` and
    ``B = D(45°) - D(90°)/2``. Its minimum is at ``θ* = (atan2(B, A) + π) / 2``, taken modulo
    180° (a rotation by 180° flips both signs, which no loss sees) into (-90°, 90°]: 0 when the
    trained rotation is the one the loss prefers. The model predicts the slope at 45° to be
    ``-2A = D(90°)``; ``model_error`` is the measured slope's relative distance from that
    (NeuralEF-CLR's slope is not its value's derivative, so there it fails by design).

    Args:
        frames: :func:`rotation_drive` results measured at both 45° and 90°.

    Returns:
        One row per (run, pair) the loss feels at both angles: arm, run, rank, pair, A, B,
        theta_star (degrees), model_error. Empty without both angles.
    """
    t = pd.concat(frames, ignore_index=True)
    half, swap = t[t["angle"] == "45°"], t[t["angle"] == "90°"]
    both = half.merge(swap, on=["run", "rank"], suffixes=("_45", "_90"))
    both = both[both["felt_45"] & both["felt_90"]]
    a = -both["drive_90"] / 2
    b = both["drive_45"] - both["drive_90"] / 2
    star = np.degrees((np.arctan2(b, a) + math.pi) / 2)  # (0°, 180°]
    error = (both["slope_45"] - both["drive_90"]).abs() / both["drive_90"].abs()
    return pd.DataFrame(
        {
            "arm": both["arm_45"], "run": both["run"], "rank": both["rank"],
            "pair": both["pair_45"], "A": a, "B": b,
            "theta_star": np.where(star > 90, star - 180, star), "model_error": error,
        }
    ).reset_index(drop=True)  # fmt: skip


def angle_summary(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per recipe: how far the trained axes sit from the rotation the loss prefers.

    Returns:
        Columns arm, pairs (felt at both angles), abs_theta_star (median |θ*|, degrees),
        beyond_15 (share of pairs with |θ*| > 15°), model_error (median).
    """
    t = preferred_angles(frames)
    rows = [
        {
            "arm": arm, "pairs": len(part),
            "abs_theta_star": part["theta_star"].abs().median(),
            "beyond_15": (part["theta_star"].abs() > 15).mean(),
            "model_error": part["model_error"].median(),
        }
        for arm, part in t.groupby("arm", sort=False)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y on log x (nan unless every y is finite and > 0)."""
    if len(x) < 2 or not (np.isfinite(y).all() and (y > 0).all()):
        return math.nan
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _finite_median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def sweep_summary(sweep: pd.DataFrame) -> pd.DataFrame:
    """How the noise and the steps needed scale with the batch size, per run and angle.

    Per pair, ``noise ~ B^-alpha`` and ``steps_needed ~ B^-beta`` are fitted on log-log axes
    (alpha = 0.5 is independent samples; beta = 2 alpha when the drive does not depend on B);
    the medians over pairs are reported. At the smallest batch size B0, ``batch_for_trained``
    is the batch size at which the median steps_needed would fall to the run's steps trained
    (``B0 (steps_needed / steps_trained)^(1 / beta)``; below B0 when B0 already suffices), and
    ``epochs_needed`` at every B is ``steps_needed x B / train images``.

    Args:
        sweep: :func:`batch_size_sweep` rows (several batch sizes of the same runs).

    Returns:
        One row per (run, angle, batch_size): arm, run, angle, batch_size, noise, abs_drive,
        steps_needed, epochs_needed, slope_steps (medians over pairs), steps_trained, alpha,
        beta (fitted on the pairs the loss feels at every batch size), batch_for_trained.
    """
    rows = []
    for (run, angle), part in sweep.groupby(["run", "angle"], sort=False):
        # a pair the loss does not feel has float32 roundoff for noise: nothing to fit
        fits = [
            (
                _loglog_slope(p["batch_size"].to_numpy(), p["noise"].to_numpy()),
                _loglog_slope(p["batch_size"].to_numpy(), p["steps_needed"].to_numpy()),
            )
            for _, p in part.groupby("rank")
            if p["felt"].all()
        ]
        alpha, beta = (-_finite_median([f[i] for f in fits]) for i in (0, 1))
        by_b = part.groupby("batch_size")
        needed = by_b["steps_needed"].median()  # indexed by batch size, ascending
        trained = float(part["steps_trained"].iloc[0])
        b0 = float(needed.index[0])
        target = b0 * (needed.iloc[0] / trained) ** (1 / beta) if beta > 0 else math.nan
        for b, p in by_b:
            rows.append(
                {
                    "arm": p["arm"].iloc[0], "run": run, "angle": angle, "batch_size": int(b),
                    "noise": p["noise"].median(), "abs_drive": p["drive"].abs().median(),
                    "steps_needed": needed[b],
                    "epochs_needed": needed[b] * b / p["train_images"].iloc[0],
                    "slope_steps": p["slope_steps"].median(),
                    "steps_trained": trained, "alpha": alpha, "beta": beta,
                    "batch_for_trained": target,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ report


def _arm_color(arm: str, fallback: str) -> str:
    from tricl.methods import METHODS

    return METHODS[arm].color if arm in METHODS else fallback


PLOTTED = {
    "steps_needed": "steps needed, (noise/drive)²",
    "slope_steps": "slope steps, (noise/slope)²",
}


def _panel(ax: Any, part: pd.DataFrame, column: str, top: float, cycle: list[str]) -> None:
    """One angle's ``column`` per rank pair: a line per recipe (median over seeds), seeds as
    dots, inf on the top edge, a dashed line at the steps trained."""
    for i, (arm, rows) in enumerate(part.groupby("arm", sort=False)):
        color = _arm_color(arm, cycle[i % len(cycle)])
        ax.scatter(rows["rank"], rows[column].clip(upper=top), s=10, color=color, alpha=0.5)
        med = rows.groupby("rank")[column].median().clip(upper=top)
        ax.plot(med.index, med.to_numpy(), "-o", ms=3, color=color, label=arm)
    for steps in sorted(set(part["steps_trained"])):
        ax.axhline(steps, ls="--", color="k", lw=1)
        ax.text(1, steps * 1.3, f"steps trained ({steps:g})", fontsize=7)
    ranks = sorted(set(part["rank"]))
    ax.set_xticks(ranks, [f"{r}-{r + 1}" for r in ranks])
    ax.set_yscale("log")
    ax.set_ylim(top=top * 3)
    ax.text(ranks[-1], top * 1.3, "∞: not felt", va="bottom", ha="right", fontsize=7)
    ax.set_ylabel(PLOTTED[column], fontsize=8)


def plot_steps(frames: Sequence[pd.DataFrame], path: Path) -> None:
    """Steps needed per rank pair (log scale; top row from the finite differences, bottom row
    from the slopes), one column per angle, one line per recipe (median over seeds, seeds as
    dots); a dashed line at the steps trained. A rotation the loss does not feel (inf) is drawn
    on the top edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = pd.concat(frames, ignore_index=True)
    values = t[list(PLOTTED)].to_numpy().ravel()
    finite = values[np.isfinite(values)]
    highest = max(finite.max() if len(finite) else 1.0, t["steps_trained"].max(), 10.0)
    top = 10 ** math.ceil(math.log10(highest * 10))  # inf is drawn here
    angles = list(dict.fromkeys(t["angle"]))
    fig, axes = plt.subplots(
        len(PLOTTED), len(angles), figsize=(5 * len(angles), 6.4), squeeze=False, sharex=True
    )
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, column in zip(axes, PLOTTED):
        for ax, angle in zip(row, angles):
            _panel(ax, t[t["angle"] == angle], column, top, cycle)
            ax.set_title(f"rotation by {angle}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("rank pair rotated")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _fmt(table: pd.DataFrame) -> pd.DataFrame:
    """Numbers as short strings (3 significant digits; inf as ∞)."""
    out = table.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: "∞" if v == math.inf else f"{v:.3g}")
    return out


def rotation_snr_markdown(
    frames: Sequence[pd.DataFrame], sweep: pd.DataFrame | None, fig_dir: Path
) -> list[str]:
    """The section's Markdown lines (the figure is written into ``fig_dir``)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    plot_steps(frames, fig_dir / "rotation_snr.png")
    t = pd.concat(frames, ignore_index=True)
    runs = list(dict.fromkeys(t["run"]))
    swept = [] if sweep is None else list(dict.fromkeys(sweep["run"]))
    sizes = [] if sweep is None else sorted(set(sweep["batch_size"]))
    command = "python -m tricl.experiments.rotation_snr RUN... " + (
        f"--batch-sizes {' '.join(map(str, sizes))} --sweep {' '.join(swept)} " if swept else ""
    )
    lines = [
        SECTION_TITLE,
        "",
        f"Made by `{command}--out DIR` on the {len(runs)} runs named in DIR/rotation_drive.csv"
        f" ({', '.join(sorted({r.split('_')[0] for r in runs}))}; seeds as in the names), then"
        " `--report DIR`, which rewrites this section from the CSVs.",
        "",
        "For each run, adjacent features of its importance order (ranks r, r+1) are rotated"
        " by a Givens angle in both views (S stays with its slot) and the run's own loss is"
        f" compared on the same batch: D_b = L_b(θ) − L_b(0), over {t['batches'].iloc[0]}"
        f" batches of {', '.join(map(str, sorted(set(t['batch_size']))))} fresh augmented"
        " pairs (eval mode)."
        " drive = mean D_b (> 0: the loss prefers the trained rotation), noise = std D_b,"
        " snr = |drive|/noise, steps needed = (noise/drive)²: batches SGD must average before"
        " the sign of the drive shows; ∞ where the loss does not feel the rotation at all."
        " 90° swaps the two features. resolved: share of pairs with steps needed < steps"
        " trained; prefers_trained: share whose drive is felt and > 0. slope_steps,"
        " slope_resolved, pushes_back: the same read from the slope dL_b/dθ at the angle,"
        " through the loss's own autograd (the push SGD applies: NeuralEF-CLR's value does not"
        " change when two features swap, its order lives in stop-gradients); pushes_back: share"
        " of pairs whose mean slope points back to the trained rotation. Figure: top row from"
        " the differences, bottom row from the slopes.",
        "",
        _fmt(summarize(frames)).to_markdown(index=False),
        "",
        "![steps needed per rank pair](figures/rotation_snr.png)",
        "",
    ]
    angles = angle_summary(frames)
    if len(angles):
        lines += [
            "### How far the trained axes sit from the rotation the loss prefers",
            "",
            "To first order in s_a − s_b, L(θ) − L(0) = A (cos 2θ − 1) + B sin 2θ with"
            " A = −D(90°)/2 and B = D(45°) − D(90°)/2; the loss is lowest at θ* (0: the trained"
            " rotation is the preferred one; rotations uniformly at random give a median |θ*|"
            " of 45°). model error: the measured slope at 45° against the model's −2A (NeuralEF"
            "-CLR is not in this table: its swap is not felt by its value).",
            "",
            _fmt(angles.rename(columns={"abs_theta_star": "median |θ*| (°)"})).to_markdown(
                index=False
            ),
            "",
        ]
    if sweep is not None and len(sweep):
        lines += [
            "### Batch size: noise ~ B^-α, steps needed ~ B^-β",
            "",
            "Median over rank pairs; batch for trained: the batch size at which the median"
            " steps needed would equal the steps trained (from β; below the smallest batch"
            " measured: that batch already suffices); epochs needed = steps needed × B / train"
            " images.",
            "",
            _fmt(sweep_summary(sweep).drop(columns=["run"])).to_markdown(index=False),
            "",
        ]
    return lines


def replace_section(markdown: str, section: list[str]) -> str:
    """``markdown`` with its :data:`SECTION_TITLE` section (up to the next ``## `` heading)
    replaced by ``section``, or ``section`` appended when it has none."""
    lines = markdown.rstrip("\n").split("\n") if markdown.strip() else []
    start = next((i for i, line in enumerate(lines) if line.startswith(SECTION_TITLE)), None)
    if start is None:
        return "\n".join([*lines, *([""] if lines else []), *section]) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join([*lines[:start], *section, *lines[end:]]) + "\n"


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
        print(_fmt(summarize(frames)).to_string(index=False))
        print(_fmt(angle_summary(frames)).to_string(index=False))
        if sweep is not None:
            print(_fmt(sweep_summary(sweep)).to_string(index=False))
    if args.out is not None:
        _write(args.out, frames, sweep)
        print(f"wrote {args.out / 'RESULTS.md'}")
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
