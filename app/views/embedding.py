"""Embedding: a UMAP map of the evaluation images; select points to see their images."""

from __future__ import annotations

import draw
import jobs_ui
import models
import numpy as np
import plotly.graph_objects as go
import state
import streamlit as st

from tricl.report import features as report

MAX_SHOWN = 64
# A qualitative palette with enough distinct colours for 10 classes (plotly's D3).
CLASS_COLORS = [
    "#1F77B4",
    "#FF7F0E",
    "#2CA02C",
    "#D62728",
    "#9467BD",
    "#8C564B",
    "#E377C2",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
]


def scatter(analysis, color_by: str, feature: int | None) -> tuple[go.Figure, list[np.ndarray]]:
    """The WebGL scatter, and for every trace the evaluation rows its points are."""
    xy, points = analysis.embedding.coords, analysis.embedding.rows  # (M, 2), rows mapped (M,)
    labels = analysis.features.labels[points]
    fig = go.Figure()
    rows: list[np.ndarray] = []
    if color_by == "class":
        for c, name in enumerate(analysis.classes):
            sel = np.flatnonzero(labels == c)
            rows.append(points[sel])
            fig.add_trace(
                go.Scattergl(
                    x=xy[sel, 0],
                    y=xy[sel, 1],
                    mode="markers",
                    name=str(name),
                    marker={"size": 5, "color": CLASS_COLORS[c % len(CLASS_COLORS)]},
                    hovertemplate=f"class {name}<extra></extra>",
                )
            )
    else:
        z = analysis.features.z[points, feature].astype(np.float32)  # stored as float16
        rows.append(points)
        fig.add_trace(
            go.Scattergl(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                marker={
                    "size": 5,
                    "color": z,
                    "colorscale": "RdBu_r",
                    "cmid": 0.0,
                    "colorbar": {"title": "z"},
                },
                text=[str(analysis.classes[c]) if c >= 0 else "-" for c in labels],
                hovertemplate="class %{text}<br>z %{marker.color:.2f}<extra></extra>",
                showlegend=False,
            )
        )
    draw.tidy(
        fig,
        height=600,
        dragmode="lasso",
        xaxis={"showticklabels": False, "title": "UMAP 1"},
        yaxis={"showticklabels": False, "title": "UMAP 2", "scaleanchor": "x"},
    )
    return fig, rows


def selected_rows(event, rows: list[np.ndarray]) -> np.ndarray:
    """Evaluation rows of the selected points (trace number + index within the trace)."""
    if event is None:
        return np.empty(0, dtype=np.int64)
    out = []
    for p in event.selection.get("points", []):
        trace, i = p.get("curve_number"), p.get("point_index")
        if trace is not None and i is not None and trace < len(rows) and i < len(rows[trace]):
            out.append(int(rows[trace][i]))
    return np.array(sorted(set(out)), dtype=np.int64)


def class_counts(analysis, sel: np.ndarray) -> str:
    """`` · class 3: 12, class 5: 4`` for the selected rows' three most frequent classes."""
    if not analysis.has_labels:
        return " (no labels)"
    counts = np.bincount(analysis.features.labels[sel], minlength=len(analysis.classes))
    top = np.argsort(-counts)[:3]
    return " · " + ", ".join(
        f"class {analysis.classes[c]}: {counts[c]}" for c in top if counts[c] > 0
    )


def main() -> None:
    draw.page_header(
        "Embedding",
        "Each dot is an evaluation image, placed by UMAP so that images with similar features sit "
        "together. Colour by class to see how the classes separate, or by one feature to see "
        "where it fires. Draw a lasso or box (or click) to see the selected images.",
    )
    jobs_ui.require_runs()
    run = state.current_run()
    analysis = jobs_ui.analysis_of(run, state.current_basis())
    order = state.current_order(analysis)
    ss = st.session_state
    c1, c2 = st.columns([1, 2])
    with c1:
        by = ["class", "feature activation"] if analysis.has_labels else ["feature activation"]
        color_by = st.radio("Colour by", by, horizontal=True)
    if not analysis.has_labels:
        st.caption(report.NO_LABELS)
    feature = None
    rank = state.current_feature(analysis.k)
    if color_by != "class":
        with c2:
            ss["_w_emb_feature"] = rank
            st.number_input(
                f"Feature # (1 … {analysis.k}, {draw.basis_note(analysis, order)})",
                min_value=1,
                max_value=analysis.k,
                key="_w_emb_feature",
                on_change=state.bind(state.URL_FEATURE, "_w_emb_feature"),
            )
        feature = int(analysis.importance.order(order)[rank - 1])
    fig, rows = scatter(analysis, color_by, feature)
    event = draw.show_figure(
        fig,
        f"umap_{run.name}",
        key=f"umap_{run.name}_{color_by}_{analysis.basis}_{feature}",
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
    )
    if feature is not None:
        st.caption(f"Coloured by {draw.feature_name(analysis, rank, order)}.")
    emb = analysis.embedding
    p, shown = emb.params, f"{len(emb.coords)}"
    if emb.subsampled:
        shown = f"a random subsample of {len(emb.coords)} of the {emb.n_total}"
    st.caption(
        f"UMAP of the L2-normalised z of {shown} {analysis.split} images"
        f" (n_neighbors {p.get('n_neighbors')}, min_dist {p.get('min_dist')})."
    )
    sel = selected_rows(event, rows)
    if len(sel) == 0:
        st.info("Select points on the map (lasso, box or click) to see their images here.")
        return
    images = models.eval_images(run, analysis)
    st.markdown(f"**{len(sel)} selected**" + class_counts(analysis, sel))
    shown = sel[:MAX_SHOWN]
    idx = analysis.features.indices[shown]
    st.image(draw.grid(draw.to_rgb(images[idx]), cols=16), width="content")
    if len(sel) > MAX_SHOWN:
        st.caption(f"The first {MAX_SHOWN} of {len(sel)} selected images.")


if __name__ == "__main__":
    main()
