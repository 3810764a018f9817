"""Encoders made elsewhere, opened as tricl encoders: one file per source (torchvision, timm,
Hugging Face, open_clip), registered like the methods.

:func:`open_weights` is the import: it reads a weights file safely, builds the source's model,
matches the tensors (prefix detected or given, a one-line report), checks the layer and measures
its width on a probe batch, and returns the encoder with the record a run keeps
(``RunConfig.source``). :func:`rebuild` makes the same encoder again from that record alone,
offline; the weights then come from the run's ``model.safetensors``. This package is torch-free
at import, and each source imports its library only when it is used.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.sources.base import (
    SOURCES,
    Preprocess,
    Source,
    SourceError,
    parse_spec,
    register_source,
)

if TYPE_CHECKING:
    from tricl.sources.encoder import ImportedEncoder

__all__ = [
    "SOURCES",
    "Preprocess",
    "Source",
    "SourceError",
    "open_weights",
    "parse_spec",
    "rebuild",
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


def open_weights(
    spec: str, weights: Path | None, *, layer: str = "", prefix: str | None = None
) -> tuple[ImportedEncoder, dict[str, Any]]:
    """Import an encoder: its module with the file's weights, and the record that rebuilds it.

    Args:
        spec: ``SOURCE:ARG`` (``torchvision:resnet50``, ``timm:vit_small_patch16_224``,
            ``hf:./dinov2-small``, ``open_clip:ViT-B-32``).
        weights: the weights file (None: the source's own, e.g. a save_pretrained folder's).
        layer: ``""``/``"backbone"`` (pooled output), ``"projector"`` (the checkpoint's MLP), or a
            module name (read through a forward hook, pooled).
        prefix: the backbone's key prefix in the file (None: detected).

    Returns:
        ``(encoder, record)``: the encoder in eval mode; the record (arch, layer, preprocessing,
        widths, projector layout, weights file, its SHA-256 and the match report).

    Raises:
        SourceError: one line naming the problem and the fix; nothing is written.
    """
    import torch

    from tricl.io import file_sha256
    from tricl.sources.encoder import BACKBONE_LAYER, PROJECTOR_LAYER, ImportedEncoder
    from tricl.sources.files import mlp_spec, mlp_state

    source, arg = parse_spec(spec)
    path = weights if weights is not None else source.default_weights(arg)
    if path is None:
        raise SourceError(f"{spec} needs a weights file; pass --weights FILE")
    path = Path(path)
    arch = source.describe(arg, path)
    model, found, tensors = source.load(arch, path, prefix, spec)
    layer = layer or BACKBONE_LAYER
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
    record = {
        "arch": arch,
        "layer": layer,
        "preprocess": pre.to_dict(),
        "feat_dim": feat_dim,
        "projector": projector,
        "weights": {"file": str(path), "sha256": file_sha256(path), "prefix": found.prefix},
        "report": found.report(path, projector_read=projector is not None),
        **source.extra_record(tensors),
    }
    return enc, record


def _probe_width(enc: ImportedEncoder, pre: Preprocess) -> int:
    """The width of the layer's pooled output on a batch of two random images."""
    import torch

    enc.eval()
    with torch.no_grad():
        h = enc.forward_features(torch.rand(2, 3, pre.size, pre.size))  # (2, feat_dim)
    return int(h.shape[1])
