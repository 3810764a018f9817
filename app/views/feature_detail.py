"""Feature detail: what one feature captures, and whether the other seeds learned it too."""

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

SALIENCY_N = 8
# the dominant class stands out from the others on the class charts
HIGHLIGHT, BASE = "#E4572E", "#4C78A8"
MATCH_STRIP_N = 8


def class_figures(analysis, feature: int) -> tuple[go.Figure, go.Figure]:
    """Activation distribution split by class, and class-mean bars, of a raw feature index."""
    z = analysis.features.z[:, feature].astype(np.float32)  # stored as float16
    labels = analysis.features.labels
    classes = analysis.classes
    dominant = int(analysis.stats.dominant_class[feature])
    dist = go.Figure()
    for c, name in enumerate(classes):
        dist.add_trace(
            go.Violin(
                y=z[labels == c],
                name=str(name),
                box_visible=True,
                meanline_visible=True,
                points=False,
                line={"color": HIGHLIGHT if c == dominant else BASE},
                showlegend=False,
            )
        )
    draw.tidy(dist, height=320, xaxis_title="class", yaxis_title="activation z")
    means = analysis.stats.class_means[feature]
    bars = go.Figure(
        go.Bar(
            x=[str(c) for c in classes],
            y=means,
            marker_color=[HIGHLIGHT if c == dominant else BASE for c in range(len(classes))],
            hovertemplate="class %{x}: mean %{y:.3f}<extra></extra>",
        )
    )
    draw.tidy(bars, height=320, xaxis_title="class", yaxis_title="mean activation")
    return dist, bars


def image_block(title: str, images: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    st.markdown(f"**{title}**")
    tiles = draw.to_rgb(images[indices])
    st.image(draw.grid(tiles, cols=8), width="content")
    st.caption(draw.activation_caption(values))


def match_in(comp, i: int, j: int, rank: int) -> tuple[int, int, float]:
    """Run j's Hungarian partner of run i's feature at ``rank`` (0-based, importance order).

    Read off the stored correlation matrix of the pair (a k × k assignment, milliseconds), so one
    stored comparison per seed group serves the page of every run in it.

    Returns:
        ``(rank_b, feature_b, corr)``: the partner's rank and raw index in run j, and the
        signed correlation.
    """
    from tricl.analysis.identifiability import hungarian_match

    corr = comp.corr[(i, j)] if (i, j) in comp.corr else comp.corr[(j, i)].T  # (k_i, k_j)
    m = hungarian_match(corr)
    pos = int(np.flatnonzero(m.rows == rank)[0])
    rank_b = int(m.cols[pos])
    return rank_b, int(comp.orders[j][rank_b]), float(m.corr[pos])


def _partner(comp, run, other, rank: int, images: np.ndarray) -> None:
    """The other seed's matched feature: its strip and the two correlations."""
    oa = readers.analyses([other]).found.get(other.name)
    if oa is None:  # a comparison is stored only once both runs are analysed
        return
    i, j = comp.runs.index(run.name), comp.runs.index(other.name)
    rank_b, feat_b, corr = match_in(comp, i, j, rank - 1)
    tops = oa.top_images.top_indices if corr > 0 else oa.top_images.bottom_indices
    same_rank = float(comp.abs_corr(i, j)[rank - 1, rank - 1])
    st.markdown(f"**{labels.run_label(other)}**")
    st.image(draw.feature_strip(images, tops[feat_b], MATCH_STRIP_N), width="stretch")
    st.caption(
        f"match: #{rank_b + 1}, |corr| {abs(corr):.2f}, sign {'+' if corr > 0 else '−'}"
        f" · same rank #{rank}: |corr| {same_rank:.2f}"
    )


def matched_in_other_seeds(run, analysis, feature: int, images: np.ndarray) -> None:
    """The feature of every other seed of this configuration that best matches this one.

    Comparisons rank features in each run's default order, so ``rank`` below is that order's.
    """
    rank = int(analysis.importance.rank()[feature]) + 1
    st.subheader("The same feature in the other seeds")
    group = labels.same_config_runs(run, state.index().runs)
    if len(group) < 2:
        st.info(
            "No other seed of this configuration is in the runs folder; train one with the same "
            f"settings and another `--seed` to check that feature #{rank} comes back."
        )
        return
    by_seed = sorted(group, key=lambda r: r.config.seed)  # the Compare page's seed group
    comp = jobs_ui.comparison(by_seed, key=f"group_{by_seed[0].name}")
    if comp is None:
        return
    st.caption(
        "For each other seed: the Hungarian match of this feature (best one-to-one pairing of "
        f"features) and the correlation with that seed's own feature #{rank}. If the features "
        "are identifiable, the match IS that seed's #"
        f"{rank} with |corr| near 1. A negative sign means the feature is flipped, so its "
        "bottom images are shown."
    )
    cols = st.columns(len(group))
    with cols[0]:
        st.markdown(f"**{labels.run_label(run)}** (this run)")
        st.image(
            draw.feature_strip(images, analysis.top_images.top_indices[feature], MATCH_STRIP_N),
            width="stretch",
        )
        st.caption(f"#{rank}: top images")
    for col, other in zip(cols[1:], group[1:]):
        with col:
            _partner(comp, run, other, rank, images)


def other_runs(run, with_other_method: bool) -> list:
    """The run's other seeds, then (if asked) the other methods' runs of the same dataset."""
    runs = state.index().runs
    group = labels.same_config_runs(run, runs)[1:]
    if not with_other_method:
        return group
    c = run.config
    others = [
        r
        for r in runs
        if r.config.dataset == c.dataset and r.config.method != c.method and r.name != run.name
    ]
    return group + sorted(others, key=lambda r: (r.config.method, r.config.seed))


def same_rank_corr(run, analysis, others: list, found: dict, rank: int) -> dict[str, float]:
    """Signed corr of this run's spectral rank ``rank`` (1-based) with each other run's.

    Read off the stored spectral comparison of the seed group when there is one; otherwise
    computed from the loaded spectral features (the same evaluation images: one (N,) pair each).
    """
    out: dict[str, float] = {}
    group = sorted([run, *others], key=lambda r: r.config.seed)
    try:
        comp = readers.comparison(group, "spectral")
    except Exception:  # e.g. runs evaluated on other images: computed below where possible
        comp = None
    z = analysis.features.z[:, rank - 1].astype(np.float64)  # (N,)
    for other in others:
        oa = found[other.name]
        if rank > oa.k:
            continue
        if comp is not None and not isinstance(comp, readers.Missing):
            i, j = comp.runs.index(run.name), comp.runs.index(other.name)
            c = comp.corr[(i, j)] if (i, j) in comp.corr else comp.corr[(j, i)].T
            out[other.name] = float(c[rank - 1, rank - 1])
        elif np.array_equal(oa.features.indices, analysis.features.indices):
            zo = oa.features.z[:, rank - 1].astype(np.float64)
            out[other.name] = float(np.corrcoef(z, zo)[0, 1])
    return out


def _rank_panel(
    other, oa, rank: int, corr: float | None, images: np.ndarray, own: bool = False
) -> None:
    """A run's spectral rank ``rank``: top images and class means, sign-aligned to the picked
    run's (``own``: the picked run itself)."""
    sign = -1.0 if corr is not None and corr < 0 else 1.0
    tops = oa.top_images.top_indices if sign > 0 else oa.top_images.bottom_indices
    st.markdown(f"**{labels.run_label(other)}**")
    st.image(draw.feature_strip(images, tops[rank - 1], MATCH_STRIP_N), width="stretch")
    means = sign * np.asarray(oa.stats.class_means[rank - 1], dtype=float)
    st.bar_chart(
        pd.DataFrame({"class": [str(c) for c in oa.classes], "mean": means}),
        x="class",
        y="mean",
        height=140,
        color=BASE,
    )
    if own:
        st.caption(f"#{rank}: this run")
        return
    if corr is None:
        st.caption(f"#{rank}: |corr| unknown (evaluated on other images)")
        return
    flip = " · sign −: its bottom images and negated class means" if sign < 0 else ""
    note = ""
    if (g := draw.group_of(oa.groups, rank - 1)) is not None:
        note = f" · in its unresolved group {draw.group_label(g)}"
    st.caption(f"#{rank}: |corr| {abs(corr):.2f} with this run's #{rank}{flip}{note}")


def same_rank_elsewhere(run, analysis, rank: int, images: np.ndarray) -> None:
    """Spectral rank ``rank`` of this run beside the same rank of every other seed (and, when
    asked, of the other method's runs on the same dataset)."""
    st.subheader(f"Feature #{rank} (spectral basis) in the other seeds")
    both = st.checkbox(
        "Also the other method's runs on this dataset",
        key="_w_other_method",
        help="Spectral ranks are comparable across methods too: the consensus features.",
    )
    others = other_runs(run, both)
    if not others:
        st.info(
            "No other seed of this configuration is in the runs folder; train one with the same "
            f"settings and another `--seed` to check that feature #{rank} comes back."
        )
        return
    found = jobs_ui.analyses(others, key=f"others_{run.name}_spectral", basis="spectral")
    others = [r for r in others if r.name in found]
    corr = same_rank_corr(run, analysis, others, found, rank)
    st.caption(
        "Each run's own spectral feature of the same number, no matching: if the spectral "
        "basis is identifiable, |corr| is near 1. The sign of an eigenvector is arbitrary, so a "
        "run with a negative correlation shows its bottom images and negated class means."
    )
    cols = st.columns(len(others) + 1)
    with cols[0]:
        _rank_panel(run, analysis, rank, 1.0, images, own=True)
    for col, other in zip(cols[1:], others):
        with col:
            _rank_panel(other, found[other.name], rank, corr.get(other.name), images)


def pick_feature(analysis, order: str) -> tuple[int, int]:
    """The feature number box and the headline metrics; returns (rank, raw feature index)."""
    k = analysis.k
    ss = st.session_state
    rank = state.current_feature(k)
    ss[state.URL_FEATURE] = rank
    c1, c2 = st.columns([1, 3])
    with c1:
        ss["_w_feature"] = rank
        st.number_input(
            f"Feature # (1 … {k}, {draw.basis_note(analysis, order)})",
            min_value=1,
            max_value=k,
            step=1,
            key="_w_feature",
            on_change=state.bind(state.URL_FEATURE, "_w_feature"),
        )
    feature = int(analysis.importance.order(order)[rank - 1])
    score = float(analysis.importance.scores[order][feature])
    dominant = analysis.classes[int(analysis.stats.dominant_class[feature])]
    share = float(analysis.stats.dominant_share[feature])
    with c2:
        m1, m2, m3, m4 = st.columns(4)
        m1.metric(
            "Feature",
            f"#{rank}",
            help=draw.feature_name(analysis, rank, order)
            + ("" if analysis.basis == "spectral" else f": index {feature} of z"),
        )
        m2.metric(f"Importance ({order})", f"{score:.4f}")
        m3.metric("Dominant class", str(dominant))
        m4.metric("Selectivity", f"{share:.0%}", help="share of its top-100 images in that class")
    return rank, feature


def images_and_classes(analysis, feature: int, rank: int, images: np.ndarray) -> None:
    """Top and bottom images, activation by class and class means."""
    top = analysis.top_images
    n_avail = top.top_indices.shape[1]
    choices = [n for n in (8, 16, 24, 32) if n <= n_avail] or [n_avail]
    n = st.select_slider("Images shown", choices, value=choices[min(1, len(choices) - 1)])
    left, right = st.columns(2)
    with left:
        image_block(
            f"Top {n}: highest activation",
            images,
            top.top_indices[feature, :n],
            top.top_values[feature, :n],
        )
    with right:
        image_block(
            f"Bottom {n}: lowest activation",
            images,
            top.bottom_indices[feature, :n],
            top.bottom_values[feature, :n],
        )
    dist, bars = class_figures(analysis, feature)
    left, right = st.columns(2)
    with left:
        st.markdown("**Activation by class**")
        draw.show_figure(dist, f"feature{rank}_activation_by_class")
    with right:
        st.markdown("**Class means**")
        draw.show_figure(bars, f"feature{rank}_class_means")


def saliency(run, analysis, feature: int, rank: int, order: str) -> None:
    """Saliency overlays of the feature on its top images (a few forward/backward passes).

    In the spectral basis the attributed scalar is the rotated feature (the encoder followed by
    the basis's affine map), so the maps explain spectral rank ``rank`` itself.
    """
    st.subheader("Saliency on its top images")
    c1, c2 = st.columns([2, 1])
    with c1:
        method = st.selectbox(
            "Method",
            list(models.saliency_methods()),
            format_func=lambda m: f"{m}: {models.saliency_methods()[m]}",
        )
    with c2:
        smooth = st.checkbox("SmoothGrad (slower)", help="average over 8 noisy copies")
    idxs = tuple(int(i) for i in analysis.top_images.top_indices[feature, :SALIENCY_N])
    with st.spinner("Computing saliency maps..."):
        tiles, acts = models.saliency_grid(
            str(run.path),
            run.weights_hash,
            analysis.basis,
            analysis.dataset,
            analysis.split,
            idxs,
            feature,
            method,
            smooth,
            SALIENCY_N,
        )
    st.image(tiles, width="content")
    st.caption(
        f"Bright = pixels that move {draw.feature_name(analysis, rank, order)} most ({method}); "
        f"activations {acts[0]:.2f} … {acts[-1]:.2f}."
    )


def main() -> None:
    draw.page_header(
        "Feature detail",
        "One feature up close: the images that drive it highest and lowest, how its activation "
        "differs between classes, which pixels it looks at (saliency), and whether the other "
        "seeds of the same configuration learned the same feature. In the spectral basis "
        "(sidebar) feature #i of every other seed is shown beside this run's #i.",
    )
    jobs_ui.require_runs()
    run = state.current_run()
    if labels.has_text(run) and state.current_basis() != "trained":
        st.caption(text_ui.TRAINED_ONLY)
    analysis = jobs_ui.analysis_of(run, state.current_basis())
    order = state.current_order(analysis)
    rank, feature = pick_feature(analysis, order)
    st.caption(draw.order_caption(analysis, order))
    if (group := draw.group_of(analysis.groups, rank - 1)) is not None:
        st.warning(
            f"{draw.group_label(group)}: order not identifiable from the data. Feature #{rank} "
            "lies in a cluster of eigenvalues closer than their estimation noise, so another "
            "seed's #{rank} may be any mix of that cluster's features.",
            icon=":material/help:",
        )
    images = models.eval_images(run, analysis)
    images_and_classes(analysis, feature, rank, images)
    text = (
        jobs_ui.text_analysis(run) if labels.has_text(run) and analysis.basis == "trained" else None
    )
    if text is not None:
        text_ui.feature_captions(text, feature, rank)
    saliency(run, analysis, feature, rank, order)
    if analysis.basis == "spectral":
        same_rank_elsewhere(run, analysis, rank, images)
    else:
        matched_in_other_seeds(run, analysis, feature, images)


if __name__ == "__main__":
    main()
