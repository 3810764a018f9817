"""The method contract and its registry (torch-free at import: torch loads when a model is built).

A method is a :class:`Method` subclass in one file of this package, registered with
:func:`register_method`. It declares its catalog entry (name, label, colour, description), what a
training pair is, its option dataclasses, the loss terms it reports and its importance order; it
builds its modules and its loss, computes a step's :class:`~tricl.losses.LossTerms`, gives its
parameter groups and runs its end-of-training hook. The training loop calls these and knows no
method by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

# "views": two augmented views of one image; "caption": one augmented view and its caption
PAIRS = ("views", "caption")
# How a method's features are ranked by default (tricl.analysis.importance): "S" by the learned
# importance diagonal, "variance" by the variance of the normalised features, "index" by their
# position (a method whose loss orders its outputs, feature 0 first).
FEATURE_ORDERS = ("S", "variance", "index")
UNKNOWN_COLOR = "#7F7F7F"

# A batch as the training loop hands it to a method: (x1, x2) views, or (x, caption token ids).
Batch = tuple["Tensor", "Tensor"]
# pairs(passes) -> augmented (x1, x2) batches of the train set, ``passes`` times over it.
PairSource = Callable[[int], Iterator[tuple["Tensor", "Tensor"]]]


class MethodError(ValueError):
    """An unknown method; the one-line message names the choices."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself, under a DistributedDataParallel wrapper if there is one."""
    return model.module if hasattr(model, "module") else model


class Method:
    """One training method. Subclasses set the class attributes and override what differs.

    Attributes:
        name: the key (``--method``, ``config.json``).
        label: how charts and tables name it.
        color: its colour on every chart (hex).
        description: one line for help texts and the dashboard.
        pair: what a training pair is (see :data:`PAIRS`).
        has_s: whether its model has the importance diagonal S.
        order: the default importance order of its features, one of :data:`FEATURE_ORDERS`
            (empty: ``"S"`` with S, else ``"variance"``).
        head: the name of a head solved from statistics that gives S (empty: none); the
            dashboard says "solved" rather than "learned" for such an S.
        options: option dataclasses (:mod:`tricl.methods.options`) whose fields are run settings.
        terms: ``(field, short name)`` of the :class:`~tricl.losses.LossTerms` fields it has
            besides the total (the progress bar shows those, by their short names).
        rank: its place in lists of methods (lower first).
        trainable: False for an encoder opened with ``tricl import`` (no loss; ``tricl train``
            refuses it, and the training-method lists leave it out).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    color: ClassVar[str] = UNKNOWN_COLOR
    description: ClassVar[str] = ""
    pair: ClassVar[str] = "views"
    has_s: ClassVar[bool] = False
    order: str = ""
    head: ClassVar[str] = ""
    options: ClassVar[tuple[type, ...]] = ()
    terms: tuple[tuple[str, str], ...] = (("contrastive", "con"),)
    rank: ClassVar[int] = 100
    trainable: ClassVar[bool] = True

    def __init__(self) -> None:
        if not self.name or not self.label or not self.description:
            raise ValueError(f"{type(self).__name__} must set name, label and description")
        if self.pair not in PAIRS:
            raise ValueError(f"method {self.name!r}: pair {self.pair!r} is not one of {PAIRS}")
        if self.head and self.pair != "views":
            raise ValueError(f"method {self.name!r}: a head needs pair='views', not {self.pair!r}")
        self.order = self.order or ("S" if self.has_s else "variance")
        if self.order not in FEATURE_ORDERS or (self.order == "S" and not self.has_s):
            raise ValueError(
                f"method {self.name!r}: order {self.order!r} must be one of {FEATURE_ORDERS}"
                " ('S' only with has_s=True)"
            )

    # ------------------------------------------------------------------ modules

    def add_parts(self, encoder: nn.Module, cfg: Any) -> None:
        """Adds the method's own parts to a plain encoder (S's logits, a head); none here."""

    def build_encoder(self, cfg: Any, in_channels: int, aligned_dim: int = 0) -> nn.Module:
        """The image :class:`~tricl.models.Encoder` of a run (backbone, projector, own parts).

        Args:
            cfg: a :class:`tricl.config.RunConfig`.
            in_channels: image channels of the dataset.
            aligned_dim: > 0 for an aligned run (``Run.aligned_dim``): its fixed aligner and
                importance replace S's logits.
        """
        from tricl.models import Encoder

        enc = Encoder(
            cfg.backbone, in_channels, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_batchnorm
        )
        if aligned_dim > 0:
            if self.head:
                self.add_parts(enc, cfg)  # the head's buffers are part of the parent's weights
            enc.align(aligned_dim)
        else:
            self.add_parts(enc, cfg)
        return enc

    def build_model(self, cfg: Any, in_channels: int, **context: Any) -> nn.Module:
        """The modules it trains (context: what the pair kind adds, e.g. ``text_config``)."""
        return self.build_encoder(cfg, in_channels)

    # ------------------------------------------------------------------ the loss

    def build_loss(self, cfg: Any) -> Callable[..., Any]:
        """The run's loss, built (and validated) once."""
        raise NotImplementedError(f"method {self.name!r} does not build a loss")

    def loss_terms(self, model: nn.Module, batch: Batch, loss_fn: Callable[..., Any]) -> Any:
        """A step's :class:`~tricl.losses.LossTerms`: both views forwarded together, gathered
        from every rank (gradients kept), and the loss.

        Args:
            model: the model, possibly wrapped in DistributedDataParallel.
            batch: ``(x1, x2)``, this rank's views. Shapes: (B_local, C, H, W).
            loss_fn: what :meth:`build_loss` built.
        """
        import torch

        from tricl import distributed

        x1, x2 = batch
        z1, z2 = model(torch.cat([x1, x2])).chunk(2)  # (2 * B_local, k) -> (B_local, k) each
        z1 = distributed.gather_with_grad(z1)  # (B_global, k)
        z2 = distributed.gather_with_grad(z2)  # (B_global, k)
        return loss_fn(z1, z2, unwrap(model).importance())

    # ------------------------------------------------------------------ training

    def param_groups(self, model: nn.Module, cfg: Any) -> list[dict[str, Any]]:
        """Weights (decayed), biases and norms (not decayed), and S's logits, if the model has
        them, with their own lr factor (``s_lr_mult``); ``s_frozen`` keeps S at its init (the
        logits then need no gradient)."""
        logits = getattr(model, "importance_logits", None)
        decay, no_decay = [], []
        for p in model.parameters():
            if p is logits or not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [
            {"name": "weights", "params": decay, "lr_mult": 1.0, "weight_decay": cfg.weight_decay},
            {"name": "bias_norm", "params": no_decay, "lr_mult": 1.0, "weight_decay": 0.0,
             "lars_exclude": True},
        ]  # fmt: skip
        if logits is not None and cfg.s_frozen:
            logits.requires_grad_(False)  # the official code's S: no gradient, no optimizer
        elif logits is not None:
            groups.append(
                {"name": "importance", "params": [logits], "lr_mult": cfg.s_lr_mult,
                 "weight_decay": 0.0, "lars_exclude": True}
            )  # fmt: skip
        return groups

    def end_of_training(self, model: nn.Module, pairs: PairSource) -> None:
        """Runs once after the last epoch's steps, before its checkpoint; nothing here."""

    def train_stats(self, model: nn.Module) -> dict[str, float]:
        """What an epoch's metrics row records of the model: S's range and spread, and the
        temperature of a model that learns it (``logit_scale``)."""
        scale = getattr(model, "logit_scale", None)
        out = {} if scale is None else {"temperature": math.exp(-scale.item())}
        s = model.importance()
        if s is None:
            return out
        s = s.detach().float()
        return out | {
            "s_min": s.min().item(),
            "s_max": s.max().item(),
            "s_mean": s.mean().item(),
            "s_std": s.std().item(),
        }


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Adds ``method`` to :data:`METHODS` (names are unique), keeping :data:`METHODS` in rank
    order."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice; pick another name")
    items = sorted([*METHODS.values(), method], key=lambda m: m.rank)
    METHODS.clear()
    METHODS.update((m.name, m) for m in items)
    return method


def get_method(name: str) -> Method:
    """The method called ``name``.

    Raises:
        MethodError: no such method.
    """
    method = METHODS.get(name)
    if method is None:
        raise MethodError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return method
