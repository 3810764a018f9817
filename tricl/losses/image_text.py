"""Image-text losses: CLIP (Radford et al., "Learning Transferable Visual Models From Natural
Language Supervision", ICML 2021) and its tri-factor form, the losses of the caption methods
``clip`` and ``triclip`` of :mod:`tricl.methods`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tricl.losses.common import (
    DECORRELATION_FNS,
    S_PLACEMENT_FNS,
    LossError,
    LossTerms,
    check_importance,
    check_s_options,
)

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
CLIP_MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps exp(logit_scale) at 100


@dataclass(frozen=True)
class ImageTextLossSpec:
    """One image-text loss.

    Attributes:
        name: the key of :data:`IMAGE_TEXT_LOSSES`.
        has_s: whether every image-text similarity goes through S (plus the decorrelation term).
        description: one line for help texts.
    """

    name: str
    has_s: bool
    description: str


IMAGE_TEXT_LOSSES: dict[str, ImageTextLossSpec] = {
    spec.name: spec
    for spec in (
        ImageTextLossSpec("clip", False, "CLIP symmetric InfoNCE, learnable temperature"),
        ImageTextLossSpec("triclip", True, "tri-CLIP: CLIP through S + decorrelation"),
    )
}


def _check_pairs(img_z: Tensor, txt_z: Tensor) -> None:
    """Raises LossError unless img_z and txt_z are (N, k) with N >= 2 and k >= 1."""
    if img_z.ndim != 2 or img_z.shape != txt_z.shape:
        raise LossError(
            f"img_z and txt_z must both be (N, k), got {tuple(img_z.shape)} and "
            f"{tuple(txt_z.shape)}; project images and captions to the same proj_dim"
        )
    n, k = img_z.shape
    if n < 2:
        raise LossError(f"need at least 2 image-text pairs to have negatives, got N={n}")
    if k < 1:
        raise LossError("img_z and txt_z have 0 features; the projectors must output proj_dim >= 1")


def _check_logit_scale(logit_scale: Tensor) -> None:
    """Raises LossError unless logit_scale is a finite scalar tensor."""
    if not isinstance(logit_scale, Tensor) or logit_scale.numel() != 1:
        raise LossError(
            f"logit_scale must be a one-element tensor, got {type(logit_scale).__name__}"
            f" {tuple(getattr(logit_scale, 'shape', ()))}; pass the nn.Parameter log(1/T)"
        )
    if not bool(torch.isfinite(logit_scale).all()):
        raise LossError("logit_scale is not finite; re-initialise it to log(1/0.07)")


def _clip_contrastive(rows: Tensor, img_n: Tensor, txt_n: Tensor, scale: Tensor) -> Tensor:
    """Symmetric InfoNCE: each image against the N captions, each caption against the N images.

    Args:
        rows: the anchors, images first then captions, S applied where its placement puts it:
            ``"both"`` weights every anchor, so the caption->image matrix is the transpose of the
            image->caption one; ``"first_view"`` weights only the image anchors. Shape: (2N, k).
        img_n: normalised image features. Shape: (N, k).
        txt_n: normalised caption features, row i the caption of image i. Shape: (N, k).
        scale: ``exp(logit_scale)``, i.e. 1/T. Shape: ().

    Returns:
        ``(CE(image->text logits, arange) + CE(text->image logits, arange)) / 2``. Shape: ().
    """
    n = img_n.shape[0]
    target = torch.arange(n, device=img_n.device)  # (N,)
    # cross_entropy uses logsumexp, so a large scale (up to 100) cannot overflow
    logits_img = scale * rows[:n] @ txt_n.T  # (N, k) @ (k, N) -> (N, N)
    logits_txt = scale * rows[n:] @ img_n.T  # (N, k) @ (k, N) -> (N, N)
    return (F.cross_entropy(logits_img, target) + F.cross_entropy(logits_txt, target)) / 2


@dataclass(frozen=True)
class ImageTextLossFn:
    """An image-text loss with its hyperparameters, checked once when built; call it on tensors.

    ``clip``: ``logits_ij = exp(logit_scale) * f_i^T g_j`` with f, g the L2-normalised image and
    caption features, loss ``(CE(logits, arange) + CE(logits^T, arange)) / 2``. ``triclip``: the
    same with every similarity through S, ``f_i^T S g_j / T`` (``s_placement`` as in
    :class:`LossFn`, images playing view 1 and captions view 2), plus ``tau`` times the mean of
    the decorrelation terms of the two modalities' normalised features.

    Attributes:
        method: a key of :data:`IMAGE_TEXT_LOSSES`.
        tau: weight of the decorrelation term, >= 0 (triclip only).
        s_placement: ``"both"`` or ``"first_view"`` (triclip only; see :func:`_clip_contrastive`).
        decorrelation: ``"mean"`` or ``"whiten"`` (triclip only; see :class:`LossFn`).
        max_logit_scale: ``logit_scale`` is clamped to at most this (CLIP: log 100), so 1/T <= 100;
            the clamp also stops its gradient there, as CLIP's in-place clamp does.

    Raises:
        LossError: on construction, for an unknown method or an invalid hyperparameter.
    """

    method: str
    tau: float = 1.0
    s_placement: str = "both"
    decorrelation: str = "mean"
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE
    spec: ImageTextLossSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = IMAGE_TEXT_LOSSES.get(self.method)
        if spec is None:
            raise LossError(
                f"unknown image-text loss {self.method!r};"
                f" choose one of {sorted(IMAGE_TEXT_LOSSES)}"
            )
        check_s_options(self.tau, self.s_placement, self.decorrelation)
        bound = self.max_logit_scale
        if not (isinstance(bound, numbers.Real) and math.isfinite(bound)):
            raise LossError(f"max_logit_scale must be a finite number, got {bound!r}; try log(100)")
        object.__setattr__(self, "spec", spec)

    def __call__(
        self,
        img_z: Tensor,
        txt_z: Tensor,
        importance: Tensor | None = None,
        logit_scale: Tensor | None = None,
    ) -> LossTerms:
        """The loss of one batch of image-caption pairs, in float32 (autocast off).

        Args:
            img_z: raw image projector outputs. Shape: (N, k).
            txt_z: raw text projector outputs, row i the caption of image i. Shape: (N, k).
            importance: for triclip the positive diagonal of S, else None. Shape: (k,).
            logit_scale: the learnable ``log(1/T)``, e.g. initialised to
                :data:`CLIP_INIT_LOGIT_SCALE`. Shape: () or (1,).

        Returns:
            LossTerms in float32, each Shape: (); ``decorrelation`` is zeros for clip.

        Raises:
            LossError: on invalid shapes, a missing or non-finite logit_scale, or an importance
                that is missing, given to clip, or not > 0.
        """
        _check_pairs(img_z, txt_z)
        check_importance(self.method, self.spec.has_s, importance, img_z.shape[1])
        if logit_scale is None:
            raise LossError(f"{self.method} needs logit_scale (log(1/T)); pass the nn.Parameter")
        _check_logit_scale(logit_scale)
        with torch.autocast(device_type=img_z.device.type, enabled=False):
            img_n = F.normalize(img_z.float(), dim=1)  # (N, k)
            txt_n = F.normalize(txt_z.float(), dim=1)  # (N, k)
            zn = torch.cat([img_n, txt_n])  # (2N, k)
            rows = zn
            if importance is not None:
                rows = S_PLACEMENT_FNS[self.s_placement](zn, importance.float())  # (2N, k)
            scale = logit_scale.float().reshape(()).clamp(max=self.max_logit_scale).exp()
            contrastive = _clip_contrastive(rows, img_n, txt_n, scale)
            if not self.spec.has_s:
                zero = torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)
                return LossTerms(total=contrastive, contrastive=contrastive, decorrelation=zero)
            term = DECORRELATION_FNS[self.decorrelation]
            penalty = (term(img_n) + term(txt_n)) / 2
            return LossTerms(contrastive + self.tau * penalty, contrastive, penalty)


_IMAGE_TEXT_HYPERPARAMETERS = ("tau", "s_placement", "decorrelation", "max_logit_scale")


def build_image_text_loss(cfg: Any, **hyperparameters: Any) -> ImageTextLossFn:
    """Builds (and validates, once) an image-text loss.

    Args:
        cfg: a loss name (``"clip"``, ``"triclip"``), or a config with ``method`` and any of
            ``tau``, ``s_placement``, ``decorrelation``, ``max_logit_scale``.
        **hyperparameters: values for those four that replace the config's (or the defaults).

    Returns:
        The frozen, callable :class:`ImageTextLossFn`:
        ``loss_fn(img_z, txt_z, importance, logit_scale) -> LossTerms``.

    Raises:
        LossError: for an unknown loss or hyperparameter, or an invalid value.
    """
    unknown = sorted(set(hyperparameters) - set(_IMAGE_TEXT_HYPERPARAMETERS))
    if unknown:
        raise LossError(
            f"unknown image-text loss hyperparameters {unknown};"
            f" choose from {_IMAGE_TEXT_HYPERPARAMETERS}"
        )
    if isinstance(cfg, str):
        return ImageTextLossFn(cfg, **hyperparameters)
    if not hasattr(cfg, "method"):
        raise LossError(f"{type(cfg).__name__} has no 'method'; pass a config or a loss name")
    values = {a: getattr(cfg, a) for a in _IMAGE_TEXT_HYPERPARAMETERS if hasattr(cfg, a)}
    return ImageTextLossFn(cfg.method, **(values | hyperparameters))
