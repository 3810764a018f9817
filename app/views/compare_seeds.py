"""Compare seeds: are a method's features identifiable, i.e. the same across seeds, in order?

Image-text runs (clip, triclip) add a section scoring their image AND text features across
seeds, in the trained axes and in each run's pair basis.
"""

from __future__ import annotations

import draw
import jobs_ui
import labels
import models
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import readers
import state
import streamlit as st
import text_ui

from tricl.analysis.metrics import METRICS
from tricl.methods import method_color, method_label

SPECTRAL_HELP = (
    "after rotating each run onto its spectral basis (eigenvectors of the augmentation's "
    "positive-pair covariance, estimated on train pairs, most invariant first): the order the "
    "paper's theory predicts, read off post hoc"
)
# The headline cards, by registry name (the spectral one is the top-8 score's spectral column).
TOP8, MCC, CKA = "ordered_corr_top8", "mcc", "cka"
SPECTRAL_TOP8 = METRICS[TOP8].spectral_name


def score_columns(frame: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
    """Canonical column name -> (column in ``frame``, label, help), in registry order.

    Canonical names come from :data:`METRICS` (``name``, ``spectral_name``); the column in the
    frame may carry an older spelling (see :func:`readers.metric_column`).
    """
    out = {}
    for m in METRICS.values():
        if col := readers.metric_column(frame, m):
            out[m.name] = (col, m.label, m.help)
    for m in METRICS.values():
        if m.spectral and (col := readers.metric_column(frame, m, spectral=True)):
            out[m.spectral_name] = (col, f"{m.label}, spectral basis", f"{m.help}; {SPECTRAL_HELP}")
    return out


# Verdict thresholds on the seed-averaged scores.
IDENTIFIABLE = 0.8  # top-8 ordered corr at least this: same features, same order
MATCHED = 0.8  # MCC at least this (but order lost): same features, arbitrary order
CARDS_PER_LINE = 2  # four st.metric values per card stay readable at two cards a line


def verdict(scores: pd.Series) -> str:
    """A one-line verdict (Streamlit markdown with a coloured icon) from seed-averaged scores."""
    if scores.get(TOP8, float("nan")) >= IDENTIFIABLE:
        return (
            ":green[:material/check_circle: **Identifiable**]: the seeds learn the same top "
            "features in the same order"
        )
    if scores.get(SPECTRAL_TOP8, float("nan")) >= IDENTIFIABLE:
        return (
            ":orange[:material/rotate_right: **Identifiable after a spectral rotation**]: the "
            "seeds span the same space and its augmentation eigenvectors agree in order, but "
            "the trained features themselves do not"
        )
    if scores.get(MCC, float("nan")) >= MATCHED:
        return (
            ":orange[:material/swap_vert: **Same features, order differs**] between seeds: "
            "identifiable up to a permutation only"
        )
    if scores.get(CKA, float("nan")) >= IDENTIFIABLE:
        return (
            ":red[:material/cancel: **Not identifiable**]: same information, rotated "
            "differently in every seed"
        )
    return ":red[:material/cancel: **Not identifiable**]: the seeds learn different features"


def group_scores(groups: list[list]) -> tuple[pd.DataFrame, dict[str, tuple[str, str, str]]]:
    """Mean and spread of every metric over the seed pairs of each configuration.

    Groups whose comparison is not stored yet get a job panel instead of a row.

    Returns:
        ``(table, columns)``: one row per configuration with ``<metric>`` and ``<metric>_std``
        (canonical names), and the metrics found, as :func:`score_columns` gives them.
    """
    rows, columns = [], {}
    for g in groups:
        comp = jobs_ui.comparison(g, key=f"group_{g[0].name}")
        if comp is None:
            continue
        p = comp.pairs
        found = score_columns(p)
        columns.update(found)
        row = {
            "configuration": labels.group_label(g),
            "group": g[0].name,
            "method": g[0].config.method,
            "seeds": len(g),
            "pairs": len(p),
        }
        for name, (col, _, _) in found.items():
            row[name] = float(p[col].mean())
            row[f"{name}_std"] = float(p[col].std(ddof=0))
        rows.append(row)
    return pd.DataFrame(rows), columns


def unresolved_note(group: list) -> str:
    """Which spectral ranks the seeds can be compared on: every run's unresolved groups joined
    (a rank is safe only if no seed has it in a group)."""
    got = readers.analyses(group, "spectral")
    if not got.found:
        return (
            "Analyse the runs in the spectral basis (sidebar: spectral) to see which feature "
            "numbers are safe to compare across seeds."
        )
    k = min(a.k for a in got.found.values())
    grouped = sorted(
        {r for a in got.found.values() for g in a.groups for r in range(g[0], g[1] + 1) if r < k}
    )
    if not grouped:
        return f"Spectral basis: all {k} ranks are resolved in every seed: safe to compare."
    joined = draw.ranges_label(grouped)
    safe = draw.ranges_label([r for r in range(k) if r not in set(grouped)]) or "none"
    return (
        f"Spectral basis, order not identifiable from the data: {joined} (in at least one "
        f"seed). **Safe to compare across seeds: {safe}.**"
    )


def _card(row: pd.Series, columns: dict[str, tuple[str, str, str]], group: list) -> None:
    """One configuration's headline scores and verdict."""
    color = method_color(row["method"])
    st.markdown(
        f"<h3 style='color:{color};margin:0'>{method_label(row['method'])}</h3>",
        unsafe_allow_html=True,
    )
    st.caption(f"{row['configuration']} · {row['pairs']} seed pair(s)")
    headline = [n for n in (TOP8, MCC, CKA, SPECTRAL_TOP8) if n in columns]
    for cell, name in zip(st.columns(len(headline)), headline):
        _, label, help_ = columns[name]
        value = row.get(name, float("nan"))
        cell.metric(label, "–" if pd.isna(value) else f"{value:.2f}", help=help_)
    st.markdown(verdict(row))
    st.caption(unresolved_note(group))


def _bars(table: pd.DataFrame, columns: dict[str, tuple[str, str, str]]) -> go.Figure:
    fig = go.Figure()
    for _, row in table.iterrows():
        fig.add_trace(
            go.Bar(
                x=[label for _, label, _ in columns.values()],
                y=[row.get(n) for n in columns],
                error_y={"type": "data", "array": [row.get(f"{n}_std") for n in columns]},
                name=method_label(row["method"]) + f" ({row['seeds']} seeds)",
                marker_color=method_color(row["method"]),
            )
        )
    fig.add_hline(y=IDENTIFIABLE, line_dash="dot", line_color="gray")
    return draw.tidy(fig, height=340, barmode="group", yaxis={"range": [0, 1.05], "title": "score"})


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
    per_line = min(len(rows), CARDS_PER_LINE)  # wider cards keep their four scores readable
    for start in range(0, len(rows), per_line):
        for col, row in zip(st.columns(per_line), rows[start : start + per_line]):
            with col, st.container(border=True):
                _card(row, columns, by_name[row["group"]])
    left, right = st.columns([3, 2])
    with left:
        draw.show_figure(_bars(table, columns), "identifiability_by_method")
    with right:
        st.markdown(
            "\n".join(f"- **{label}**: {help_}" for _, label, help_ in columns.values())
            + "\n\nSimCLR is expected to score high CKA but low ordered correlation (same "
            "information, arbitrary axes); triCL high on all of them."
        )
    table = table.drop(columns="group")
    show = table.drop(columns=[f"{n}_std" for n in columns])
    show = show.rename(columns={n: label for n, (_, label, _) in columns.items()})
    show["method"] = show["method"].map(method_label)
    draw.show_table(
        show, "identifiability_summary", csv=table, column_config=draw.number_columns(show)
    )


# --------------------------------------------------------------------------- image-text runs

BASIS_NAMES = {"trained": "trained axes", "spectral": "pair basis"}


def seed_pair_datasets(runs: list) -> dict[str, list]:
    """Image-text runs by dataset, for datasets where some configuration has two seeds.

    Each list is sorted by method, seed and name: the order names the stored comparison, so the
    page and the job it starts agree on it.
    """
    by_dataset: dict[str, list] = {}
    for r in runs:
        if labels.has_text(r):
            by_dataset.setdefault(r.config.dataset, []).append(r)
    out = {}
    for dataset, members in sorted(by_dataset.items()):
        groups = pd.Series([labels.config_key(r) for r in members]).value_counts()
        if (groups >= 2).any():
            out[dataset] = sorted(members, key=lambda r: (r.config.method, r.config.seed, r.name))
    return out


def identifiability_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as the page shows it: method label, side, basis, pairs, metric means."""
    shown = pd.DataFrame(
        {
            "method": summary["method"].map(method_label),
            "side": summary["side"],
            "basis": summary["basis"].map(BASIS_NAMES),
            "seed pairs": summary["n_pairs"],
        }
    )
    for name, m in METRICS.items():
        shown[m.label] = summary[f"{name}_mean"]
    return shown


def identifiability_figure(summary: pd.DataFrame, metric: str) -> go.Figure:
    """Bars of one metric's mean over seed pairs (± std): per side and basis, one per method."""
    fig = go.Figure()
    for method, rows in summary.groupby("method", sort=False):
        fig.add_trace(
            go.Bar(
                x=[f"{s} · {BASIS_NAMES[b]}" for s, b in zip(rows["side"], rows["basis"])],
                y=rows[f"{metric}_mean"],
                error_y={"type": "data", "array": rows[f"{metric}_std"]},
                name=method_label(method),
                marker_color=method_color(method),
            )
        )
    return draw.tidy(
        fig,
        height=340,
        barmode="group",
        yaxis={"range": [0, 1.05], "title": METRICS[metric].label},
    )


def image_text_section(runs: list) -> None:
    """Identifiability of the image-text runs' image AND text features across seeds, in the
    trained axes and in each run's pair basis, one configuration (method) per colour."""
    datasets = seed_pair_datasets(runs)
    if not any(labels.has_text(r) for r in runs):
        return
    st.subheader("Image-text runs: image and text features across seeds")
    st.caption(
        "Each side scored like the image features above, over the seed pairs of each "
        "configuration: the image features f(x) of the evaluation images and the text features "
        "g(t) of their captions. Trained axes: each run's importance order (S for triCLIP). Pair "
        "basis: each side rotated onto the run's canonical correlation directions between its "
        "train image and text features (the image-caption counterpart of the spectral basis), "
        "strongest first."
    )
    if not datasets:
        st.info(
            "No image-text configuration has two seeds yet; train clip or triclip with two "
            "`--seed` values to measure it."
        )
        return
    dataset = st.selectbox("Dataset", list(datasets), key="_w_image_text_dataset")
    group = datasets[dataset]
    from tricl.analysis.image_text_compare import summarize

    comps = [
        jobs_ui.image_text_comparison(group, key=f"image_text_{dataset}", basis=b)
        for b in BASIS_NAMES
    ]
    comps = [c for c in comps if c is not None]
    if not comps:
        return
    summary = summarize(comps)
    if summary.empty:
        st.info("These runs share no configuration with two seeds.")
        return
    metric = st.selectbox(
        "Score",
        list(METRICS),
        index=list(METRICS).index(TOP8),
        format_func=lambda m: METRICS[m].label,
        key="_w_image_text_metric",
    )
    left, right = st.columns([3, 2])
    with left:
        draw.show_figure(identifiability_figure(summary, metric), "image_text_identifiability")
    with right:
        st.markdown("\n".join(f"- **{m.label}**: {m.help}" for m in METRICS.values()))
    table = identifiability_table(summary)
    draw.show_table(
        table,
        f"image_text_identifiability_{dataset.replace(':', '_').replace('/', '_')}",
        csv=summary,
        column_config=draw.number_columns(table),
    )
    pair_heatmap(comps, group)


def _default_pair(comp) -> tuple[int, int]:
    """Two seeds of one method (triCLIP's if there are two), for the heatmap's first view."""
    for method in sorted(set(comp.methods), key=lambda m: m != "triclip"):
        same = [i for i, m in enumerate(comp.methods) if m == method]
        if len(same) >= 2:
            return same[0], same[1]
    return 0, 1


def pair_figure(comp, side: str, i: int, j: int, shown: dict[str, str]) -> go.Figure:
    """|corr| between run i's features (rows) and run j's on one side, each in its own order."""
    corr = comp.abs_corr(side, i, j)  # (k_i, k_j)
    fig = go.Figure(
        go.Heatmap(
            z=corr,
            x=np.arange(1, corr.shape[1] + 1),
            y=np.arange(1, corr.shape[0] + 1),
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar={"title": "|corr|"},
            hovertemplate="#%{y} vs #%{x}: |corr| %{z:.2f}<extra></extra>",
        )
    )
    return draw.tidy(
        fig,
        height=520,
        xaxis={"title": f"{shown[comp.runs[j]]}: {side} feature #", "constrain": "domain"},
        yaxis={
            "title": f"{shown[comp.runs[i]]}: {side} feature #",
            "autorange": "reversed",
            "scaleanchor": "x",
        },
    )


def pair_heatmap(comps: list, runs: list) -> None:
    """Two runs' features against each other, on the image or the text side, in either basis."""
    st.markdown("**|corr| between two runs' features, one side**")
    st.caption(
        "Identifiable features light up the diagonal: feature #i of one seed is feature #i of "
        "the other, on the image side (f) or the text side (g)."
    )
    first = comps[0]
    shown = labels.run_labels(runs)
    a0, b0 = _default_pair(first)
    names = first.runs
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    a = c1.selectbox(
        "Rows", range(len(names)), a0, format_func=lambda i: shown[names[i]], key="_w_it_rows"
    )
    b = c2.selectbox(
        "Columns", range(len(names)), b0, format_func=lambda i: shown[names[i]], key="_w_it_cols"
    )
    side = c3.radio("Side", list(text_ui.SIDES), key="_w_image_text_side")
    basis = c4.radio(
        "Basis", [c.basis for c in comps], format_func=BASIS_NAMES.get, key="_w_image_text_basis"
    )
    if a == b:
        st.info("Pick two different runs.")
        return
    comp = next(c for c in comps if c.basis == basis)
    left, _ = st.columns([3, 1])
    with left:
        draw.show_figure(pair_figure(comp, side, a, b, shown), "image_text_abs_corr_heatmap")
    if comp.basis == "spectral":
        notes = [
            f"{shown[comp.runs[x]]}: "
            + (", ".join(draw.group_label(g) for g in comp.unresolved[x]) or "none")
            for x in (a, b)
        ]
        st.caption(
            "Unresolved pair-basis ranks (canonical correlations closer than their split-half "
            "noise, so their order is not defined by the data): " + "; ".join(notes) + "."
        )


CONSENSUS_STRIP_N = 8


@st.cache_data(show_spinner=False, max_entries=16)
def consensus_strips(key: str, _images: np.ndarray, _tops: tuple) -> list[str]:
    """Top-image strips (PNG data URIs) of the consensus rows; ``key`` names the consensus."""
    del key
    n = CONSENSUS_STRIP_N
    return [draw.data_uri(draw.feature_strip(_images, np.asarray(t), n)) for t in _tops]


def consensus_table(cons, runs: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The consensus table to draw (with top-image strips) and its CSV (indices as text)."""
    shown = labels.run_labels(runs)
    t = cons.table.copy()
    t["representative"] = t["representative"].map(lambda n: shown.get(n, n))
    csv = t.assign(top_indices=t["top_indices"].map(lambda v: " ".join(map(str, v))))
    rep = runs[0]
    images = models.split_images(rep, rep.config.dataset, cons.split)
    key = f"{cons.path}/{len(t)}"
    t.insert(
        t.columns.get_loc("top_indices"),
        "top images",
        consensus_strips(key, images, tuple(tuple(v) for v in t["top_indices"])),
    )
    return t.drop(columns="top_indices"), csv


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
    table, csv = consensus_table(cons, runs)
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
        },
    )


def heatmap(comp, i: int, j: int, shown: dict[str, str]) -> go.Figure:
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
    draw.tidy(
        fig,
        height=560,
        xaxis={"title": f"{shown[comp.runs[j]]}: feature #", "constrain": "domain"},
        yaxis={
            "title": f"{shown[comp.runs[i]]}: feature #",
            "autorange": "reversed",
            "scaleanchor": "x",
        },
    )
    return fig


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
    basis = state.current_basis()
    comp = jobs_ui.comparison(runs, key="picked_runs", basis=basis)
    if comp is None:
        return
    shown = labels.run_labels(runs)
    pairs = comp.pairs.copy()
    pairs.insert(0, "b", pairs["run_b"].map(shown))
    pairs.insert(0, "a", pairs["run_a"].map(shown))
    st.markdown("**Identifiability of every pair**")
    columns = score_columns(pairs)
    show = pairs.drop(columns=["run_a", "run_b"]).rename(
        columns={col: label for col, label, _ in columns.values()}
    )
    draw.show_table(
        show, "identifiability_pairs", csv=pairs, column_config=draw.number_columns(show)
    )
    axes = (
        "each run's spectral basis, rank order"
        if basis == "spectral"
        else "both in their own importance order"
    )
    st.markdown(f"**|corr| between two runs' features, {axes}**")
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
    fig = heatmap(comp, a, b, shown)
    left, _ = st.columns([3, 1])
    with left:
        draw.show_figure(fig, "abs_corr_heatmap")


def main() -> None:
    draw.page_header(
        "Compare seeds",
        "Runs that differ only in their seed should learn the same features if features are "
        "identifiable. Each score is in [0, 1], higher is more alike; the verdict per method "
        "averages over its seed pairs.",
    )
    idx = jobs_ui.require_runs()
    summary(idx)
    if any(labels.has_text(r) for r in idx.runs):
        st.divider()
        image_text_section(list(idx.runs))
    st.divider()
    consensus_section(idx)
    st.divider()
    pairwise(idx)


if __name__ == "__main__":
    main()
