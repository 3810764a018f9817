"""Feature detail's "What it does" section: the feature ablated and steered, against chance.

Everything drawn is read from the ``interventions`` stage (computed once per run by
``tricl analyze``); a run analysed before the stage existed gets the command that computes it. An
image-text run adds the same interventions read through its text side (the text analysis's
``interventions``: zero-shot accuracy and the captions an image retrieves).
"""

from __future__ import annotations

from typing import Any

import draw
import labels
import pandas as pd
import readers
import streamlit as st

from tricl.report import interventions as report


def what_it_does(run, analysis, feature: int, rank: int) -> None:
    """The section, for feature ``feature`` (raw index) shown as ``#rank``."""
    st.subheader("What it does: interventions")
    res = analysis.values.get(report.STAGE)
    if res is None:
        st.info(report.not_computed(run.name, analysis.basis))
        return
    st.markdown(report.summary(res, feature))
    if not res.measured:
        return
    steer_sd = float(analysis.params.get(report.STAGE, {}).get("steer_sd", 2.0))
    draw.show_table(
        pd.DataFrame(report.table(res, feature, analysis.classes, steer_sd)),
        f"interventions_{run.name}_{analysis.basis}_{feature}",
        hide_index=True,
    )
    st.caption(
        report.retrieval_caption(res, feature)
        + " The probe is the run's full linear probe (fitted on the unedited train features);"
        " each random control moves a random direction by the same amount (8 draws)."
    )
    if labels.has_text(run):
        _through_text(run, analysis, feature, steer_sd)


def _through_text(run, analysis, feature: int, steer_sd: float) -> None:
    """An image-text run: the same interventions read through zero-shot and the captions."""
    st.markdown("**Through the text side: zero-shot and the captions an image retrieves**")
    _, eff = text_effects(run, analysis.basis)
    if eff is None:
        st.info(report.text_not_computed(run.name, analysis.basis))
        return
    st.markdown(report.text_summary(eff, feature))
    draw.show_table(
        pd.DataFrame(report.text_table(eff, feature, analysis.classes, steer_sd)),
        f"text_interventions_{run.name}_{analysis.basis}_{feature}",
        hide_index=True,
    )
    st.caption(report.TEXT_NOTE)


def text_effects(run, basis: str) -> tuple[Any, Any]:
    """An image-text run's stored text analysis and its interventions in ``basis``
    (:class:`tricl.analysis.text_interventions.TextEffects`); None for what is not stored or
    cannot be read (the caption sections above say which)."""
    try:
        text = readers.text_analysis_or_none(run) if labels.has_text(run) else None
    except (OSError, ValueError):  # AnalysisError and RunError are ValueErrors
        return None, None
    return text, None if text is None else (text.interventions or {}).get(basis)
