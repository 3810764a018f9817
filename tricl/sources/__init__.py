"""Encoders made elsewhere, opened as tricl encoders: one file per source (torchvision, timm,
Hugging Face, open_clip), registered like the methods.

:func:`open_weights` is the import: it reads a weights file safely, builds the source's model,
matches the tensors (prefix detected or given, a one-line report), checks the layer and measures
its width on a probe batch, and returns the encoder with the record a run keeps
(``RunConfig.source``). :func:`rebuild` makes the same encoder again from that record alone,
offline; the weights then come from the run's ``model.safetensors``. With ``text=True`` (an
import on a caption dataset) the checkpoint's text side comes too: the image and text encoders
and the logit scale as one :class:`~tricl.text.model.ImageTextModel`, laid out as a clip run's,
rebuilt by :func:`rebuild_text` and :func:`rebuild_tokenizer`. This package is torch-free at
import, and each source imports its library only when it is used.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.sources.base import (
    SOURCES,
    CheckpointFile,
    Preprocess,
    Source,
    SourceError,
    parse_spec,
    register_source,
)

if TYPE_CHECKING:
    from torch import nn

    from tricl.sources.encoder import ImportedEncoder
    from tricl.sources.files import Match

__all__ = [
    "SOURCES",
    "Preprocess",
    "Source",
    "SourceError",
    "open_weights",
    "parse_spec",
    "rebuild",
    "rebuild_text",
    "rebuild_tokenizer",
    "register_source",
]

for _module in pkgutil.iter_modules(__path__):
    if _module.name.endswith("_models"):  # one file per source; the rest load with torch
        importlib.import_module(f"{__name__}.{_module.name}")

RECORD_KEYS = ("arch", "layer", "preprocess", "feat_dim")


def rebuild(spec: str, record: dict[str, Any]) -> ImportedEncoder:
    """The imported encoder of a run, from its ``backbone`` spec and ``source`` record (random
    weights: the caller loads ``model.safetensors``).

    Raises:
        SourceError: the record is incomplete, or the source's library cannot build it.
    """
    from tricl.sources.encoder import ImportedEncoder

    source, _ = parse_spec(spec)
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise SourceError(
            f"the run's source record lacks {missing}; import the encoder again with tricl import"
        )
    model = source.build(record["arch"])
    return ImportedEncoder(
        source,
        model,
        Preprocess.from_dict(record["preprocess"]),
        str(record["layer"]),
        int(record["feat_dim"]),
        record.get("projector"),
    )


def _text_record(spec: str, record: dict[str, Any]) -> tuple[Source, dict[str, Any]]:
    source, _ = parse_spec(spec)
    text = record.get("text")
    if not isinstance(text, dict) or "arch" not in record:
        raise SourceError(
            "the run's source record has no text side; import the encoder again with tricl"
            " import on a caption dataset"
        )
    return source, text


def rebuild_text(spec: str, record: dict[str, Any]) -> nn.Module:
    """The imported text encoder of an image-text run (random weights: the caller loads the
    run's ``text.`` tensors): token ids (B, L') -> features (B, k).

    Raises:
        SourceError: the record has no text side, or the source's library cannot build it.
    """
    source, text = _text_record(spec, record)
    return source.build_text(record["arch"], text)


def rebuild_tokenizer(spec: str, record: dict[str, Any]) -> Any:
    """The imported run's own tokenizer (e.g. open_clip's), with the interface of
    :class:`~tricl.text.tokenizer.TextTokenizer` the caption analysis uses.

    Raises:
        SourceError: the record has no text side.
    """
    source, text = _text_record(spec, record)
    return source.tokenizer(text)


def open_weights(
    spec: str,
    weights: Path | None,
    *,
    layer: str = "",
    prefix: str | None = None,
    text: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Import an encoder: its module with the file's weights, and the record that rebuilds it.

    Args:
        spec: ``SOURCE:ARG`` (``torchvision:resnet50``, ``timm:vit_small_patch16_224``,
            ``hf:./dinov2-small``, ``open_clip:ViT-B-32``).
        weights: the weights file (None: the source's own, e.g. a save_pretrained folder's).
        layer: ``""``/``"backbone"`` (pooled output), ``"projector"`` (the checkpoint's MLP), or a
            module name (read through a forward hook, pooled).
        prefix: the backbone's key prefix in the file (None: detected).
        text: also import the checkpoint's text side (text encoder, logit scale, the source's
            tokenizer); the image features are then the image embedding (the default layer).

    Returns:
        ``(model, record)``: the encoder in eval mode (with ``text``: an
        :class:`~tricl.text.model.ImageTextModel`); the record (arch, layer, preprocessing,
        widths, projector layout, weights file, its SHA-256, the match report; with ``text`` its
        ``text`` record).

    Raises:
        SourceError: one line naming the problem and the fix; nothing is written.
    """
    from tricl.io import file_sha256
    from tricl.sources.encoder import BACKBONE_LAYER

    source, arg = parse_spec(spec)
    path = weights if weights is not None else source.default_weights(arg)
    if path is None:
        raise SourceError(f"{spec} needs a weights file; pass --weights FILE")
    path = Path(path)
    arch = source.describe(arg, path)
    layer = layer or BACKBONE_LAYER
    text_record = source.describe_text(arch) if text else None
    if text and layer != BACKBONE_LAYER:
        raise SourceError(
            f"--layer {layer} is not the image embedding that the text tower's features share a"
            " space with; drop --layer to import the caption side, or import on an image set"
        )
    model, found, tensors = source.load(arch, path, prefix, spec)
    enc, projector = _image_encoder(source, arch, model, found, layer, path)
    out: nn.Module = enc
    extra = source.extra_record(tensors)
    if text_record is not None:
        file = CheckpointFile(path, tensors, found.prefix)
        out, line = _with_text(source, enc, arch, text_record, file, found)
        extra = {"text": text_record}
    report = found.report(path, projector_read=projector is not None)
    record = {
        "arch": arch,
        "layer": layer,
        "preprocess": enc.input.pre.to_dict(),
        "feat_dim": enc.feat_dim,
        "projector": projector,
        "weights": {"file": str(path), "sha256": file_sha256(path), "prefix": found.prefix},
        "report": report if text_record is None else f"{report}; {line}",
        **extra,
    }
    return out, record


def _image_encoder(
    source: Source, arch: dict[str, Any], model: nn.Module, found: Match, layer: str, path: Path
) -> tuple[ImportedEncoder, list[list[Any]] | None]:
    """The image encoder read at ``layer`` and its projector's layout (None unless that is the
    layer): the source's model and preprocessing, the layer's width measured on a probe batch,
    the checkpoint's projector loaded; its shapes checked on a forward pass."""
    import torch

    from tricl.sources.encoder import PROJECTOR_LAYER, ImportedEncoder
    from tricl.sources.files import mlp_spec, mlp_state

    if layer == PROJECTOR_LAYER and not found.projector:
        raise SourceError(
            f"{path} has no projector (no projector.* / projection_head.* MLP beside the"
            " backbone); drop --layer projector to read the backbone, or name a module"
        )
    projector = mlp_spec(found.projector) if layer == PROJECTOR_LAYER else None
    pre = source.preprocess(arch, model)
    probe = ImportedEncoder(source, model, pre, layer, 1, projector)
    feat_dim = _probe_width(probe, pre)
    enc = ImportedEncoder(source, model, pre, layer, feat_dim, projector)
    if projector is not None:
        first = next(lay for lay in projector if lay[0] == "linear")
        if first[1] != feat_dim:
            raise SourceError(
                f"the projector takes {first[1]} features but the backbone gives {feat_dim};"
                " it belongs to another backbone: drop --layer projector"
            )
        enc.projector.load_state_dict(mlp_state(found.projector, projector), strict=True)
    enc.eval()
    with torch.no_grad():
        enc(torch.rand(2, 3, pre.size, pre.size))  # the projector runs: its shapes fit
    return enc, projector


def _with_text(
    source: Source,
    enc: ImportedEncoder,
    arch: dict[str, Any],
    text: dict[str, Any],
    file: CheckpointFile,
    found: Match,
) -> tuple[nn.Module, str]:
    """The image encoder, the file's text encoder and logit scale as one image-text model, and
    one line on what the text side read; its shapes checked on a probe caption."""
    import torch

    from tricl.text.model import ImageTextModel

    side = source.load_text(arch, text, file)
    if side.tower.out_dim != enc.out_dim:
        raise SourceError(
            f"{file.path}: the text tower gives {side.tower.out_dim} features but the image"
            f" tower {enc.out_dim}; pass the model config the checkpoint was trained with"
        )
    model = ImageTextModel(enc, side.tower.eval())
    with torch.no_grad():
        model.logit_scale.copy_(side.scale)
        ids = source.tokenizer(text).encode(["a photo"]).ids  # (1, L)
        model.text(ids)  # (1, k): the tower reads the tokenizer's ids
    found.outside -= side.used  # the report then counts only what was left out
    return model.eval(), side.line


def _probe_width(enc: ImportedEncoder, pre: Preprocess) -> int:
    """The width of the layer's pooled output on a batch of two random images."""
    import torch

    enc.eval()
    with torch.no_grad():
        h = enc.forward_features(torch.rand(2, 3, pre.size, pre.size))  # (2, feat_dim)
    return int(h.shape[1])
