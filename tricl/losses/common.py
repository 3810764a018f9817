"""What every loss shares: the named terms, where S enters a similarity, the decorrelation terms
and the input checks.

The tri-factor form of a kernel (Zhang, Wang & Wang, "Identifiable Contrastive Learning with
Automatic Feature Importance Discovery", NeurIPS 2023) sends every similarity through a positive
diagonal importance matrix S, ``sim_ij = z_i^T diag(importance) z_j / T``, and adds a decorrelation
penalty on the normalised features with weight ``tau``; the placements and penalties are here so
the two-view and the image-text losses read them from one place.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


class LossError(ValueError):
    """A loss input or hyperparameter is invalid; the one-line message names it and the fix."""


@dataclass(frozen=True)
class LossTerms:
    """The named terms of a loss (never a bare tuple).

    Attributes:
        total: ``contrastive + weight * decorrelation``, the value to minimise (weight: ``tau``
            for methods with S, ``nef_alpha`` for neuralef). Shape: ().
        contrastive: the contrastive term (neuralef: its eigenvalue reward). Shape: ().
        decorrelation: the feature decorrelation term (neuralef: its ordering penalty; zeros for
            methods without one). Shape: ().
    """

    total: Tensor
    contrastive: Tensor
    decorrelation: Tensor


# ------------------------------------------------------------------ where S enters the similarity


def _scale_both(zn: Tensor, importance: Tensor) -> Tensor:
    """Weights every anchor row by S, so ``sim_ij = z_i^T S z_j`` for all pairs (paper, Eq. 4).

    Args:
        zn: normalised features of both views, view 1 first. Shape: (2N, k).
        importance: the diagonal of S. Shape: (k,).

    Returns:
        The anchor rows. Shape: (2N, k).
    """
    return zn * importance


def _scale_first_view(zn: Tensor, importance: Tensor) -> Tensor:
    """Weights only view 1's anchor rows by S, as the official PKU-ML code does.

    Anchors of view 2 are then compared without S; the matrix of similarities is not symmetric.

    Args:
        zn: normalised features of both views, view 1 first. Shape: (2N, k).
        importance: the diagonal of S. Shape: (k,).

    Returns:
        The anchor rows. Shape: (2N, k).
    """
    n = zn.shape[0] // 2
    return torch.cat([zn[:n] * importance, zn[n:]])  # (2N, k)


# The keys are the valid values of ``s_placement``.
S_PLACEMENT_FNS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "both": _scale_both,
    "first_view": _scale_first_view,
}
S_PLACEMENTS: tuple[str, ...] = tuple(S_PLACEMENT_FNS)


# ------------------------------------------------------------------------ decorrelation terms


def _decorrelation_mean(zn: Tensor) -> Tensor:
    """Feature decorrelation penalty of triCL: ``mean((Zn^T Zn / 2N - I_k)^2)``.

    Computed on the L2-normalised features before S is applied, as in the official code
    (Zhang, Wang & Wang, NeurIPS 2023). Every row of Zn has unit norm, so the trace of
    ``Zn^T Zn / 2N`` is 1: for k > 1 the penalty is smallest (not zero) when the features are
    uncorrelated with equal energy 1/k each.

    Args:
        zn: normalised features of both views, view 1 first. Shape: (2N, k).

    Returns:
        The mean squared entry of ``Zn^T Zn / 2N - I_k``. Shape: ().
    """
    corr = zn.T @ zn / zn.shape[0]  # (k, 2N) @ (2N, k) -> (k, k)
    eye = torch.eye(zn.shape[1], device=zn.device, dtype=zn.dtype)
    return (corr - eye).pow(2).mean()


def _decorrelation_whiten(zn: Tensor) -> Tensor:
    """A whitening penalty that can reach zero: ``||k Zn^T Zn / 2N - I_k||_F^2 / k``.

    The official term compares a matrix of trace 1 with I_k, so it sits at its floor
    ``(1 - 1/k)^2 / k`` from the first steps and its gradient is about ``1/k^2`` of the
    contrastive one: the constraint ``F^T F = I`` that pins S's axes in the paper's
    identifiability argument is practically absent. Rescaling the unit-norm rows by sqrt(k)
    gives a target the features can meet (isotropic, uncorrelated features), and summing over
    entries instead of averaging gives it a weight comparable to the contrastive term. Measured
    in ``docs/INVESTIGATION.md``: on the synthetic factor check it is what lets a learned S order
    the factors.

    Args:
        zn: normalised features of both views, view 1 first. Shape: (2N, k).

    Returns:
        The penalty, 0 exactly when the sqrt(k)-scaled features are white. Shape: ().
    """
    k = zn.shape[1]
    second = zn.T @ zn * (k / zn.shape[0])  # (k, 2N) @ (2N, k) -> (k, k)
    eye = torch.eye(k, device=zn.device, dtype=zn.dtype)
    return (second - eye).pow(2).sum() / k


# The keys are the valid values of ``decorrelation``.
DECORRELATION_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": _decorrelation_mean,
    "whiten": _decorrelation_whiten,
}
DECORRELATIONS: tuple[str, ...] = tuple(DECORRELATION_FNS)


def check_number(name: str, value: float, *, low: float, strict: bool, hint: str) -> None:
    """Raises LossError unless ``value`` is a finite real number above ``low`` (``strict``: >).

    Args:
        name: the hyperparameter, as the message names it.
        value: its value.
        low: the bound.
        strict: whether ``value`` must exceed ``low`` (else it may equal it).
        hint: the value to suggest, e.g. ``"0.2"``.
    """
    ok = isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or not (value > low if strict else value >= low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise LossError(f"{name} must be a finite number {bound}, got {value!r}; try {hint}")


def check_s_options(tau: float, s_placement: str, decorrelation: str) -> None:
    """Raises LossError with a one-line message if an option of the tri-factor form is invalid."""
    check_number("tau", tau, low=0.0, strict=False, hint="1.0 (0 disables it)")
    if s_placement not in S_PLACEMENT_FNS:
        raise LossError(f"unknown s_placement {s_placement!r}; choose one of {S_PLACEMENTS}")
    if decorrelation not in DECORRELATION_FNS:
        raise LossError(f"unknown decorrelation {decorrelation!r}; choose one of {DECORRELATIONS}")


def check_views(z1: Tensor, z2: Tensor) -> None:
    """Raises LossError unless z1 and z2 are two (N, k) views with N >= 2 and k >= 1."""
    if z1.ndim != 2 or z2.ndim != 2:
        raise LossError(
            f"z1 and z2 must be 2-D (N, k), got shapes {tuple(z1.shape)} and {tuple(z2.shape)}; "
            "flatten the projector output to (batch, proj_dim)"
        )
    if z1.shape != z2.shape:
        raise LossError(
            f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}; "
            "pass the two views of the same batch"
        )
    n, k = z1.shape
    if n < 2:
        raise LossError(f"need at least 2 samples per view to have negatives, got N={n}")
    if k < 1:
        raise LossError("z1 and z2 have 0 features; the projector must output proj_dim >= 1")


def check_importance(method: str, has_s: bool, importance: Tensor | None, k: int) -> None:
    """Raises LossError unless ``importance`` is what the loss needs: None, or S's diagonal.

    Args:
        method: the name the message gives the loss (the method that built it).
        has_s: whether the loss is a tri-factor form (it needs S).
        importance: what the caller passed. Shape: (k,) or None.
        k: the number of features.
    """
    if not has_s:
        if importance is not None:
            raise LossError(
                f"method {method!r} has no importance matrix S; pass importance=None "
                "or use a triCL method such as 'tricl'"
            )
        return
    if importance is None:
        raise LossError(
            f"method {method!r} needs importance (the diagonal of S, shape ({k},)); "
            "pass encoder.importance()"
        )
    if importance.shape != (k,):
        raise LossError(
            f"importance must have shape ({k},) to match z's k={k} features, "
            f"got {tuple(importance.shape)}; pass the diagonal of S"
        )
    # One host sync per call; cheap next to the forward pass, and a zero or NaN weight would
    # otherwise silently remove a feature from the loss.
    if not bool(((importance > 0) & torch.isfinite(importance)).all()):
        raise LossError(
            "importance must be finite and > 0 everywhere; pass softplus(logits), not raw logits"
        )


def normalized_views(z1: Tensor, z2: Tensor) -> Tensor:
    """L2-normalises both views in float32 and stacks them, view 1 first.

    Args:
        z1: features of view 1. Shape: (N, k).
        z2: features of view 2. Shape: (N, k).

    Returns:
        Unit-norm rows. Shape: (2N, k).
    """
    return torch.cat([F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)])
