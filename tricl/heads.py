"""Heads: layers after the projector whose weights are solved from statistics, not by gradients.

A method may attach a head to its Encoder (``Encoder.attach_head``, e.g. ``tri-eigen`` in
:mod:`tricl.methods.tri_eigen`); the Encoder then applies it after the projector, and the head
gives the importance diagonal S. Training calls ``observe(z1, z2)`` with each batch's
raw projector outputs of both views (before applying the head to them), and ``refit`` once at the
end of training with exact statistics of the final network, as "precise BatchNorm" does for
BatchNorm's running averages.

:class:`EigenHead` is the closed-form tri-factor head. For features F that are white
(``E[f f^T] = I``) the tri-factor objective ``sum_i s_i E[f_i(x) f_i(x')]`` is maximised by the
eigenvectors of the whitened cross-view covariance, with S holding its eigenvalues in the same
order (the fixed point of the paper's identifiability argument). Gradient descent reaches that
rotation only at the rate ``(s_i - s_j)(lambda_i - lambda_j)`` against the batch noise, which is
too slow at small scale (docs/RESULTS.md); the head instead solves it from running averages of the
covariances every step, and the backbone is trained through it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# An eigenvalue below this is clamped when it serves as S: S must be > 0 (a feature that no pair
# agrees on gets almost no weight, not a negative one).
IMPORTANCE_FLOOR = 1e-3


class EigenHead(nn.Module):
    """Whitening and rotation onto the eigenbasis of the cross-view covariance, from statistics.

    Buffers (float64, saved with the weights): running ``mean`` (k,), ``cov`` (k, k) and
    ``cross`` (k, k) (exponential moving averages, bias-corrected by ``steps``), and the map they
    give, ``weight`` (k, k) and ``bias`` (k,), with the ``eigenvalues`` (k,) in descending order:
    output feature i is the i-th eigenvector, so index order is importance order.

    Args:
        dim: k, the number of features in and out.
        momentum: weight of the past in the running averages (0.99: about the last 100 batches).
        eps: eigenvalues of the covariance below ``eps`` times the largest are raised to it before
            the inverse square root (dead directions do not blow up).
    """

    # the running statistics (not the map forward applies): bookkeeping that may leave the
    # finite range by design (``refit`` sets ``steps`` to infinity), so a loaded run's
    # finite-weights check (tricl.runs) leaves these buffers alone and checks the map
    statistics_buffers: ClassVar[tuple[str, ...]] = ("steps", "mean", "cov", "cross")

    def __init__(self, dim: int, momentum: float = 0.99, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum, self.eps = momentum, eps
        f64 = torch.float64
        self.register_buffer("steps", torch.zeros((), dtype=f64))
        self.register_buffer("mean", torch.zeros(dim, dtype=f64))
        self.register_buffer("cov", torch.zeros(dim, dim, dtype=f64))
        self.register_buffer("cross", torch.zeros(dim, dim, dtype=f64))
        self.register_buffer("weight", torch.eye(dim, dtype=f64))
        self.register_buffer("bias", torch.zeros(dim, dtype=f64))
        self.register_buffer("eigenvalues", torch.ones(dim, dtype=f64))

    @torch.no_grad()
    def observe(self, z1: Tensor, z2: Tensor) -> None:
        """Folds one batch of pairs into the running statistics and re-solves the map.

        Args:
            z1: raw projector outputs of view 1 (the global batch). Shape: (N, k).
            z2: the same images' view 2. Shape: (N, k).
        """
        mean, cov, cross = pair_statistics(z1, z2)
        m = self.momentum
        for buf, new in ((self.mean, mean), (self.cov, cov), (self.cross, cross)):
            buf.mul_(m).add_(new, alpha=1.0 - m)
        self.steps += 1
        self._solve(1.0 - m ** float(self.steps))

    @torch.no_grad()
    def refit(self, mean: Tensor, cov: Tensor, cross: Tensor) -> None:
        """Replaces the running averages by exact statistics (of the final network) and re-solves.

        Args:
            mean: feature mean. Shape: (k,).
            cov: feature covariance. Shape: (k, k).
            cross: symmetrised cross-view covariance. Shape: (k, k).
        """
        self.mean.copy_(mean)
        self.cov.copy_(cov)
        self.cross.copy_(cross)
        self.steps.fill_(float("inf"))  # no bias correction: momentum ** inf = 0
        self._solve(1.0)

    def _solve(self, correction: float) -> None:
        mean, cov, cross = self.mean / correction, self.cov / correction, self.cross / correction
        weight, eigenvalues = solve_eigen_map(cov, cross, self.eps)
        self.weight.copy_(weight)
        self.bias.copy_(-weight @ mean)
        self.eigenvalues.copy_(eigenvalues)

    def forward(self, z: Tensor) -> Tensor:
        """The features in the eigenbasis; gradients flow to ``z`` (the map is a constant).

        Shape: (B, k) -> (B, k), in the dtype of ``z`` (the product is taken in float64).
        """
        return F.linear(z.to(self.weight.dtype), self.weight, self.bias).to(z.dtype)

    def importance(self) -> Tensor:
        """S: the eigenvalues floored at :data:`IMPORTANCE_FLOOR`, divided by their mean.

        Mean 1 (as ``--s-param softplus_mean1``) keeps S's overall scale, i.e. the temperature,
        where the method's kernel expects it: eigenvalues average about 0.3, which would
        triple the effective temperature. Shape: (k,), float32.
        """
        s = self.eigenvalues.clamp_min(IMPORTANCE_FLOOR)
        return (s / s.mean()).float()


def pair_statistics(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, covariance and symmetrised cross-view covariance of a batch of pairs, in float64.

    Args:
        z1: view 1. Shape: (N, k).
        z2: view 2 of the same images. Shape: (N, k).

    Returns:
        ``(mean (k,), cov (k, k), cross (k, k))``; both views count in the mean and covariance.
    """
    a, b = z1.detach().double(), z2.detach().double()
    mean = (a.mean(0) + b.mean(0)) / 2
    a, b = a - mean, b - mean
    n2 = 2 * a.shape[0]
    cov = (a.T @ a + b.T @ b) / n2  # (k, k)
    cross = (a.T @ b + b.T @ a) / n2  # (k, k), symmetric
    return mean, cov, cross


def solve_eigen_map(cov: Tensor, cross: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """The map onto the eigenbasis of the whitened cross-view covariance, and its eigenvalues.

    Args:
        cov: feature covariance (symmetric, PSD). Shape: (k, k).
        cross: symmetrised cross-view covariance. Shape: (k, k).
        eps: covariance eigenvalues below ``eps`` times the largest are raised to it.

    Returns:
        ``(weight, eigenvalues)``: row i of weight (k, k) maps centred features to the i-th
        eigen-feature (unit variance, sign fixed so that its largest-magnitude weight is
        positive); eigenvalues (k,) descending, the correlation of that feature across views.
    """
    evals, evecs = torch.linalg.eigh(cov)
    floor = eps * evals.max().clamp_min(torch.finfo(cov.dtype).tiny)
    inv_sqrt = evecs @ torch.diag(evals.clamp_min(floor).rsqrt()) @ evecs.T  # (k, k)
    lam, rot = torch.linalg.eigh(inv_sqrt @ cross @ inv_sqrt)  # ascending
    lam, rot = lam.flip(0), rot.flip(1)
    weight = rot.T @ inv_sqrt  # (k, k)
    # eigenvectors have no sign; fix one so a run's features do not flip between steps
    pivot = weight.abs().argmax(dim=1, keepdim=True)  # (k, 1)
    weight = weight * torch.sign(weight.gather(1, pivot))
    return weight, lam
