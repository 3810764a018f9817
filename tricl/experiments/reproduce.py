"""Reproduce the paper's claims at small scale and write ``docs/RESULTS.md`` with figures.

    python -m tricl.experiments.reproduce                        # mnist5k, 3 seeds per method
    python -m tricl.experiments.reproduce --cifar ../shared/data/cifar10-subset   # + CIFAR-10
    python -m tricl.experiments.reproduce --smoke --out /tmp/x   # tiny version (CI)
    python -m tricl.experiments.reproduce --paper-scale          # the paper's CIFAR-10 run (GPU)

``--paper-scale`` (:mod:`tricl.experiments.paper_scale`) trains the paper's own setting instead:
full CIFAR-10, ResNet-18, 200 epochs; it needs a GPU in practice (see its ``--help``).

For each method (SimCLR, triCL, spectral, tri-spectral, and the official code's triCL recipe) it
trains every seed with ``tricl train``'s own function, analyses each run (``tricl analyze``) and
compares the seeds of a method (``tricl compare``); then it writes the tables and PNG figures.
Runs are reused or resumed when they already exist, so the script can be stopped and restarted.
All numbers are on the evaluation (test) split, which no recipe was tuned on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.config import PRECISIONS
from tricl.experiments.common import Variant, train_in_parallel, train_seeds
from tricl.methods import method_color

# Each arm: a label, a colour and the recipe. "tricl" follows the paper (S learned, on every
# similarity); "tricl-official" reproduces the official code (S on view 1 only, never optimised).
# An arm that is a plain method takes the method's colour (tricl.methods); recipe variants of a
# method have their own.
ARMS: dict[str, tuple[Variant, str]] = {
    "simclr": (Variant("simclr", {"method": "simclr"}), method_color("simclr")),
    "tricl": (Variant("tricl", {"method": "tricl"}), method_color("tricl")),
    "tricl-official": (
        Variant(
            "tricl-official", {"method": "tricl", "s_placement": "first_view", "s_frozen": True}
        ),
        "#ff9896",
    ),
    "tricl-geometric": (
        Variant(
            "tricl-geometric",
            {"method": "tricl", "s_init": "geometric", "s_init_spread": 1.0},
            note="S starts spread from 1 to 0.1 (distinct values from the first step)",
        ),
        "#8c564b",
    ),
    "tricl-whiten": (
        Variant(
            "tricl-whiten",
            {"method": "tricl", "decorrelation": "whiten", "s_lr_mult": 10.0},
            note="a whitening decorrelation the features can meet, and 10x learning rate on S:"
            " the recipe that orders the synthetic factors",
        ),
        "#e377c2",
    ),
    "spectral": (Variant("spectral", {"method": "spectral"}), method_color("spectral")),
    "tri-spectral": (
        Variant("tri-spectral", {"method": "tri-spectral"}),
        method_color("tri-spectral"),
    ),
    "tri-eigen": (
        Variant(
            "tri-eigen",
            {"method": "tri-eigen"},
            note="triCL whose last rotation and S are solved in closed form from running"
            " covariances each step (tricl.heads.EigenHead), the backbone trained through them",
        ),
        method_color("tri-eigen"),
    ),
    "neuralef": (
        Variant(
            "neuralef",
            {"method": "neuralef"},
            note="NeuralEF-CLR (Deng et al. 2023): the peer method that orders its outputs by a"
            " stop-gradient penalty; features in index order",
        ),
        method_color("neuralef"),
    ),
}


# The paper's pair and the spectral pair; the variants are opt-in (each adds about 3 minutes).
DEFAULT_METHODS = ["simclr", "tricl", "spectral", "tri-spectral"]


@dataclass
class ArmResult:
    """Everything measured for one arm on one dataset."""

    name: str
    runs: list
    analyses: list
    pairs: pd.DataFrame


def run_arm(
    name: str,
    seeds: list[int],
    root: Path,
    base: dict[str, Any],
    progress: bool,
    reuse: Path | None = None,
) -> ArmResult:
    from tricl.analysis import analyze, compare

    variant, _ = ARMS[name]
    runs = train_seeds(variant, seeds, root, progress=progress, reuse=reuse, **base)
    analyses = [analyze(r, progress=progress) for r in runs]
    pairs = compare(runs, progress=progress).pairs if len(runs) > 1 else pd.DataFrame()
    return ArmResult(name, runs, analyses, pairs)


def _mean_std(values, digits: int = 3) -> str:
    v = np.asarray(list(values), dtype=float)
    mean, std = f"{v.mean():.{digits}f}", f"{v.std():.{digits}f}"
    return f"{mean} ± {std}" if len(v) > 1 else mean


def _shown_metrics(results: list[ArmResult]) -> list[tuple[str, str]]:
    """``(column, label)`` of every registered metric the arms' pair tables hold, registry order."""
    from tricl.analysis.metrics import column_info, metric_columns

    have = set().union(*(r.pairs.columns for r in results)) if results else set()
    shown = []
    for col in metric_columns(spectral=True):
        if col in have:
            metric, spectral = column_info(col)
            shown.append((col, f"{metric.label}, spectral basis" if spectral else metric.label))
    return shown


def identifiability_table(results: list[ArmResult]) -> pd.DataFrame:
    """Mean ± std over seed pairs of every registered metric, one row per arm."""
    arms = [r for r in results if not r.pairs.empty]
    metrics = _shown_metrics(arms)
    rows = []
    for r in arms:
        row = {"method": r.name}
        row.update({label: _mean_std(r.pairs[col]) for col, label in metrics})
        rows.append({**row, "seed pairs": len(r.pairs)})
    return pd.DataFrame(rows)


def accuracy_table(results: list[ArmResult], k_small: int) -> pd.DataFrame:
    rows = []
    for r in results:

        def at(selection: str, column: str, a) -> float:
            c = a.curves()
            hit = c[(c["selection"] == selection) & (c["k"] == k_small)]
            return float(hit[column].iloc[0]) if len(hit) else float("nan")

        rows.append(
            {
                "method": r.name,
                "linear (all)": _mean_std(a.linear_acc for a in r.analyses),
                "k-NN (all)": _mean_std(a.knn_acc for a in r.analyses),
                f"linear top-{k_small}": _mean_std(at("top", "linear_acc", a) for a in r.analyses),
                f"linear random-{k_small}": _mean_std(
                    at("random", "linear_acc", a) for a in r.analyses
                ),
                f"linear bottom-{k_small}": _mean_std(
                    at("bottom", "linear_acc", a) for a in r.analyses
                ),
                f"mAP top-{k_small}": _mean_std(at("top", "retrieval_map", a) for a in r.analyses),
                "importance order": r.analyses[0].importance.default,
            }
        )
    return pd.DataFrame(rows)


def training_cost_table(results: list[ArmResult]) -> pd.DataFrame:
    """Epochs and training wall time per run, one row per arm, from each run's metrics.jsonl.

    Minutes per run sum the run's own epoch times (a resumed run counts the epochs it logged, not
    the time it sat stopped); images/s is the median over its epochs. Runs that trained side by
    side (``--workers``) each report their own pace, so the arm total is CPU-worker time, not the
    study's elapsed time.
    """
    rows = []
    for r in results:
        logs = [run.metrics() for run in r.runs]
        minutes = [sum(row["seconds"] for row in log) / 60 for log in logs]
        rows.append(
            {
                "method": r.name,
                "epochs": "/".join(sorted({str(len(log)) for log in logs})),
                "minutes per run": _mean_std(minutes, 1),
                "images/s": _mean_std(
                    (np.median([row["images_per_s"] for row in log]) for log in logs), 0
                ),
                "worker-hours, all seeds": f"{sum(minutes) / 60:.2f}",
            }
        )
    return pd.DataFrame(rows)


def plot_identifiability(results: list[ArmResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if not r.pairs.empty]
    metrics = _shown_metrics(shown)
    fig, ax = plt.subplots(figsize=(max(10, 1.3 * len(metrics)), 3.8))
    width = 0.8 / max(1, len(shown))
    for i, r in enumerate(shown):
        means = [r.pairs[m].mean() for m, _ in metrics]
        stds = [r.pairs[m].std(ddof=0) for m, _ in metrics]
        xs = np.arange(len(metrics)) + i * width
        ax.bar(xs, means, width, yerr=stds, label=r.name, color=ARMS[r.name][1], capsize=2)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(shown) - 1) / 2)
    ax.set_xticklabels([label.replace(", ", "\n") for _, label in metrics], fontsize=8)
    ax.set_ylim(0, 1.3)
    ax.set_ylabel("mean over seed pairs")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(4, len(shown)), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_few_features(results: list[ArmResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {"top": "-", "random": ":", "bottom": "--"}
    for ax, column, label in (
        (axes[0], "linear_acc", "linear-probe accuracy"),
        (axes[1], "retrieval_map", "retrieval mAP"),
    ):
        for r in results:
            if r.name not in ("simclr", "tricl", "neuralef", "tri-eigen"):  # orders + baseline
                continue
            curves = pd.concat([a.curves() for a in r.analyses])
            mean = curves.groupby(["selection", "k"])[column].mean().reset_index()
            for sel, style in styles.items():
                part = mean[mean["selection"] == sel]
                if sel != "random" and r.name == "simclr":
                    continue  # SimCLR's order is not learned: only its random-k is shown
                ax.plot(
                    part["k"],
                    part[column],
                    style,
                    marker="o",
                    ms=3,
                    color=ARMS[r.name][1],
                    label=f"{r.name} {sel}-k",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of features k")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spectra(results: list[ArmResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for r in results:
        for j, a in enumerate(r.analyses):
            scores = a.importance.scores.get("S")
            if scores is None:
                continue
            ax.plot(
                np.sort(scores)[::-1],
                color=ARMS[r.name][1],
                alpha=0.8,
                label=r.name if j == 0 else None,
            )
    ax.set_xlabel("feature rank")
    ax.set_ylabel("diag(S)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spectral_tables(results: list[ArmResult], k_small: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Few-feature accuracy per arm in the spectral basis, and the consensus of all runs.

    Returns:
        ``(accuracy, consensus)``: one row per arm with linear-probe accuracy of the top-,
        random- and bottom-``k_small`` spectral features (mean ± std over seeds) and the mean
        number of unresolved groups among the top ``k_small`` ranks; and the first 10 rows of
        :func:`tricl.analysis.consensus` over every run of every arm.
    """
    from tricl.analysis import analyze, consensus

    rows = []
    for r in results:
        spectral = [analyze(run, basis="spectral", progress=False) for run in r.runs]
        row: dict[str, Any] = {"method": r.name}
        for sel in ("top", "random", "bottom"):
            accs = []
            for a in spectral:
                c = a.curves()
                accs.append(c[(c["selection"] == sel) & (c["k"] == k_small)]["linear_acc"].mean())
            row[f"linear {sel}-{k_small}"] = _mean_std(accs)
        row[f"unresolved groups in top {k_small}"] = _mean_std(
            [sum(lo < k_small for lo, _ in a.groups) for a in spectral]
        )
        rows.append(row)
    runs = [run for r in results for run in r.runs]
    table = consensus(runs, progress=False).table if len(runs) > 1 else pd.DataFrame()
    shown = table.drop(columns="top_indices").head(10).round(3) if len(table) else table
    return pd.DataFrame(rows), shown


def plot_spectral_few_features(results: list[ArmResult], path: Path, title: str) -> None:
    """Linear-probe accuracy with the top-, random- and bottom-k spectral features, per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tricl.analysis import analyze

    fig, ax = plt.subplots(figsize=(6, 3.8))
    styles = {"top": "-", "random": ":", "bottom": "--"}
    for r in results:
        curves = pd.concat(
            [analyze(run, basis="spectral", progress=False).curves() for run in r.runs]
        )
        mean = curves.groupby(["selection", "k"])["linear_acc"].mean().reset_index()
        for sel, style in styles.items():
            part = mean[mean["selection"] == sel]
            ax.plot(part["k"], part["linear_acc"], style, marker="o", ms=3, color=ARMS[r.name][1],
                    label=f"{r.name} {sel}-k")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of spectral features k")
    ax.set_ylabel("linear-probe accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spectral_markdown(results: list[ArmResult], fig_dir: Path, slug: str, title: str) -> list[str]:
    """The report's spectral-basis section for one dataset: tables and a figure."""
    k_small = 8 if max(a.k for r in results for a in r.analyses) <= 64 else 16
    accuracy, cons = spectral_tables(results, k_small)
    plot_spectral_few_features(results, fig_dir / f"{slug}_spectral_few_features.png", title)
    lines = [
        "### Features in the spectral basis",
        "",
        "Each run's features rotated onto its spectral basis (`tricl analyze --basis spectral`):"
        " feature #i is rank i of the augmentation spectrum, whatever the method or seed. Ranks"
        " whose eigenvalue gap lies within twice the split-half noise form unresolved groups"
        " (their order is not identifiable from the data).",
        "",
        accuracy.to_markdown(index=False),
        "",
        f"![spectral few features](figures/{slug}_spectral_few_features.png)",
        "",
    ]
    if len(cons):
        lines += [
            "Consensus of every run above (`tricl compare RUN... --consensus`): rank r against"
            " rank r over every pair of runs, all seeds and methods.",
            "",
            cons.to_markdown(index=False),
            "",
        ]
    return lines


def plot_synthetic(results, path: Path) -> None:
    """|corr| of the rank-r feature with factor r: one bar group per arm, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for label, _, _ in results))
    m = len(results[0][2].rank_corr)
    fig, ax = plt.subplots(figsize=(9, 3.4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        corr = np.array([r.rank_corr for lab, _, r in results if lab == label])  # (seeds, m)
        xs = np.arange(m) + i * width
        ax.bar(xs, corr.mean(axis=0), width, label=label, alpha=0.75)
        for row in corr:
            ax.plot(xs, row, "k.", ms=4)
    ax.set_xticks(np.arange(m) + width * (len(labels) - 1) / 2)
    ax.set_xticklabels([f"rank {r + 1}" for r in range(m)])
    ax.axhline(0.9, color="k", lw=0.6, ls="--")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("|corr(rank-r feature, factor r)|")
    ax.set_title("Known-answer check: 4 latent factors, strengths 0.6 > 0.5 > 0.4 > 0.35")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _slug(title: str) -> str:
    """Figure-file prefix of a section: its first word, plus its epochs when the title names
    them (two CIFAR sections of different lengths keep apart)."""
    epochs = re.search(r"(\d+) epochs(, (\w+))?", title)
    if epochs is None:
        return title.split()[0].lower()
    precision = f"-{epochs.group(3)}" if epochs.group(3) else ""
    return title.split()[0].lower() + f"-{epochs.group(1)}ep{precision}"


def cifar_title(epochs: int, precision: str = "auto") -> str:
    """The CIFAR section's heading: its epochs, and its precision unless 'auto' (as before)."""
    marked = "" if precision == "auto" else f", {precision}"
    return f"CIFAR-10 subset (small CNN, 128 features, {epochs} epochs{marked})"


def section_markdown(
    title: str, results: list[ArmResult], base: dict, fig_dir: Path, command: str = ""
) -> list[str]:
    """One dataset's section of RESULTS.md (``## title``): tables, and figures into ``fig_dir``.

    ``command``, when given, is named under the heading (a section can be rewritten alone, see
    :func:`replace_dataset_section`, so each names the command that made it).
    """
    slug = _slug(title)
    k_small = 8 if base.get("proj_dim", 64) <= 64 else 16  # curves are at powers of 2
    lines = [f"## {title}", ""]
    if command:
        lines += [f"Made by `{command}`.", ""]
    lines += ["Settings: `" + json.dumps(base) + "`", ""]
    lines += ["Training cost:", "", training_cost_table(results).to_markdown(index=False), ""]
    lines += [
        "### Identifiability across seeds",
        "",
        identifiability_table(results).to_markdown(index=False),
        "",
    ]
    plot_identifiability(results, fig_dir / f"{slug}_identifiability.png", title)
    lines += [f"![identifiability](figures/{slug}_identifiability.png)", ""]
    lines += [
        "### Accuracy (all features, and few features)",
        "",
        accuracy_table(results, k_small).to_markdown(index=False),
        "",
    ]
    plot_few_features(results, fig_dir / f"{slug}_few_features.png", title)
    plot_spectra(results, fig_dir / f"{slug}_spectra.png", f"{title}: learned S")
    lines += [
        f"![few features](figures/{slug}_few_features.png)",
        f"![spectra](figures/{slug}_spectra.png)",
        "",
    ]
    return lines + spectral_markdown(results, fig_dir, slug, f"{title}: spectral basis")


def replace_dataset_section(text: str, section: list[str]) -> str:
    """``text`` (a RESULTS.md) with the section of the same ``## `` heading replaced by
    ``section``; appended before the known-answer section when the file has none yet.

    A section runs from its heading to the next ``## `` heading.
    """
    heading = section[0]
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    if heading in lines:
        i = lines.index(heading)
        end = next((j for j in starts if j > i), len(lines))
    else:
        i = end = next((j for j in starts if lines[j].startswith("## Known-answer")), len(lines))
    return "\n".join([*lines[:i], *section, *lines[end:]])


def write_report(
    sections: list[tuple[str, list[ArmResult], dict]],
    out: Path,
    extra_markdown: str = "",
    synthetic=None,
    command: str = "python -m tricl.experiments.reproduce",
    update: bool = False,
) -> Path:
    """Write RESULTS.md and its figures under ``out``; return the Markdown path.

    With ``update``, the existing RESULTS.md keeps everything but the sections studied here,
    which are rewritten in place, each naming ``command``.
    """
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = out / "RESULTS.md"
    if update and path.exists():
        text = path.read_text()
        for title, results, base in sections:
            text = replace_dataset_section(
                text, section_markdown(title, results, base, fig_dir, command)
            )
        path.write_text(text)
        return path
    lines = [
        "# Results: identifiability and feature importance at small scale",
        "",
        f"Made by `{command}` (see its `--help`). Every number is"
        " measured on the test split; identifiability is the mean ± std over the seed pairs"
        " of a method. Feature order: softplus(s) for methods with S (tri-eigen: the eigenvalues"
        " it solves for), the index order for NeuralEF-CLR (feature 0 = first eigenfunction),"
        " variance order for SimCLR and spectral.",
        "",
    ]
    for title, results, base in sections:
        lines += section_markdown(title, results, base, fig_dir)
    if synthetic:
        lines += synthetic_markdown(synthetic, fig_dir)
    if extra_markdown:
        lines += [extra_markdown, ""]
    path.write_text("\n".join(lines))
    return path


def synthetic_markdown(synthetic, fig_dir: Path) -> list[str]:
    """The known-answer section: its table and figure."""
    from tricl.experiments.synthetic import RECIPES, markdown_table

    plot_synthetic(synthetic, fig_dir / "synthetic_factors.png")
    return [
        "## Known-answer check: latent factors of known strength",
        "",
        "`python -m tricl.experiments.synthetic`: 4 binary latent factors mixed into 16-D"
        " observations; a positive pair keeps factor i with probability (1 + lambda_i) / 2,"
        " lambda = (0.6, 0.5, 0.4, 0.35), so the augmentation graph's top eigenfunctions"
        " are the factors in this order. An MLP with k = 4 outputs, 1500 steps of batch"
        " 512. A cell is |corr| of the feature at importance rank r with factor r"
        " (1.0: factor r recovered at rank r). Recipes: "
        + "; ".join(f"`{n}` = `{json.dumps(kw)}`" for n, kw in RECIPES.items()),
        "",
        *markdown_table(synthetic),
        "",
        "![synthetic](figures/synthetic_factors.png)",
        "",
    ]


def _add_section_arguments(p: argparse.ArgumentParser) -> None:
    """The options that rewrite part of an existing RESULTS.md instead of all of it."""
    p.add_argument(
        "--update",
        action="store_true",
        help="rewrite only the dataset sections studied here, in place in the existing"
        " RESULTS.md (each names this command); the rest of the file stays",
    )
    p.add_argument(
        "--no-mnist5k",
        action="store_true",
        help="skip the mnist5k study (with --cifar --update: rewrite the CIFAR section alone)",
    )


def _add_cifar_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the CIFAR study."""
    p.add_argument(
        "--cifar",
        type=Path,
        default=None,
        help="an ImageFolder CIFAR-10 tree (train/, test/) for a second study",
    )
    p.add_argument("--cifar-epochs", type=int, default=10, help="training epochs per CIFAR run")
    p.add_argument(
        "--cifar-precision",
        default="auto",
        choices=list(PRECISIONS),
        help="arithmetic of the CIFAR runs' training steps (RunConfig.precision); bf16 halves a"
        " CPU step where the CPU has AVX-512 BF16 or AMX, and the section's title names it",
    )
    p.add_argument(
        "--cifar-methods",
        nargs="+",
        default=["simclr", "tricl"],
        choices=list(ARMS),
        help="arms of the CIFAR study (each CIFAR run takes minutes on a CPU)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        choices=list(ARMS),
        help="arms of the mnist5k study; the defaults keep it under 40 minutes on 2 cores, add"
        " the others (e.g. --methods " + " ".join(ARMS) + ") for the full comparison",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds per arm")
    p.add_argument("--epochs", type=int, default=15, help="training epochs per run (mnist5k)")
    p.add_argument(
        "--reuse",
        type=Path,
        default=Path("checkpoints"),
        help="finished runs with the same recipe here are used, not retrained (the shipped runs)",
    )
    _add_cifar_arguments(p)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="train and analyse this many runs side by side, each with cores/N threads (2 on a"
        " 2-core machine: two one-thread runs do more per hour than one two-thread run); the"
        " comparisons and tables follow in this process",
    )
    p.add_argument(
        "--synthetic-seeds",
        type=int,
        nargs="*",
        default=[0, 1, 2],
        help="seeds of the known-answer factor check (none to skip it; skipped with --smoke)",
    )
    p.add_argument(
        "--runs-root",
        type=Path,
        default=Path("experiments/runs"),
        help="where the study's runs are kept (reused and resumed)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where RESULTS.md goes (default: docs, or experiments/paper_scale with --paper-scale)",
    )
    p.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="Markdown appended to RESULTS.md (the investigation write-up)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny version for CI: digits, 1 epoch, 2 seeds, simclr and tricl (with --paper-scale:"
        " a small CNN, small widths, 1 epoch on --paper-dataset)",
    )
    p.add_argument(
        "--image-text",
        action="store_true",
        help="add the image-text section (clip vs triclip on mnist5k-captions, the shipped runs"
        " reused; also alone: python -m tricl.experiments.image_text)",
    )
    _add_section_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    from tricl.experiments.paper_scale import add_arguments

    add_arguments(p, list(ARMS))
    return p


def _train_first(
    args: argparse.Namespace, methods: list[str], root: Path, base: dict, reuse: Path | None = None
) -> None:
    """With ``--workers N`` > 1, train and analyse every run of a section in N processes first;
    :func:`run_arm` then finds them finished and their analyses cached."""
    if args.workers > 1:
        jobs = [(ARMS[m][0], seed) for m in methods for seed in args.seeds]
        train_in_parallel(jobs, root, args.workers, reuse=reuse, analyze=True, **base)


def _sections(args: argparse.Namespace, progress: bool) -> list[tuple[str, list[ArmResult], dict]]:
    """Train, analyse and compare every arm of every study the arguments ask for."""
    sections = []
    if args.smoke:
        base = {
            "dataset": "digits",
            "epochs": 1,
            "proj_dim": 16,
            "proj_hidden_dim": 32,
            "batch_size": 128,
            "warmup_epochs": 0,
        }
        methods, seeds = [m for m in args.methods if m in ("simclr", "tricl")], args.seeds[:2]
        results = [run_arm(m, seeds, args.runs_root / "digits", base, progress) for m in methods]
        sections.append(("digits (smoke)", results, base))
    else:
        base = {"dataset": "mnist5k", "epochs": args.epochs}
        if not args.no_mnist5k:
            _train_first(args, args.methods, args.runs_root / "mnist5k", base, args.reuse)
            results = [
                run_arm(m, args.seeds, args.runs_root / "mnist5k", base, progress, reuse=args.reuse)
                for m in args.methods
            ]
            sections.append(("mnist5k (small CNN, 64 features)", results, base))
        if args.cifar is not None:
            cbase = {
                "dataset": f"folder:{args.cifar.resolve()}",
                "epochs": args.cifar_epochs,
                "proj_dim": 128,
            }
            if args.cifar_precision != "auto":  # auto: the recipe (and run names) as before
                cbase["precision"] = args.cifar_precision
            _train_first(args, args.cifar_methods, args.runs_root / "cifar10", cbase)
            cres = [
                run_arm(m, args.seeds, args.runs_root / "cifar10", cbase, progress)
                for m in args.cifar_methods
            ]
            title = cifar_title(args.cifar_epochs, args.cifar_precision)
            sections.append((title, cres, cbase))
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers} (e.g. --workers 2)")
    shown = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m tricl.experiments.reproduce", *shown])
    if args.paper_scale:
        from tricl.experiments.paper_scale import run_paper_scale

        return run_paper_scale(args, command)
    progress = not args.no_progress
    from tricl.data import set_progress

    set_progress(progress)  # --no-progress silences dataset loading too, as in tricl's CLI
    from tricl.cli import _is_ours

    try:
        sections = _sections(args, progress)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if not _is_ours(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    synthetic = None
    if args.synthetic_seeds and not args.smoke and not args.update:
        from tricl.experiments.synthetic import study

        synthetic = study(
            args.synthetic_seeds, progress=progress, cache=args.runs_root / "synthetic.json"
        )
    notes = args.notes.read_text() if args.notes else ""
    out = args.out if args.out is not None else Path("docs")
    path = write_report(sections, out, notes, synthetic, command, update=args.update)
    if args.image_text and not args.smoke:
        from tricl.experiments import image_text

        study = image_text.run_image_text_study(
            args.seeds, args.runs_root / "image-text", reuse=args.reuse, progress=progress
        )
        section = image_text.image_text_markdown(study, out / "figures")
        path.write_text(image_text.replace_section(path.read_text(), section))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
