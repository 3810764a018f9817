"""Runs: every run of the runs root, its training curves and its sorted importance spectrum."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import draw
import labels
import numpy as np
import plotly.graph_objects as go
import readers
import runs_brief
import sections
import state
import streamlit as st

from tricl.methods import method_color, method_label
from tricl.report import runs as report

if TYPE_CHECKING:
    import pyarrow as pa

# A fresh server's first page: what it draws comes from the numbers kept by the last start
# (runs_brief), so pandas, tricl.analysis and the job panels (jobs_ui) are imported only when
# they are read afresh (they cost a fresh server 0.6 CPU s).


def runs_table(runs: list, found: dict, extras: Sequence[sections.Columns] = ()) -> pa.Table:
    """One row per run: configuration, training result and the analysis' headline numbers
    (``found``: :class:`runs_brief.RunBrief` by run name), then the columns a kind of run adds
    (``extras``, the ``runs.table`` sections: image-text runs add zero-shot accuracy and
    retrieval recall, blank for the other runs)."""
    rows = []
    for r in runs:
        s = r.summary()
        a = found.get(r.name)
        rows.append(
            {
                "run": r.name,
                "method": method_label(r.config.method),
                "aligned from": labels.parent_name(r) if labels.aligned(r) else "",
                "dataset": s["dataset"],
                "backbone": s["backbone"],
                "k": s["k"],
                "seed": s["seed"],
                "epochs": s["epochs"],
                "loss": s["final_loss"],
                "linear probe acc": a.linear_acc if a else np.nan,
                "top-8 acc": a.top8_acc if a else np.nan,
                "importance": a.importance.default if a else "",
                "k-NN acc": a.knn_acc if a else np.nan,
                "backbone probe acc": a.full.get("backbone_linear_acc", np.nan) if a else np.nan,
            }
        )
    columns = {c: [row[c] for row in rows] for c in rows[0]} if rows else {}
    for extra in extras:
        columns.update(extra.values(runs))
    # columns that say nothing here would push the scores off the right edge
    for c in ("aligned from", "backbone"):
        if c in columns and len(set(columns[c])) <= 1 and len(runs) > 1:
            del columns[c]
    return draw.arrow_table(columns)


def curves_figure(runs: list, metric: str) -> go.Figure:
    fig = go.Figure()
    seen: set[str] = set()
    for r in runs:
        rows = [m for m in r.metrics() if metric in m]
        if not rows:
            continue
        m = r.config.method
        fig.add_trace(
            go.Scatter(
                x=[row["epoch"] for row in rows],
                y=[row[metric] for row in rows],
                mode="lines+markers",
                name=method_label(m),
                legendgroup=m,
                showlegend=m not in seen,
                line={"color": method_color(m)},
                hovertemplate=f"{r.name}<br>epoch %{{x}}<br>{metric} %{{y:.4f}}<extra></extra>",
            )
        )
        seen.add(m)
    return draw.tidy(fig, xaxis_title="epoch", yaxis_title=metric)


def spectrum_figure(runs: list, found: dict) -> go.Figure:
    """Each run's importance scores, sorted and divided by their sum."""
    fig = go.Figure()
    seen: set[str] = set()
    for r in runs:
        a = found.get(r.name)
        if a is None:
            continue
        order, scores = report.sorted_importance(a)
        share = scores / scores.sum() if scores.sum() > 0 else scores
        m = r.config.method
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, len(share) + 1),
                y=share,
                mode="lines",
                name=f"{method_label(m)} ({order})",
                legendgroup=m,
                showlegend=m not in seen,
                line={"color": method_color(m)},
                hovertemplate=f"{r.name}<br>#%{{x}}: %{{y:.3%}} of the total<extra></extra>",
            )
        )
        seen.add(m)
    return draw.tidy(
        fig, xaxis_title="feature rank (#1 = most important)", yaxis_title="share of importance"
    )


def identifiable_note(runs: list, found: dict) -> str:
    """Which seed groups are identifiable as trained, from their stored comparisons (never
    computed here: a group without one is left out), checked fresh against the runs' analysis
    summaries ``found``."""
    shown = []
    for group in labels.seed_groups(runs):
        if len(group) < 2 or any(r.name not in found for r in group):
            continue
        try:
            pairs = readers.comparison_pairs(group, [found[r.name] for r in group])
        except ValueError:  # the runs cannot be compared (tricl's AnalysisError): nothing to say
            continue
        if pairs is not None:
            shown.append((labels.group_label(group), pairs))
    from tricl.report.compare import identifiable_groups_markdown

    return identifiable_groups_markdown(shown)


def page_numbers(runs: list) -> runs_brief.RunsPage:
    """The page's numbers: kept from the last start if nothing changed (a fresh server's first
    page), else read from the analyses (job panels for the missing ones), and kept if complete."""
    if (kept := runs_brief.cached(runs)) is not None:
        return kept
    import jobs_ui

    found = jobs_ui.analyses(runs, key="runs_page", summary=True)
    texts = jobs_ui.zero_shots(runs, key="runs_page")
    numbers = runs_brief.RunsPage(
        {name: runs_brief.RunBrief.of(a) for name, a in found.items()},
        dict(texts),
        identifiable_note(runs, found),
    )
    if runs_brief.complete(runs, found, texts):
        runs_brief.store(runs, numbers)
    return numbers


def main() -> None:
    draw.page_header(
        "Runs",
        "Every run of the runs folders. The table gives each run's accuracy with all features and "
        "with only its 8 most important ones; the spectrum shows how unevenly a run spreads "
        "importance over its features (triCL: learned S; SimCLR has no S, so feature variance).",
    )
    idx = state.index()
    if idx.broken:
        st.subheader("Broken runs")
        st.caption("These folders are not usable runs; the other runs work as usual.")
        import pandas as pd

        broken = pd.DataFrame(
            {
                "run": list(idx.broken_keys) or [b.name for b in idx.broken],
                "folder": [str(b.path) for b in idx.broken],
                "reason": [b.reason for b in idx.broken],
            }
        )
        draw.show_table(broken, "broken_runs")
    if not idx.runs:
        draw.show_train_hint(idx.where)
        return
    runs = list(idx.runs)
    numbers = page_numbers(runs)
    found = numbers.briefs
    st.subheader(f"{len(runs)} runs in {idx.where}")
    extras = sections.columns("runs.table", sections.Context(runs=runs, numbers=numbers))
    table = runs_table(runs, found, extras)
    draw.show_table(
        table,
        "runs",
        height="content",  # every row ("auto" stops at 10)
        lazy=False,  # sent whole, as a small table is; deciding would import pandas (0.45 s)
        placeholder="",  # a column a run does not have (e.g. zero-shot): blank, not "None"
        column_config={
            "run": st.column_config.TextColumn(pinned=True),
            "aligned from": st.column_config.TextColumn(
                help="runs written by `tricl align`: the parent run, its features rotated onto "
                "the parent's spectral basis (identifiable across seeds)"
            ),
            "loss": st.column_config.NumberColumn(format="%.3f"),
            "linear probe acc": st.column_config.NumberColumn(format="percent"),
            "top-8 acc": st.column_config.NumberColumn(
                format="percent", help="linear probe on the 8 most important features only"
            ),
            "k-NN acc": st.column_config.NumberColumn(format="percent"),
            "backbone probe acc": st.column_config.NumberColumn(format="percent"),
            **{name: c for extra in extras for name, c in extra.config.items()},
        },
    )
    if note := numbers.identifiable:
        # an explicit icon: with none, Streamlit imports its emoji table (0.2 s) to look for one
        st.success(note, icon=":material/verified:")
    left, right = st.columns(2)
    with left:
        st.subheader("Training curves")
        keys = sorted({k for r in runs for row in r.metrics() for k in row} - {"epoch"})
        preferred = [k for k in ("loss", "contrastive", "decorrelation", "s_max") if k in keys]
        metric = st.selectbox("Metric", preferred + [k for k in keys if k not in preferred])
        if metric:
            draw.show_figure(curves_figure(runs, metric), f"training_{metric}")
    with right:
        st.subheader("Importance spectrum")
        draw.show_figure(spectrum_figure(runs, found), "importance_spectrum")
        st.caption(report.spectrum_caption(report.spectrum_summary(runs, found)))


if __name__ == "__main__":
    main()
