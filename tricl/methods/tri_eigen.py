"""tri-Eigen: triCL with the last rotation and S solved in closed form (an EigenHead).

The head whitens the projector's outputs and rotates them onto the eigenbasis of the running
cross-view covariance; S is its eigenvalues, so index order is importance order. Each step the head
observes the raw outputs of the whole global batch (so every rank solves the same map) and maps
them; gradients flow through the map to the projector. After the last epoch the head is refitted
on exact statistics of the final network (:meth:`TriEigen.end_of_training`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tricl.methods.base import Batch, PairSource, register_method, unwrap
from tricl.methods.contrastive import KernelMethod
from tricl.methods.trifactor import TriFactorOptions

if TYPE_CHECKING:
    from torch import nn

    from tricl.losses import LossTerms

# Passes of augmented pairs over the train set that the final refit of the head averages.
REFIT_PASSES = 2


class TriEigen(KernelMethod):
    name = "tri-eigen"
    label = "tri-Eigen"
    color = "#7F3C8D"
    description = (
        "triCL with F and S solved in closed form: NT-Xent through S on the eigenbasis of the"
        " running cross-view covariance (S = its eigenvalues)"
    )
    kernel = "nt_xent"
    has_s = True
    head = "eigen"
    options = (TriFactorOptions,)
    rank = 80

    def add_parts(self, encoder: nn.Module, cfg: Any) -> None:
        """The eigen head after the projector (it gives S; no logits)."""
        from tricl.heads import EigenHead

        encoder.attach_head(EigenHead(encoder.proj_dim))

    def loss_terms(
        self, model: nn.Module, batch: Batch, loss_fn: Callable[..., LossTerms]
    ) -> LossTerms:
        """The head observes the raw projector outputs of the global batch, then maps them."""
        import torch

        from tricl import distributed

        x1, x2 = batch
        head = unwrap(model).head
        z = model(torch.cat([x1, x2]), raw=True)  # (2 * B_local, k)
        z1, z2 = z.chunk(2)  # (B_local, k) each
        z1 = distributed.gather_with_grad(z1)  # (B_global, k)
        z2 = distributed.gather_with_grad(z2)  # (B_global, k)
        head.observe(z1, z2)
        return loss_fn(head(z1), head(z2), unwrap(model).importance())

    def end_of_training(self, model: nn.Module, pairs: PairSource) -> None:
        """Refits the head on exact statistics of the final network.

        The running averages the head trains with lag behind the network; as "precise
        BatchNorm" does, this recomputes them once at the end, in eval mode (as the analysis
        extracts features), over :data:`REFIT_PASSES` passes of augmented pairs of the train set.
        Under torchrun rank 0's result is broadcast, so every rank saves the same head.
        """
        import torch

        from tricl import distributed
        from tricl.heads import pair_statistics

        enc = unwrap(model)
        enc.eval()
        views: tuple[list, list] = ([], [])
        with torch.no_grad():
            for x1, x2 in pairs(REFIT_PASSES):
                z = enc(torch.cat([x1, x2]), raw=True)  # (2B, k)
                for keep, part in zip(views, z.float().chunk(2)):
                    keep.append(part)
            enc.head.refit(*pair_statistics(torch.cat(views[0]), torch.cat(views[1])))
            if distributed.is_distributed():
                for buf in enc.head.buffers():
                    torch.distributed.broadcast(buf, src=0)
        enc.train()


register_method(TriEigen())
