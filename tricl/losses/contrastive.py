"""Similarity kernels of two views and their tri-factor form, built once, then pure functions.

- ``nt_xent``: NT-Xent (Chen et al., "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020).
- ``spectral``: spectral contrastive loss (HaoChen et al., "Provable Guarantees for Self-Supervised
  Deep Learning with Spectral Contrastive Loss", NeurIPS 2021).

A kernel takes a (2N, 2N) matrix of similarities and returns a scalar. The kernels use 2N anchors
(every sample of both views), the other view of the same image as the positive, and the remaining
2N - 2 samples as negatives. :class:`LossFn` holds one kernel, whether it has S (its tri-factor
form: similarities through S plus ``tau`` times a decorrelation term) and its hyperparameters,
checked once when built; the loss is always computed in float32, also inside ``torch.autocast``::

    loss_fn = LossFn("nt_xent", has_s=True, temperature=0.2)
    terms = loss_fn(z1, z2, encoder.importance())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from tricl.losses.common import (
    DECORRELATION_FNS,
    S_PLACEMENT_FNS,
    LossError,
    LossTerms,
    check_importance,
    check_number,
    check_s_options,
    check_views,
    normalized_views,
)


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


# Contrastive kernels by the name a method names: (2N, 2N) similarities -> ().
KERNELS: dict[str, Callable[[Tensor], Tensor]] = {
    "nt_xent": _nt_xent,
    "spectral": _spectral,
}


@dataclass(frozen=True)
class LossFn:
    """A similarity kernel with its hyperparameters, checked once when built; call it on tensors.

    With ``has_s`` it is the kernel's tri-factor form (similarities through S, plus ``tau`` times
    the decorrelation term).

    Attributes:
        kernel: a key of :data:`KERNELS`.
        has_s: whether similarities go through S (the call then needs ``importance``).
        temperature: T > 0.
        tau: weight of the decorrelation term, >= 0 (unused without S).
        s_placement: ``"both"`` (the paper: S in every similarity) or ``"first_view"`` (the
            official code: only view 1's anchors are weighted by S; all anchors are compared with
            the unweighted normalised samples). Unused without S.
        decorrelation: ``"mean"`` (the paper's and official code's term,
            ``mean((Zn^T Zn / 2N - I_k)^2)``) or ``"whiten"`` (see ``_decorrelation_whiten``).
            Unused without S.
        name: what error messages call the loss (the method that built it; default the kernel).

    Raises:
        LossError: on construction, for an unknown kernel or an invalid hyperparameter.
    """

    kernel: str = "nt_xent"
    has_s: bool = False
    temperature: float = 0.2
    tau: float = 1.0
    s_placement: str = "both"
    decorrelation: str = "mean"
    name: str = ""
    fn: Callable[[Tensor], Tensor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fn = KERNELS.get(self.kernel)
        if fn is None:
            raise LossError(f"unknown loss kernel {self.kernel!r}; choose one of {sorted(KERNELS)}")
        check_number("temperature", self.temperature, low=0.0, strict=True, hint="0.2")
        check_s_options(self.tau, self.s_placement, self.decorrelation)
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "name", self.name or self.kernel)

    def __call__(self, z1: Tensor, z2: Tensor, importance: Tensor | None = None) -> LossTerms:
        """The loss of one batch of pairs, in float32 (autocast off).

        Args:
            z1: raw projector outputs of view 1 (gathered across ranks by the caller).
                Shape: (N, k).
            z2: raw projector outputs of view 2, row i the same image as z1's row i. Shape: (N, k).
            importance: with S its positive diagonal, e.g. ``softplus(logits)``, else None.
                Shape: (k,).

        Returns:
            LossTerms in float32, each Shape: (); ``decorrelation`` is zeros without S.

        Raises:
            LossError: on invalid shapes, or if importance is missing, given without S, or not > 0.
        """
        check_views(z1, z2)
        check_importance(self.name, self.has_s, importance, z1.shape[1])
        # Autocast would run the matmuls in bf16/fp16 even on float32 inputs; exp/log of
        # similarities divided by a small T need float32.
        with torch.autocast(device_type=z1.device.type, enabled=False):
            zn = normalized_views(z1, z2)  # (2N, k)
            rows = zn
            if importance is not None:
                rows = S_PLACEMENT_FNS[self.s_placement](zn, importance.float())  # (2N, k)
            sim = rows @ zn.T / self.temperature  # (2N, k) @ (k, 2N) -> (2N, 2N)
            contrastive = self.fn(sim)
            if not self.has_s:
                zero = torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)
                return LossTerms(total=contrastive, contrastive=contrastive, decorrelation=zero)
            penalty = DECORRELATION_FNS[self.decorrelation](zn)
            return LossTerms(
                total=contrastive + self.tau * penalty,
                contrastive=contrastive,
                decorrelation=penalty,
            )
