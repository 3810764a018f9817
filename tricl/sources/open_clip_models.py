"""``open_clip:MODEL_NAME``: a checkpoint of an open_clip model (``model.state_dict()``, or its
training checkpoint); the image tower is imported, its output the image embedding.

``MODEL_NAME`` is one of ``open_clip.list_models()`` or a model-config JSON file in open_clip's
format; the config is copied into the run, so the towers are rebuilt offline. Imported on a
caption dataset, the text tower (``encode_text``), the logit scale and open_clip's own tokenizer
come too and the run is an image-text run (:mod:`tricl.sources.open_clip_text`); on an image set,
the text tower is only counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.io import first_line
from tricl.sources.base import (
    CheckpointFile,
    Preprocess,
    Source,
    SourceError,
    TextSide,
    register_source,
)

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

    def describe_text(self, arch: dict[str, Any]) -> dict[str, Any]:
        from tricl.sources.open_clip_text import TOKENIZER_NAME, OpenClipTokenizer

        name, text_cfg = arch["name"], arch["model_cfg"].get("text_cfg") or {}
        why = ""
        if not text_cfg:
            why = "its model config has no text_cfg"
        elif text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
            hf = text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name")
            why = f"its text side is the Hugging Face model {hf}, which would be downloaded"
        elif "siglip" in name.lower():
            why = "its SigLIP tokenizer would be downloaded"
        if why:
            raise SourceError(
                f"open_clip model {name}: {why}; tricl imports the text side of CLIP-BPE models"
                " only: import it on an image set (e.g. --dataset mnist5k) for its image tower"
            )
        context = int(text_cfg.get("context_length", 77))
        kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
        tokenizer = OpenClipTokenizer(context, kwargs)  # its vocabulary ships with open_clip
        vocab = int(text_cfg.get("vocab_size", 49408))
        if vocab < tokenizer.vocab_size:
            raise SourceError(
                f"open_clip model {name}: its text tower has {vocab} token rows but open_clip's"
                f" tokenizer has {tokenizer.vocab_size} tokens; pass the model config the"
                " checkpoint was trained with, or import it on an image set (--dataset mnist5k)"
            )
        return {
            "tokenizer": TOKENIZER_NAME,
            "context_length": context,
            "tokenizer_kwargs": kwargs,
            "vocab_size": tokenizer.vocab_size,
        }

    def build_text(self, arch: dict[str, Any], text: dict[str, Any]) -> nn.Module:
        from tricl.sources.open_clip_text import build_text_tower

        return build_text_tower(arch["model_cfg"])

    def tokenizer(self, text: dict[str, Any]) -> Any:
        from tricl.sources.open_clip_text import OpenClipTokenizer

        return OpenClipTokenizer(int(text["context_length"]), text.get("tokenizer_kwargs"))

    def load_text(
        self, arch: dict[str, Any], text: dict[str, Any], file: CheckpointFile
    ) -> TextSide:
        from tricl.sources.open_clip_text import default_logit_scale, text_tensors

        module = self.build_text(arch, text)
        prefix, found, scale = text_tensors(file.tensors, file.prefix)
        path = file.path
        want = module.tower.state_dict()
        missing = sorted(set(want) - set(found))
        fix = "pass the whole open_clip checkpoint, or import it on an image set"
        fix += " (--dataset mnist5k)"
        if len(missing) == len(want):
            raise SourceError(f"{path} holds no text tower, only the image tower; {fix}")
        if missing:
            raise SourceError(
                f"{path} lacks {len(missing)} of the {len(want)} tensors of {arch['name']}'s"
                f" text tower (e.g. {', '.join(missing[:3])}); {fix}"
            )
        bad = sorted(k for k in want if found[k].shape != want[k].shape)
        if bad:
            raise SourceError(
                f"{path} does not fit {arch['name']}'s text tower: {bad[0]} has shape"
                f" {tuple(found[bad[0]].shape)}, the model {tuple(want[bad[0]].shape)}; pass the"
                " model config the checkpoint was trained with"
            )
        module.tower.load_state_dict({k: found[k] for k in want}, strict=True)
        where = f"under {prefix!r}" if prefix else "at the top level"
        line = f"its text tower ({len(want)} tensors {where}) and open_clip's tokenizer read"
        used = len(want) + (scale is not None)
        if scale is None:
            scale = default_logit_scale()
            line += "; no logit_scale in the file: open_clip's initial 1/0.07 used"
        return TextSide(module, scale.detach().float().reshape(()), used, line)

    def extra_record(self, tensors: dict[str, Tensor]) -> dict[str, Any]:
        text = [k for k in tensors if ".visual." not in f".{k}" and "logit_scale" not in k]
        if not text:
            return {}
        return {"text_tower": {"tensors": len(text), "imported": False}}


register_source(OpenClipSource())
