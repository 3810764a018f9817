"""NeuralEF-CLR: the k features as the ordered top-k eigenfunctions of the augmentation kernel
(Deng, Shi, Zhang, Cui, Lu & Zhu, "Neural Eigenfunctions Are Structured Representation Learners",
ICML 2023); the loss is :func:`tricl.losses.neuralef_loss`. Feature 0 is the top eigenfunction,
so its importance order is the index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tricl.methods.base import Method, register_method
from tricl.methods.options import ConfigError, option

if TYPE_CHECKING:
    from tricl.losses import NeuralEFLoss


@dataclass(frozen=True)
class NeuralEFOptions:
    """NeuralEF-CLR's two hyperparameters (``--nef-*``)."""

    nef_alpha: float = option(
        1.0,
        "neuralef: weight of the ordering penalty on the upper triangle of the cross-view Gram"
        " matrix (official: 1). 0 drops the ordering (every feature chases the top eigenvalue)",
    )
    nef_scale: float = option(
        10.0,
        "neuralef: scale t of the normalised features (official --t: 10); the penalty grows as"
        " t^2 against the reward's t, so it also sets the penalty's strength",
    )

    def __post_init__(self) -> None:
        if self.nef_alpha < 0 or not self.nef_scale > 0:
            raise ConfigError(
                f"nef_alpha must be >= 0 and nef_scale > 0, got {self.nef_alpha} and"
                f" {self.nef_scale} (official: 1 and 10)"
            )


class NeuralEF(Method):
    name = "neuralef"
    label = "NeuralEF-CLR"
    color = "#17BECF"
    description = (
        "NeuralEF-CLR: ordered eigenfunctions of the augmentation kernel (Deng et al. 2023)"
    )
    order = "index"
    options = (NeuralEFOptions,)
    terms = (("contrastive", "reward"), ("decorrelation", "penalty"))
    rank = 70

    def build_loss(self, cfg: Any) -> NeuralEFLoss:
        from tricl.losses import NeuralEFLoss

        return NeuralEFLoss(cfg.nef_alpha, cfg.nef_scale, name=self.name)


register_method(NeuralEF())
