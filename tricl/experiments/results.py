"""``docs/RESULTS.md`` from the studies' arms: tables, figures, and sections rewritten in place.

One dataset's section (:func:`section_markdown`) holds its training cost, identifiability across
seeds, accuracy with all and few features, and the same in the spectral basis;
:func:`write_report` writes the whole file (or, with ``update``, only the sections studied).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.experiments.arms import ARMS, ArmResult


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


def rewrite_section(path: Path, section: list[str]) -> None:
    """Rewrite ``section`` (its ``## `` heading first) in the RESULTS.md at ``path`` in place, or
    add it (see :func:`replace_dataset_section`); written atomically, so an interrupted write
    leaves the old file whole."""
    from tricl.io import atomic_write_text

    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, replace_dataset_section(old, section))
    print(f"wrote {path}")


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
