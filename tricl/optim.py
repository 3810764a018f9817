"""Optimisers and the learning-rate schedule of training: AdamW, SGD, LARS; warmup then cosine.

An optimiser is built from a method's parameter groups (:meth:`tricl.methods.Method.param_groups`):
each group is a dict of ``params``, ``lr_mult``, ``weight_decay`` and, for LARS, ``lars_exclude``.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    Groups with ``lars_exclude=True`` (biases, norms, importance logits) take plain SGD steps, as in
    solo-learn's LARS wrapper with ``exclude_bias_n_norm``.
    """

    def __init__(
        self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02
    ) -> None:
        if lr <= 0 or eta <= 0:
            raise ValueError(f"LARS needs lr > 0 and eta > 0, got lr={lr}, eta={eta}")
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "weight_decay": weight_decay,
                "eta": eta,
                "lars_exclude": False,
            },
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if group["weight_decay"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    p_norm, g_norm = torch.norm(p), torch.norm(d_p)
                    if p_norm > 0 and g_norm > 0:
                        # trust ratio, clipped so LARS never raises the step above the base lr
                        trust = group["eta"] * p_norm / g_norm
                        d_p = d_p * torch.clamp(trust, max=1.0)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])


def _plain(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k != "lars_exclude"} for g in groups]


OPTIMIZER_BUILDERS: dict[str, Any] = {
    "adamw": lambda groups, lr: torch.optim.AdamW(_plain(groups), lr=lr),
    "sgd": lambda groups, lr: torch.optim.SGD(_plain(groups), lr=lr, momentum=0.9),
    "lars": lambda groups, lr: LARS(groups, lr=lr),
}


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
