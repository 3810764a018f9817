"""The caption side of image-text runs, plugged into the pages (:mod:`sections`).

An image-text run (clip, triclip, an open_clip import on captions; not an aligned copy, which
keeps only the image encoder) adds: the Runs table's zero-shot and retrieval columns; on Features
and Feature detail its top captions and words (trained axes; in another basis a note pointing
back to them), the features in words and the caption factor table; the same interventions read
through zero-shot and the retrieved captions; Compare seeds' image and text features across
seeds; and a caption to probe. What they draw lives in :mod:`text_ui` and :mod:`text_ui_probe`,
imported when a section is drawn, so a page whose runs have no text side (and the Runs page's
first draw) never loads them.
"""

from __future__ import annotations

from typing import Any

import labels
import numpy as np
import readers
import streamlit as st
from sections import Columns, Context, register_section

from tricl.report import interventions as interventions_report
from tricl.report import runs as runs_report

CAPTION_ROW_HEIGHT = 84  # room for a feature's top captions, wrapped over a few lines
CAPTION_HEADER = (
    "This run encodes text too. Type a caption: the bars are its features, most important "
    "first, against the evaluation captions' usual range, and below are the evaluation images "
    "it retrieves. Or switch to an image to probe the image encoder."
)


def _has_text(ctx: Context) -> bool:
    return ctx.run is not None and labels.has_text(ctx.run)


def _in_trained_axes(ctx: Context) -> bool:
    """The run has captions and the page's basis is the one its captions are read in."""
    return _has_text(ctx) and ctx.basis.captions


def _in_other_axes(ctx: Context) -> bool:
    return _has_text(ctx) and not ctx.basis.captions


def _text(ctx: Context) -> Any | None:
    """The run's stored text analysis, read once per page run (None after offering the job)."""
    if "text" not in ctx.memo:
        import jobs_ui

        ctx.memo["text"] = jobs_ui.text_analysis(ctx.run)
    return ctx.memo["text"]


def _stored(ctx: Context) -> bool:
    return _in_trained_axes(ctx) and _text(ctx) is not None


def _trained_only(ctx: Context) -> None:
    import text_ui

    st.caption(text_ui.TRAINED_ONLY)


def _words(text: Any):
    from tricl.report.describe import top_words

    return lambda f: top_words(text.tokens, f)


def _feature_columns(ctx: Context) -> Columns | None:
    import text_ui

    from tricl.report.features import CAPTIONS_NOTE

    if (text := _text(ctx)) is None:
        return None
    return Columns(
        values=lambda order: text_ui.feature_columns(text, order),
        config=text_ui.feature_column_config(),
        words=_words(text),
        row_height=CAPTION_ROW_HEIGHT,
        note=CAPTIONS_NOTE,
    )


def _features_end(ctx: Context) -> None:
    import text_ui

    text = _text(ctx)
    text_ui.features_in_words(text, ctx.order)
    text_ui.factor_section(ctx.run, text, ctx.analysis.importance.default)


def _feature_words(ctx: Context):
    text = _text(ctx)
    return None if text is None else _words(text)


def _feature_captions(ctx: Context) -> None:
    import text_ui

    text_ui.feature_captions(_text(ctx), ctx.feature, ctx.rank)


def text_effects(run, basis: str) -> tuple[Any, Any]:
    """An image-text run's stored text analysis and its interventions in ``basis``
    (:class:`tricl.analysis.text_interventions.TextEffects`); None for what is not stored or
    cannot be read (the caption sections say which), and for a run without a text side."""
    if not labels.has_text(run):
        return None, None
    try:
        text = readers.text_analysis_or_none(run)
    except (OSError, ValueError):  # AnalysisError and RunError are ValueErrors
        return None, None
    return text, None if text is None else (text.interventions or {}).get(basis)


def _through_text(ctx: Context) -> None:
    """The same interventions read through zero-shot and the captions an image retrieves."""
    import draw
    import pandas as pd

    run, analysis, feature = ctx.run, ctx.analysis, ctx.feature
    st.markdown("**Through the text side: zero-shot and the captions an image retrieves**")
    _, eff = text_effects(run, analysis.basis)
    if eff is None:
        st.info(interventions_report.text_not_computed(run.name, analysis.basis))
        return
    steer_sd = float(analysis.params.get(interventions_report.STAGE, {}).get("steer_sd", 2.0))
    st.markdown(interventions_report.text_summary(eff, feature))
    draw.show_table(
        pd.DataFrame(interventions_report.text_table(eff, feature, analysis.classes, steer_sd)),
        f"text_interventions_{run.name}_{analysis.basis}_{feature}",
        hide_index=True,
    )
    st.caption(interventions_report.TEXT_NOTE)


def _any_text(ctx: Context) -> bool:
    return any(labels.has_text(r) for r in ctx.runs)


def _compare_seeds(ctx: Context) -> None:
    import text_ui

    st.divider()
    text_ui.image_text_section(list(ctx.runs))


def _probe(ctx: Context) -> None:
    import text_ui_probe

    text_ui_probe.probe_caption(ctx.run)


def zero_shot_columns(runs: list, texts: dict[str, Any]) -> dict[str, list[float]]:
    """The Runs table's zero-shot and retrieval columns (NaN, drawn blank, where a run has none).

    Args:
        runs: the table's runs, in its row order.
        texts: stored zero-shot metrics (``TextAnalysis.zero_shot``) by run name.

    Returns:
        Column label -> one value per run.
    """
    out: dict[str, list[float]] = {}
    for key, (label, _) in runs_report.ZERO_SHOT_COLUMNS.items():
        values = [texts[r.name].get(key) if r.name in texts else None for r in runs]
        out[label] = [np.nan if v is None else float(v) for v in values]
    return out


def _runs_columns(ctx: Context) -> Columns:
    config = {
        label: st.column_config.NumberColumn(format="percent", help=help_)
        for label, help_ in runs_report.ZERO_SHOT_COLUMNS.values()
    }
    return Columns(values=lambda runs: zero_shot_columns(runs, ctx.numbers.texts), config=config)


for _page in ("features", "feature_detail"):
    register_section(f"{_page}.header", "trained axes note", _in_other_axes, _trained_only)
register_section("features.table", "captions", _in_trained_axes, _feature_columns)
register_section("features.end", "captions", _stored, _features_end)
register_section("feature_detail.words", "caption words", _in_trained_axes, _feature_words)
register_section("feature_detail.interventions", "captions", _stored, _feature_captions)
register_section("interventions.end", "through the text side", _has_text, _through_text)
register_section("compare_seeds.summary", "image and text features", _any_text, _compare_seeds)
register_section(
    "probe.kinds", "caption probe", _has_text, _probe, label="a caption", doc=CAPTION_HEADER
)
register_section("runs.table", "zero-shot", _any_text, _runs_columns)
