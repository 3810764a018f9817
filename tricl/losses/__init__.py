"""Losses as pure functions of tensors, each built (and validated) once, then called per batch.

The package tree says what lives where:

- :mod:`tricl.losses.common`: the named terms (:class:`LossTerms`), where S enters a similarity
  (:data:`S_PLACEMENTS`), the decorrelation terms (:data:`DECORRELATIONS`), input checks;
- :mod:`tricl.losses.contrastive`: similarity kernels of two views (:data:`KERNELS`: NT-Xent,
  spectral) and :class:`LossFn`, a kernel in its plain or tri-factor form;
- :mod:`tricl.losses.neuralef`: NeuralEF-CLR (:func:`neuralef_loss`, :class:`NeuralEFLoss`);
- :mod:`tricl.losses.image_text`: CLIP and tri-CLIP (:func:`build_image_text_loss`).

A loss knows no method: a method (:mod:`tricl.methods`) picks its loss and hyperparameters from
a run's config (``tricl.methods.build_loss(cfg)``); methods depend on losses, never the reverse.
"""

from tricl.losses.common import (
    DECORRELATIONS,
    S_PLACEMENTS,
    LossError,
    LossTerms,
    check_importance,
    check_views,
)
from tricl.losses.contrastive import KERNELS, LossFn
from tricl.losses.image_text import (
    CLIP_INIT_LOGIT_SCALE,
    CLIP_MAX_LOGIT_SCALE,
    IMAGE_TEXT_LOSSES,
    ImageTextLossFn,
    ImageTextLossSpec,
    build_image_text_loss,
)
from tricl.losses.neuralef import NEF_EPS, NeuralEFLoss, neuralef_loss

__all__ = [
    "CLIP_INIT_LOGIT_SCALE",
    "CLIP_MAX_LOGIT_SCALE",
    "DECORRELATIONS",
    "IMAGE_TEXT_LOSSES",
    "KERNELS",
    "NEF_EPS",
    "S_PLACEMENTS",
    "ImageTextLossFn",
    "ImageTextLossSpec",
    "LossError",
    "LossFn",
    "LossTerms",
    "NeuralEFLoss",
    "build_image_text_loss",
    "check_importance",
    "check_views",
    "neuralef_loss",
]
