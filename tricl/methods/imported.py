"""Imported: an encoder made elsewhere (torchvision, timm, Hugging Face, open_clip), opened with
``tricl import SOURCE --weights FILE``; it has no loss and is never trained here.

Its run's ``backbone`` is the source spec (``timm:resnet50``) and its ``source`` option the record
that rebuilds the module offline (:func:`tricl.sources.rebuild`): architecture, layer read, the
model's preprocessing, widths, projector layout, and the weights file's name and SHA-256. Without
S, its features are ranked by variance (or ablation), as SimCLR's are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tricl.methods.base import Method, MethodError, register_method


@dataclass(frozen=True)
class SourceOptions:
    """Where an imported encoder comes from (written by ``tricl import``, not a flag)."""

    source: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "the record of an imported encoder (tricl.sources.open_weights)",
            "cli": False,
        },
    )


class Imported(Method):
    name = "imported"
    label = "Imported"
    color = "#8C564B"
    description = "an encoder made elsewhere, opened with tricl import (not trained here)"
    trainable = False
    options = (SourceOptions,)
    terms = ()
    rank = 90

    def build_encoder(self, cfg: Any, in_channels: int, aligned_dim: int = 0) -> Any:
        """The imported encoder rebuilt from ``cfg.backbone`` and ``cfg.source`` (any channels:
        it converts grey images itself)."""
        from tricl.sources import rebuild

        enc = rebuild(cfg.backbone, cfg.source)
        if aligned_dim > 0:
            enc.align(aligned_dim)
        return enc

    def build_loss(self, cfg: Any) -> Any:
        raise MethodError(
            "method 'imported' is an encoder opened with tricl import and has no loss; train"
            " with a training method (e.g. --method simclr)"
        )


register_method(Imported())
