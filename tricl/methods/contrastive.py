"""Methods made of a similarity kernel of two views (:data:`tricl.losses.KERNELS`), plain or in
its tri-factor form with a learned S (torch-free import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from tricl.methods.base import Method
from tricl.methods.trifactor import TriFactorParts

if TYPE_CHECKING:
    from tricl.losses import LossFn


class KernelMethod(TriFactorParts, Method):
    """A kernel of the two views' normalised features over a softmax temperature; with ``has_s``
    its similarities go through a learned S and the decorrelation term is added.

    Attributes:
        kernel: a key of :data:`tricl.losses.KERNELS`.
    """

    kernel: ClassVar[str] = "nt_xent"

    def build_loss(self, cfg: Any) -> LossFn:
        """The kernel (through S with the tri-factor options when the method has S)."""
        from tricl.losses import LossFn

        if not self.has_s:
            return LossFn(self.kernel, False, cfg.temperature, name=self.name)
        return LossFn(
            self.kernel, True, cfg.temperature, cfg.tau, cfg.s_placement, cfg.decorrelation,
            name=self.name,
        )  # fmt: skip
