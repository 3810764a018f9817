"""``open_clip:MODEL_NAME``: a checkpoint of an open_clip model (``model.state_dict()``, or its
training checkpoint); the image tower is imported, its output the image embedding.

``MODEL_NAME`` is one of ``open_clip.list_models()`` or a model-config JSON file in open_clip's
format; the config is copied into the run, so the tower is rebuilt offline. The text tower is
recorded (its tensor count and context length) but not imported: the caption pages need tricl's
own text encoder and tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.io import first_line
from tricl.sources.base import Preprocess, Source, SourceError, register_source

if TYPE_CHECKING:
    from torch import Tensor, nn


def _model_config(arg: str) -> dict[str, Any]:
    import open_clip

    if arg.endswith(".json"):
        try:
            cfg = json.loads(Path(arg).read_text())
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"open_clip model config {arg} is unreadable ({first_line(exc)}); pass a model"
                " name from open_clip.list_models() or its JSON config"
            ) from None
        cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else None
    else:
        cfg = open_clip.get_model_config(arg)
    if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "embed_dim" not in cfg:
        raise SourceError(
            f"unknown open_clip model {arg!r}; pass a name from open_clip.list_models() (e.g."
            " ViT-B-32, RN50) or a model-config .json with embed_dim and vision_cfg"
        )
    return cfg


class OpenClipSource(Source):
    name = "open_clip"

    def describe(self, arg: str, weights: Path) -> dict[str, Any]:
        name = Path(arg).stem if arg.endswith(".json") else arg
        return {"name": name, "model_cfg": _model_config(arg)}

    def build(self, arch: dict[str, Any]) -> nn.Module:
        from open_clip.model import _build_vision_tower

        cfg = arch["model_cfg"]
        vision = dict(cfg["vision_cfg"])
        if "timm_model_name" in vision:
            vision["timm_model_pretrained"] = False  # never download
        return _build_vision_tower(cfg["embed_dim"], vision, bool(cfg.get("quick_gelu", False)))

    def preprocess(self, arch: dict[str, Any], model: nn.Module) -> Preprocess:
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        cfg = arch["model_cfg"]
        pp = merge_preprocess_dict(PreprocessCfg(), cfg.get("preprocess_cfg", {}))
        size = cfg["vision_cfg"].get("image_size", pp["size"])
        size = int(size[0] if isinstance(size, list | tuple) else size)
        return Preprocess(
            size=size,
            resize=size,  # open_clip: shorter side to the size, then the centre crop
            mode="squash" if pp["resize_mode"] == "squash" else "shortest",
            interpolation="bicubic" if pp["interpolation"] == "bicubic" else "bilinear",
            mean=tuple(float(v) for v in pp["mean"]),
            std=tuple(float(v) for v in pp["std"]),
            origin=f"open_clip preprocess cfg of {arch['name']}",
        )

    def extra_record(self, tensors: dict[str, Tensor]) -> dict[str, Any]:
        text = [k for k in tensors if ".visual." not in f".{k}" and "logit_scale" not in k]
        if not text:
            return {}
        return {"text_tower": {"tensors": len(text), "imported": False}}


register_source(OpenClipSource())
