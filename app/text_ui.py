"""The caption side of image-text runs (clip, triclip), as several pages draw it.

Top captions, words and cards per feature and the caption factor table for the Features and
Feature detail pages; the similarity by which the caption probe (:mod:`text_ui_probe`) ranks
images; the Compare seeds page's image-text section (image AND text features across seeds).
Everything here draws stored text analyses (:mod:`readers`, via :mod:`jobs_ui`). The pages reach
it only through the sections :mod:`text_ui_sections` registers (:mod:`sections`), so image-only
runs never do.

Captions and tokens are per feature of the trained axes: the spectral basis is estimated from
image augmentations, which captions do not have, so in that basis the pages point back to the
trained axes instead of mixing the two.
"""

from __future__ import annotations

import re
from typing import Any

import draw
import jobs_ui
import labels
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tricl.analysis.image_text import anchor_weights, similarity
from tricl.analysis.metrics import METRICS
from tricl.bases import BASIS_NAMES, get_basis
from tricl.methods import method_color, method_label
from tricl.report import compare as compare_report
from tricl.report import features as report_features
from tricl.report.verdicts import CKA_WHITENED_NOTE, TOP8
from tricl.runs import Run

TRAINED_ONLY = (
    "Captions and tokens belong to the trained axes (the spectral basis comes from image "
    "augmentations, which captions do not have): switch the sidebar's basis to trained to see "
    "them."
)


# --------------------------------------------------------------------------- Features pages

CAPTIONS_IN_TABLE = 3  # top captions per row of the Features table
IN_WORDS = 4  # features drawn as cards above the factor table
HEAD = 8  # the factor table's "first ranks" (the paper's top-8)
CELL_TEXT_MAX_K = 16  # the heatmap prints its numbers in the cells up to this many ranks
SIDES = {"image": "image features", "text": "caption features"}


def _row_of(text: Any) -> dict[int, int]:
    """Raw feature index -> row of the text analysis's per-rank artifacts."""
    return {int(f): r for r, f in enumerate(text.top_captions.feature)}


def top_captions_of(text: Any, feature: int, n: int | None = None) -> pd.DataFrame:
    """A feature's distinct top captions, highest value first.

    Args:
        text: the run's text analysis.
        feature: raw feature index.
        n: at most this many (all stored if None).

    Returns:
        Columns ``caption``, ``value`` (the feature on it), ``captions`` (how many evaluation
        captions have that text).
    """
    tc = text.top_captions
    r = _row_of(text)[int(feature)]
    stop = tc.indices.shape[1] if n is None else n
    return pd.DataFrame(
        {
            "caption": [text.features.captions[int(i)] for i in tc.indices[r, :stop]],
            "value": tc.values[r, :stop].astype(float),
            "captions": tc.counts[r, :stop].astype(int),
        }
    )


def tokens_of(text: Any, feature: int) -> pd.DataFrame:
    """The words that raise a feature most: ``token, lift`` (in the feature's std), ``count``."""
    t = text.tokens
    rows = t[t["feature"] == int(feature)].sort_values("lift", ascending=False)
    return rows[["token", "lift", "count"]].reset_index(drop=True)


def feature_columns(text: Any, order: np.ndarray) -> dict[str, list[str]]:
    """The Features table's caption columns, one entry per feature of ``order`` (raw indices).

    Returns:
        ``{"top captions": ..., "raised by": ...}``: each feature's top captions joined by " | ",
        and its top words with their lift (e.g. ``thick +1.3σ``).
    """
    captions, words = [], []
    for f in order:
        top = top_captions_of(text, int(f), CAPTIONS_IN_TABLE)
        captions.append(" | ".join(top["caption"]))
        tok = tokens_of(text, int(f))
        words.append(", ".join(f"{w} {v:+.1f}σ" for w, v in zip(tok["token"], tok["lift"])))
    return {"top captions": captions, "raised by": words}


def feature_column_config() -> dict[str, Any]:
    return {
        "top captions": st.column_config.TextColumn(
            f"top {CAPTIONS_IN_TABLE} captions",
            width="large",
            help="the distinct evaluation captions with the highest value of the TEXT encoder's "
            "feature #i (g_i of the caption, not the image encoder's f_i), highest first",
        ),
        "raised by": st.column_config.TextColumn(
            "words that raise it",
            width="medium",
            help="words whose presence in a caption raises the feature most: mean with the word "
            "minus mean without, in units of the feature's std (words in >= 5 captions)",
        ),
    }


def md_escape(text: str) -> str:
    """Caption text safe inside Markdown: ASCII punctuation backslash-escaped (a CSV caption may
    hold ``*``, ``#``, ``$`` or ``:name:``, which Streamlit would render as markup)."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def features_in_words(text: Any, order: np.ndarray, n: int = IN_WORDS) -> None:
    """The first ``n`` features of ``order`` (raw indices) as cards: their words and captions.

    The table's caption cells are cut to their width; these cards show them whole.
    """
    st.subheader("The most important features, in words")
    for col, (rank, f) in zip(st.columns(n), enumerate(order[:n], start=1)):
        with col:
            feature_card(text, int(f), f"Feature #{rank}")


def feature_card(text: Any, feature: int, title: str) -> None:
    """A bordered card: ``title``, the words that raise the feature and its top captions."""
    with st.container(border=True):
        words = tokens_of(text, feature)["token"].head(3)
        said = ", ".join(f"*{md_escape(w)}*" for w in words) or "no frequent word"
        st.markdown(f"**{title}** · raised by {said}")
        top = top_captions_of(text, feature, CAPTIONS_IN_TABLE)
        st.markdown("\n".join(f"- {md_escape(c)}" for c in top["caption"]))


def factor_names(factors: pd.DataFrame) -> list[str]:
    """The caption factors a factor table scores (``class``, ``thickness``, ...), in its order."""
    return [c.removeprefix("image_") for c in factors.columns if c.startswith("image_")]


def factor_figure(factors: pd.DataFrame) -> go.Figure:
    """Heatmaps of |corr| (class: eta) of each factor with each feature rank, image above text."""
    from plotly.subplots import make_subplots

    names = factor_names(factors)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=list(SIDES.values()))
    for row, side in enumerate(SIDES, start=1):
        values = factors[[f"{side}_{n}" for n in names]].to_numpy(dtype=float).T  # (F, k)
        fig.add_trace(
            go.Heatmap(
                z=values,
                x=factors["rank"],
                y=names,
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                colorbar={"title": "|corr|"},
                showscale=row == 1,
                texttemplate="%{z:.2f}" if len(factors) <= CELL_TEXT_MAX_K else None,
                hovertemplate=f"{side} feature #%{{x}} · %{{y}}: %{{z:.2f}}<extra></extra>",
            ),
            row=row,
            col=1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="feature # (trained axes, importance order)", row=2, col=1)
    return draw.tidy(fig, height=140 + 45 * 2 * len(names))


def factor_verdict(factors: pd.DataFrame) -> str:
    """Markdown: for each factor, the rank that carries it most on each side."""
    lines = []
    for name in factor_names(factors):
        parts = []
        for side in SIDES:
            col = factors[f"{side}_{name}"].to_numpy(dtype=float)
            if np.isfinite(col).any():
                best = int(np.nanargmax(col))
                parts.append(f"{side} #{int(factors['rank'].iloc[best])} ({col[best]:.2f})")
        lines.append(f"- **{name}**: " + (", ".join(parts) or "no score"))
    return "\n".join(lines)


def _finite_mean(x: np.ndarray) -> float:
    """Mean of the finite entries (NaN if none), without numpy's empty-slice warning."""
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def head_against_rest(factors: pd.DataFrame, head: int = HEAD) -> str:
    """Markdown: for each factor and side, mean score of the first ``head`` ranks vs the rest.

    A higher mean in the head says the importance order puts that factor first.
    """
    if len(factors) <= head:
        return ""
    lines = []
    for name in factor_names(factors):
        parts = []
        for side in SIDES:
            col = factors[f"{side}_{name}"].to_numpy(dtype=float)  # (k,) in rank order
            first, rest = _finite_mean(col[:head]), _finite_mean(col[head:])
            if np.isfinite(first) and np.isfinite(rest):
                parts.append(f"{side} {first:.2f} vs {rest:.2f}")
        lines.append(f"- **{name}**: " + (" · ".join(parts) or "no score"))
    return f"**#1-#{head} against the rest** (mean score)\n\n" + "\n".join(lines)


def factor_section(run: Run, text: Any, order_name: str) -> None:
    """The caption factor table: which feature rank carries which known factor of the captions."""
    st.subheader("Caption factors by feature rank")
    factors = text.factors
    if not factor_names(factors):
        st.info(
            "This dataset's captions carry no known factors (no class labels or measured "
            "attributes), so there is no factor table.",
            icon=":material/info:",
        )
        return
    st.caption(
        "How strongly each feature (columns, most important first, in the run's default order "
        f"{order_name}) follows each known factor of the captions: class by the correlation "
        "ratio eta (separates the classes in any order), thickness, slant and size by |corr|. "
        "If S orders the features, the factors light up the first columns."
    )
    left, right = st.columns([3, 1])
    with left:
        draw.show_figure(factor_figure(factors), f"caption_factors_{run.name}")
    with right:
        st.markdown("**Strongest feature per factor**\n\n" + factor_verdict(factors))
        st.markdown(head_against_rest(factors))
    with st.expander("The numbers"):
        draw.show_table(
            factors,
            f"caption_factors_{run.name}",
            column_config=draw.number_columns(factors, "%.2f"),
        )


def feature_captions(text: Any, feature: int, rank: int) -> None:
    """The Feature detail page's caption side: top captions and the words that raise it."""
    st.subheader("Its top captions and words")
    left, right = st.columns([3, 2])
    with left:
        top = top_captions_of(text, feature)
        draw.show_table(
            top,
            f"feature{rank}_top_captions",
            column_config={
                "value": st.column_config.NumberColumn("feature value", format="%.3f"),
                "captions": st.column_config.NumberColumn(
                    "times", help="evaluation captions with exactly this text"
                ),
            },
        )
        st.caption(
            "The distinct evaluation captions with the highest value of this feature number in "
            "the text encoder (g_i, trained axes), highest first. " + report_features.CAPTIONS_NOTE
        )
    with right:
        tok = tokens_of(text, feature)
        if tok.empty:
            st.info("No word occurs often enough to score (>= 5 captions).")
            return
        draw.show_table(
            tok,
            f"feature{rank}_tokens",
            column_config={
                "lift": st.column_config.NumberColumn("lift (σ)", format="%+.2f"),
                "count": st.column_config.NumberColumn("captions"),
            },
        )
        st.caption(
            "Words whose presence raises the feature most: mean with the word minus mean "
            "without, in units of the feature's std."
        )


# --------------------------------------------------------------------------- similarity


def caption_scores(
    image_z: np.ndarray, z: np.ndarray, importance: np.ndarray | None, s_placement: str
) -> np.ndarray:
    """A caption's similarity to every image as the run's loss scores a caption anchor.

    Both sides L2-normalised; clip: cosine; triclip: ``f^T S g`` where ``s_placement`` puts S on
    caption anchors (``both``), cosine where it does not (``first_view``). The temperature
    scales every score alike and is left out (:mod:`tricl.analysis.image_text`, as the
    text->image recall is computed).

    Args:
        image_z: raw image features, raw feature index order. Shape: (N, k).
        z: raw features of the caption. Shape: (k,).
        importance: the diagonal of S (triclip), or None (clip). Shape: (k,).
        s_placement: the run's ``s_placement``.

    Returns:
        Similarity to each image. Shape: (N,).
    """
    weights = anchor_weights(importance, s_placement, "text")
    return similarity(np.asarray(z)[None], image_z, weights)[0]  # (1, k) x (N, k) -> (N,)


# --------------------------------------------------------------------------- Compare seeds page


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


def identifiability_figure(summary: pd.DataFrame, metric: str):
    """Bars of one metric's mean over seed pairs (± std): per side and basis, one per method."""
    bars = [
        {
            "x": [f"{s} · {get_basis(b).pair_label}" for s, b in zip(rows["side"], rows["basis"])],
            "y": rows[f"{metric}_mean"],
            "error": rows[f"{metric}_std"],
            "name": method_label(method),
            "color": method_color(method),
        }
        for method, rows in summary.groupby("method", sort=False)
    ]
    return draw.score_bars(bars, METRICS[metric].label)


def image_text_section(runs: list) -> None:
    """Identifiability of the image-text runs' image AND text features across seeds, in the
    trained axes and in each run's pair basis, one configuration (method) per colour."""
    datasets = seed_pair_datasets(runs)
    st.subheader("Image-text runs: image and text features across seeds")
    st.caption(
        "Each side scored like the image features above, over the seed pairs of each "
        "configuration: the image features f(x) of the evaluation images and the text features "
        "g(t) of their captions. Trained axes: each run's importance order (S for triCLIP). Pair "
        "basis: each side rotated onto the run's canonical correlation directions between its "
        "train image and text features (the image-caption counterpart of the spectral basis), "
        "strongest first. " + CKA_WHITENED_NOTE
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
    table = compare_report.image_text_table(summary)
    draw.show_table(
        table,
        f"image_text_identifiability_{dataset.replace(':', '_').replace('/', '_')}",
        csv=summary,
        column_config=draw.number_columns(table),
    )
    _pair_heatmap(comps, group)


def _pair_heatmap(comps: list, runs: list) -> None:
    """Two runs' features against each other, on the image or the text side, in either basis."""
    st.markdown("**|corr| between two runs' features, one side**")
    st.caption(
        "Identifiable features light up the diagonal: feature #i of one seed is feature #i of "
        "the other, on the image side (f) or the text side (g)."
    )
    first = comps[0]
    shown = labels.run_labels(runs)
    a0, b0 = compare_report.default_pair(first.methods)
    names = first.runs
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    a = c1.selectbox(
        "Rows", range(len(names)), a0, format_func=lambda i: shown[names[i]], key="_w_it_rows"
    )
    b = c2.selectbox(
        "Columns", range(len(names)), b0, format_func=lambda i: shown[names[i]], key="_w_it_cols"
    )
    side = c3.radio("Side", list(SIDES), key="_w_image_text_side")
    basis = c4.radio(
        "Basis",
        [c.basis for c in comps],
        format_func=lambda b: get_basis(b).pair_label,
        key="_w_image_text_basis",
    )
    if a == b:
        st.info("Pick two different runs.")
        return
    comp = next(c for c in comps if c.basis == basis)
    fig = draw.corr_heatmap(
        comp.abs_corr(side, a, b),  # (k_a, k_b)
        f"{shown[comp.runs[b]]}: {side} feature #",
        f"{shown[comp.runs[a]]}: {side} feature #",
        height=520,
    )
    left, _ = st.columns([3, 1])
    with left:
        draw.show_figure(fig, "image_text_abs_corr_heatmap")
    if get_basis(comp.basis).grouped:
        notes = [
            f"{shown[comp.runs[x]]}: "
            + (", ".join(draw.group_label(g) for g in comp.unresolved[x]) or "none")
            for x in (a, b)
        ]
        st.caption(
            "Unresolved pair-basis ranks (canonical correlations closer than their split-half "
            "noise, so their order is not defined by the data): " + "; ".join(notes) + "."
        )
