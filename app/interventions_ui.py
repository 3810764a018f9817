"""Feature detail's "What it does" section: the feature ablated and steered, against chance.

Everything drawn is read from the ``interventions`` stage (computed once per run by
``tricl analyze``); a run analysed before the stage existed gets the command that computes it. An
kind of run may add more readings of them (``interventions.end`` sections; an image-text run: its
text side, zero-shot accuracy and the captions an image retrieves, :mod:`text_ui_sections`).
"""

from __future__ import annotations

import draw
import pandas as pd
import sections
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
    # more readings of the same interventions a kind of run adds (image-text: its text side)
    ctx = sections.Context(run=run, analysis=analysis, feature=feature, rank=rank)
    sections.draw("interventions.end", ctx)
