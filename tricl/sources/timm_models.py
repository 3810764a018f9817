"""``timm:MODEL_NAME``: a timm model's weights (safetensors, .pth or .bin), its preprocessing from
the model's ``pretrained_cfg`` (input size, crop_pct, interpolation, mean/std)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.sources.base import Preprocess, Source, SourceError, register_source

if TYPE_CHECKING:
    from torch import nn


class TimmSource(Source):
    name = "timm"

    def describe(self, arg: str, weights: Path) -> dict[str, Any]:
        import timm

        if not timm.is_model(arg):
            raise SourceError(
                f"unknown timm model {arg!r}; use a name from timm.list_models(), e.g."
                " resnet50, vit_small_patch16_224, convnext_tiny (without a .tag suffix)"
            )
        return {"name": arg}

    def build(self, arch: dict[str, Any]) -> nn.Module:
        import timm

        # num_classes=0: the pooled features, no classifier (timm's own contract)
        return timm.create_model(arch["name"], pretrained=False, num_classes=0)

    def head_keys(self, model: nn.Module) -> tuple[str, ...]:
        head = str(getattr(model, "pretrained_cfg", {}).get("classifier") or "head")
        return (f"{head}.", "head.", "fc.", "classifier.")

    def preprocess(self, arch: dict[str, Any], model: nn.Module) -> Preprocess:
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        size = int(cfg["input_size"][-1])
        crop_pct = float(cfg.get("crop_pct") or 1.0)
        squash = cfg.get("crop_mode") == "squash"
        interpolation = cfg.get("interpolation", "bilinear")
        return Preprocess(
            size=size,
            resize=size if squash else math.floor(size / crop_pct),
            mode="squash" if squash else "shortest",
            interpolation=interpolation if interpolation == "bicubic" else "bilinear",
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            origin=f"timm pretrained_cfg of {arch['name']} (crop_pct {crop_pct})",
        )


register_source(TimmSource())
