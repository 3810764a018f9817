"""Compare seeds: are a method's features identifiable, i.e. the same across seeds, in order?"""

from __future__ import annotations

import common
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

METRICS = {
    "ordered_corr_top8": "top-8 ordered corr",
    "ordered_corr": "ordered corr",
    "mcc": "MCC",
    "cka": "CKA",
    "spectral_corr_top8": "top-8 ordered corr, spectral basis",
}
METRIC_HELP = {
    "ordered_corr_top8": "mean |corr| of feature #i of one seed with feature #i of the other, "
    "i = 1…8: the paper's claim (same features, same order, up to sign)",
    "ordered_corr": "the same over all k features",
    "mcc": "mean |corr| after the best one-to-one matching: same features in any order",
    "cka": "linear CKA: same information up to a rotation (does not need identifiable axes)",
    "spectral_corr_top8": "top-8 ordered corr after rotating each run onto its spectral basis "
    "(eigenvectors of the augmentation's positive-pair covariance, estimated on train pairs, "
    "most invariant first): the order the paper's theory predicts, read off post hoc",
}
# Verdict thresholds on the seed-averaged scores.
IDENTIFIABLE = 0.8  # top-8 ordered corr at least this: same features, same order
MATCHED = 0.8  # MCC at least this (but order lost): same features, arbitrary order


def verdict(scores: pd.Series) -> str:
    """A one-line verdict (Streamlit markdown with a coloured icon) from seed-averaged scores."""
    if scores["ordered_corr_top8"] >= IDENTIFIABLE:
        return (
            ":green[:material/check_circle: **Identifiable**]: the seeds learn the same top "
            "features in the same order"
        )
    if scores.get("spectral_corr_top8", float("nan")) >= IDENTIFIABLE:
        return (
            ":orange[:material/rotate_right: **Identifiable after a spectral rotation**]: the "
            "seeds span the same space and its augmentation eigenvectors agree in order, but "
            "the trained features themselves do not"
        )
    if scores["mcc"] >= MATCHED:
        return (
            ":orange[:material/swap_vert: **Same features, order differs**] between seeds: "
            "identifiable up to a permutation only"
        )
    if scores["cka"] >= IDENTIFIABLE:
        return (
            ":red[:material/cancel: **Not identifiable**]: same information, rotated "
            "differently in every seed"
        )
    return ":red[:material/cancel: **Not identifiable**]: the seeds learn different features"


def group_scores(groups: list[list]) -> pd.DataFrame:
    """Mean and spread of every metric over the seed pairs of each configuration."""
    rows = []
    for g in groups:
        comp = common.comparison(g)
        if comp is None:
            continue
        p = comp.pairs
        row = {
            "configuration": common.group_label(g),
            "method": g[0].config.method,
            "seeds": len(g),
            "pairs": len(p),
        }
        for m in METRICS:
            values = p[m] if m in p else pd.Series([np.nan])
            row[m] = float(values.mean())
            row[f"{m}_std"] = float(values.std(ddof=0))
        rows.append(row)
    return pd.DataFrame(rows)


def summary(idx) -> None:
    st.subheader("SimCLR against triCL, across seeds")
    groups = [g for g in common.seed_groups(list(idx.runs)) if len(g) >= 2]
    if not groups:
        st.info(
            "No configuration has two seeds yet. Train the same settings with two `--seed` "
            "values (e.g. `tricl train --method tricl --seed 1`) to measure identifiability."
        )
        return
    table = group_scores(groups)
    if table.empty:
        return
    cols = st.columns(len(table))
    for col, (_, row) in zip(cols, table.iterrows()):
        with col, st.container(border=True):
            color = common.method_color(row["method"])
            st.markdown(
                f"<h3 style='color:{color};margin:0'>{common.method_label(row['method'])}</h3>",
                unsafe_allow_html=True,
            )
            st.caption(f"{row['configuration']} · {row['pairs']} seed pair(s)")
            a, b, c, d = st.columns(4)
            a.metric(METRICS["ordered_corr_top8"], f"{row['ordered_corr_top8']:.2f}")
            b.metric("MCC", f"{row['mcc']:.2f}")
            c.metric("CKA", f"{row['cka']:.2f}")
            d.metric(
                "top-8, spectral",
                f"{row['spectral_corr_top8']:.2f}",
                help=METRIC_HELP["spectral_corr_top8"],
            )
            st.markdown(verdict(row))
    fig = go.Figure()
    for _, row in table.iterrows():
        fig.add_trace(
            go.Bar(
                x=list(METRICS.values()),
                y=[row[m] for m in METRICS],
                error_y={"type": "data", "array": [row[f"{m}_std"] for m in METRICS]},
                name=common.method_label(row["method"]) + f" ({row['seeds']} seeds)",
                marker_color=common.method_color(row["method"]),
            )
        )
    fig.add_hline(y=IDENTIFIABLE, line_dash="dot", line_color="gray")
    common.tidy(fig, height=340, barmode="group", yaxis={"range": [0, 1.05], "title": "score"})
    left, right = st.columns([3, 2])
    with left:
        common.show_figure(fig, "identifiability_by_method")
    with right:
        st.markdown(
            "\n".join(f"- **{METRICS[m]}**: {METRIC_HELP[m]}" for m in METRICS)
            + "\n\nSimCLR is expected to score high CKA but low ordered correlation (same "
            "information, arbitrary axes); triCL high on all of them."
        )
    show = table.drop(columns=[f"{m}_std" for m in METRICS]).rename(columns=METRICS)
    show["method"] = show["method"].map(common.method_label)
    common.show_table(show, "identifiability_summary", csv=table, column_config=_fmt(show))


def _fmt(df: pd.DataFrame) -> dict:
    return {
        c: st.column_config.NumberColumn(format="%.3f")
        for c in df.columns
        if df[c].dtype.kind == "f"
    }


def heatmap(comp, i: int, j: int, labels: dict[str, str]) -> go.Figure:
    corr = comp.abs_corr(i, j)  # (k_i, k_j)
    ticks_i = np.arange(1, corr.shape[0] + 1)
    ticks_j = np.arange(1, corr.shape[1] + 1)
    fig = go.Figure(
        go.Heatmap(
            z=corr,
            x=ticks_j,
            y=ticks_i,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar={"title": "|corr|"},
            hovertemplate="#%{y} vs #%{x}: |corr| %{z:.2f}<extra></extra>",
        )
    )
    common.tidy(
        fig,
        height=560,
        xaxis={"title": f"{labels[comp.runs[j]]}: feature #", "constrain": "domain"},
        yaxis={
            "title": f"{labels[comp.runs[i]]}: feature #",
            "autorange": "reversed",
            "scaleanchor": "x",
        },
    )
    return fig


def picked_runs(idx) -> list:
    """Runs to compare: from the URL, else the current run's seed group."""
    ss = st.session_state
    names = [n for n in ss.get(common.URL_RUNS, []) if idx.get(n) is not None]
    if not names:
        names = [r.name for r in common.same_config_runs(common.current_run(), idx.runs)]
    ss[common.URL_RUNS] = names
    ss["_w_runs"] = names
    labels = common.run_labels(idx.runs)
    st.multiselect(
        "Runs to compare (same dataset)",
        idx.names,
        key="_w_runs",
        format_func=labels.__getitem__,
        on_change=common.bind(common.URL_RUNS, "_w_runs"),
    )
    return [idx.get(n) for n in ss[common.URL_RUNS]]


def pairwise(idx) -> None:
    st.subheader("Pick runs")
    runs = picked_runs(idx)
    if len(runs) < 2:
        st.info("Pick at least two runs.")
        return
    comp = common.comparison(runs)
    if comp is None:
        return
    labels = common.run_labels(runs)
    pairs = comp.pairs.copy()
    pairs.insert(0, "b", pairs["run_b"].map(labels))
    pairs.insert(0, "a", pairs["run_a"].map(labels))
    st.markdown("**Identifiability of every pair**")
    show = pairs.drop(columns=["run_a", "run_b"]).rename(
        columns={
            **METRICS,
            "rank_match_top8": "top-8 rank match",
            "spectral_rank_match_top8": "top-8 rank match, spectral basis",
            "spectral_mcc": "MCC, spectral basis",
        }
    )
    common.show_table(show, "identifiability_pairs", csv=pairs, column_config=_fmt(show))
    st.markdown("**|corr| between two runs' features, both in their own importance order**")
    st.caption(
        "Identifiable features light up the diagonal (feature #i of one run is feature #i of the "
        "other); scattered bright cells mean the same features in another order; a dim map means "
        "different features."
    )
    c1, c2 = st.columns(2)
    names = comp.runs
    a = c1.selectbox("Rows", range(len(names)), format_func=lambda i: labels[names[i]])
    b = c2.selectbox("Columns", range(len(names)), index=1, format_func=lambda i: labels[names[i]])
    if a == b:
        st.info("Pick two different runs.")
        return
    fig = heatmap(comp, a, b, labels)
    left, _ = st.columns([3, 1])
    with left:
        common.show_figure(fig, "abs_corr_heatmap")


def main() -> None:
    common.page_header(
        "Compare seeds",
        "Runs that differ only in their seed should learn the same features if features are "
        "identifiable. Each score is in [0, 1], higher is more alike; the verdict per method "
        "averages over its seed pairs.",
    )
    idx = common.require_runs()
    summary(idx)
    st.divider()
    pairwise(idx)


if __name__ == "__main__":
    main()
