"""The Compare seeds page's view-models: score columns, per-configuration cards with their
verdicts, the image-text and consensus tables, and the notes that explain them.

Everything is shaped from stored comparison tables (one row per pair of runs, a column per
metric of :data:`tricl.analysis.metrics.METRICS`); nothing here reads a model or a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from tricl.analysis.metrics import METRICS
from tricl.bases import get_basis
from tricl.methods import get_method, method_label
from tricl.report import verdicts
from tricl.report.features import ranges_label
from tricl.report.verdicts import CKA, IDENTIFIABLE, MCC, TOP8, Verdict

SPECTRAL_HELP = (
    "after rotating each run onto its spectral basis (eigenvectors of the augmentation's "
    "positive-pair covariance, estimated on train pairs, most invariant first): the order the "
    "paper's theory predicts, read off post hoc"
)
CARD_METRICS = (TOP8, MCC, CKA)  # the card's columns; the verdict rule reads the same three


def score_columns(frame: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
    """Canonical column name -> (column in ``frame``, label, help), in registry order.

    The trained-basis scores first (``name``), then the spectral ones (``spectral_name``); the
    column in the frame may carry an older spelling (see :func:`verdicts.basis_columns`).
    """
    out = {}
    for m in METRICS.values():
        if m.name in frame:
            out[m.name] = (m.name, m.label, m.legend)
    spectral = verdicts.basis_columns(frame, spectral=True)
    for m in METRICS.values():
        names = [m.spectral_name, m.spectral_name.replace("ordered_", "")] if m.spectral else []
        col = spectral.get(m.name) or next((n for n in names if n in frame), None)
        if col:
            label, legend = f"{m.label}, spectral basis", f"{m.legend}; {SPECTRAL_HELP}"
            out[m.spectral_name] = (col, label, legend)
    return out


def group_row(configuration: str, group: str, method: str, seeds: int, pairs: pd.DataFrame) -> dict:
    """One configuration's row: the mean and spread (``<name>_std``) of every metric over its
    seed pairs, by canonical name (:func:`score_columns`)."""
    row: dict = {
        "configuration": configuration,
        "group": group,
        "method": method,
        "seeds": seeds,
        "pairs": len(pairs),
    }
    for name, (col, _, _) in score_columns(pairs).items():
        row[name] = float(pairs[col].mean())
        row[f"{name}_std"] = float(pairs[col].std(ddof=0))
    return row


@dataclass(frozen=True)
class BasisLine:
    """One basis of a card: its scores (text, "–" when not scored there) and verdict."""

    basis: str
    scores: tuple[str, ...]
    verdict: Verdict


def _score(row: pd.Series | dict, name: str, spread: bool = False) -> str:
    value = row.get(name, float("nan"))
    if value is None or math.isnan(value):
        return "–"
    std = row.get(f"{name}_std", float("nan"))
    return f"{value:.2f} ± {std:.2f}" if spread and not math.isnan(std) else f"{value:.2f}"


def card_lines(row: pd.Series | dict) -> list[BasisLine]:
    """The card's per-basis lines: trained axes, then the spectral basis when it was scored.

    CKA is not scored in the spectral basis (see :data:`verdicts.CKA_WHITENED_NOTE`).
    """
    out = []
    for basis, names in (
        ("trained", {n: n for n in CARD_METRICS}),
        ("spectral", {n: METRICS[n].spectral_name for n in CARD_METRICS if METRICS[n].spectral}),
    ):
        if names.get(TOP8) not in row or pd.isna(row.get(names[TOP8])):
            continue
        b = get_basis(basis)
        v = verdicts.judge(
            row[names[TOP8]],
            row.get(f"{names[TOP8]}_std"),
            row.get(names[MCC]) if MCC in names else None,
            None if b.whitened else row.get(names.get(CKA, ""), None),
        )
        scores = tuple(
            _score(row, names[n], spread=n == TOP8) if n in names else "–" for n in CARD_METRICS
        )
        out.append(BasisLine(b.label, scores, v))
    return out


def card_markdown(row: pd.Series | dict) -> str:
    """The card's table (a row per basis: the three scores and the verdict word) as Markdown.

    A Markdown table keeps every label whole at two cards a line (metric tiles cut them)."""
    head = ["basis", *(METRICS[n].label for n in CARD_METRICS), "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for line in card_lines(row):
        word = f":{line.verdict.color}[{line.verdict.icon} **{line.verdict.word}**]"
        lines.append("| " + " | ".join([line.basis, *line.scores, word]) + " |")
    return "\n".join(lines)


def card_caption(row: pd.Series | dict) -> str:
    """Under the card's table: what each verdict found means, basis by basis."""
    return " · ".join(f"{line.basis}: {line.verdict.meaning}" for line in card_lines(row))


def unresolved_note(ks: Sequence[int], groups: Iterable[Sequence[tuple[int, int]]]) -> str:
    """Which spectral ranks the seeds can be compared on: every seed's unresolved groups joined
    (a rank is safe only if no seed has it in a group).

    Args:
        ks: each seed's number of features.
        groups: each seed's unresolved groups, as (first, last) 0-based ranks.
    """
    k = min(ks)
    grouped = sorted({r for gs in groups for g in gs for r in range(g[0], g[1] + 1) if r < k})
    if not grouped:
        return f"Spectral basis: all {k} ranks are resolved in every seed: safe to compare."
    safe = ranges_label([r for r in range(k) if r not in set(grouped)]) or "none"
    return (
        f"Spectral basis, order not identifiable from the data: {ranges_label(grouped)} (in at "
        f"least one seed). **Safe to compare across seeds: {safe}.**"
    )


def summary_table(table: pd.DataFrame, columns: dict[str, tuple[str, str, str]]) -> pd.DataFrame:
    """The per-configuration table as shown: labels for columns, method labels, verdicts."""
    show = table.drop(columns=["group", *(f"{n}_std" for n in columns if f"{n}_std" in table)])
    for basis in ("trained", "spectral"):
        show[f"verdict, {get_basis(basis).label}"] = [
            next((v.verdict.word for v in card_lines(r) if v.basis == get_basis(basis).label), "")
            for _, r in table.iterrows()
        ]
    show = show.rename(columns={n: label for n, (_, label, _) in columns.items()})
    show["method"] = show["method"].map(method_label)
    return show


def metric_legend(columns: dict[str, tuple[str, str, str]]) -> str:
    """Each shown metric's label and help, then the verdict rule and the CKA note."""
    metrics = "\n".join(f"- **{label}**: {help_}" for _, label, help_ in columns.values())
    return (
        f"{metrics}\n\n**Verdicts**, per basis (the same words in `tricl compare`, the Study "
        f"page and the README):\n{verdicts.rule_markdown()}\n\n{verdicts.CKA_WHITENED_NOTE}"
    )


def pairs_axes(basis: str) -> str:
    """What the rows and columns of a pair's |corr| heatmap are, in ``basis``."""
    b = get_basis(basis)
    return (
        "each run's spectral basis, rank order"
        if b.fixed_order
        else "both in their own importance order"
    )


def pair_table(pairs: pd.DataFrame, shown: dict[str, str]) -> pd.DataFrame:
    """The pair table as shown: run labels first, metric labels for columns."""
    out = pairs.copy()
    out.insert(0, "b", out["run_b"].map(shown))
    out.insert(0, "a", out["run_a"].map(shown))
    columns = score_columns(pairs)
    return out.drop(columns=["run_a", "run_b"]).rename(
        columns={col: label for col, label, _ in columns.values()}
    )


# --------------------------------------------------------------------------- image-text runs


def image_text_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The image-text summary as shown: method label, side, basis, pairs, metric means."""
    shown = pd.DataFrame(
        {
            "method": summary["method"].map(method_label),
            "side": summary["side"],
            "basis": summary["basis"].map(lambda b: get_basis(b).pair_label),
            "seed pairs": summary["n_pairs"],
        }
    )
    for name, m in METRICS.items():
        shown[m.label] = summary[f"{name}_mean"]
    return shown


def default_pair(methods: Sequence[str]) -> tuple[int, int]:
    """Two seeds of one method (a method with S first, e.g. triCLIP), for a heatmap's first view."""
    for method in sorted(set(methods), key=lambda m: (not get_method(m).has_s, m)):
        same = [i for i, m in enumerate(methods) if m == method]
        if len(same) >= 2:
            return same[0], same[1]
    return 0, 1


def consensus_frame(
    table: pd.DataFrame, shown: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The consensus table with run labels, and its CSV (top image indices as text)."""
    t = table.copy()
    t["representative"] = t["representative"].map(lambda n: shown.get(n, n))
    csv = t.assign(top_indices=t["top_indices"].map(lambda v: " ".join(map(str, v))))
    return t, csv


def identifiable_groups_markdown(groups: Sequence[tuple[str, pd.DataFrame]]) -> str:
    """The seed groups whose trained axes are Identifiable or Borderline, as one Markdown
    sentence ('' if none): the runs whose leading features agree from seed to seed as trained.

    Args:
        groups: (label, the stored trained-basis comparison's pair table) per seed group.
    """
    found = []
    for label, pairs in groups:
        columns = verdicts.basis_columns(pairs, spectral=False)
        if TOP8 not in columns:
            continue
        v = verdicts.judge_pairs(pairs, columns, False)
        if v not in (IDENTIFIABLE, verdicts.BORDERLINE):
            continue
        top8 = pairs[columns[TOP8]]
        spread = f"{top8.mean():.3f} ± {top8.std(ddof=0):.3f}"
        found.append(f"**{label}**: {v.word} ({spread} over {len(pairs)} seed pairs)")
    if not found:
        return ""
    return (
        "Trained axes that agree across seeds (top-8 ordered |corr|; Identifiable from "
        f"{verdicts.THRESHOLD}, the rule on Compare seeds): " + "; ".join(found) + ". These are "
        "the runs whose leading features, feature #1 first, are the same from seed to seed as "
        "trained; the other runs' agree only after a spectral rotation, or not at all."
    )
