"""Feature detail: what one feature captures, and whether the other seeds learned it too."""

from __future__ import annotations

import bands_ui
import classes_ui
import draw
import featvis_ui
import interventions_ui
import jobs_ui
import labels
import models
import numpy as np
import readers
import sections
import state
import streamlit as st

from tricl.bases import get_basis
from tricl.report import features as report

SALIENCY_N = 8
MATCH_STRIP_N = 8


def _partner(comp, run, other, rank: int, images: np.ndarray) -> None:
    """The other seed's matched feature: its strip and the two correlations."""
    oa = readers.analyses([other]).found.get(other.name)
    if oa is None:  # a comparison is stored only once both runs are analysed
        return
    i, j = comp.runs.index(run.name), comp.runs.index(other.name)
    rank_b, feat_b, corr = report.matched_partner(comp, i, j, rank - 1)
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
    st.caption(report.matched_caption(rank))
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


def same_rank_corr(run, others: list, rank: int) -> dict[str, float] | None:
    """Signed corr of this run's spectral rank ``rank`` (1-based) with each other run's, read off
    their stored spectral comparison (None after offering the job that stores it).

    The runs are taken in the consensus's order (method, seed, name), so the seed group's own
    comparison and, with every run of the dataset, the consensus's serve without a new job.
    """
    group = sorted([run, *others], key=lambda r: (r.config.method, r.config.seed, r.name))
    comp = jobs_ui.comparison(group, key=f"same_rank_{run.name}_{len(group)}", basis="spectral")
    if comp is None:
        return None
    return report.same_rank_corrs(comp, run.name, [o.name for o in others], rank)


def _rank_panel(
    other, oa, rank: int, corr: float | None, images: np.ndarray, own: bool = False
) -> None:
    """A run's spectral rank ``rank``: top images and class means, sign-aligned to the picked
    run's (``own``: the picked run itself)."""
    sign = -1.0 if corr is not None and corr < 0 else 1.0
    tops = oa.top_images.top_indices if sign > 0 else oa.top_images.bottom_indices
    st.markdown(f"**{labels.run_label(other)}**")
    st.image(draw.feature_strip(images, tops[rank - 1], MATCH_STRIP_N), width="stretch")
    classes_ui.class_means_bars(oa, rank - 1, sign)
    if own:
        st.caption(f"#{rank}: this run")
        return
    st.caption(report.same_rank_caption(rank, corr, draw.group_of(oa.groups, rank - 1), oa.k))


def same_rank_elsewhere(run, analysis, rank: int, images: np.ndarray) -> None:
    """Spectral rank ``rank`` of this run beside the same rank of every other seed (and, when
    asked, of the other method's runs on the same dataset)."""
    st.subheader(f"Feature #{rank} (spectral basis) in the other seeds")
    both = st.checkbox(
        "Also the other method's runs on this dataset",
        key="_w_other_method",
        help="Spectral ranks are comparable across methods too: the consensus features.",
    )
    others = labels.other_runs(run, state.index().runs, both)
    if not others:
        st.info(
            "No other seed of this configuration is in the runs folder; train one with the same "
            f"settings and another `--seed` to check that feature #{rank} comes back."
        )
        return
    found = jobs_ui.analyses(others, key=f"others_{run.name}_spectral", basis="spectral")
    others = [r for r in others if r.name in found]
    if not others:  # none analysed in this basis yet: the job panel above offers it
        return
    corr = same_rank_corr(run, others, rank)
    if corr is None:
        return
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


def pick_feature(analysis, order: str, words=None) -> tuple[int, int]:
    """The feature number box, its importance and its description; returns (rank, raw index).

    ``words``: a raw feature index -> words that describe it (a ``feature_detail.words``
    section), or None."""
    k = analysis.k
    ss = st.session_state
    rank = state.current_feature(k)
    ss[state.URL_FEATURE] = rank
    c1, c2, c3 = st.columns([1, 1, 3])
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
    c2.metric(
        "Feature",
        f"#{rank}",
        help=draw.feature_name(analysis, rank, order)
        + (f": index {feature} of z" if not get_basis(analysis.basis).fixed_order else ""),
    )
    c2.metric(f"Importance ({order})", f"{score:.4f}")
    classes_ui.class_description(analysis, feature, c3, words(feature) if words else ())
    return rank, feature


def images_and_classes(analysis, feature: int, rank: int, images: np.ndarray) -> None:
    """Top and bottom images, activation by class and class means (or "no labels")."""
    top = analysis.top_images
    n_avail = top.top_indices.shape[1]
    choices = [n for n in (8, 16, 24, 32) if n <= n_avail] or [n_avail]
    n = st.select_slider("Images shown", choices, value=choices[min(1, len(choices) - 1)])
    left, right = st.columns(2)
    with left:
        draw.image_block(
            f"Top {n}: highest activation",
            images,
            top.top_indices[feature, :n],
            top.top_values[feature, :n],
        )
    with right:
        draw.image_block(
            f"Bottom {n}: lowest activation",
            images,
            top.bottom_indices[feature, :n],
            top.bottom_values[feature, :n],
        )
    classes_ui.class_charts(analysis, feature, rank)


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
    ctx = jobs_ui.feature_page("feature_detail")
    run, basis, analysis = ctx.run, ctx.basis, ctx.analysis
    order = state.current_order(analysis)
    words = [w for w in sections.draw("feature_detail.words", ctx).values() if w is not None]
    rank, feature = pick_feature(analysis, order, words[0] if words else None)
    st.caption(draw.order_caption(analysis, order))
    if (group := draw.group_of(analysis.groups, rank - 1)) is not None:
        st.warning(report.unresolved_warning(group, rank), icon=":material/help:")
    images = models.eval_images(run, analysis)
    images_and_classes(analysis, feature, rank, images)
    bands_ui.activation_ranges(run, analysis, feature, rank, images)
    interventions_ui.what_it_does(run, analysis, feature, rank)
    ctx.feature, ctx.rank = feature, rank
    sections.draw("feature_detail.interventions", ctx)
    saliency(run, analysis, feature, rank, order)
    featvis_ui.feature_visualisation(run, analysis, feature, rank, images)
    if basis.fixed_order:  # the basis numbers the features: the same # in every seed
        same_rank_elsewhere(run, analysis, rank, images)
    else:
        matched_in_other_seeds(run, analysis, feature, images)


if __name__ == "__main__":
    main()
