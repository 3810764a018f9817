"""Feature detail's "What it does" section: the feature ablated and steered, against chance.

Everything drawn is read from the ``interventions`` stage (computed once per run by
``tricl analyze``); a run analysed before the stage existed gets the command that computes it.
"""

from __future__ import annotations

import pandas as pd
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
    st.dataframe(
        pd.DataFrame(report.table(res, feature, analysis.classes, steer_sd)),
        hide_index=True,
        width="stretch",
    )
    st.caption(
        report.retrieval_caption(res, feature)
        + " The probe is the run's full linear probe (fitted on the unedited train features);"
        " each random control moves a random direction by the same amount (8 draws)."
    )
