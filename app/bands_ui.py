"""Feature detail's "Activation ranges" section: the feature's activation histogram cut into its
stored bands, and each band's range, count, class mix and sample images, bottom to top.

Everything drawn is read from the ``activation_bands`` stage (sampled once per run by
``tricl analyze``) and the ``stats`` stage's histogram; a run analysed before the stage existed
gets the command that computes it.
"""

from __future__ import annotations

import draw
import numpy as np
import pandas as pd
import streamlit as st

from tricl.report import bands as report


def _histogram(analysis, feature: int, edges: np.ndarray) -> pd.DataFrame:
    """The stored activation histogram of the feature, each bin named by the band of its centre.
    (A Streamlit bar chart, not a Plotly figure: the page's Plotly charts are the class charts.)"""
    bins = analysis.stats.hist_edges[feature]  # (bins + 1,)
    centres = (bins[:-1] + bins[1:]) / 2  # (bins,)
    band = np.searchsorted(edges[1:-1], centres, side="right") + 1  # (bins,) in 1..B
    return pd.DataFrame(
        {
            "activation": np.round(centres, 3),
            "images": analysis.stats.hist_counts[feature],
            "band": [f"band {b}" for b in band],
        }
    )


def activation_ranges(run, analysis, feature: int, rank: int, images: np.ndarray) -> None:
    """The section, for feature ``feature`` (raw index) shown as ``#rank``."""
    st.subheader("Activation ranges")
    bands = analysis.values.get(report.STAGE)
    if bands is None:
        st.info(report.not_computed(run.name, analysis.basis))
        return
    st.caption(report.near_zero_caption(analysis, feature))
    hist = _histogram(analysis, feature, bands.edges[feature])
    st.bar_chart(hist, x="activation", y="images", color="band", height=200)
    for row in report.band_rows(bands, feature, analysis.classes):
        left, right = st.columns([1, 3])
        with left:
            st.markdown(f"**Band {row.band}**: {row.low:.2f} … {row.high:.2f}")
            mix = f" · {row.class_mix}" if row.class_mix else ""
            st.caption(f"{row.count} images ({row.share:.0%}){mix}")
        with right:
            if len(row.samples):
                strip = draw.feature_strip(images, row.samples, len(row.samples))
                st.image(strip, width="content")
            else:
                st.caption("no image in this band")
