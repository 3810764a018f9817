"""Importing checkpoints of the official triCL code or solo-learn (``tricl import``).

A foreign checkpoint is loaded with ``weights_only=True``: the globals it names (hyper-parameter
containers, or anything malicious) are bound to inert stand-ins, so loading never runs code. Its
tensors become a run directory made by :func:`tricl.runs.create_run_dir`, the one writer of the
run format.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.config import RunConfig
from tricl.io import first_line
from tricl.runs import (
    METRICS_FILE,
    WEIGHTS_FILE,
    WEIGHTS_FORMAT,
    Run,
    RunError,
    check_run_name,
    check_runs_root,
    create_run_dir,
    default_runs_root,
    ensure_new_run,
    weights_to_bytes,
)

if TYPE_CHECKING:
    import torch


def load_foreign_checkpoint(path: Path) -> dict[str, Any]:
    """Load a Lightning / solo-learn checkpoint with ``weights_only=True``.

    Globals outside torch's allowlist (hyper-parameter containers, or anything malicious) are bound
    to inert stand-ins (:func:`tricl.sources.files.load_inert`), so their code never runs; only
    tensors are used afterwards.
    """
    from tricl.sources.files import NeedsCode, load_inert

    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; check the path")
    try:
        ckpt = load_inert(path)
    except NeedsCode as exc:
        raise RunError(
            f"{path} was refused: it references {exc}, which could execute"
            " code, and tricl never runs code from a checkpoint; re-export it with torch.save"
        ) from None
    except Exception as exc:
        raise RunError(
            f"{path} is not a readable PyTorch checkpoint ({first_line(exc)}); pass a solo-learn"
            " / triCL .ckpt file saved by torch.save"
        ) from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        return ckpt
    if isinstance(ckpt, dict) and any(str(k).startswith("backbone.") for k in ckpt):
        return {"state_dict": ckpt}
    raise RunError(
        f"{path} holds no state_dict with backbone.* weights; export the Lightning"
        " checkpoint of a solo-learn / triCL pretraining run"
    )


def _hyper(ckpt: dict[str, Any], key: str) -> Any:
    """A value from the checkpoint's hyper-parameters when they are plain dicts, else None."""
    hp = ckpt.get("hyper_parameters")
    if isinstance(hp, dict):
        if key in hp and isinstance(hp[key], int | float):
            return hp[key]
        mk = hp.get("method_kwargs")
        if isinstance(mk, dict) and isinstance(mk.get(key), int | float):
            return mk[key]
    return None


def _split_foreign(path: Path, sd: dict[str, torch.Tensor]) -> tuple[dict, dict, str]:
    """The backbone's and the projector's tensors of a foreign state dict, and the backbone name."""
    backbone_sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    proj_sd = {k: v for k, v in sd.items() if k.startswith("projector.")}
    conv1 = backbone_sd.get("conv1.weight")
    if conv1 is None or not proj_sd:
        raise RunError(
            f"{path} lacks backbone.conv1.weight or projector.* weights; only ResNet"
            " checkpoints of solo-learn / triCL with a projector can be imported"
        )
    deep = any(k.startswith("layer1.0.conv3") for k in backbone_sd)
    cifar_stem = conv1.shape[-1] == 3
    if deep and cifar_stem:
        raise RunError(
            f"{path} is a ResNet-50 with a CIFAR stem, which tricl has no backbone for;"
            " use a ResNet-18 CIFAR or an ImageNet-stem checkpoint"
        )
    backbone = "resnet50" if deep else ("resnet18_cifar" if cifar_stem else "resnet18")
    return backbone_sd, proj_sd, backbone


def _foreign_encoder(path: Path, cfg: RunConfig, sd: dict[str, torch.Tensor]):
    """Our Encoder holding a foreign checkpoint's backbone, projector and S (strictly loaded)."""
    from tricl.methods import build_encoder

    backbone_sd, proj_sd, _ = _split_foreign(path, sd)
    linears = sorted(k for k, v in proj_sd.items() if k.endswith(".weight") and v.ndim == 2)
    enc = build_encoder(cfg, in_channels=int(backbone_sd["conv1.weight"].shape[1]))
    state = {f"backbone.{k}": v for k, v in backbone_sd.items() if not k.startswith("fc.")}
    if cfg.proj_batchnorm:  # solo-learn: Linear, BN, ReLU, Linear -> our indices match
        state.update(proj_sd)
    else:  # Linear, ReLU, Linear
        state.update(
            {
                f"projector.{i}.{k.split('.', 2)[2]}": v
                for i, key in ((0, linears[0]), (2, linears[-1]))
                for k, v in proj_sd.items()
                if k.startswith(key.rsplit(".", 1)[0] + ".")
            }
        )
    if enc.importance_logits is not None:
        if "scale_param" not in sd:
            raise RunError(
                f"--method {cfg.method} needs S, but {path} has no scale_param; use"
                " --method simclr or spectral"
            )
        state["importance_logits"] = sd["scale_param"]
    try:
        enc.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RunError(
            f"{path} does not fit a {cfg.backbone} encoder ({first_line(exc)}); it is not a"
            " supported layout"
        ) from None
    return enc


def import_checkpoint(
    path: str | Path,
    *,
    runs_root: str | Path | None = None,
    dataset: str = "cifar10",
    method: str | None = None,
    name: str = "",
) -> Run:
    """Turn a solo-learn / official triCL checkpoint into a run directory.

    Backbone (ResNet-18/50, CIFAR stem or not), projector widths (with or without batch norm) and
    input channels are read from the tensor shapes; ``scale_param`` becomes S's logits. The run
    records the official code's behaviour: S on the first view's rows, S frozen.
    """
    path = Path(path)
    root = Path(runs_root) if runs_root is not None else default_runs_root()
    check_runs_root(root)
    run_name = check_run_name(name or path.stem)
    ensure_new_run(root / run_name, "pass --name to import under another name")
    ckpt = load_foreign_checkpoint(path)
    import torch

    sd = {str(k): v for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
    backbone_sd, proj_sd, backbone = _split_foreign(path, sd)
    linears = sorted(k for k, v in proj_sd.items() if k.endswith(".weight") and v.ndim == 2)
    epoch = ckpt.get("epoch")
    cfg = RunConfig(
        method=method or ("tricl" if "scale_param" in sd else "simclr"),
        dataset=dataset,
        backbone=backbone,
        proj_hidden_dim=int(proj_sd[linears[0]].shape[0]),
        proj_dim=int(proj_sd[linears[-1]].shape[0]),
        proj_batchnorm=any(k.endswith("running_mean") for k in proj_sd),
        epochs=epoch + 1 if isinstance(epoch, int) and epoch >= 0 else 1,
        temperature=float(_hyper(ckpt, "temperature") or 0.2),
        tau=float(_hyper(ckpt, "tau") or 1.0),
        s_placement="first_view",
        s_frozen=True,
        name=name or path.stem,
        extra={"imported_from": str(path)},
    )
    enc = _foreign_encoder(path, cfg, sd)
    meta = {"epoch": str(cfg.epochs), "format": WEIGHTS_FORMAT, "imported": "1"}
    in_channels = int(backbone_sd["conv1.weight"].shape[1])
    run_dir = create_run_dir(
        root,
        cfg,
        {"in_channels": in_channels, "image_size": 0, "classes": []},
        name=cfg.name,
        info={"imported_from": str(path)},
        files={WEIGHTS_FILE: weights_to_bytes(enc.state_dict(), meta), METRICS_FILE: b""},
    )
    return Run.load(run_dir)


def _default_name(source: str, arch: dict[str, Any]) -> str:
    """``timm_resnet50``: the source and the architecture's name, as one folder name."""
    raw = f"{source}_{arch.get('name', 'encoder')}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw).strip(".-") or source


def import_encoder(
    spec: str,
    weights: str | Path | None = None,
    *,
    layer: str = "",
    prefix: str | None = None,
    runs_root: str | Path | None = None,
    dataset: str = "cifar10",
    name: str = "",
) -> Run:
    """Turn an encoder made elsewhere into a run directory (``tricl import SOURCE --weights F``).

    The weights are read without executing code (:mod:`tricl.sources.files`), matched to the
    source's architecture (prefix detected or ``prefix``), read at ``layer`` and written with the
    record that rebuilds the encoder offline: ``config.json``'s ``source`` holds the architecture
    (a library's model config copied in), the layer, the model's preprocessing, the widths, and the
    weights file's path and SHA-256. Every check runs before anything is written.

    Args:
        spec: ``SOURCE:ARG`` (see :data:`tricl.catalog.SOURCE_INFO`).
        weights: the weights file (``hf:DIR``: defaults to the folder's own).
        layer: ``""`` (the pooled backbone output), ``"projector"``, or a module name.
        prefix: the backbone's key prefix in the file (default: detected).
        runs_root: where the run goes (default ``$TRICL_RUNS`` or ``./runs``).
        dataset: the images it is analysed on by default (any size or channel count). A caption
            dataset (``mnist5k-captions``, ``captions:PATH.csv``) imports the checkpoint's text
            side too (open_clip: text tower, logit scale, its tokenizer): an image-text run that
            the caption analysis, zero-shot and the pair basis read.
        name: the run folder's name (default ``SOURCE_ARCH``).

    Raises:
        RunError: one line naming the problem and the fix.
    """
    from tricl.catalog import dataset_pair, parse_dataset
    from tricl.sources import SourceError, open_weights, parse_spec

    root = Path(runs_root) if runs_root is not None else default_runs_root()
    check_runs_root(root)
    if name:
        check_run_name(name)
    captions = dataset_pair(parse_dataset(dataset)[0]) == "caption"
    try:
        source, _ = parse_spec(spec)
        enc, record = open_weights(
            spec,
            Path(weights) if weights is not None else None,
            layer=layer,
            prefix=prefix,
            text=captions,
        )
    except SourceError as exc:
        raise RunError(str(exc)) from None
    run_name = check_run_name(name or _default_name(source.name, record["arch"]))
    ensure_new_run(root / run_name, "pass --name to import under another name")
    cfg = RunConfig(
        method="imported",
        dataset=dataset,
        backbone=f"{source.name}:{record['arch']['name']}",
        proj_hidden_dim=int(record["feat_dim"]),
        proj_dim=int(enc.out_dim),
        epochs=1,
        name=run_name,
        source=record,
    )
    meta = {"epoch": "1", "format": WEIGHTS_FORMAT, "imported": "1"}
    run_dir = create_run_dir(
        root,
        cfg,
        {"in_channels": 3, "image_size": 0, "classes": []},
        name=run_name,
        info={"imported_from": record["weights"]["file"], "import_report": record["report"]},
        files={WEIGHTS_FILE: weights_to_bytes(enc.state_dict(), meta), METRICS_FILE: b""},
    )
    return Run.load(run_dir)
