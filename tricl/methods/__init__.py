"""The training methods, one file each (solo-learn's shape), and what is derived from them.

Every module of this package that defines a method registers it (:func:`register_method`); this
package imports them all, so a new method is its file (and its test) and nothing else: the
``--method`` choices, its ``tricl train`` flags (its option dataclasses, merged into
:class:`tricl.config.RunConfig`), chart labels and colours, study arms, the importance order and
the parametrized tests derive from :data:`METHODS`.

This package is light on purpose (no torch at import time): the dashboard reads labels and colours
from it before it needs a model; torch is imported when a method builds a model or a loss.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from tricl.methods.base import (
    FEATURE_ORDERS,
    METHODS,
    PAIRS,
    UNKNOWN_COLOR,
    Method,
    MethodError,
    get_method,
    register_method,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "FEATURE_ORDERS",
    "METHODS",
    "PAIRS",
    "UNKNOWN_COLOR",
    "Method",
    "MethodError",
    "build_encoder",
    "build_loss",
    "build_model",
    "get_method",
    "method_color",
    "method_label",
    "method_order",
    "methods_with_pair",
    "option_groups",
    "register_method",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def methods_with_pair(pair: str) -> list[str]:
    """The registered training methods whose pair is ``pair`` (a key of :data:`PAIRS`), in order
    (an imported encoder is not one: it trains on nothing here)."""
    return [name for name, m in METHODS.items() if m.pair == pair and m.trainable]


def method_label(name: str) -> str:
    """The method's display label (the name itself for a method this version does not know)."""
    method = METHODS.get(name)
    return method.label if method is not None else name


def method_color(name: str) -> str:
    """The method's chart colour (grey for a method this version does not know)."""
    method = METHODS.get(name)
    return method.color if method is not None else UNKNOWN_COLOR


def method_order(name: str, has_s: bool) -> str:
    """The default importance order of a method's features (a key of :data:`FEATURE_ORDERS`);
    for a method this version does not know, ``"S"`` if its run has S, else ``"variance"``."""
    method = METHODS.get(name)
    if method is not None:
        return method.order
    return "S" if has_s else "variance"


def option_groups() -> list[type]:
    """Every registered method's option dataclasses, each once, in method order.

    Raises:
        ValueError: two groups declare the same field name.
    """
    groups: list[type] = []
    owner: dict[str, type] = {}
    for method in METHODS.values():
        for group in method.options:
            if group in groups:
                continue
            for f in dataclasses.fields(group):
                if f.name in owner:
                    raise ValueError(
                        f"option {f.name!r} of {group.__name__} is also declared by"
                        f" {owner[f.name].__name__}; give it the method's prefix"
                    )
                owner[f.name] = group
            groups.append(group)
    return groups


def build_encoder(cfg: Any, in_channels: int, aligned_dim: int = 0) -> nn.Module:
    """The image :class:`~tricl.models.Encoder` of a run's config (``cfg.method``'s parts).

    Args:
        cfg: a :class:`tricl.config.RunConfig`.
        in_channels: image channels of the dataset.
        aligned_dim: > 0 adds the fixed aligner of an aligned run (``Run.aligned_dim``).
    """
    return get_method(cfg.method).build_encoder(cfg, in_channels, aligned_dim)


def build_model(cfg: Any, in_channels: int, **context: Any) -> nn.Module:
    """The modules ``cfg.method`` trains (caption methods take ``text_config``)."""
    return get_method(cfg.method).build_model(cfg, in_channels, **context)


def build_loss(cfg: Any) -> Any:
    """The loss of ``cfg.method`` with ``cfg``'s hyperparameters, built and validated once:
    ``loss_fn(z1, z2, importance) -> LossTerms`` (caption methods also take ``logit_scale``)."""
    return get_method(cfg.method).build_loss(cfg)
