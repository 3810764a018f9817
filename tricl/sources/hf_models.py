"""``hf:DIR``: a folder written by transformers' ``save_pretrained`` (ViT, DINOv2, CLIP, ...).

The folder's ``config.json`` (and ``preprocessor_config.json``, the image processor's resize, crop
and mean/std) are copied into the run, so the encoder is rebuilt offline from the run alone. A CLIP
folder gives its vision tower with the projection (the image embedding zero-shot uses).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.io import first_line
from tricl.sources.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    Source,
    SourceError,
    register_source,
)
from tricl.sources.files import Match

if TYPE_CHECKING:
    from torch import Tensor, nn

    from tricl.sources.files import Match

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# model types whose pooler_output is the image's vector (the others: the CLS token, or pooled maps)
POOLED_TYPES = ("clip_vision_model", "siglip_vision_model", "dinov2")
# PIL resampling codes the image processors record
RESAMPLE = {2: "bilinear", 3: "bicubic"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SourceError(
            f"{path} is unreadable ({first_line(exc)}); pass a folder written by transformers'"
            " save_pretrained"
        ) from None
    if not isinstance(data, dict):
        raise SourceError(f"{path} is not a JSON object; pass a save_pretrained folder")
    return data


def _without_pooler(model: nn.Module) -> nn.Module:
    """ViT's pooler is a classification pre-head; the CLS token is read instead, so it goes."""
    if getattr(model, "pooler", None) is not None and model.config.model_type not in POOLED_TYPES:
        model.pooler = None
    return model


class HFSource(Source):
    name = "hf"

    def default_weights(self, arg: str) -> Path | None:
        return next((Path(arg) / f for f in WEIGHT_FILES if (Path(arg) / f).is_file()), None)

    def describe(self, arg: str, weights: Path) -> dict[str, Any]:
        folder = Path(arg)
        if not (folder / "config.json").is_file():
            raise SourceError(
                f"{folder} has no config.json; pass a folder written by transformers'"
                " save_pretrained (hf:DIR)"
            )
        config = _read_json(folder / "config.json")
        if "model_type" not in config:
            raise SourceError(f"{folder / 'config.json'} names no model_type; re-save the model")
        processor = folder / "preprocessor_config.json"
        return {
            "name": folder.resolve().name,
            "config": config,
            "processor": _read_json(processor) if processor.is_file() else None,
        }

    def build(self, arch: dict[str, Any]) -> nn.Module:
        import transformers

        config = dict(arch["config"])
        kind = config["model_type"]
        try:
            if kind == "clip":  # the image tower and its projection of a CLIPModel
                vision = dict(config["vision_config"])
                vision.setdefault("projection_dim", config.get("projection_dim", 512))
                cfg = transformers.CLIPVisionConfig.from_dict(vision)
                return transformers.CLIPVisionModelWithProjection(cfg)
            cfg = transformers.CONFIG_MAPPING[kind].from_dict(config)
            return _without_pooler(transformers.AutoModel.from_config(cfg))
        except (KeyError, ValueError, TypeError) as exc:
            raise SourceError(
                f"transformers cannot build a {kind!r} model from this config.json"
                f" ({first_line(exc)}); pass a ViT, DINOv2 or CLIP folder"
            ) from None

    def load(
        self, arch: dict[str, Any], path: Path, prefix: str | None, spec: str
    ) -> tuple[nn.Module, Match, dict[str, Tensor]]:
        """transformers' own loading (its key conversions), local files only, no remote code:
        safetensors, or a .bin read with weights_only."""
        import torch
        import transformers

        if path.name not in WEIGHT_FILES:
            raise SourceError(
                f"hf:DIR reads the folder's own {' or '.join(WEIGHT_FILES)}, not {path.name}; save"
                " the model with save_pretrained into DIR and drop --weights"
            )
        kind = arch["config"]["model_type"]
        cls = (
            transformers.CLIPVisionModelWithProjection if kind == "clip" else transformers.AutoModel
        )
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its load report: ours is one line
        transformers.logging.disable_progress_bar()
        try:
            model, info = cls.from_pretrained(
                path.parent,
                local_files_only=True,
                trust_remote_code=False,
                output_loading_info=True,
                dtype=torch.float32,
            )
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise SourceError(
                f"transformers cannot load {path} ({first_line(exc)}); pass a folder written by"
                " save_pretrained of a ViT, DINOv2 or CLIP model"
            ) from None
        finally:
            transformers.logging.set_verbosity(verbosity)
            transformers.logging.enable_progress_bar()
        missing = [k for k in info.get("missing_keys", ()) if not k.startswith("pooler.")]
        if missing or info.get("mismatched_keys"):
            wrong = missing or [str(m) for m in info["mismatched_keys"]]
            raise SourceError(
                f"{path} does not fit its config.json ({len(wrong)} tensors missing or of another"
                f" shape, e.g. {wrong[0]}); save the model and its config together again"
            )
        model = _without_pooler(model) if kind != "clip" else model
        tensors = model.state_dict()
        unexpected = sorted(str(k) for k in info.get("unexpected_keys", ()))
        return model, Match("", dict(tensors), unexpected, 0), {}

    def features(self, model: nn.Module, x: Tensor) -> Any:
        out = model(pixel_values=x)
        if getattr(out, "image_embeds", None) is not None:
            return out.image_embeds  # (B, projection_dim)
        hidden = out.last_hidden_state
        if model.config.model_type in POOLED_TYPES or hidden.ndim != 3:
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else hidden
        return hidden[:, 0]  # (B, T, D) -> the CLS token (B, D), after the final norm

    def preprocess(self, arch: dict[str, Any], model: nn.Module) -> Preprocess:
        proc = arch.get("processor") or {}
        image = int(getattr(model.config, "image_size", 224) or 224)
        size_cfg = proc.get("size") or {}
        crop_cfg = proc.get("crop_size") or {}
        if isinstance(size_cfg, int):
            size_cfg = {"shortest_edge": size_cfg}
        if isinstance(crop_cfg, int):
            crop_cfg = {"height": crop_cfg}
        crop = int(crop_cfg.get("height") or image) if proc.get("do_center_crop") else None
        if "shortest_edge" in size_cfg:
            resize = int(size_cfg["shortest_edge"])
            mode, size = "shortest", crop or resize
        else:
            size = int(size_cfg.get("height") or image)
            mode, resize = "squash", size
        return Preprocess(
            size=size,
            resize=max(resize, size),
            mode=mode,
            interpolation=RESAMPLE.get(proc.get("resample"), "bilinear"),
            mean=tuple(float(v) for v in proc.get("image_mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in proc.get("image_std", IMAGENET_STD)),
            origin="preprocessor_config.json" if proc else "no image processor: ImageNet mean/std",
        )


register_source(HFSource())
