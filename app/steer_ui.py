"""The Probe page's "Steer a feature" section: move one feature of the probed image and watch the
run's linear probe change its mind.

The probe is the one the ``interventions`` stage stored (the run's full linear probe); the image's
features are moved and read by it in the model worker (:func:`tricl.serve.steer`), never here.
"""

from __future__ import annotations

import draw
import models
import numpy as np
import pandas as pd
import streamlit as st

from tricl.report import interventions as report

LIMIT_SD = 4.0  # the slider's range, in train standard deviations
STEP_SD = 0.5


def steer_section(run, analysis, order_name: str, z: np.ndarray) -> None:
    """The section for the probed image's features ``z`` (k,)."""
    st.subheader("Steer a feature")
    res = analysis.values.get(report.STAGE)
    if res is None:
        st.info(report.not_computed(run.name, analysis.basis))
        return
    if not res.measured:
        st.info("This run's images have no labels, so it has no linear probe to steer.")
        return
    order = analysis.importance.order(order_name)
    left, right = st.columns([1, 2])
    with left:
        rank = st.number_input(
            "Feature #", min_value=1, max_value=len(order), value=1, step=1, key="_w_steer_rank"
        )
        amount = st.slider(
            "Move it by (train standard deviations)",
            -LIMIT_SD,
            LIMIT_SD,
            0.0,
            STEP_SD,
            key="_w_steer_amount",
        )
    feature = int(order[int(rank) - 1])
    probs = models.steer(analysis, z, feature, (0.0, float(amount)))  # (2, C)
    classes = [str(c) for c in analysis.classes]
    frame = pd.DataFrame(
        {"class": classes * 2, "probability": np.r_[probs[0], probs[1]]}
        | {"image": ["as it is"] * len(classes) + [f"{amount:+g} sd"] * len(classes)}
    )
    with right:
        st.bar_chart(frame, x="class", y="probability", color="image", stack=False, height=240)
    before, after = int(probs[0].argmax()), int(probs[1].argmax())
    name = draw.feature_name(analysis, int(rank), order_name)
    st.caption(
        f"The run's linear probe reads **{classes[before]}** ({probs[0, before]:.0%}); with"
        f" {name} moved by {amount:+g} sd it reads **{classes[after]}** ({probs[1, after]:.0%})."
    )
