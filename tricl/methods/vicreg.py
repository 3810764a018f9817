"""VICReg: variance-invariance-covariance regularisation, a non-contrastive reference arm.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022 (Eqs. 1-6). No negatives: the two views' features are pulled together
(invariance, the mean squared distance), each feature's standard deviation over the batch is held
above 1 (variance, a hinge), and the features are decorrelated (covariance, the squared
off-diagonal covariances). Read before writing (not copied): ``VICReg.forward`` of the official
``main_vicreg.py`` (github.com/facebookresearch/vicreg, seen through the code index in modified
copies); its defaults are the paper's: lambda = mu = 25, nu = 1, gamma = 1, epsilon = 1e-4, and
like it the features of every process are gathered before the batch statistics are taken.

The method reports the weighted invariance term as ``contrastive`` and the weighted variance and
covariance terms together as ``decorrelation`` (metrics.jsonl keeps one row format); its features
have no learned order, so they are ranked by variance.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tricl.methods.base import Method, register_method
from tricl.methods.options import ConfigError, option

if TYPE_CHECKING:
    from torch import Tensor

    from tricl.losses import LossTerms

VICREG_EPS = 1e-4  # epsilon under the square root of the variance (official: 0.0001)
VICREG_GAMMA = 1.0  # the standard deviation the variance term holds each feature at


@dataclass(frozen=True)
class VICRegOptions:
    """The weights of VICReg's three terms (``--vicreg-*``; the paper's defaults)."""

    vicreg_sim_coeff: float = option(
        25.0,
        "vicreg: weight lambda of the invariance term, the views' mean squared distance (paper:"
        " 25). Much larger than --vicreg-std-coeff collapses the features to a constant",
    )
    vicreg_std_coeff: float = option(
        25.0,
        "vicreg: weight mu of the variance hinge that keeps every feature's std over the batch"
        " at 1 (paper: 25, equal to lambda). 0 lets the features collapse",
    )
    vicreg_cov_coeff: float = option(
        1.0,
        "vicreg: weight nu of the covariance term, the squared off-diagonal covariances over k"
        " (paper: 1). 0 lets all features carry the same signal",
    )

    def __post_init__(self) -> None:
        _check_coefficients(self.vicreg_sim_coeff, self.vicreg_std_coeff, self.vicreg_cov_coeff)


def _check_coefficients(*coefficients: float) -> None:
    """Raises ConfigError unless every coefficient is a finite number >= 0."""
    for name, value in zip(("vicreg_sim_coeff", "vicreg_std_coeff", "vicreg_cov_coeff"),
                           coefficients):  # fmt: skip
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}; try 25, 25, 1")


def _variance(z: Tensor) -> Tensor:
    """Mean over features of ``relu(gamma - sqrt(Var(z_j) + eps))``. Shape: (N, k) -> ()."""
    import torch.nn.functional as F

    std = (z.var(dim=0) + VICREG_EPS).sqrt()  # (k,), unbiased as the official torch.var
    return F.relu(VICREG_GAMMA - std).mean()


def _covariance(z: Tensor) -> Tensor:
    """Sum of the squared off-diagonal covariances, over k. Shape: (N, k) -> ()."""
    n, k = z.shape
    zc = z - z.mean(dim=0)  # (N, k)
    cov = zc.T @ zc / (n - 1)  # (k, N) @ (N, k) -> (k, k)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / k


def vicreg_loss(
    z1: Tensor, z2: Tensor, *, sim_coeff: float = 25.0, std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> LossTerms:  # fmt: skip
    """VICReg's loss of one batch of pairs (Bardes et al., ICLR 2022, Eq. 6)::

        total = lambda * mean_ij (z1_ij - z2_ij)^2
              + mu * (v(z1) + v(z2)) / 2 + nu * (c(z1) + c(z2))

    with ``v(z) = mean_j relu(1 - sqrt(Var(z_j) + 1e-4))`` and ``c(z)`` the sum of the squared
    off-diagonal entries of z's covariance divided by k.

    Args:
        z1: raw projector outputs of view 1, gathered over every process. Shape: (N, k).
        z2: raw projector outputs of view 2, row i the same image. Shape: (N, k).
        sim_coeff: lambda, the invariance weight.
        std_coeff: mu, the variance weight.
        cov_coeff: nu, the covariance weight.

    Returns:
        LossTerms with ``contrastive`` the weighted invariance term and ``decorrelation`` the
        weighted variance plus covariance terms, each Shape: ().
    """
    from tricl.losses import LossTerms

    invariance = (z1 - z2).pow(2).mean()  # F.mse_loss: mean over N and k
    variance = (_variance(z1) + _variance(z2)) / 2
    covariance = _covariance(z1) + _covariance(z2)
    regulariser = std_coeff * variance + cov_coeff * covariance
    pull = sim_coeff * invariance
    return LossTerms(total=pull + regulariser, contrastive=pull, decorrelation=regulariser)


@dataclass(frozen=True)
class VICRegLoss:
    """:func:`vicreg_loss` with its weights, checked once when built; call it on tensors."""

    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0

    def __post_init__(self) -> None:
        _check_coefficients(self.sim_coeff, self.std_coeff, self.cov_coeff)

    def __call__(self, z1: Tensor, z2: Tensor, importance: Tensor | None = None) -> LossTerms:
        """The loss in float32 (autocast off); ``importance`` must be None (no S).

        Shapes: z1, z2 (N, k) -> LossTerms of Shape: () each.
        """
        import torch

        from tricl.losses import check_importance, check_views

        check_views(z1, z2)
        check_importance("vicreg", False, importance, z1.shape[1])
        with torch.autocast(device_type=z1.device.type, enabled=False):
            return vicreg_loss(
                z1.float(), z2.float(), sim_coeff=self.sim_coeff, std_coeff=self.std_coeff,
                cov_coeff=self.cov_coeff,
            )  # fmt: skip


class VICReg(Method):
    name = "vicreg"
    label = "VICReg"
    color = "#FF9DA6"
    description = "VICReg: invariance + variance + covariance, no negatives (Bardes et al. 2022)"
    options = (VICRegOptions,)
    terms = (("contrastive", "inv"), ("decorrelation", "var_cov"))

    def build_loss(self, cfg: Any) -> VICRegLoss:
        return VICRegLoss(cfg.vicreg_sim_coeff, cfg.vicreg_std_coeff, cfg.vicreg_cov_coeff)


register_method(VICReg())
