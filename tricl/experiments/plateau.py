"""Where does linear accuracy stop rising? One run per epoch budget, scored on the train split.

The study trains each run "long enough that linear accuracy has stopped rising"; this module
measures where that is. For every epoch budget E it trains (or reuses) a SEPARATE run of E epochs,
and scores each one on a validation split of the TRAIN images (never the test split, which the
study reports on): a linear probe and a k-NN classifier fitted on 3/4 of the train split and scored
on the held 1/4 (:func:`tricl.experiments.common.probe_split`, the same rows as the study's
``validation_scores``), on the projector outputs z and on the backbone features h. The plateau
epoch is the smallest budget that no longer budget beats by more than ``threshold``
(:func:`plateau_epoch`).

    python -m tricl.experiments.plateau --dataset folder:../shared/data/cifar10-subset \\
        --method simclr --budgets 10 20 40 --runs-root /tmp/plateau --proj-dim 128
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.config import PRECISIONS
from tricl.experiments.common import Variant, finished, probe_split, same_recipe, train_seeds

DEFAULT_BUDGETS = (10, 20, 40)
DEFAULT_THRESHOLD = 0.01
# score column -> label; "" features are the projector outputs z, "backbone_" the backbone's h
SCORES = {
    "linear_acc": "linear probe (z)",
    "knn_acc": "k-NN (z)",
    "backbone_linear_acc": "linear probe (h)",
    "backbone_knn_acc": "k-NN (h)",
}
# the study's headline accuracy ("linear (all)" in RESULTS.md) decides the plateau
PLATEAU_SCORE = "linear_acc"


class PlateauError(ValueError):
    """A bad argument of the plateau study (one line, with the fix)."""


@dataclass(frozen=True)
class PlateauStudy:
    """Accuracy of one recipe against its epoch budget.

    Attributes:
        arm: the recipe's name (an arm of :data:`tricl.experiments.arms.ARMS`).
        base: the shared recipe (RunConfig fields, without epochs and seed).
        seed: the training seed of every run.
        threshold: accuracy gain (absolute) below which a longer budget counts as no gain.
        table: one row per budget, ascending: ``epochs``, ``run`` (its path), the
            :func:`training_time` columns (``wall_s``, ``fastest_epoch_s``, ``images_per_s``),
            the :data:`SCORES` columns, ``score_s`` (seconds the scoring took),
            ``linear_acc_gain`` / ``backbone_linear_acc_gain`` and their ``..._gain_se``
            (:func:`paired_gain` over the previous budget; NaN for the first) and
            ``paced_wall_s`` (the budget's epochs at the study's fastest epoch: the training
            cost on an unshared machine).
    """

    arm: str
    base: dict[str, Any]
    seed: int
    threshold: float
    table: pd.DataFrame

    def plateau(self, score: str = PLATEAU_SCORE) -> int | None:
        """The plateau epoch of ``score`` (:func:`plateau_epoch`); None while still rising."""
        return plateau_epoch(self.table["epochs"], self.table[score], self.threshold)


def plateau_epoch(
    budgets: Sequence[int], accuracies: Sequence[float], threshold: float = DEFAULT_THRESHOLD
) -> int | None:
    """The smallest budget that no longer budget beats by more than ``threshold``.

    One-sided on purpose: a longer budget that scores lower (over-training, probe noise) has not
    risen either. The largest budget has nothing to be compared with, so it never qualifies.

    Args:
        budgets: epoch budgets, strictly ascending. Shape: (B,).
        accuracies: the accuracy of each budget's run. Shape: (B,).
        threshold: the largest gain (absolute accuracy) that still counts as "stopped rising".

    Returns:
        The plateau budget, or None when accuracy is still rising at the largest budget (always
        so with a single budget).

    Raises:
        PlateauError: budgets not strictly ascending, lengths that differ, a NaN accuracy or a
            negative threshold.
    """
    b, acc = np.asarray(budgets), np.asarray(accuracies, dtype=float)
    if b.shape != acc.shape or b.ndim != 1:
        raise PlateauError(f"{len(b)} budgets but {len(acc)} accuracies; give one accuracy each")
    if (np.diff(b) <= 0).any():
        raise PlateauError(f"budgets {b.tolist()} are not strictly ascending; sort them")
    if np.isnan(acc).any() or threshold < 0:
        raise PlateauError(f"accuracies {acc.tolist()} / threshold {threshold}: need numbers, >= 0")
    for i in range(len(b) - 1):
        if (acc[i + 1 :] - acc[i] <= threshold).all():
            return int(b[i])
    return None


def paired_gain(hits_a: np.ndarray, hits_b: np.ndarray) -> tuple[float, float]:
    """Accuracy gain of b over a on the same images, and its standard error.

    Paired: both runs score the same held images, so the error is that of the mean per-image
    difference (far smaller than two independent accuracies' errors). It does not include
    seed-to-seed variation.

    Args:
        hits_a: whether run a got each image right. Shape: (N,).
        hits_b: the same for run b. Shape: (N,).

    Returns:
        ``(gain, standard error)``.
    """
    d = np.asarray(hits_b, dtype=float) - np.asarray(hits_a, dtype=float)  # (N,)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def train_split_scores(run: Any, data: Any | None = None) -> dict[str, float]:
    """Linear-probe and k-NN accuracy on the train split's held quarter; the test split unused.

    Args:
        run: a finished :class:`~tricl.runs.Run`.
        data: its :class:`~tricl.data.ImageData` (loaded when None); only ``train_x``,
            ``train_y`` and ``preprocess`` are read.

    Returns:
        The :data:`SCORES` columns: fitted on the 3/4 rows of :func:`probe_split`, scored on
        the other 1/4, on z (projector outputs, (N, k)) and h (backbone, (N, feat_dim)).
    """
    return _scores_and_hits(run, data)[0]


def _scores_and_hits(run: Any, data: Any | None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """:func:`train_split_scores`, and whether each linear probe got each held image right
    (keys ``linear_acc``, ``backbone_linear_acc``; Shape: (N_held,))."""
    from tricl.analysis.downstream import knn_accuracy, linear_probe
    from tricl.analysis.features import extract

    data = run.load_data() if data is None else data
    z, h = extract(run.encoder(), data.train_x, data.preprocess)  # (N, k), (N, feat_dim)
    y = data.train_y.numpy()  # (N,)
    fit, held = probe_split(len(y))
    out, hits = {}, {}
    for prefix, feats in (("", z), ("backbone_", h)):
        probe = linear_probe(feats[fit], y[fit], feats[held], y[held])
        out[f"{prefix}linear_acc"] = probe.accuracy
        hits[f"{prefix}linear_acc"] = probe.predictions == y[held]  # (N_held,)
        out[f"{prefix}knn_acc"] = knn_accuracy(feats[fit], y[fit], feats[held], y[held])
    return out, hits


def training_time(run: Any) -> dict[str, float]:
    """The run's training cost, from its metrics.jsonl.

    Returns:
        ``wall_s``: the sum of the epochs' training seconds (a resumed run's lost epochs are
        not counted; on a shared machine it grows with the load); ``fastest_epoch_s``: its
        fastest epoch's seconds; ``images_per_s``: that epoch's throughput.
    """
    from tricl.runs import read_metrics

    rows = read_metrics(run.path, upto=run.epochs_done)
    fastest = min(rows, key=lambda r: r["seconds"])
    return {
        "wall_s": float(sum(r["seconds"] for r in rows)),
        "fastest_epoch_s": float(fastest["seconds"]),
        "images_per_s": float(fastest["images_per_s"]),
    }


def _resolve(variant_or_method: Variant | str) -> Variant:
    if isinstance(variant_or_method, Variant):
        return variant_or_method
    from tricl.experiments.arms import ARMS

    if variant_or_method not in ARMS:
        raise PlateauError(f"unknown method {variant_or_method!r}; choose one of {sorted(ARMS)}")
    return ARMS[variant_or_method][0]


def _check_arguments(budgets: Sequence[int], base: dict[str, Any], threshold: float) -> None:
    """Refuse bad arguments before anything is trained."""
    if not budgets or any(int(b) != b or b < 1 for b in budgets):
        raise PlateauError(f"budgets {list(budgets)} must be positive whole epochs, e.g. 10 20 40")
    if len(set(budgets)) != len(budgets):
        raise PlateauError(f"budgets {list(budgets)} repeat a value; give each budget once")
    if {"epochs", "seed"} & set(base):
        raise PlateauError("base sets epochs or seed; drop them (the budgets and seed set them)")
    if not threshold >= 0:
        raise PlateauError(f"threshold {threshold} must be >= 0 (an accuracy gain, e.g. 0.01)")


def budget_run(
    variant: Variant,
    epochs: int,
    *,
    seed: int,
    runs_root: Path,
    base: dict[str, Any],
    reuse: Path | None = None,
    train: bool = True,
    progress: bool = False,
) -> Any:
    """The run of ``variant`` trained for ``epochs``: reused, resumed or trained.

    It lives in ``runs_root / f"e{epochs}"``; a finished run of the exact recipe (epochs
    included) in the flat folder ``reuse`` is used in place instead. With ``train`` False only
    a finished run is taken: a run another process is still training is never resumed beside it
    (nothing locks a run against two trainers).

    Raises:
        RunError: ``runs_root/e{epochs}`` holds a run of that name with another recipe.
        PlateauError: ``train`` is False and no finished run is there.
    """
    from tricl.runs import Run, RunError
    from tricl.train import default_run_name

    cfg = variant.config(seed, **base, epochs=epochs)
    root = Path(runs_root) / f"e{epochs}"
    path = root / default_run_name(cfg)
    if (path / "config.json").exists() and not same_recipe(path, cfg):
        raise RunError(
            f"{path} holds a run of another recipe than {variant.name} at {epochs} epochs;"
            " pass another --runs-root or move it away"
        )
    found = Path(reuse) / path.name if reuse is not None else None
    shared = found.parent if found is not None and finished(found, cfg) else root
    if not train and not finished(shared / path.name, cfg):
        done = Run.load(path).epochs_done if (path / "config.json").exists() else 0
        raise PlateauError(
            f"budget {epochs}: {path} has {done} of {epochs} epochs and training is off"
            " (--no-train); leave the budget out, or wait until its training has finished"
        )
    # train_seeds takes a finished run in `shared` as it is (no data loading), else resumes
    # or trains the one in `root`
    return train_seeds(
        variant, [seed], root, progress=progress, reuse=shared, **base, epochs=epochs
    )[0]


def plateau_study(
    variant_or_method: Variant | str,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    *,
    seed: int = 0,
    runs_root: Path,
    base: dict[str, Any],
    reuse: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    train: bool = True,
    progress: bool = False,
) -> PlateauStudy:
    """Train (or reuse) one run per epoch budget and score each on the train split.

    Each budget is a SEPARATE run, not a checkpoint of the longest one: the learning rate
    follows a cosine schedule over the run's own epochs, so epoch 10 of a 40-epoch run has
    seen a high learning rate throughout and is not what a 10-epoch run ends as.

    Args:
        variant_or_method: a :class:`Variant` or an arm name of
            :data:`tricl.experiments.arms.ARMS` (``"simclr"``, ``"tricl-whiten"``, ...).
        budgets: epoch budgets (any order; reported ascending).
        seed: training seed of every run.
        runs_root: run of budget E goes in ``runs_root/eE/`` (reused or resumed when there).
        base: the recipe (RunConfig fields such as dataset, proj_dim), without epochs and seed.
        reuse: a flat folder of finished runs (e.g. the study's runs): one whose recipe matches
            a budget exactly is used in place of training.
        threshold: the accuracy gain below which a longer budget counts as no gain.
        train: False: only score finished runs (a missing or unfinished one is an error,
            raised before any scoring), e.g. while another process trains a budget.
        progress: draw training progress bars.

    Returns:
        The :class:`PlateauStudy` (its ``plateau()`` is the plateau epoch).
    """
    _check_arguments(budgets, base, threshold)
    variant = _resolve(variant_or_method)
    for epochs in budgets:  # every recipe is checked before the first run trains
        variant.config(seed, **base, epochs=int(epochs))
    ordered = sorted(int(b) for b in budgets)
    kwargs = dict(seed=seed, runs_root=runs_root, base=base, reuse=reuse, progress=progress)
    runs = [budget_run(variant, epochs, train=train, **kwargs) for epochs in ordered]
    data = runs[0].load_data()  # every budget trains on the same images
    rows, previous = [], None
    for epochs, run in zip(ordered, runs):
        start = time.perf_counter()
        scores, hits = _scores_and_hits(run, data)
        row = {"epochs": epochs, "run": str(run.path), **training_time(run)}
        row |= scores | {"score_s": time.perf_counter() - start}
        for key in hits:  # the gain over the previous budget, paired on the held images
            gain = paired_gain(previous[key], hits[key]) if previous else (np.nan, np.nan)
            row[f"{key}_gain"], row[f"{key}_gain_se"] = gain
        rows.append(row)
        previous = hits
    table = pd.DataFrame(rows)
    # an epoch is the same work in every budget (same recipe, same images): the study's fastest
    # epoch is the best estimate of its cost on an unshared machine
    table["paced_wall_s"] = table["epochs"] * table["fastest_epoch_s"].min()
    return PlateauStudy(variant.name, dict(base), seed, threshold, table)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def plateau_table(study: PlateauStudy) -> pd.DataFrame:
    """The report's table: one row per budget, accuracies, gain over the previous budget,
    training wall time."""
    t = study.table
    out = pd.DataFrame({"epochs": t["epochs"]})
    for key, label in SCORES.items():
        out[label] = t[key].map(lambda v: f"{v:.3f}")
    for key in (PLATEAU_SCORE, "backbone_linear_acc"):
        gain, se = t[f"{key}_gain"], t[f"{key}_gain_se"]
        out[f"gain in {SCORES[key]}"] = [
            "" if math.isnan(g) else f"{g:+.3f} ± {e:.3f}" for g, e in zip(gain, se)
        ]
    out["training wall time"] = t["wall_s"].map(_minutes)
    out["at the fastest pace"] = t["paced_wall_s"].map(_minutes)
    out["images/s (fastest epoch)"] = t["images_per_s"].map(lambda v: f"{v:.0f}")
    return out


def plateau_sentence(study: PlateauStudy, score: str = PLATEAU_SCORE) -> str:
    """One line: where ``score`` stops rising, or that it still rises at the largest budget."""
    epoch = study.plateau(score)
    t = study.table
    if epoch is None:
        return (
            f"{SCORES[score]}: still rising at the largest budget ({int(t['epochs'].iloc[-1])}"
            f" epochs; every shorter budget is beaten by a longer one by more than"
            f" {study.threshold:.3f})."
        )
    row = t[t["epochs"] == epoch].iloc[0]
    return (
        f"{SCORES[score]}: plateau at {epoch} epochs ({_minutes(row['wall_s'])} of training here,"
        f" {_minutes(row['paced_wall_s'])} at the fastest pace): no longer budget gains"
        f" more than {study.threshold:.3f}."
    )


def plot_plateau(study: PlateauStudy, path: Path) -> None:
    """Accuracy against epochs (log2 axis), one line per score; the plateau epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tricl.experiments.arms import ARMS

    t = study.table
    fig, ax = plt.subplots(figsize=(6, 3.8))
    color = ARMS[study.arm][1] if study.arm in ARMS else "C0"
    styles = {"linear_acc": "-", "knn_acc": ":", "backbone_linear_acc": "--"}
    styles["backbone_knn_acc"] = "-."
    for key, style in styles.items():
        ax.plot(t["epochs"], t[key], style, marker="o", ms=4, color=color, label=SCORES[key])
    epoch = study.plateau()
    if epoch is not None:
        ax.axvline(epoch, color="k", lw=0.8, ls="--", label=f"plateau ({SCORES[PLATEAU_SCORE]})")
    ax.set_xscale("log", base=2)
    ticks = [f"{e}\n{_minutes(s)}" for e, s in zip(t["epochs"], t["paced_wall_s"])]
    ax.set_xticks(t["epochs"], ticks)
    ax.set_xlabel("epoch budget (training time at the study's fastest epoch)")
    ax.set_ylabel("accuracy, held 1/4 of the train split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{study.arm}, seed {study.seed}: accuracy against training length", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plateau_markdown(study: PlateauStudy, fig_dir: Path) -> list[str]:
    """The report's Markdown lines (the figure is written into ``fig_dir``)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    marked = study.base.get("precision", "auto") != "auto"  # auto: names as before
    precision = f", {study.base['precision']}" if marked else ""
    tag = f"_{study.base['precision']}" if marked else ""
    name = f"plateau_{study.arm}{tag}_seed{study.seed}.png"
    plot_plateau(study, fig_dir / name)
    return [
        f"## Training length: where does accuracy stop rising? ({study.arm}{precision})",
        "",
        "Settings: `" + json.dumps(study.base) + f"`, seed {study.seed}. One run per epoch budget"
        " (each with its own cosine schedule, so not checkpoints of the longest run). Accuracy"
        " is measured on the TRAIN split: fitted on 3/4 of it, scored on the held 1/4 (the test"
        " split is not used); z: the projector outputs, h: the backbone features. Training"
        " wall time: the sum of the epochs' seconds in metrics.jsonl, which grows with whatever"
        " else the machine ran; at the fastest pace: the epochs times the fastest epoch of any"
        " budget (an epoch is the same work in each), the cost on an unshared machine. Gain:"
        " over the previous budget ± its standard error, paired on the same held images"
        " (seed-to-seed variation not included); a threshold below it cannot be resolved.",
        "",
        plateau_table(study).to_markdown(index=False),
        "",
        *[f"- {plateau_sentence(study, key)}" for key in SCORES],
        "",
        f"![accuracy against epochs](figures/{name})",
        "",
    ]


def _parser() -> argparse.ArgumentParser:
    from tricl.experiments.arms import ARMS

    p = argparse.ArgumentParser(
        description="Measure where linear accuracy stops rising with training length: one run"
        " per epoch budget (trained, resumed, or reused when a finished run of the same recipe"
        " is there), each scored by a linear probe and k-NN fitted on 3/4 of the TRAIN split and"
        " scored on the held 1/4 (the test split is never used). Prints the table and the"
        " plateau epoch (the smallest budget no longer budget beats by more than --threshold)"
        " and writes PLATEAU.md with a PNG into --out. Cost: the training, i.e. the sum of the"
        " budgets in epochs (CIFAR-10 subset of 10,000 images, small CNN, k = 128: 17 s an"
        " epoch on 2 idle CPU cores, so 10+20+40 epochs take 20 min, and several times that on"
        " shared cores); scoring adds about 10 s a run; reused runs cost only the scoring.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="a dataset name or folder:PATH")
    p.add_argument(
        "--method", default="simclr", choices=list(ARMS), help="the recipe (an arm of the study)"
    )
    p.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=list(DEFAULT_BUDGETS),
        help="epoch budgets, one run each; doubling them reads well on the log2 axis",
    )
    p.add_argument("--seed", type=int, default=0, help="training seed of every run")
    p.add_argument(
        "--runs-root",
        type=Path,
        required=True,
        help="budget E's run is kept in RUNS_ROOT/eE/ (reused, or resumed if interrupted)",
    )
    p.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a folder of finished runs (e.g. the study's); one of a budget's exact recipe,"
        " epochs included, is used instead of training",
    )
    p.add_argument("--proj-dim", type=int, default=None, help="k (the study uses 128 on CIFAR)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="arithmetic of the training steps (RunConfig.precision; bf16 halves a CPU step"
        " where the CPU has AVX-512 BF16 or AMX)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="a gain below this (absolute accuracy) counts as no gain; far below the probe's"
        " own noise (binomial std about 0.01 on 2,500 held images) the plateau is noise",
    )
    p.add_argument("--out", type=Path, default=None, help="where PLATEAU.md and its figure go")
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="a study's RESULTS.md (e.g. docs/RESULTS.md): its section of this method rewritten"
        " in place (added before the known-answer check), the figure in figures/ beside it",
    )
    p.add_argument(
        "--no-train",
        action="store_true",
        help="only score finished runs; a missing or unfinished budget is an error (use it while"
        " another process trains a budget: without it, that run would be resumed beside it)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def absolute_dataset(spec: str) -> str:
    """``folder:PATH`` with PATH made absolute (other specs unchanged): the run's recipe holds
    the spec, so a relative path would not match the same folder's runs made elsewhere."""
    from tricl.catalog import parse_dataset

    name, arg = parse_dataset(spec)
    return f"folder:{Path(arg).resolve()}" if name == "folder" and arg else spec


def main(argv: list[str] | None = None) -> int:
    from tricl.cli import is_user_error
    from tricl.data import set_progress

    args = _parser().parse_args(argv)
    progress = not args.no_progress
    set_progress(progress)
    base: dict[str, Any] = {"dataset": absolute_dataset(args.dataset)}
    if args.proj_dim is not None:
        base["proj_dim"] = args.proj_dim
    if args.precision != "auto":
        base["precision"] = args.precision
    try:
        study = plateau_study(
            args.method, args.budgets, seed=args.seed, runs_root=args.runs_root, base=base,
            reuse=args.reuse, threshold=args.threshold, train=not args.no_train,
            progress=progress,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if not (is_user_error(exc) or isinstance(exc, PlateauError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(plateau_table(study).to_markdown(index=False))
    print(plateau_sentence(study))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        lines = plateau_markdown(study, args.out / "figures")
        (args.out / "PLATEAU.md").write_text("\n".join(lines))
        print(f"wrote {args.out / 'PLATEAU.md'}")
    if args.results is not None:  # the study's RESULTS.md: this section rewritten in place
        from tricl.experiments.results import rewrite_section

        lines = plateau_markdown(study, args.results.parent / "figures")
        command = " ".join(["python -m tricl.experiments.plateau", *(argv or sys.argv[1:])])
        lines[1:1] = ["", f"Made by `{command}`."]
        rewrite_section(args.results, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
