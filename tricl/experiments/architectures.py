"""Across architectures: do two backbones trained with the same recipe find the same top features?

Identifiability across seeds says a recipe's features belong to the data, not to one training
run. The stronger claim, that they belong to the data and its augmentations and not to one
network, needs two architectures: every seed of backbone A is compared with every seed of
backbone B, rank by rank, in the basis where the method's order is meant to hold (tri-eigen's
trained axes; SimCLR's spectral basis). The same-architecture pairs are the reference: agreement
across architectures near theirs means the features do not depend on the network.

    python -m tricl.experiments.architectures --dataset mnist5k \\
      --backbones small_cnn small_resnet --methods tri-eigen simclr --epochs 15 \\
      --reuse checkpoints --runs-root experiments/arch --results docs/RESULTS.md

Runs are trained (or resumed, or reused from ``--reuse`` when a finished run of the exact recipe
is there), analysed in both bases and compared with the project's own functions; a killed study
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TOP = 8  # the ranks the table and the consensus read (the verdicts' top-8)
# the basis each method's order is meant to hold in: a learned/solved order is read as trained,
# a method without one in its spectral basis (Runs page and README use the same reading)
DEFAULT_BASIS = {"tri-eigen": "trained", "tricl": "trained", "neuralef": "trained"}


class ArchError(ValueError):
    """A bad argument of the architecture study (one line, with the fix)."""


@dataclass
class ArchStudy:
    """Every run of the study and the per-rank agreement of every pair.

    Attributes:
        base: the RunConfig fields every run shares.
        backbones: the architectures, in the order given.
        runs: ``(method, backbone)`` -> the runs of its seeds.
        ranks: one row per (method, basis, pair kind, run pair, rank): ``abs_corr`` of rank r of
            one run with rank r of the other; pair kind ``within A`` or ``A vs B``.
        pairs: one row per (method, basis, pair kind, run pair) with the pair's
            ``ordered_corr_top8`` and ``rank_match_top8``.
    """

    base: dict[str, Any]
    backbones: list[str]
    runs: dict[tuple[str, str], list]
    ranks: pd.DataFrame
    pairs: pd.DataFrame


def _kind(a: str, b: str) -> str:
    return f"within {a}" if a == b else f"{a} vs {b}"


def _compare_rows(
    method: str, basis: str, runs: list, archs: list[str], out_root: Path, progress: bool
):
    """Per-rank and per-pair rows of one method's runs (all backbones) in one basis, the
    comparison stored under ``out_root`` (never beside reused runs, e.g. in checkpoints/)."""
    from tricl.analysis import compare

    cmp = compare(runs, basis=basis, spectral=False, progress=progress, out_root=out_root)
    index = {name: i for i, name in enumerate(cmp.runs)}
    ranks, pairs = [], []
    for row in cmp.pairs.itertuples():
        i, j = index[row.run_a], index[row.run_b]
        kind = _kind(*sorted((archs[i], archs[j]), key=archs.index))
        diag = np.abs(np.diag(cmp.corr[(i, j)]))[:TOP]
        ranks += [(method, basis, kind, i, j, r + 1, float(c)) for r, c in enumerate(diag)]
        pairs.append(
            (method, basis, kind, row.run_a, row.run_b, row.ordered_corr_top8, row.rank_match_top8)
        )
    return ranks, pairs


def architecture_study(
    methods: list[str],
    backbones: list[str],
    seeds: list[int],
    runs_root: Path,
    base: dict[str, Any],
    reuse: Path | None = None,
    workers: int = 1,
    progress: bool = True,
    bases: tuple[str, ...] = ("trained", "spectral"),
) -> ArchStudy:
    """Train (or reuse) every (method, backbone, seed), analyse and compare them in ``bases``.

    Raises:
        ArchError: fewer than two backbones or two seeds, or an unknown method or backbone.
    """
    from tricl.analysis import analyze
    from tricl.experiments.arms import ARMS
    from tricl.experiments.common import train_in_parallel, train_seeds
    from tricl.models import BACKBONES

    if len(set(backbones)) < 2 or len(set(seeds)) < 2:
        raise ArchError("give at least two --backbones and two --seeds (e.g. --seeds 0 1 2)")
    for name, known in ((methods, ARMS), (backbones, BACKBONES)):
        if bad := [n for n in name if n not in known]:
            raise ArchError(f"unknown {bad[0]!r}; choose from {', '.join(sorted(known))}")
    if workers > 1:
        jobs = [(ARMS[m][0], s) for m in methods for s in seeds]
        for b in backbones:
            train_in_parallel(jobs, runs_root, workers, reuse, True, **base, backbone=b)
    runs, ranks, pairs = {}, [], []
    for m in methods:
        for b in backbones:
            found = train_seeds(ARMS[m][0], seeds, runs_root, progress, reuse, **base, backbone=b)
            runs[(m, b)] = found
            for basis in bases:
                for r in found:
                    analyze(r, basis=basis, progress=progress)
        every = [r for b in backbones for r in runs[(m, b)]]
        archs = [b for b in backbones for _ in runs[(m, b)]]
        for basis in bases:
            got = _compare_rows(m, basis, every, archs, runs_root / "_compare", progress)
            ranks += got[0]
            pairs += got[1]
    rank_cols = ["method", "basis", "pairs", "i", "j", "rank", "abs_corr"]
    pair_cols = ["method", "basis", "pairs", "run_a", "run_b", "top8", "rank_match"]
    return ArchStudy(
        base,
        backbones,
        runs,
        pd.DataFrame(ranks, columns=rank_cols),
        pd.DataFrame(pairs, columns=pair_cols),
    )


def _mean_std(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def pair_table(study: ArchStudy) -> pd.DataFrame:
    """Top-8 ordered |corr| and rank match, mean ± spread over the pairs of each kind."""
    rows = []
    for (m, basis, kind), g in study.pairs.groupby(["method", "basis", "pairs"], sort=False):
        rows.append(
            {
                "method": m,
                "basis": basis,
                "pairs": kind,
                "top-8 ordered corr": _mean_std(g["top8"]),
                "top-8 rank match": _mean_std(g["rank_match"]),
                "run pairs": len(g),
            }
        )
    return pd.DataFrame(rows)


def consensus_table(study: ArchStudy, chosen: dict[str, str]) -> pd.DataFrame:
    """Rank by rank, the mean |corr| of rank r with rank r across architectures and within each,
    for every method in the basis ``chosen[method]``."""
    out = None
    for m, basis in chosen.items():
        sub = study.ranks[(study.ranks["method"] == m) & (study.ranks["basis"] == basis)]
        table = sub.pivot_table(index="rank", columns="pairs", values="abs_corr", aggfunc="mean")
        table.columns = [f"{m} ({basis}): {c}" for c in table.columns]
        out = table if out is None else out.join(table)
    return out.round(3).reset_index()


def chosen_bases(methods: list[str]) -> dict[str, str]:
    return {m: DEFAULT_BASIS.get(m, "spectral") for m in methods}


def plot_consensus(study: ArchStudy, chosen: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tricl.experiments.arms import ARMS

    fig, axes = plt.subplots(1, len(chosen), figsize=(5 * len(chosen), 3.6), squeeze=False)
    for ax, (m, basis) in zip(axes[0], chosen.items()):
        sub = study.ranks[(study.ranks["method"] == m) & (study.ranks["basis"] == basis)]
        for kind, g in sub.groupby("pairs", sort=False):
            mean = g.groupby("rank")["abs_corr"].mean()
            across = " vs " in kind
            ax.plot(
                mean.index, mean.values, "o-" if across else "--",
                color=ARMS[m][1] if across else "grey", alpha=1.0 if across else 0.6, label=kind,
            )  # fmt: skip
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("rank (importance order)")
        ax.set_ylabel("|corr| of rank r with rank r")
        ax.set_title(f"{m}, {basis} basis")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def agreed_ranks(study: ArchStudy, chosen: dict[str, str], threshold: float = 0.8) -> list[str]:
    """One sentence per method: the ranks whose cross-architecture |corr| reaches ``threshold``
    (the verdicts' Identifiable line), and the top-8 mean across and within architectures."""
    out = []
    for m, basis in chosen.items():
        sub = study.ranks[(study.ranks["method"] == m) & (study.ranks["basis"] == basis)]
        across = sub[sub["pairs"].str.contains(" vs ")].groupby("rank")["abs_corr"].mean()
        within = sub[~sub["pairs"].str.contains(" vs ")]["abs_corr"].mean()
        ranks = [str(r) for r, v in across.items() if v >= threshold]
        out.append(
            f"- {m} ({basis} basis): ranks {', '.join(ranks) or 'none'} agree across"
            f" architectures at |corr| >= {threshold}; top-8 mean {across.mean():.2f} across,"
            f" {within:.2f} within one architecture."
        )
    return out


def study_markdown(study: ArchStudy, fig_dir: Path, command: str) -> list[str]:
    """The RESULTS.md section: settings, the pair table, the consensus table and its figure."""
    chosen = chosen_bases(list(dict.fromkeys(m for m, _ in study.runs)))
    fig_dir.mkdir(parents=True, exist_ok=True)
    slug = "architectures_" + "_".join(study.backbones)
    plot_consensus(study, chosen, fig_dir / f"{slug}.png")
    title = f"## Across architectures: {' vs '.join(study.backbones)} ({study.base['dataset']})"
    return [
        title,
        "",
        f"Made by `{command}`.",
        "",
        f"Settings: `{study.base}`. Every seed of one backbone is compared with every seed of"
        " the other, rank by rank, on the test images; the same-backbone pairs are the reference."
        " The identifiability claim at its strongest: features that belong to the data and its"
        " augmentations agree across architectures as well as across seeds.",
        "",
        pair_table(study).to_markdown(index=False),
        "",
        "Consensus by rank (the mean absolute correlation of rank r with rank r over the pairs of"
        " each kind;"
        f" {', '.join(f'{m}: {b} basis' for m, b in chosen.items())}):",
        "",
        consensus_table(study, chosen).to_markdown(index=False),
        "",
        *agreed_ranks(study, chosen),
        "",
        f"![across architectures](figures/{slug}.png)",
        "",
    ]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train one recipe on two or more backbones (3 seeds each), analyse every run"
        " in both bases and compare every pair of runs rank by rank: do different architectures"
        " find the same top features? Prints the pair table and the consensus by rank, and with"
        " --results rewrites its section of a RESULTS.md. Cost on mnist5k, 15 epochs: a small_cnn"
        " seed about 3 min on one idle core, small_resnet 4.5 min (17-18 s an epoch); reused runs"
        " cost only their analysis.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="mnist5k", help="a dataset name or folder:PATH")
    p.add_argument("--backbones", nargs="+", default=["small_cnn", "small_resnet"])
    p.add_argument("--methods", nargs="+", default=["tri-eigen", "simclr"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=15, help="every run's epochs (the same recipe)")
    p.add_argument("--runs-root", type=Path, required=True, help="where the runs are kept")
    p.add_argument("--reuse", type=Path, default=None, help="finished runs to reuse (checkpoints)")
    p.add_argument("--workers", type=int, default=1, help="runs trained side by side")
    p.add_argument("--results", type=Path, default=None, help="a RESULTS.md: its section rewritten")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from tricl.cli import is_user_error
    from tricl.data import set_progress
    from tricl.experiments.plateau import absolute_dataset
    from tricl.experiments.results import rewrite_section

    args = _parser().parse_args(argv)
    set_progress(not args.no_progress)
    base = {"dataset": absolute_dataset(args.dataset), "epochs": args.epochs}
    try:
        study = architecture_study(
            args.methods, args.backbones, args.seeds, args.runs_root, base,
            reuse=args.reuse, workers=args.workers, progress=not args.no_progress,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if not (is_user_error(exc) or isinstance(exc, ArchError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(pair_table(study).to_string(index=False))
        print(consensus_table(study, chosen_bases(args.methods)).to_string(index=False))
    if args.results is not None:
        command = " ".join(["python -m tricl.experiments.architectures", *(argv or sys.argv[1:])])
        lines = study_markdown(study, args.results.parent / "figures", command)
        rewrite_section(args.results, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
