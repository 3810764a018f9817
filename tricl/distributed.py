"""torchrun / DDP helpers: rank, world size, and an all_gather that keeps gradients."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment torchrun sets up is present (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU)."""
    if is_distributed() or not launched_by_torchrun():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the summed gradients.

    Every rank computes the same loss on the gathered batch, so the gradient of that loss with
    respect to this rank's rows is the sum of what each rank computes for them; DDP then averages
    parameter gradients over ranks, which gives exactly the gradient of the single global loss
    (the approach of solo-learn's GatherLayer and lightly's gather).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        all_grads = torch.stack(grads)  # (W, N_local, ...)
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, gradients flowing back to every rank.

    Shape: (N_local, ...) -> (world_size * N_local, ...). Identity without a process group.
    """
    if world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)
