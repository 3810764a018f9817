"""``tricl import``: a solo-learn / official triCL checkpoint, or an encoder made elsewhere
(``SOURCE:ARG --weights FILE``: torchvision, timm, Hugging Face, open_clip), as a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

_EPILOG = (
    "examples: tricl import torchvision:resnet50 --weights simclr_r50.pth --dataset folder:./pets |"
    " tricl import timm:vit_small_patch16_224 --weights model.safetensors |"
    " tricl import hf:./dinov2-small | tricl import open_clip:ViT-B-32 --weights clip.pt |"
    " tricl import torchvision:resnet18 --weights lightly.ckpt --layer projector |"
    " tricl import solo_simclr.ckpt --dataset cifar10"
)


def add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="open an encoder made elsewhere (torchvision, timm, Hugging Face, open_clip,"
        " solo-learn, lightly) as a run directory",
        description="Turn an encoder made elsewhere into a run directory that every analysis,"
        " comparison and dashboard page reads: SOURCE:ARG --weights FILE (torchvision:ARCH,"
        " timm:MODEL_NAME, hf:DIR, open_clip:MODEL_NAME; a Lightning / lightly checkpoint with"
        " the architecture it holds), or a solo-learn / official triCL .ckpt alone. Files are read"
        " as safetensors or with weights_only loading: they never execute code. The run records"
        " the source, the layer, the model's own preprocessing and the weights file's SHA-256.",
        epilog=_EPILOG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="SOURCE:ARG (e.g. torchvision:resnet50, timm:resnet50, hf:DIR, open_clip:ViT-B-32)"
        " with --weights; or the path of a solo-learn / triCL .ckpt",
    )
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="the encoder's weights (.safetensors, .pth, .bin, .ckpt); hf:DIR defaults to the"
        " folder's own model.safetensors",
    )
    p.add_argument(
        "--layer",
        default="",
        help="features read: '' (the pooled backbone output, recommended), 'projector' (the"
        " checkpoint's projection MLP, the features its loss saw), or a module name such as"
        " layer4 or blocks.11 (pooled over space or tokens)",
    )
    p.add_argument(
        "--prefix",
        default=None,
        help="the backbone's key prefix in the file (e.g. backbone.); default: detected",
    )
    p.add_argument(
        "--dataset",
        default="cifar10",
        help="the images it is analysed on (any size: the model's preprocessing resizes them)",
    )
    p.add_argument(
        "--method",
        default=None,
        help="solo-learn / triCL only: method to record (default: tricl if the checkpoint has"
        " scale_param, else simclr)",
    )
    p.add_argument("--name", default="", help="run folder name (default: from the file or model)")
    p.add_argument(
        "--runs-root",
        type=Path,
        default=None,
        help="folder of runs (default: $TRICL_RUNS or ./runs)",
    )
    p.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from tricl.catalog import parse_source
    from tricl.foreign import import_checkpoint, import_encoder
    from tricl.runs import RunError

    if parse_source(args.source) is None:
        if args.weights is not None or args.layer or args.prefix is not None:
            raise RunError(
                f"{args.source!r} is not SOURCE:ARG (torchvision:, timm:, hf:, open_clip:);"
                " --weights, --layer and --prefix go with one, e.g. torchvision:resnet50"
            )
        run = import_checkpoint(
            Path(args.source),
            runs_root=args.runs_root,
            dataset=args.dataset,
            method=args.method,
            name=args.name,
        )
        print(
            f"imported {args.source} as {run.path} ({run.config.method},"
            f" {run.config.backbone}, k={run.config.proj_dim})"
        )
        return 0
    run = import_encoder(
        args.source,
        args.weights,
        layer=args.layer,
        prefix=args.prefix,
        runs_root=args.runs_root,
        dataset=args.dataset,
        name=args.name,
    )
    record = run.config.source
    pre = record["preprocess"]
    print(record["report"])
    print(
        f"imported {args.source} as {run.path} (layer {record['layer']}, k={run.config.proj_dim};"
        f" input {pre['size']} px, {pre['origin']}); next: tricl analyze {run.path}"
    )
    return 0
