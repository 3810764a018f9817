"""Contrastive losses as pure functions of tensors, looked up by name in ``LOSSES``.

Four methods, each taking the two views' raw projector outputs ``z1``, ``z2`` of shape (N, k):

- ``simclr``: NT-Xent (Chen et al., "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020).
- ``spectral``: spectral contrastive loss (HaoChen et al., "Provable Guarantees for Self-Supervised
  Deep Learning with Spectral Contrastive Loss", NeurIPS 2021).
- ``tricl`` and ``tri-spectral``: the tri-factor versions of the two (Zhang, Wang & Wang,
  "Identifiable Contrastive Learning with Automatic Feature Importance Discovery", NeurIPS 2023).
  Every similarity goes through a positive diagonal importance matrix S,
  ``sim_ij = z_i^T diag(importance) z_j / T``, and a decorrelation penalty on the normalised
  features is added with weight ``tau``.

All methods use 2N anchors (every sample of both views), the other view of the same image as the
positive, and the remaining 2N - 2 samples as negatives. The losses are always computed in float32,
also inside ``torch.autocast``.
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
        total: ``contrastive + tau * decorrelation``, the value to minimise. Shape: ().
        contrastive: the contrastive term. Shape: ().
        decorrelation: the feature decorrelation term (zeros for methods without one). Shape: ().
    """

    total: Tensor
    contrastive: Tensor
    decorrelation: Tensor


@dataclass(frozen=True)
class LossSpec:
    """One registered loss.

    Attributes:
        fn: ``fn(z1, z2, importance, *, temperature, tau, s_placement) -> LossTerms``.
        uses_importance: whether the method needs the importance diagonal S (triCL methods).
        description: one line for help texts and the dashboard.
    """

    fn: Callable[..., LossTerms]
    uses_importance: bool
    description: str


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


# Where S enters the similarity; the keys are the valid values of ``s_placement``.
_S_PLACEMENTS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "both": _scale_both,
    "first_view": _scale_first_view,
}
S_PLACEMENTS: tuple[str, ...] = tuple(_S_PLACEMENTS)


def _check_inputs(
    method: str,
    z1: Tensor,
    z2: Tensor,
    importance: Tensor | None,
    temperature: float,
    tau: float,
    s_placement: str,
    uses_importance: bool,
    decorrelation: str = "mean",
) -> None:
    """Raises LossError with a one-line message if any input or hyperparameter is invalid."""
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)) or not (
        temperature > 0
    ):
        raise LossError(f"temperature must be a finite number > 0, got {temperature!r}; try 0.2")
    if not (isinstance(tau, numbers.Real) and math.isfinite(tau)) or not (tau >= 0):
        raise LossError(f"tau must be a finite number >= 0, got {tau!r}; try 1.0 (0 disables it)")
    if s_placement not in _S_PLACEMENTS:
        raise LossError(f"unknown s_placement {s_placement!r}; choose one of {S_PLACEMENTS}")
    if decorrelation not in _DECORRELATIONS:
        raise LossError(f"unknown decorrelation {decorrelation!r}; choose one of {DECORRELATIONS}")
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
    if not uses_importance:
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


def _normalized_views(z1: Tensor, z2: Tensor) -> Tensor:
    """L2-normalises both views in float32 and stacks them, view 1 first.

    Args:
        z1: features of view 1. Shape: (N, k).
        z2: features of view 2. Shape: (N, k).

    Returns:
        Unit-norm rows. Shape: (2N, k).
    """
    return torch.cat([F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)])


def _similarities(
    zn: Tensor, importance: Tensor | None, temperature: float, s_placement: str
) -> Tensor:
    """All pairwise similarities ``rows_i^T zn_j / T``, rows weighted by S where it applies.

    Args:
        zn: normalised features of both views, view 1 first. Shape: (2N, k).
        importance: the diagonal of S, or None for no S. Shape: (k,).
        temperature: the temperature T > 0.
        s_placement: which anchor rows S multiplies, a key of ``_S_PLACEMENTS``.

    Returns:
        Row i holds anchor i's similarity to every sample, self included. Shape: (2N, 2N).
    """
    rows = zn if importance is None else _S_PLACEMENTS[s_placement](zn, importance.float())
    return rows @ zn.T / temperature  # (2N, k) @ (k, 2N) -> (2N, 2N)


def _positive_index(n: int, device: torch.device) -> Tensor:
    """Index of each anchor's positive: sample i of one view pairs with sample i of the other.

    Args:
        n: samples per view, N.
        device: where to put the index.

    Returns:
        ``(i + N) mod 2N`` for i in 0..2N-1. Shape: (2N,).
    """
    return (torch.arange(2 * n, device=device) + n) % (2 * n)


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


# How the decorrelation term is computed; the keys are the valid values of ``decorrelation``.
_DECORRELATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": _decorrelation_mean,
    "whiten": _decorrelation_whiten,
}
DECORRELATIONS: tuple[str, ...] = tuple(_DECORRELATIONS)


def _nt_xent(sim: Tensor) -> Tensor:
    """NT-Xent over 2N anchors given their similarities (already divided by T).

    Args:
        sim: similarities, anchor i in row i, self included. Shape: (2N, 2N).

    Returns:
        Mean over anchors of ``-log softmax`` of the positive among the 2N - 1 others. Shape: ().
    """
    two_n = sim.shape[0]
    self_mask = torch.eye(two_n, dtype=torch.bool, device=sim.device)
    # -inf drops the self-pair from the softmax exactly; cross_entropy uses logsumexp, so large
    # similarities (small T, large S) cannot overflow.
    logits = sim.masked_fill(self_mask, float("-inf"))  # (2N, 2N)
    return F.cross_entropy(logits, _positive_index(two_n // 2, sim.device))


def _spectral(sim: Tensor) -> Tensor:
    """Spectral contrastive loss over 2N anchors given their similarities (already divided by T).

    ``-mean_i sim(i, pos(i)) + mean_i mean_{j negative of i} sim_ij^2``, negatives being the
    2N - 2 samples other than i and its positive (HaoChen et al., NeurIPS 2021, Eq. 5).

    Args:
        sim: similarities, anchor i in row i, self included. Shape: (2N, 2N).

    Returns:
        The loss. Shape: ().
    """
    two_n = sim.shape[0]
    pos_index = _positive_index(two_n // 2, sim.device)  # (2N,)
    anchors = torch.arange(two_n, device=sim.device)  # (2N,)
    positive = sim[anchors, pos_index]  # (2N,)
    neg_mask = ~torch.eye(two_n, dtype=torch.bool, device=sim.device)  # (2N, 2N)
    neg_mask[anchors, pos_index] = False
    negative = sim.pow(2).masked_fill(~neg_mask, 0.0).sum(dim=1) / (two_n - 2)  # (2N,)
    return -positive.mean() + negative.mean()


def _terms(
    contrastive: Tensor, zn: Tensor, tau: float, with_decorrelation: bool, decorrelation: str
) -> LossTerms:
    """Bundles the contrastive term with the decorrelation term (or zeros) into LossTerms.

    Args:
        contrastive: the contrastive term. Shape: ().
        zn: normalised features of both views, view 1 first. Shape: (2N, k).
        tau: weight of the decorrelation term.
        with_decorrelation: False for methods without the term (it is then zeros).
        decorrelation: a key of ``_DECORRELATIONS``.
    """
    if not with_decorrelation:
        zero = torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)
        return LossTerms(total=contrastive, contrastive=contrastive, decorrelation=zero)
    penalty = _DECORRELATIONS[decorrelation](zn)
    return LossTerms(
        total=contrastive + tau * penalty, contrastive=contrastive, decorrelation=penalty
    )


def _float32_loss(
    method: str,
    contrastive_fn: Callable[[Tensor], Tensor],
    with_s: bool,
    z1: Tensor,
    z2: Tensor,
    importance: Tensor | None,
    temperature: float,
    tau: float,
    s_placement: str,
    decorrelation: str,
) -> LossTerms:
    """Validates the inputs and computes one method's terms in float32, autocast off."""
    _check_inputs(method, z1, z2, importance, temperature, tau, s_placement, with_s, decorrelation)
    # Autocast would run the matmuls in bf16/fp16 even on float32 inputs; exp/log of similarities
    # divided by a small T need float32.
    with torch.autocast(device_type=z1.device.type, enabled=False):
        zn = _normalized_views(z1, z2)  # (2N, k)
        sim = _similarities(zn, importance, temperature, s_placement)  # (2N, 2N)
        return _terms(contrastive_fn(sim), zn, tau, with_s, decorrelation)


def simclr_loss(
    z1: Tensor,
    z2: Tensor,
    importance: Tensor | None = None,
    *,
    temperature: float = 0.2,
    tau: float = 1.0,
    s_placement: str = "both",
    decorrelation: str = "mean",
) -> LossTerms:
    """SimCLR's NT-Xent loss (Chen et al., ICML 2020) on L2-normalised features.

    Each of the 2N samples is an anchor; its positive is the other view of the same image and
    its negatives are the other 2N - 2 samples; ``sim_ij = z_i^T z_j / T``.

    Args:
        z1: raw projector outputs of view 1. Shape: (N, k).
        z2: raw projector outputs of view 2, row i the same image as z1's row i. Shape: (N, k).
        importance: must be None (SimCLR has no S).
        temperature: T > 0.
        tau: checked (>= 0) but unused: there is no decorrelation term.
        s_placement: checked but unused.
        decorrelation: checked but unused.

    Returns:
        LossTerms with ``total == contrastive`` and ``decorrelation == 0``, float32, Shape: ().

    Raises:
        LossError: on invalid shapes or hyperparameters, or if importance is given.
    """
    return _float32_loss(
        "simclr", _nt_xent, False, z1, z2, importance, temperature, tau, s_placement, decorrelation
    )


def tricl_loss(
    z1: Tensor,
    z2: Tensor,
    importance: Tensor | None = None,
    *,
    temperature: float = 0.2,
    tau: float = 1.0,
    s_placement: str = "both",
    decorrelation: str = "mean",
) -> LossTerms:
    """Tri-factor NT-Xent, triCL (Zhang, Wang & Wang, NeurIPS 2023).

    NT-Xent as ``simclr_loss`` with ``sim_ij = z_i^T diag(importance) z_j / T`` on L2-normalised
    features, plus ``tau * mean((Zn^T Zn / 2N - I_k)^2)``, Zn the (2N, k) stacked normalised views.

    Args:
        z1: raw projector outputs of view 1. Shape: (N, k).
        z2: raw projector outputs of view 2, row i the same image as z1's row i. Shape: (N, k).
        importance: positive diagonal of S, e.g. ``softplus(logits)``. Shape: (k,).
        temperature: T > 0.
        tau: weight of the decorrelation term, >= 0.
        s_placement: ``"both"`` (the paper: S in every similarity) or ``"first_view"`` (the
            official code: only view 1's anchors are weighted by S, view 2's anchors are not;
            all anchors are compared with the unweighted normalised samples).
        decorrelation: ``"mean"`` (the paper's and official code's term, above) or
            ``"whiten"`` (``||k Zn^T Zn / 2N - I_k||_F^2 / k``, see ``_decorrelation_whiten``).

    Returns:
        LossTerms ``total = contrastive + tau * decorrelation``, float32, each Shape: ().

    Raises:
        LossError: on invalid shapes or hyperparameters, or if importance is None or not > 0.
    """
    return _float32_loss(
        "tricl", _nt_xent, True, z1, z2, importance, temperature, tau, s_placement, decorrelation
    )


def spectral_loss(
    z1: Tensor,
    z2: Tensor,
    importance: Tensor | None = None,
    *,
    temperature: float = 0.2,
    tau: float = 1.0,
    s_placement: str = "both",
    decorrelation: str = "mean",
) -> LossTerms:
    """Spectral contrastive loss (HaoChen et al., NeurIPS 2021) on L2-normalised features.

    With ``sim_ij = z_i^T z_j / T`` over 2N anchors:
    ``-mean_i sim(i, pos(i)) + mean_i mean_{j negative of i} sim_ij^2``.

    Args:
        z1: raw projector outputs of view 1. Shape: (N, k).
        z2: raw projector outputs of view 2, row i the same image as z1's row i. Shape: (N, k).
        importance: must be None (no S).
        temperature: T > 0.
        tau: checked (>= 0) but unused: there is no decorrelation term.
        s_placement: checked but unused.
        decorrelation: checked but unused.

    Returns:
        LossTerms with ``total == contrastive`` and ``decorrelation == 0``, float32, Shape: ().

    Raises:
        LossError: on invalid shapes or hyperparameters, or if importance is given.
    """
    return _float32_loss(
        "spectral",
        _spectral,
        False,
        z1,
        z2,
        importance,
        temperature,
        tau,
        s_placement,
        decorrelation,
    )


def tri_spectral_loss(
    z1: Tensor,
    z2: Tensor,
    importance: Tensor | None = None,
    *,
    temperature: float = 0.2,
    tau: float = 1.0,
    s_placement: str = "both",
    decorrelation: str = "mean",
) -> LossTerms:
    """Tri-factor spectral contrastive loss, tri-SCL (Zhang, Wang & Wang, NeurIPS 2023).

    ``spectral_loss`` with ``sim_ij = z_i^T diag(importance) z_j / T`` on L2-normalised
    features, plus ``tau * mean((Zn^T Zn / 2N - I_k)^2)``, Zn the (2N, k) stacked normalised views.

    Args:
        z1: raw projector outputs of view 1. Shape: (N, k).
        z2: raw projector outputs of view 2, row i the same image as z1's row i. Shape: (N, k).
        importance: positive diagonal of S, e.g. ``softplus(logits)``. Shape: (k,).
        temperature: T > 0.
        tau: weight of the decorrelation term, >= 0.
        s_placement: ``"both"`` or ``"first_view"``, as in ``tricl_loss``.
        decorrelation: ``"mean"`` or ``"whiten"``, as in ``tricl_loss``.

    Returns:
        LossTerms ``total = contrastive + tau * decorrelation``, float32, each Shape: ().

    Raises:
        LossError: on invalid shapes or hyperparameters, or if importance is None or not > 0.
    """
    return _float32_loss(
        "tri-spectral",
        _spectral,
        True,
        z1,
        z2,
        importance,
        temperature,
        tau,
        s_placement,
        decorrelation,
    )


LOSSES: dict[str, LossSpec] = {
    "simclr": LossSpec(simclr_loss, False, "SimCLR NT-Xent (Chen et al. 2020)"),
    "tricl": LossSpec(tricl_loss, True, "tri-SimCLR: NT-Xent through S + decorrelation"),
    "spectral": LossSpec(spectral_loss, False, "spectral contrastive loss (HaoChen et al. 2021)"),
    "tri-spectral": LossSpec(
        tri_spectral_loss, True, "tri-SCL: spectral loss through S + decorrelation"
    ),
}


def compute_loss(
    method: str,
    z1: Tensor,
    z2: Tensor,
    importance: Tensor | None = None,
    *,
    temperature: float = 0.2,
    tau: float = 1.0,
    s_placement: str = "both",
    decorrelation: str = "mean",
) -> LossTerms:
    """Computes the registered loss ``method`` on two views.

    Args:
        method: a key of ``LOSSES``.
        z1: raw projector outputs of view 1 (gathered across ranks by the caller). Shape: (N, k).
        z2: raw projector outputs of view 2, row i the same image as z1's row i. Shape: (N, k).
        importance: positive diagonal of S for methods with ``uses_importance``, else None.
            Shape: (k,).
        temperature: T > 0.
        tau: weight of the decorrelation term (triCL methods), >= 0.
        s_placement: ``"both"`` or ``"first_view"`` (triCL methods; see ``tricl_loss``).
        decorrelation: ``"mean"`` (the paper's term) or ``"whiten"`` (triCL methods; see
            ``_decorrelation_whiten``).

    Returns:
        LossTerms in float32, each Shape: ().

    Raises:
        LossError: for an unknown method or any invalid input.
    """
    spec = LOSSES.get(method)
    if spec is None:
        raise LossError(f"unknown loss method {method!r}; choose one of {sorted(LOSSES)}")
    return spec.fn(
        z1,
        z2,
        importance,
        temperature=temperature,
        tau=tau,
        s_placement=s_placement,
        decorrelation=decorrelation,
    )
