"""Features: a run's features in importance order with their top images and class selectivity."""

from __future__ import annotations

from collections.abc import Sequence

import draw
import jobs_ui
import models
import numpy as np
import pandas as pd
import sections
import state
import streamlit as st

from tricl.bases import get_basis
from tricl.report import describe
from tricl.report import features as report

STRIP_N = 8
ROW_HEIGHT = 44  # a strip of top images
NARROW_STRIP_COLS = 4  # beside added columns the strip is two rows of four: all 8 shown
PAGE_ROWS = 128  # rows drawn at once: a 2,048-feature encoder's table comes in pages of these
SORTABLE = ("#", "selectivity", "std", "importance", "entropy (bits)", "mean")  # largest first


@st.cache_data(show_spinner=False, max_entries=64)
def strips(
    path: str,
    weights_hash: str,
    features: tuple[int, ...],
    cols: int,
    _images: np.ndarray,
    _top: np.ndarray,
) -> list[str]:
    """Top-image strip of each of ``features``, as PNG data URIs in that order.

    Args:
        path: run folder (cache key).
        weights_hash: the run's weights hash and basis (cache key).
        features: the raw indices of the rows drawn (cache key; strips follow it).
        cols: images per row of a strip.
        _images: evaluation images. Shape: (N, C, H, W).
        _top: top-image indices of those features, one row each. Shape: (len(features), n).
    """
    del path, weights_hash, features
    _images.prefetch(_top[:, :STRIP_N])  # one worker call for every strip
    return [draw.data_uri(draw.feature_strip(_images, row, STRIP_N, cols)) for row in _top]


def feature_table(analysis, order: str, extras: Sequence[sections.Columns] = ()) -> pd.DataFrame:
    """One row per feature, most important first, without the top images (:func:`with_strips`
    adds them to the rows drawn).

    In the spectral basis the rank is the feature (no raw index column) and a column names the
    unresolved group a rank belongs to, if any. The columns a kind of run adds (``extras``, the
    ``features.table`` sections; an image-text run: its top captions and the words that raise
    each feature) follow the top images, and their words join the descriptions.
    """
    o = analysis.importance.order(order)
    scores = np.asarray(analysis.importance.scores[order], dtype=float)
    st_ = analysis.stats
    classes = analysis.classes
    if get_basis(analysis.basis).grouped:
        found = [draw.group_of(analysis.groups, r) for r in range(len(o))]
        first = {"group": [draw.group_label(g) if g else "" for g in found]}
    else:
        first = {"feature": o}
    added = {name: v for extra in extras for name, v in extra.values(o).items()}
    words = next((extra.words for extra in extras if extra.words is not None), None)
    return pd.DataFrame(
        {
            "#": np.arange(1, len(o) + 1),
            **first,
            "importance": scores[o],
            "description": describe.describe_all(analysis, o, words),
            "_raw": o,
            **added,
            **(
                {
                    "top images' class": [classes[c] for c in st_.dominant_class[o]],
                    "selectivity": st_.dominant_share[o],
                    "entropy (bits)": st_.class_entropy[o],
                }
                if analysis.has_labels
                else {}
            ),
            "mean": st_.mean[o],
            "std": st_.std[o],
        }
    )


def with_strips(analysis, rows: pd.DataFrame, images: np.ndarray, narrow: bool) -> pd.DataFrame:
    """``rows`` with each feature's strip of top images after its description (only the rows
    drawn get one: a 2,048-feature table draws a page of :data:`PAGE_ROWS` at a time)."""
    raw = rows["_raw"].to_numpy()
    strip = strips(
        str(analysis.run_path),
        f"{analysis.weights_hash}/{analysis.basis}",
        tuple(int(f) for f in raw),
        NARROW_STRIP_COLS if narrow else STRIP_N,
        images,
        analysis.top_images.top_indices[raw],
    )
    out = rows.drop(columns="_raw")
    out.insert(out.columns.get_loc("description") + 1, "top images", strip)
    return out


def page_of(shown: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows of ``shown`` drawn now: all of them up to :data:`PAGE_ROWS`, else the page the
    reader picks (ranks 1-128, 129-256, ...)."""
    if len(shown) <= PAGE_ROWS:
        return shown
    left, right = st.columns(2)
    # a header click sorts one page only: the order across pages is picked here
    sortable = [c for c in SORTABLE if c in shown]
    by = left.selectbox("Sort rows by", sortable, key=f"_w_sort_{key}")
    if by != "#":
        shown = shown.sort_values(by, ascending=False, kind="stable")
    starts = list(range(0, len(shown), PAGE_ROWS))
    start = right.selectbox(
        "Rows",
        starts,
        key=f"_w_rows_{key}",
        format_func=lambda i: f"{i + 1}-{min(i + PAGE_ROWS, len(shown))} of {len(shown)}",
        help=f"The table draws {PAGE_ROWS} features at a time; the CSV holds every row.",
    )
    return shown.iloc[start : start + PAGE_ROWS].reset_index(drop=True)


def controls(analysis) -> tuple[str, list, float]:
    """The importance order, top-image class and selectivity filters: (order, classes, minimum)."""
    ss = st.session_state
    orders = list(analysis.importance.orders)
    order = state.current_order(analysis)
    c1, c2, c3 = st.columns([1, 2, 1])
    with c1:
        ss["_w_order"] = order
        st.selectbox(
            "Importance order",
            orders,
            key="_w_order",
            format_func=lambda o: f"{o} (default)" if o == analysis.importance.default else o,
            on_change=state.bind(state.URL_ORDER, "_w_order"),
            disabled=get_basis(analysis.basis).fixed_order,
            help="In the spectral basis the eigenvalue orders the features (the basis's ranks).",
        )
    if not analysis.has_labels:  # no class filters: the table has no class columns
        with c2:
            st.caption(report.NO_LABELS)
        return order, [], 0.0
    with c2:
        picked = st.multiselect("Top images' class", analysis.classes, placeholder="all classes")
    with c3:
        min_sel = st.slider("Selectivity at least", 0.0, 1.0, 0.0, 0.05)
    return order, picked, min_sel


def show_features(
    run, analysis, order: str, shown: pd.DataFrame, extras: Sequence[sections.Columns]
) -> None:
    """The feature table, every row of the page on the page (no inner scrolling); a clicked row
    opens that feature on the Feature detail page. The CSV holds every row shown."""
    row_height = max([ROW_HEIGHT, *(extra.row_height for extra in extras)])
    page = page_of(shown, f"{run.name}_{analysis.basis}_{order}")
    drawn = with_strips(analysis, page, models.eval_images(run, analysis), bool(extras))
    event = draw.show_table(
        drawn,
        f"features_{run.name}_{analysis.basis}",
        csv=shown.drop(columns="_raw"),
        key=f"feature_table_{run.name}_{analysis.basis}_{order}",
        on_select="rerun",
        selection_mode="single-row",
        row_height=row_height,
        height=report.table_height(len(drawn), row_height),
        column_config={
            "#": st.column_config.NumberColumn(
                help=f"feature number ({draw.basis_note(analysis, order)}; #1 = most important)"
            ),
            "feature": st.column_config.NumberColumn(help="index of the feature in z"),
            "group": st.column_config.TextColumn(
                "unresolved group", help="ranks whose order the data cannot define"
            ),
            "importance": st.column_config.NumberColumn(format="%.4f"),
            "description": st.column_config.TextColumn(width="medium", help=describe.RULE),
            "top images": st.column_config.ImageColumn(
                f"top {STRIP_N} images",
                width="medium" if extras else "large",  # room for the added columns
                help="highest activations, left first",
            ),
            "selectivity": st.column_config.ProgressColumn(
                format="percent", min_value=0.0, max_value=1.0
            ),
            "entropy (bits)": st.column_config.NumberColumn(format="%.2f"),
            "mean": st.column_config.NumberColumn(format="%.3f"),
            "std": st.column_config.NumberColumn(format="%.3f"),
            **{name: c for extra in extras for name, c in extra.config.items()},
        },
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        st.session_state[state.URL_FEATURE] = int(drawn["#"].iloc[rows[0]])
        st.switch_page("views/feature_detail.py")


def main() -> None:
    draw.page_header(
        "Features",
        "The features (projector outputs z) of one run, most important first, each with the "
        "images that excite it most. Selectivity is the share of the feature's top-100 images "
        "in their most frequent class (10% for 10 classes is chance: no class); 100% means a "
        "pure class detector (images without labels: no class columns). Click a row to open the "
        "feature; click a column header to sort. "
        "The sidebar's basis picks the axes: the trained ones, or the run's spectral basis (most "
        "augmentation-invariant first, the same numbering in every seed).",
    )
    ctx = jobs_ui.feature_page("features")
    run, basis, analysis = ctx.run, ctx.basis, ctx.analysis
    order, picked, min_sel = controls(analysis)
    st.caption(draw.order_caption(analysis, order))
    if basis.grouped:
        with st.container(border=True):
            st.markdown(draw.groups_markdown(analysis.groups, analysis.k))
            if analysis.estimated_on is not None:
                used, of = analysis.estimated_on
                st.caption(
                    f"The basis was estimated on a fixed random subsample of {used:,} of the"
                    f" {of:,} train images (seeded)."
                )
    extras = sections.columns("features.table", ctx)
    table = feature_table(analysis, order, extras)
    keep = table["selectivity"] >= min_sel if analysis.has_labels else table["#"] > 0
    if picked:
        keep &= table["top images' class"].isin(picked)
    shown = table[keep].reset_index(drop=True)
    st.caption(f"{len(shown)} of {len(table)} features shown.")
    for extra in extras:
        if extra.note:
            st.caption(extra.note)
    show_features(run, analysis, order, shown, extras)
    ctx.order = analysis.importance.order(order)
    sections.draw("features.end", ctx)


if __name__ == "__main__":
    main()
