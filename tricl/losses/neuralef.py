"""NeuralEF-CLR (Deng, Shi, Zhang, Cui, Lu & Zhu, "Neural Eigenfunctions Are Structured
Representation Learners", ICML 2023; the NeuralEF objective of Deng, Shi & Zhu, "NeuralEF:
Deconstructing Kernels by Deep Neural Networks", ICML 2022): the k features as the ordered top-k
eigenfunctions of the augmentation kernel. A feature kernel: it reads the raw views itself (its own
normalisation) and returns all its terms. See :func:`neuralef_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tricl.losses.common import LossTerms, check_importance, check_number, check_views

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


@dataclass(frozen=True)
class NeuralEFLoss:
    """:func:`neuralef_loss` with its hyperparameters, checked once when built.

    Attributes:
        alpha: weight of the ordering penalty, >= 0 (official default 1).
        scale: t, the scale of the normalised features, > 0 (official default 10).
        name: what error messages call the loss.

    Raises:
        LossError: on construction, for an invalid hyperparameter.
    """

    alpha: float = 1.0
    scale: float = 10.0
    name: str = "neuralef"

    def __post_init__(self) -> None:
        check_number("nef_alpha", self.alpha, low=0.0, strict=False, hint="1.0")
        check_number("nef_scale", self.scale, low=0.0, strict=True, hint="10.0")

    def __call__(self, z1: Tensor, z2: Tensor, importance: Tensor | None = None) -> LossTerms:
        """The loss of one batch of pairs, in float32 (autocast off).

        Args:
            z1: raw projector outputs of view 1, gathered over every process. Shape: (N, k).
            z2: raw projector outputs of view 2, row i the same image. Shape: (N, k).
            importance: must be None (NeuralEF-CLR has no S).

        Returns:
            LossTerms in float32 (see :func:`neuralef_loss`), each Shape: ().
        """
        check_views(z1, z2)
        check_importance(self.name, False, importance, z1.shape[1])
        with torch.autocast(device_type=z1.device.type, enabled=False):
            return neuralef_loss(z1.float(), z2.float(), alpha=self.alpha, scale=self.scale)
