"""The class views of a feature (its class metrics, activation by class, class means), or, for
images without labels, the one note that says so. Pages call these instead of reading classes."""

from __future__ import annotations

import draw
import numpy as np
import pandas as pd
import streamlit as st

from tricl.report import describe
from tricl.report import features as report


def no_labels() -> None:
    """The note every class view shows for an image set without labels."""
    st.info(report.NO_LABELS)


def class_description(analysis, feature: int, column, words=()) -> None:
    """The feature's description (:mod:`tricl.report.describe`: the classes that raise and lower
    it, its selectivity, its words) in ``column``, and the sentence that reconciles its top
    images' class with its most extreme class mean; without labels one "no labels" metric and
    the note."""
    if not analysis.has_labels:
        column.metric("Classes", "no labels", help="this image set has no class labels")
        st.caption(report.NO_LABELS)
        return
    text = describe.line(analysis, feature, words)
    column.markdown(f"**Description**  \n{text}", help=describe.RULE)
    st.caption(report.class_facts_caption(report.class_facts(analysis, feature), analysis.classes))


def class_charts(analysis, feature: int, rank: int) -> None:
    """The feature's activation by class and its class means, side by side."""
    if not analysis.has_labels:
        no_labels()
        return
    dist, bars = draw.class_figures(
        analysis.features.z[:, feature].astype(np.float32),  # (N,), stored as float16
        analysis.features.labels,
        analysis.classes,
        analysis.stats.class_means[feature],
        report.class_facts(analysis, feature).strongest,
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**Activation by class**")
        draw.show_figure(dist, f"feature{rank}_activation_by_class")
    with right:
        st.markdown("**Class means**")
        draw.show_figure(bars, f"feature{rank}_class_means")


def class_means_bars(analysis, feature: int, sign: float) -> None:
    """A small bar chart of one feature's class means (times ``sign``); nothing without labels."""
    if not analysis.has_labels:
        return
    means = sign * np.asarray(analysis.stats.class_means[feature], dtype=float)
    st.bar_chart(
        pd.DataFrame({"class": [str(c) for c in analysis.classes], "mean": means}),
        x="class",
        y="mean",
        height=140,
        color=draw.BASE_COLOR,
    )
