"""Feature detail: what one feature captures, and whether the other seeds learned it too."""

from __future__ import annotations

import common
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from tricl.analysis.saliency import SALIENCY_METHODS

SALIENCY_N = 8
MATCH_STRIP_N = 8


def class_figures(analysis, feature: int) -> tuple[go.Figure, go.Figure]:
    """Activation distribution split by class, and class-mean bars, of a raw feature index."""
    z = analysis.features.z[:, feature]
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
                line={"color": "#E4572E" if c == dominant else "#4C78A8"},
                showlegend=False,
            )
        )
    common.tidy(dist, height=320, xaxis_title="class", yaxis_title="activation z")
    means = analysis.stats.class_means[feature]
    bars = go.Figure(
        go.Bar(
            x=[str(c) for c in classes],
            y=means,
            marker_color=["#E4572E" if c == dominant else "#4C78A8" for c in range(len(classes))],
            hovertemplate="class %{x}: mean %{y:.3f}<extra></extra>",
        )
    )
    common.tidy(bars, height=320, xaxis_title="class", yaxis_title="mean activation")
    return dist, bars


def image_block(title: str, images: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    st.markdown(f"**{title}**")
    tiles = common.to_rgb(images[indices])
    st.image(common.grid(tiles, cols=8), width="content")
    st.caption(common.activation_caption(values))


def matched_in_other_seeds(run, analysis, feature: int, images: np.ndarray) -> None:
    """The feature of every other seed of this configuration that best matches this one.

    Comparisons rank features in each run's default order, so ``rank`` below is that order's.
    """
    rank = int(analysis.importance.rank()[feature]) + 1
    st.subheader("The same feature in the other seeds")
    idx = common.index()
    group = common.same_config_runs(run, idx.runs)
    if len(group) < 2:
        st.info(
            "No other seed of this configuration is in the runs folder; train one with the same "
            f"settings and another `--seed` to check that feature #{rank} comes back."
        )
        return
    comp = common.comparison(group)
    if comp is None:
        return
    st.caption(
        "For each other seed: the Hungarian match of this feature (best one-to-one pairing of "
        f"features) and the correlation with that seed's own feature #{rank}. If the features "
        "are identifiable, the match IS that seed's #"
        f"{rank} with |corr| near 1. A negative sign means the feature is flipped, so its "
        "bottom images are shown."
    )
    matches = comp.matches[comp.matches["feature_a"] == feature]
    cols = st.columns(len(group))
    with cols[0]:
        st.markdown(f"**{common.run_label(run)}** (this run)")
        st.image(
            common.feature_strip(images, analysis.top_images.top_indices[feature], MATCH_STRIP_N),
            width="stretch",
        )
        st.caption(f"#{rank}: top images")
    for j, other in enumerate(group[1:], start=1):
        row = matches[matches["run_b"] == other.name]
        if row.empty:
            continue
        row = row.iloc[0]
        oa = common.analyses([other])[other.name]
        feat_b = int(row["feature_b"])
        tops = oa.top_images.top_indices if row["sign"] > 0 else oa.top_images.bottom_indices
        same_rank = float(comp.abs_corr(0, j)[rank - 1, rank - 1])
        with cols[j]:
            st.markdown(f"**{common.run_label(other)}**")
            st.image(common.feature_strip(images, tops[feat_b], MATCH_STRIP_N), width="stretch")
            st.caption(
                f"match: #{int(row['rank_b']) + 1}, |corr| {row['abs_corr']:.2f}, "
                f"sign {'+' if row['sign'] > 0 else '−'}"
                f" · same rank #{rank}: |corr| {same_rank:.2f}"
            )


def main() -> None:
    common.page_header(
        "Feature detail",
        "One feature up close: the images that drive it highest and lowest, how its activation "
        "differs between classes, which pixels it looks at (saliency), and whether the other "
        "seeds of the same configuration learned the same feature.",
    )
    common.require_runs()
    run = common.current_run()
    analysis = common.analysis_of(run)
    order = common.current_order(analysis)
    o = analysis.importance.order(order)
    k = analysis.k
    ss = st.session_state
    rank = common.current_feature(k)
    ss[common.URL_FEATURE] = rank
    c1, c2 = st.columns([1, 3])
    with c1:
        ss["_w_feature"] = rank
        st.number_input(
            f"Feature # (1 … {k}, by importance)",
            min_value=1,
            max_value=k,
            step=1,
            key="_w_feature",
            on_change=common.bind(common.URL_FEATURE, "_w_feature"),
        )
    feature = int(o[rank - 1])
    score = float(analysis.importance.scores[order][feature])
    dominant = analysis.classes[int(analysis.stats.dominant_class[feature])]
    share = float(analysis.stats.dominant_share[feature])
    with c2:
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Feature", f"#{rank}", help=f"index {feature} of z")
        m2.metric(f"Importance ({order})", f"{score:.4f}")
        m3.metric("Dominant class", str(dominant))
        m4.metric("Selectivity", f"{share:.0%}", help="share of its top-100 images in that class")
    st.caption(common.order_caption(analysis, order))
    images = common.eval_images(run, analysis)
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
        common.show_figure(dist, f"feature{rank}_activation_by_class")
    with right:
        st.markdown("**Class means**")
        common.show_figure(bars, f"feature{rank}_class_means")

    st.subheader("Saliency on its top images")
    c1, c2 = st.columns([2, 1])
    with c1:
        method = st.selectbox(
            "Method",
            list(SALIENCY_METHODS),
            format_func=lambda m: f"{m}: {SALIENCY_METHODS[m].description}",
        )
    with c2:
        smooth = st.checkbox("SmoothGrad (slower)", help="average over 8 noisy copies")
    idxs = tuple(int(i) for i in top.top_indices[feature, :SALIENCY_N])
    with st.spinner("Computing saliency maps..."):
        tiles, acts = common.saliency_grid(
            str(run.path),
            run.weights_hash,
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
        f"Bright = pixels that move feature #{rank} most ({method}); "
        f"activations {acts[0]:.2f} … {acts[-1]:.2f}."
    )
    matched_in_other_seeds(run, analysis, feature, images)


if __name__ == "__main__":
    main()
