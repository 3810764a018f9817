"""Compare seeds: are a method's features identifiable, i.e. the same across seeds, in order?

Image-text runs (clip, triclip) add a section scoring their image AND text features across
seeds, in the trained axes and in each run's pair basis. The tables, verdicts and notes come from
:mod:`tricl.report.compare`; this page lays them out.
"""

from __future__ import annotations

import draw
import jobs_ui
import labels
import models
import numpy as np
import pandas as pd
import readers
import sections
import state
import streamlit as st

from tricl.bases import get_basis
from tricl.methods import method_color, method_label
from tricl.report import compare as report
from tricl.report import describe
from tricl.report.verdicts import CKA_WHITENED_NOTE, THRESHOLD

CARDS_PER_LINE = 2  # a card's table (two bases, three scores, the verdict) stays readable


def group_scores(groups: list[list]) -> tuple[pd.DataFrame, dict[str, tuple[str, str, str]]]:
    """One row per configuration (:func:`report.group_row`) and the metrics found.

    Groups whose comparison is not stored yet get a job panel instead of a row.
    """
    rows, columns = [], {}
    for g in groups:
        comp = jobs_ui.comparison(g, key=f"group_{g[0].name}")
        if comp is None:
            continue
        columns.update(report.score_columns(comp.pairs))
        label = labels.group_label(g)
        rows.append(report.group_row(label, g[0].name, g[0].config.method, len(g), comp.pairs))
    return pd.DataFrame(rows), columns


def unresolved_note(group: list) -> str:
    """Which spectral ranks the seeds can be compared on, from their stored spectral analyses."""
    got = readers.analyses(group, "spectral")
    if not got.found:
        return (
            "Analyse the runs in the spectral basis (sidebar: spectral) to see which feature "
            "numbers are safe to compare across seeds."
        )
    found = got.found.values()
    return report.unresolved_note([a.k for a in found], [a.groups for a in found])


def _card(row: pd.Series, group: list) -> None:
    """One configuration's scores per basis and their verdicts."""
    color = method_color(row["method"])
    st.markdown(
        f"<h3 style='color:{color};margin:0'>{method_label(row['method'])}</h3>",
        unsafe_allow_html=True,
    )
    st.caption(f"{row['configuration']} · {row['pairs']} seed pair(s), mean (± spread)")
    st.markdown(report.card_markdown(row))
    st.caption(report.card_caption(row))
    st.caption(unresolved_note(group))


def _bars(table: pd.DataFrame, columns: dict[str, tuple[str, str, str]]):
    bars = [
        {
            "x": [label for _, label, _ in columns.values()],
            "y": [row.get(n) for n in columns],
            "error": [row.get(f"{n}_std") for n in columns],
            "name": method_label(row["method"]) + f" ({row['seeds']} seeds)",
            "color": method_color(row["method"]),
        }
        for _, row in table.iterrows()
    ]
    return draw.score_bars(bars, "score", line=THRESHOLD)


def summary(idx) -> None:
    st.subheader("Each method across seeds (image features)")
    groups = [g for g in labels.seed_groups(list(idx.runs)) if len(g) >= 2]
    if not groups:
        st.info(
            "No configuration has two seeds yet. Train the same settings with two `--seed` "
            "values (e.g. `tricl train --method tricl --seed 1`) to measure identifiability."
        )
        return
    table, columns = group_scores(groups)
    if table.empty:
        return
    by_name = {g[0].name: g for g in groups}
    rows = [row for _, row in table.iterrows()]
    per_line = min(len(rows), CARDS_PER_LINE)
    for start in range(0, len(rows), per_line):
        for col, row in zip(st.columns(per_line), rows[start : start + per_line]):
            with col, st.container(border=True):
                _card(row, by_name[row["group"]])
    left, right = st.columns([3, 2])
    with left:
        draw.show_figure(_bars(table, columns), "identifiability_by_method")
    with right:
        st.markdown(report.metric_legend(columns))
    show = report.summary_table(table, columns)
    draw.show_table(
        show,
        "identifiability_summary",
        csv=table.drop(columns="group"),
        column_config=draw.number_columns(show),
    )


CONSENSUS_STRIP_N = 8


@st.cache_data(show_spinner=False, max_entries=16)
def consensus_strips(key: str, _images: np.ndarray, _tops: tuple) -> list[str]:
    """Top-image strips (PNG data URIs) of the consensus rows; ``key`` names the consensus."""
    del key
    n = CONSENSUS_STRIP_N
    _images.prefetch([i for t in _tops for i in np.asarray(t)[:n]])  # one worker call
    return [draw.data_uri(draw.feature_strip(_images, np.asarray(t), n)) for t in _tops]


def consensus_section(idx) -> None:
    """The consensus features of one dataset's runs (all seeds, all methods), rank by rank."""
    st.subheader("Consensus features (spectral basis)")
    st.caption(
        "Rank r of every run's spectral basis, correlated across every pair of runs of the "
        "dataset (all seeds, all methods): a high minimum |corr| means every run learned that "
        "feature. The representative is the run whose rank r agrees best with the others; its "
        "top images and eigenvalue are shown. 'unresolved' counts the runs in which rank r lies "
        "in an unresolved group (its order is not identifiable from the data there)."
    )
    by_dataset: dict[str, list] = {}
    for r in idx.runs:
        by_dataset.setdefault(r.config.dataset, []).append(r)
    datasets = sorted(d for d, rs in by_dataset.items() if len(rs) >= 2)
    if not datasets:
        st.info("The consensus needs at least two runs of one dataset.")
        return
    dataset = st.selectbox("Dataset", datasets, key="_w_consensus_dataset")
    runs = sorted(by_dataset[dataset], key=lambda r: (r.config.method, r.config.seed, r.name))
    cons = jobs_ui.consensus(runs, key=f"consensus_{dataset}")
    if cons is None:
        return
    table, csv = report.consensus_frame(cons.table, labels.run_labels(runs))
    reps = [r for r in runs if r.name in set(cons.table["representative"])]
    described = describe.consensus_descriptions(
        cons.table, readers.analyses(reps, "spectral").found
    )
    table.insert(table.columns.get_loc("representative") + 1, "description", described)
    csv = csv.assign(description=described)
    images = models.split_images(runs[0], runs[0].config.dataset, cons.split)
    tops = tuple(tuple(v) for v in table["top_indices"])
    strips = consensus_strips(f"{cons.path}/{len(table)}", images, tops)
    table.insert(table.columns.get_loc("top_indices"), "top images", strips)
    table = table.drop(columns="top_indices")
    draw.show_table(
        table,
        f"consensus_{dataset}",
        csv=csv,
        row_height=44,
        column_config={
            **draw.number_columns(table),
            "rank": st.column_config.NumberColumn(help="spectral rank r (feature #r)"),
            "top images": st.column_config.ImageColumn(
                f"top {CONSENSUS_STRIP_N} images (representative)", width="large"
            ),
            "eigenvalue": st.column_config.NumberColumn(format="%.3f"),
            "description": st.column_config.TextColumn(
                "description (representative)", width="medium", help=describe.RULE
            ),
        },
    )


def picked_runs(idx) -> list:
    """Runs to compare: from the URL, else the current run's seed group."""
    ss = st.session_state
    names = [n for n in ss.get(state.URL_RUNS, []) if idx.get(n) is not None]
    if not names:
        names = [r.name for r in labels.same_config_runs(state.current_run(), idx.runs)]
    ss[state.URL_RUNS] = names
    ss["_w_runs"] = names
    shown = labels.run_labels(idx.runs)
    st.multiselect(
        "Runs to compare (same dataset)",
        idx.names,
        key="_w_runs",
        format_func=shown.__getitem__,
        on_change=state.bind(state.URL_RUNS, "_w_runs"),
    )
    return [idx.get(n) for n in ss[state.URL_RUNS]]


def pairwise(idx) -> None:
    st.subheader("Pick runs")
    runs = picked_runs(idx)
    if len(runs) < 2:
        st.info("Pick at least two runs.")
        return
    basis = get_basis(state.current_basis())
    comp = jobs_ui.comparison(runs, key="picked_runs", basis=basis.name)
    if comp is None:
        return
    shown = labels.run_labels(runs)
    st.markdown("**Identifiability of every pair**")
    show = report.pair_table(comp.pairs, shown)
    draw.show_table(
        show, "identifiability_pairs", csv=comp.pairs, column_config=draw.number_columns(show)
    )
    if basis.whitened or any(labels.aligned(r) for r in runs):
        st.caption(CKA_WHITENED_NOTE)
    st.markdown(f"**|corr| between two runs' features, {report.pairs_axes(basis.name)}**")
    st.caption(
        "Identifiable features light up the diagonal (feature #i of one run is feature #i of the "
        "other); scattered bright cells mean the same features in another order; a dim map means "
        "different features. The sidebar's basis picks the axes."
    )
    c1, c2 = st.columns(2)
    names = comp.runs
    a = c1.selectbox("Rows", range(len(names)), format_func=lambda i: shown[names[i]])
    b = c2.selectbox("Columns", range(len(names)), index=1, format_func=lambda i: shown[names[i]])
    if a == b:
        st.info("Pick two different runs.")
        return
    corr = comp.abs_corr(a, b)  # (k_a, k_b)
    fig = draw.corr_heatmap(
        corr, f"{shown[names[b]]}: feature #", f"{shown[names[a]]}: feature #", height=560
    )
    left, _ = st.columns([3, 1])
    with left:
        draw.show_figure(fig, "abs_corr_heatmap")


def main() -> None:
    draw.page_header(
        "Compare seeds",
        "Runs that differ only in their seed should learn the same features if features are "
        "identifiable. Each score is at most 1, higher is more alike (the held-out linear R² "
        "falls below 0 when a map fitted on half the images fails on the other half); the "
        "verdict per method and basis averages over its seed pairs. The metric legend "
        "says which correlation and which images each metric uses.",
    )
    idx = jobs_ui.require_runs()
    summary(idx)
    sections.draw("compare_seeds.summary", sections.Context(runs=list(idx.runs)))
    st.divider()
    consensus_section(idx)
    st.divider()
    pairwise(idx)


if __name__ == "__main__":
    main()
