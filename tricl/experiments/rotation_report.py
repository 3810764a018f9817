"""The tables, figure and RESULTS.md section of the rotation-drive measurement.

:mod:`tricl.experiments.rotation_snr` measures, per run and adjacent rank pair, how strongly the
run's loss prefers its trained rotation against the batch-to-batch noise of that preference; this
module summarises those rows per recipe (:func:`summarize`, :func:`angle_summary`,
:func:`sweep_summary`), draws them (:func:`plot_steps`) and writes the report's section
(:func:`rotation_snr_markdown`, :func:`replace_section`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SECTION_TITLE = "## Rotation drive against batch noise"

# ------------------------------------------------------------------------------ summaries


def summarize(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One row per recipe (arm) and angle, over its seeds and rank pairs.

    The two angles measure different things (a half-way rotation, a swap of the two features),
    so they are not pooled.

    Args:
        frames: `rotation_snr.rotation_drive` results (any runs, one batch size each).

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
        frames: `rotation_snr.rotation_drive` results measured at both 45° and 90°.

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
        sweep: `rotation_snr.batch_size_sweep` rows (several batch sizes of the same runs).

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


def fmt_table(table: pd.DataFrame) -> pd.DataFrame:
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
        fmt_table(summarize(frames)).to_markdown(index=False),
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
            fmt_table(angles.rename(columns={"abs_theta_star": "median |θ*| (°)"})).to_markdown(
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
            fmt_table(sweep_summary(sweep).drop(columns=["run"])).to_markdown(index=False),
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
