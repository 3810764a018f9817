"""Feature detail's "Feature visualisation" section: an image optimised to drive the feature.

The image is made on request by a background job (``tricl visualize RUN --feature N``, a
:mod:`tricl.jobs` job like an analysis: a few seconds of CPU for a 28-px run, plus loading the
dataset), stored in ``RUN/analysis/featvis/`` and read here (no torch in the server). Beside it:
the feature's top images at the same scale, and how the feature's activation on it compares to
the evaluation split's.
"""

from __future__ import annotations

from pathlib import Path

import draw
import jobs_ui
import numpy as np
import readers
import streamlit as st

from tricl.analysis.featvis import FOLDER, FeatureVis, load_visualization
from tricl.bases import get_basis
from tricl.jobs import visualize_command

TOP_SHOWN = 4
LOW_FIDELITY = (
    "Feature visualisation by optimisation (a 1/f Fourier-parameterised image, colours "
    "decorrelated for RGB, jittered, scaled and rotated at random at each of 256 Adam steps; "
    "seed 0, so it is the same image every time). At 28-32 px it is low-fidelity: a hint of the "
    "strokes or blobs that drive the feature, to be read beside its top images, not a picture "
    "of a class."
)
WHAT = (
    "an image optimised to drive this feature (256 steps: a few seconds on a CPU for a 28-px run, "
    "plus loading the dataset; in the spectral basis it drives the feature's direction)"
)


def _stamp(run_path: str) -> tuple[int, ...]:
    """File times of the run's visualisations and spectral basis: a new file gets a new read."""
    analysis = Path(run_path) / "analysis"
    return (*readers.artifact_stamp(analysis / FOLDER), -1, *readers.artifact_stamp(analysis))


@st.cache_resource(show_spinner=False, max_entries=256)
def _stored(
    path: str, weights_hash: str, basis: str, feature: int, stamp: tuple[int, ...]
) -> FeatureVis | None:
    del weights_hash, stamp  # cache keys: new weights or a new file read again
    return load_visualization(path, feature, basis)


def image_caption(vis: FeatureVis) -> str:
    """What the optimised image's caption says."""
    return f"optimised (seed {vis.settings['seed']}): activation {vis.activation:.2f}"


def _drawn(vis: FeatureVis, analysis, feature: int, images: np.ndarray) -> None:
    z = analysis.features.z[:, feature].astype(np.float64)  # (N,)
    top = analysis.top_images.top_indices[feature, :TOP_SHOWN]
    best = float(analysis.top_images.top_values[feature, 0])
    left, right = st.columns([1, 3])
    with left:
        st.image(
            draw.grid(draw.to_rgb(vis.image[None]), cols=1),
            caption=image_caption(vis),
            width="content",
        )
    with right:
        st.image(
            draw.grid(draw.to_rgb(images[top]), cols=TOP_SHOWN),
            caption=f"its top {len(top)} {analysis.split} images, for comparison",
            width="content",
        )
    st.caption(
        f"On this image the feature reaches {vis.activation:.2f}; over the {len(z)} "
        f"{analysis.split} images its mean is {z.mean():.2f}, its 99th percentile "
        f"{np.percentile(z, 99):.2f} and its top image {best:.2f}"
        f" (the objective rose from {vis.trace[0]:.2f} to {vis.trace[-1]:.2f} on jittered copies)."
    )


def feature_visualisation(run, analysis, feature: int, rank: int, images: np.ndarray) -> None:
    """The section, for feature ``feature`` (index in the basis's outputs) shown as ``#rank``."""
    st.subheader("Feature visualisation")
    st.caption(LOW_FIDELITY)
    basis = get_basis(analysis.basis)
    try:
        vis = _stored(str(run.path), run.weights_hash, basis.name, feature, _stamp(str(run.path)))
    except Exception as exc:  # an unreadable basis file: say so, keep the page working
        st.error(f"cannot read the visualisation of #{rank}: {exc}", icon=":material/error:")
        return
    if vis is not None:
        _drawn(vis, analysis, feature, images)
        return
    jobs_ui.offer_job(
        [run],
        visualize_command(run.path, feature, basis),
        f"Feature #{rank}{basis.where()} has no visualisation yet.",
        WHAT,
        "Visualise",
        f"featvis_{basis.name}_{feature}",
    )
