"""Contrastive losses as pure functions of tensors, built once per run by :func:`build_loss`.

A loss is one of the contrastive kernels over the two views' raw projector outputs ``z1``, ``z2``
of shape (N, k), named by the method's entry in :data:`tricl.methods.METHODS`:

- ``nt_xent``: NT-Xent (Chen et al., "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020); method ``simclr``.
- ``spectral``: spectral contrastive loss (HaoChen et al., "Provable Guarantees for Self-Supervised
  Deep Learning with Spectral Contrastive Loss", NeurIPS 2021); method ``spectral``.

Those two are similarity kernels (:data:`KERNELS`: a (2N, 2N) matrix of similarities in, a scalar
out). A feature kernel (:data:`FEATURE_KERNELS`) reads the raw views itself:

- ``neuralef``: NeuralEF-CLR (Deng, Shi, Zhang, Cui, Lu & Zhu, "Neural Eigenfunctions Are
  Structured Representation Learners", ICML 2023; the NeuralEF objective of Deng, Shi & Zhu,
  "NeuralEF: Deconstructing Kernels by Deep Neural Networks", ICML 2022); method ``neuralef``.
  See :func:`neuralef_loss`.

A method with S (``tricl``, ``tri-spectral``) is the same kernel in its tri-factor form (Zhang,
Wang & Wang, "Identifiable Contrastive Learning with Automatic Feature Importance Discovery",
NeurIPS 2023): every similarity goes through a positive diagonal importance matrix S,
``sim_ij = z_i^T diag(importance) z_j / T``, and a decorrelation penalty on the normalised
features is added with weight ``tau``.

The similarity kernels use 2N anchors (every sample of both views), the other view of the same
image as the positive, and the remaining 2N - 2 samples as negatives. The losses are always
computed in float32, also inside ``torch.autocast``.

Hyperparameters are checked once, when the loss is built; a call only checks its tensors::

    loss_fn = build_loss(cfg)  # a RunConfig, or build_loss("tricl", temperature=0.2)
    terms = loss_fn(z1, z2, encoder.importance())
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from tricl.methods import METHODS, MethodSpec, methods_with_pair


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
_S_PLACEMENTS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "both": _scale_both,
    "first_view": _scale_first_view,
}
S_PLACEMENTS: tuple[str, ...] = tuple(_S_PLACEMENTS)


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
_DECORRELATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": _decorrelation_mean,
    "whiten": _decorrelation_whiten,
}
DECORRELATIONS: tuple[str, ...] = tuple(_DECORRELATIONS)


# ------------------------------------------------------------------------ contrastive kernels


def _positive_index(n: int, device: torch.device) -> Tensor:
    """Index of each anchor's positive: sample i of one view pairs with sample i of the other.

    Args:
        n: samples per view, N.
        device: where to put the index.

    Returns:
        ``(i + N) mod 2N`` for i in 0..2N-1. Shape: (2N,).
    """
    return (torch.arange(2 * n, device=device) + n) % (2 * n)


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


# Contrastive kernels by the name a MethodSpec's ``loss`` gives: (2N, 2N) similarities -> ().
KERNELS: dict[str, Callable[[Tensor], Tensor]] = {
    "nt_xent": _nt_xent,
    "spectral": _spectral,
}


# ------------------------------------------------------------------ NeuralEF-CLR (feature kernel)
# Read before writing (not copied): the official NeuralEF-CLR training script, class
# ``NeuralEFCLR.forward`` of main.py in github.com/thudzj/NeuralEFCLR (seen through the code
# index; the repository itself could not be fetched here), and the NeuralEF objective of
# github.com/thudzj/NeuralEigenFunction (neuralef-classic-kernels.py, Eq. 8 of the CLR paper).
# Their default path: gather both views from every process (with gradients), divide every
# feature by its root second moment over both views together (a batch-norm without centring),
# scale by sqrt(t) (--t 10), reward the cross-view diagonal, and penalise the upper triangle of
# the cross-view Gram matrix with the earlier feature of each pair detached, both directions.

NEF_EPS = 1e-6  # the official clamp: a dead feature (all zeros) stays 0 instead of NaN


def _nef_normalise(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Divides every feature by its root mean square over both views (N rows each).

    Args:
        z1: raw features of view 1. Shape: (N, k).
        z2: raw features of view 2. Shape: (N, k).

    Returns:
        ``(psi1, psi2)``, each feature with mean square 1 over the 2N rows. Shapes: (N, k).
    """
    second = (z1.pow(2).sum(0) + z2.pow(2).sum(0)) / (2 * z1.shape[0])  # (k,)
    rms = second.sqrt().clamp(min=NEF_EPS)  # (k,)
    return z1 / rms, z2 / rms


def neuralef_loss(z1: Tensor, z2: Tensor, *, alpha: float = 1.0, scale: float = 10.0) -> LossTerms:
    """NeuralEF-CLR: the k features as the top-k eigenfunctions of the augmentation kernel.

    With psi the features normalised to unit mean square (:func:`_nef_normalise`) and the
    cross-view Gram matrix ``R = psi1^T psi2 / N`` (k, k), the loss is::

        reward  = -2 t sum_j R_jj / k
        penalty = t^2 sum_{i<j} [ (sg(psi2_i) . psi1_j / N)^2 + (sg(psi1_i) . psi2_j / N)^2 ] / k
        total   = reward + alpha * penalty

    where ``sg`` stops the gradient and t is ``scale``. The penalty's pair (i, j), i < j, pushes
    feature j away from the earlier feature i, never i towards j: feature 0 maximises its
    eigenvalue alone, feature 1 under orthogonality to feature 0, and so on, so the features come
    out ordered by eigenvalue (feature 0 first). Both view directions are penalised, which makes
    the loss symmetric in the views. ``t`` is the official ``--t`` (sum of squares of a feature
    over the 2N rows equals 2t there), so values match the official logs: reward ``-2t sum R_jj``
    and penalty ``t^2 sum R^2`` over k.

    Args:
        z1: raw projector outputs of view 1, gathered over every process. Shape: (N, k).
        z2: raw projector outputs of view 2, row i the same image. Shape: (N, k).
        alpha: weight of the penalty (official default 1).
        scale: t, the scale of the normalised features (official default 10).

    Returns:
        LossTerms with ``contrastive`` the reward and ``decorrelation`` the penalty (its value;
        its gradient is the stop-gradient one), each Shape: ().
    """
    n, k = z1.shape
    psi1, psi2 = _nef_normalise(z1, z2)  # (N, k) each
    reward = -2.0 * scale * (psi1 * psi2).sum() / (n * k)  # sum_j R_jj: (N, k) -> ()
    cross_21 = psi2.detach().T @ psi1 / n  # (k, N) @ (N, k) -> (k, k): row i detached
    cross_12 = psi1.detach().T @ psi2 / n  # (k, k)
    upper = torch.ones(k, k, dtype=torch.bool, device=z1.device).triu(1)  # (k, k): i < j
    penalty = scale**2 * (cross_21.pow(2) + cross_12.pow(2))[upper].sum() / k
    return LossTerms(total=reward + alpha * penalty, contrastive=reward, decorrelation=penalty)


def _neuralef_kernel(z1: Tensor, z2: Tensor, loss_fn: LossFn) -> LossTerms:
    """:func:`neuralef_loss` with the run's ``nef_alpha`` and ``nef_scale``."""
    return neuralef_loss(z1, z2, alpha=loss_fn.nef_alpha, scale=loss_fn.nef_scale)


# Feature kernels by the name a MethodSpec's ``loss`` gives: they see the raw views (their own
# normalisation) and return all terms: ``kernel(z1, z2, loss_fn) -> LossTerms`` in float32.
FEATURE_KERNELS: dict[str, Callable[[Tensor, Tensor, LossFn], LossTerms]] = {
    "neuralef": _neuralef_kernel,
}


# ------------------------------------------------------------------------------ validation


def _check_hyperparameters(
    temperature: float,
    tau: float,
    s_placement: str,
    decorrelation: str,
    nef_alpha: float = 1.0,
    nef_scale: float = 10.0,
) -> None:
    """Raises LossError with a one-line message if a hyperparameter is invalid."""
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)) or not (
        temperature > 0
    ):
        raise LossError(f"temperature must be a finite number > 0, got {temperature!r}; try 0.2")
    _check_s_options(tau, s_placement, decorrelation)
    if not (isinstance(nef_alpha, numbers.Real) and math.isfinite(nef_alpha)) or nef_alpha < 0:
        raise LossError(f"nef_alpha must be a finite number >= 0, got {nef_alpha!r}; try 1.0")
    if not (isinstance(nef_scale, numbers.Real) and math.isfinite(nef_scale)) or nef_scale <= 0:
        raise LossError(f"nef_scale must be a finite number > 0, got {nef_scale!r}; try 10.0")


def _check_s_options(tau: float, s_placement: str, decorrelation: str) -> None:
    """Raises LossError with a one-line message if an option of the tri-factor form is invalid."""
    if not (isinstance(tau, numbers.Real) and math.isfinite(tau)) or not (tau >= 0):
        raise LossError(f"tau must be a finite number >= 0, got {tau!r}; try 1.0 (0 disables it)")
    if s_placement not in _S_PLACEMENTS:
        raise LossError(f"unknown s_placement {s_placement!r}; choose one of {S_PLACEMENTS}")
    if decorrelation not in _DECORRELATIONS:
        raise LossError(f"unknown decorrelation {decorrelation!r}; choose one of {DECORRELATIONS}")


def _check_views(z1: Tensor, z2: Tensor) -> None:
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


def _check_importance(method: str, has_s: bool, importance: Tensor | None, k: int) -> None:
    """Raises LossError unless ``importance`` is what the method needs: None, or S's diagonal."""
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


# ------------------------------------------------------------------------------ the loss


def _normalized_views(z1: Tensor, z2: Tensor) -> Tensor:
    """L2-normalises both views in float32 and stacks them, view 1 first.

    Args:
        z1: features of view 1. Shape: (N, k).
        z2: features of view 2. Shape: (N, k).

    Returns:
        Unit-norm rows. Shape: (2N, k).
    """
    return torch.cat([F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)])


@dataclass(frozen=True)
class LossFn:
    """A method's loss with its hyperparameters, checked once when built; call it on tensors.

    Build it with :func:`build_loss`. The method's entry in :data:`tricl.methods.METHODS` says
    which contrastive kernel it uses and whether it has S; a method with S gets the tri-factor form
    (similarities through S, plus ``tau`` times the decorrelation term).

    Attributes:
        method: a key of :data:`tricl.methods.METHODS`.
        temperature: T > 0.
        tau: weight of the decorrelation term, >= 0 (unused by methods without S).
        s_placement: ``"both"`` (the paper: S in every similarity) or ``"first_view"`` (the
            official code: only view 1's anchors are weighted by S; all anchors are compared with
            the unweighted normalised samples). Unused by methods without S.
        decorrelation: ``"mean"`` (the paper's and official code's term,
            ``mean((Zn^T Zn / 2N - I_k)^2)``) or ``"whiten"`` (see ``_decorrelation_whiten``).
            Unused by methods without S.
        nef_alpha: weight of NeuralEF-CLR's ordering penalty, >= 0 (``neuralef`` only).
        nef_scale: NeuralEF-CLR's feature scale t, > 0 (``neuralef`` only; see
            :func:`neuralef_loss`).

    Raises:
        LossError: on construction, for an unknown method or an invalid hyperparameter.
    """

    method: str
    temperature: float = 0.2
    tau: float = 1.0
    s_placement: str = "both"
    decorrelation: str = "mean"
    nef_alpha: float = 1.0
    nef_scale: float = 10.0
    spec: MethodSpec = field(init=False, repr=False, compare=False)
    kernel: Callable[[Tensor], Tensor] | None = field(init=False, repr=False, compare=False)
    feature_kernel: Callable[[Tensor, Tensor, LossFn], LossTerms] | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        spec = METHODS.get(self.method)
        if spec is None:
            raise LossError(f"unknown loss method {self.method!r}; choose one of {sorted(METHODS)}")
        if spec.pair != "views":
            raise LossError(
                f"method {self.method!r} trains on image-caption pairs; build its loss with"
                " build_image_text_loss"
            )
        kernel, feature_kernel = KERNELS.get(spec.loss), FEATURE_KERNELS.get(spec.loss)
        if kernel is None and feature_kernel is None:
            raise LossError(
                f"method {self.method!r} names loss kernel {spec.loss!r}, which is not registered;"
                f" choose one of {sorted(KERNELS) + sorted(FEATURE_KERNELS)} in its MethodSpec"
            )
        if feature_kernel is not None and spec.has_s:
            raise LossError(
                f"method {self.method!r}: feature kernel {spec.loss!r} has no tri-factor form;"
                " set has_s=False in its MethodSpec"
            )
        _check_hyperparameters(
            self.temperature, self.tau, self.s_placement, self.decorrelation,
            self.nef_alpha, self.nef_scale,
        )  # fmt: skip
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "feature_kernel", feature_kernel)

    def __call__(self, z1: Tensor, z2: Tensor, importance: Tensor | None = None) -> LossTerms:
        """The loss of one batch of pairs, in float32 (autocast off).

        Args:
            z1: raw projector outputs of view 1 (gathered across ranks by the caller).
                Shape: (N, k).
            z2: raw projector outputs of view 2, row i the same image as z1's row i. Shape: (N, k).
            importance: for methods with S its positive diagonal, e.g. ``softplus(logits)``,
                else None. Shape: (k,).

        Returns:
            LossTerms in float32, each Shape: (); ``decorrelation`` is zeros without S.

        Raises:
            LossError: on invalid shapes, or if importance is missing, given without S, or not > 0.
        """
        _check_views(z1, z2)
        _check_importance(self.method, self.spec.has_s, importance, z1.shape[1])
        # Autocast would run the matmuls in bf16/fp16 even on float32 inputs; exp/log of
        # similarities divided by a small T need float32.
        with torch.autocast(device_type=z1.device.type, enabled=False):
            if self.feature_kernel is not None:
                return self.feature_kernel(z1.float(), z2.float(), self)
            zn = _normalized_views(z1, z2)  # (2N, k)
            rows = zn
            if importance is not None:
                rows = _S_PLACEMENTS[self.s_placement](zn, importance.float())  # (2N, k)
            sim = rows @ zn.T / self.temperature  # (2N, k) @ (k, 2N) -> (2N, 2N)
            contrastive = self.kernel(sim)
            if not self.spec.has_s:
                zero = torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)
                return LossTerms(total=contrastive, contrastive=contrastive, decorrelation=zero)
            penalty = _DECORRELATIONS[self.decorrelation](zn)
            return LossTerms(
                total=contrastive + self.tau * penalty,
                contrastive=contrastive,
                decorrelation=penalty,
            )


class LossConfig(Protocol):
    """What :func:`build_loss` reads from a config, e.g. a :class:`tricl.config.RunConfig`."""

    method: str
    temperature: float
    tau: float
    s_placement: str
    decorrelation: str
    # optional: nef_alpha, nef_scale (read when present)


_HYPERPARAMETERS = ("temperature", "tau", "s_placement", "decorrelation")
# read from a config when it has them (configs of other tools may predate them)
_OPTIONAL_HYPERPARAMETERS = ("nef_alpha", "nef_scale")


def build_loss(cfg: LossConfig | str, **hyperparameters: Any) -> LossFn:
    """Builds (and validates, once) the loss of a run.

    Args:
        cfg: a :class:`tricl.config.RunConfig` (or any object with the attributes ``method``,
            ``temperature``, ``tau``, ``s_placement`` and ``decorrelation``), or a method name.
        **hyperparameters: values for ``temperature``, ``tau``, ``s_placement``,
            ``decorrelation``, ``nef_alpha`` or ``nef_scale`` that replace the config's (or the
            defaults of :class:`LossFn`).

    Returns:
        The frozen, callable :class:`LossFn`: ``loss_fn(z1, z2, importance) -> LossTerms``.

    Raises:
        LossError: for an unknown method or hyperparameter, or an invalid value.
    """
    known = _HYPERPARAMETERS + _OPTIONAL_HYPERPARAMETERS
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise LossError(f"unknown loss hyperparameters {unknown}; choose from {known}")
    if isinstance(cfg, str):
        return LossFn(cfg, **hyperparameters)
    missing = [a for a in ("method", *_HYPERPARAMETERS) if not hasattr(cfg, a)]
    if missing:
        raise LossError(f"{type(cfg).__name__} has no {missing}; pass a RunConfig or a method name")
    values = {name: getattr(cfg, name) for name in _HYPERPARAMETERS}
    values |= {name: getattr(cfg, name) for name in _OPTIONAL_HYPERPARAMETERS if hasattr(cfg, name)}
    return LossFn(cfg.method, **(values | hyperparameters))


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
    nef_alpha: float = 1.0,
    nef_scale: float = 10.0,
) -> LossTerms:
    """One-off form of ``build_loss(method, ...)(z1, z2, importance)``.

    A training loop should build the loss once with :func:`build_loss` instead: this checks the
    hyperparameters on every call.

    Args:
        method: a key of :data:`tricl.methods.METHODS`.
        z1: raw projector outputs of view 1. Shape: (N, k).
        z2: raw projector outputs of view 2, row i the same image as z1's row i. Shape: (N, k).
        importance: positive diagonal of S for methods with S, else None. Shape: (k,).
        temperature: T > 0.
        tau: weight of the decorrelation term (methods with S), >= 0.
        s_placement: ``"both"`` or ``"first_view"`` (see :class:`LossFn`).
        decorrelation: ``"mean"`` or ``"whiten"`` (see :class:`LossFn`).
        nef_alpha: NeuralEF-CLR's penalty weight, >= 0 (``neuralef`` only).
        nef_scale: NeuralEF-CLR's feature scale t, > 0 (``neuralef`` only).

    Returns:
        LossTerms in float32, each Shape: ().

    Raises:
        LossError: for an unknown method or any invalid input.
    """
    loss_fn = LossFn(method, temperature, tau, s_placement, decorrelation, nef_alpha, nef_scale)
    return loss_fn(z1, z2, importance)


@dataclass(frozen=True)
class LossSpec:
    """A method's loss as older callers saw it (see :data:`LOSSES`).

    Attributes:
        fn: ``fn(z1, z2, importance, *, temperature, tau, s_placement, decorrelation)``.
        uses_importance: whether the method needs the importance diagonal S.
        description: one line for help texts and the dashboard.
    """

    fn: Callable[..., LossTerms]
    uses_importance: bool
    description: str


class _LossesView(Mapping[str, LossSpec]):
    """Read-only view of the two-view methods of :data:`tricl.methods.METHODS` in the shape of the
    former registry (image-caption methods have their own loss signature)."""

    def __getitem__(self, method: str) -> LossSpec:
        if method not in methods_with_pair("views"):
            raise KeyError(method)
        spec = METHODS[method]
        return LossSpec(partial(compute_loss, method), spec.has_s, spec.description)

    def __iter__(self) -> Iterator[str]:
        return iter(methods_with_pair("views"))

    def __len__(self) -> int:
        return len(methods_with_pair("views"))


# Backward compatibility: method name -> LossSpec, derived from METHODS (new code reads METHODS).
LOSSES: Mapping[str, LossSpec] = _LossesView()


# ------------------------------------------------------------------------ image-text losses
# CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
# ICML 2021) and its tri-factor form: the losses of the caption methods ``clip`` and ``triclip``
# of tricl.methods (the training loop's "caption" pair kind builds them).

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
        _check_s_options(self.tau, self.s_placement, self.decorrelation)
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
        _check_importance(self.method, self.spec.has_s, importance, img_z.shape[1])
        if logit_scale is None:
            raise LossError(f"{self.method} needs logit_scale (log(1/T)); pass the nn.Parameter")
        _check_logit_scale(logit_scale)
        with torch.autocast(device_type=img_z.device.type, enabled=False):
            img_n = F.normalize(img_z.float(), dim=1)  # (N, k)
            txt_n = F.normalize(txt_z.float(), dim=1)  # (N, k)
            zn = torch.cat([img_n, txt_n])  # (2N, k)
            rows = zn
            if importance is not None:
                rows = _S_PLACEMENTS[self.s_placement](zn, importance.float())  # (2N, k)
            scale = logit_scale.float().reshape(()).clamp(max=self.max_logit_scale).exp()
            contrastive = _clip_contrastive(rows, img_n, txt_n, scale)
            if not self.spec.has_s:
                zero = torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)
                return LossTerms(total=contrastive, contrastive=contrastive, decorrelation=zero)
            term = _DECORRELATIONS[self.decorrelation]
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
