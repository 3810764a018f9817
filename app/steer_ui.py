"""The Probe page's "Steer a feature" section: move one feature of the probed image and watch the
run's linear probe change its mind.

The probe is the one the ``interventions`` stage stored (the run's full linear probe); the image's
features are moved and read by it in the model worker (:func:`tricl.serve.steer`), never here. For
an image-text run the worker also ranks the evaluation captions for the moved image (the text
``interventions`` stage's move of its trained-axes embedding), so the retrieved captions move too.
"""

from __future__ import annotations

import draw
import models
import numpy as np
import pandas as pd
import streamlit as st
import text_ui_sections

from tricl.analysis.text_measures import anchor_weights
from tricl.bases import get_basis
from tricl.report import interventions as report

LIMIT_SD = 4.0  # the slider's range, in train standard deviations
STEP_SD = 0.5
TOP_CAPTIONS = 5  # captions listed before and after the move


@st.fragment
def steer_section(run, analysis, order_name: str, z: np.ndarray, image: np.ndarray) -> None:
    """The section for the probed image (C, H, W) and its features ``z`` (k,); a fragment, so a
    slider step reruns only this section (the saliency maps above are not redrawn)."""
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
    captions, texts = _captions(run, analysis, feature, z, image)
    steered = models.steer(analysis, z, feature, (0.0, float(amount)), captions)
    probs = steered["probabilities"]  # (2, C)
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
    if steered["captions"] is not None:
        _retrieved(steered["captions"], texts, f"{amount:+g} sd")


def _captions(run, analysis, feature: int, z: np.ndarray, image: np.ndarray):
    """What the worker needs to rank the captions for the moved image (image-text runs whose
    text interventions are stored in this basis), and the captions' texts; else (None, ())."""
    text, eff = text_ui_sections.text_effects(run, analysis.basis)
    if eff is None:
        return None, ()
    f = text.features
    texts, first = np.unique(np.array(f.captions, dtype=str), return_index=True)
    rotated = get_basis(analysis.basis).rotated  # its z is not the trained axes' z
    axes = models.embed_image(run, analysis, image, basis="trained") if rotated else z
    args = {
        "z": np.asarray(axes),
        "direction": eff.direction[feature],
        "std": float(eff.std[feature]),
        "keys": f.text_z[first],
        "weights": anchor_weights(f.importance, run.config.s_placement, "image"),
        "top": TOP_CAPTIONS,
    }
    return args, tuple(texts)


def _retrieved(top: np.ndarray, texts: tuple[str, ...], moved: str) -> None:
    """The captions the image retrieves as it is and moved, best first. top: (2, n)."""
    st.markdown("**The captions it retrieves** (distinct evaluation captions, best first)")
    frame = pd.DataFrame(
        {"as it is": [texts[i] for i in top[0]], f"moved by {moved}": [texts[i] for i in top[1]]},
        index=pd.RangeIndex(1, top.shape[1] + 1, name="rank"),
    )
    st.table(frame)
