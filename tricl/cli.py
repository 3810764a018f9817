"""The ``tricl`` command: ``train | runs | analyze | compare | import``.

Every flag's help says the recommended value and what goes wrong otherwise (DINO style). Errors the
user can fix end the command with one line on stderr and exit status 2; nothing is left
half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tricl.config import RunConfig

_D = RunConfig()


def _add_train(sub: argparse._SubParsersAction) -> None:
    from tricl.data import DATASETS
    from tricl.losses import LOSSES
    from tricl.models import BACKBONES

    p = sub.add_parser(
        "train",
        help="train a SimCLR / triCL encoder and write a run directory",
        description="Train an encoder with a contrastive method and write a run directory"
        " (config.json, model.safetensors, train_state.pt, metrics.jsonl) under --runs-root."
        " On several GPUs: torchrun --nproc_per_node N -m tricl train ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a(
        "--method",
        default=_D.method,
        choices=sorted(LOSSES),
        help="loss: 'tricl' (z^T S z' with learnable diagonal S + decorrelation; the paper),"
        " 'simclr' (NT-Xent baseline), 'spectral' / 'tri-spectral' (spectral contrastive loss"
        " without / with S). Recommended: tricl, and simclr with the same seeds to compare",
    )
    a(
        "--dataset",
        default=_D.dataset,
        help=f"one of {sorted(k for k in DATASETS if k != 'folder')} or folder:PATH (an ImageFolder"
        " tree, with train/ and test/ or split 80/20). mnist5k ships with the install; cifar10,"
        " cifar100 and stl10 download on first use into $TRICL_DATA",
    )
    a(
        "--backbone",
        default=_D.backbone,
        choices=sorted(BACKBONES),
        help="small_cnn for CPU work on 28-32px images; resnet18_cifar for the paper's CIFAR setup"
        " (GPU); resnet18/resnet50 for 64px and larger",
    )
    a(
        "--proj-dim",
        type=int,
        default=_D.proj_dim,
        help="k, the number of features (projector output width). Paper: 256 on CIFAR; 64 is"
        " plenty for digits and keeps the dashboard readable",
    )
    a(
        "--proj-hidden-dim",
        type=int,
        default=_D.proj_hidden_dim,
        help="projector hidden width (paper: 2048 with ResNet-18)",
    )
    a(
        "--proj-batchnorm",
        action="store_true",
        help="add BatchNorm1d to the projector (solo-learn's SimCLR head). Off matches the"
        " official triCL code",
    )
    a(
        "--epochs",
        type=int,
        default=_D.epochs,
        help="training epochs (paper: 200 on CIFAR-10). Fewer than ~10 on mnist5k leaves"
        " features unordered",
    )
    a(
        "--batch-size",
        type=int,
        default=_D.batch_size,
        help="global batch (split over GPUs). Paper: 256. Smaller batches give fewer negatives",
    )
    a(
        "--optimizer",
        default=_D.optimizer,
        choices=["adamw", "sgd", "lars"],
        help="adamw for small CPU runs; lars (lr 0.4) for the paper's ResNet recipe",
    )
    a(
        "--lr",
        type=float,
        default=_D.lr,
        help="peak learning rate after warmup (adamw: 1e-3; lars: 0.4 x batch/256). Too high"
        " makes the loss non-finite",
    )
    a("--weight-decay", type=float, default=_D.weight_decay, help="weight decay (paper: 1e-5)")
    a(
        "--warmup-epochs",
        type=int,
        default=_D.warmup_epochs,
        help="linear warmup before cosine decay (paper: 10 of 200)",
    )
    a(
        "--temperature",
        type=float,
        default=_D.temperature,
        help="softmax temperature (paper: 0.2). Lower sharpens negatives and can diverge",
    )
    a(
        "--tau",
        type=float,
        default=_D.tau,
        help="weight of the decorrelation term (see --decorrelation; paper: 1.0)",
    )
    a(
        "--decorrelation",
        default=_D.decorrelation,
        choices=["mean", "whiten"],
        help="'mean': the paper's mean((Z^T Z/N - I)^2) on unit-norm rows (it cannot reach 0 and"
        " is nearly inert); 'whiten': ||k Z^T Z/N - I||^2 / k, a whitening constraint the"
        " features can meet; with --s-lr-mult 10 it lets a learned S order known latent"
        " factors (docs/RESULTS.md), though not MNIST's near-degenerate classes",
    )
    a(
        "--s-placement",
        default=_D.s_placement,
        choices=["both", "first_view"],
        help="'both': every similarity goes through S (the paper's z^T S z'); 'first_view': S"
        " scales only the first view's rows, as the official code does",
    )
    a(
        "--s-frozen",
        action="store_true",
        help="keep S at its random init, as the official code does (its s never reaches the"
        " optimizer). Off by default: the paper learns S",
    )
    a(
        "--s-param",
        default=_D.s_param,
        choices=["softplus", "softplus_mean1"],
        help="S = softplus(s) (paper), or softplus(s) / mean (decouples S's spread from its"
        " scale, which otherwise acts as an inverse temperature)",
    )
    a("--s-lr-mult", type=float, default=_D.s_lr_mult, help="learning-rate factor for S's logits")
    a(
        "--s-init-std",
        type=float,
        default=_D.s_init_std,
        help="std of S's logits at init (official code: 0.1)",
    )
    a(
        "--s-init",
        default=_D.s_init,
        choices=["random", "geometric"],
        help="S's initial values: 'random' (softplus(0.1*randn), the official code) or"
        " 'geometric' (1 down to 10^-spread: distinct from the start)",
    )
    a(
        "--s-init-spread",
        type=float,
        default=_D.s_init_spread,
        help="decades spanned by a geometric S init (1.0: S from 1 to 0.1)",
    )
    a("--seed", type=int, default=_D.seed, help="seed; a CPU run is repeatable bit for bit")
    a("--device", default=_D.device, help="auto (CUDA if present), cpu, cuda, cuda:1")
    a(
        "--image-size",
        type=int,
        default=_D.image_size,
        help="resize images to this size (0: the dataset's own)",
    )
    a("--name", default="", help="run folder name (default: method_dataset_backbone_kK_seedS)")
    a(
        "--runs-root",
        type=Path,
        default=None,
        help="folder of run directories (default: $TRICL_RUNS or ./checkpoints)",
    )
    a(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN",
        help="continue a killed or unfinished run from its last epoch (other flags ignored);"
        " ends with the same weights as an uninterrupted run",
    )
    a("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from tricl.train import train

    if args.resume is not None:
        run = train(resume=args.resume, progress=not args.no_progress)
    else:
        cfg = RunConfig(
            method=args.method,
            dataset=args.dataset,
            backbone=args.backbone,
            proj_hidden_dim=args.proj_hidden_dim,
            proj_dim=args.proj_dim,
            proj_batchnorm=args.proj_batchnorm,
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup_epochs=args.warmup_epochs,
            s_lr_mult=args.s_lr_mult,
            temperature=args.temperature,
            tau=args.tau,
            decorrelation=args.decorrelation,
            s_init_std=args.s_init_std,
            s_placement=args.s_placement,
            s_frozen=args.s_frozen,
            s_param=args.s_param,
            s_init=args.s_init,
            s_init_spread=args.s_init_spread,
            seed=args.seed,
            device=args.device,
            image_size=args.image_size,
            name=args.name,
        )
        run = train(cfg, runs_root=args.runs_root, progress=not args.no_progress)
    from tricl import distributed

    if distributed.is_main():
        rows = run.metrics()
        loss = f"{rows[-1]['loss']:.4f}" if rows else "n/a"
        print(f"run {run.path} ({run.epochs_done}/{run.config.epochs} epochs, final loss {loss})")
    return 0


def _add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list runs with method, dataset, seed, epochs, final loss",
        description="List the run directories under the runs root.",
    )
    p.add_argument(
        "--runs-root",
        type=Path,
        default=None,
        help="folder of runs (default: $TRICL_RUNS or ./checkpoints)",
    )
    p.set_defaults(func=_cmd_runs)


def _cmd_runs(args: argparse.Namespace) -> int:
    from tricl.runs import BrokenRun, default_runs_root, list_runs

    root = args.runs_root or default_runs_root()
    runs = list_runs(root)
    if not runs:
        print(f"no runs under {root}; train one: tricl train --method tricl --dataset mnist5k")
        return 0
    header = f"{'run':<44} {'method':<12} {'dataset':<12} {'seed':>4} {'epochs':>7} {'loss':>9}"
    print(header)
    for r in runs:
        if isinstance(r, BrokenRun):
            print(f"{r.name:<44} BROKEN: {r.reason}")
            continue
        s = r.summary()
        loss = f"{s['final_loss']:.4f}" if s["final_loss"] is not None else "-"
        print(
            f"{s['run']:<44} {s['method']:<12} {s['dataset'][:12]:<12} {s['seed']:>4}"
            f" {s['epochs']:>7} {loss:>9}"
        )
    return 0


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="compute the dashboard's artifacts for runs (cached in RUN/analysis/)",
        description="Compute features, importance orders, per-feature statistics, top images,"
        " UMAP and few-feature curves for each run; cached, so an unchanged run is instant.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "train"],
        help="evaluation split whose images the features describe",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="evaluate on another dataset than the run's (same image format)",
    )
    p.add_argument("--top-n", type=int, default=32, help="top/bottom images kept per feature")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    _add_basis(p)
    p.add_argument("--force", action="store_true", help="recompute even if cached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_analyze)


def _add_basis(p: argparse.ArgumentParser) -> None:
    from tricl.analysis.pipeline import BASES

    # no argparse choices: a wrong name gets the one-line error of get_basis, not a usage dump
    p.add_argument(
        "--basis",
        default="trained",
        help=f"basis of the features, one of {', '.join(BASES)}: trained = the projector's"
        " outputs in their importance order; spectral = each run's spectral basis (most"
        " augmentation-invariant first; the basis is estimated once per run on train pairs,"
        " about 20 s on a CPU, then cached). Recommended: spectral to compare features across"
        " seeds (the trained axes are not identifiable at this scale)",
    )


def _cmd_analyze(args: argparse.Namespace) -> int:
    from tricl.analysis import analyze

    for run in args.runs:
        a = analyze(
            run,
            split=args.split,
            dataset=args.dataset,
            top_n=args.top_n,
            force=args.force,
            device=args.device,
            progress=not args.no_progress,
            basis=args.basis,
        )
        print(f"{run}: {a.summary()}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from tricl.analysis.metrics import METRICS

    metrics = "; ".join(f"{m.name}: {m.help}" for m in METRICS.values())
    p = sub.add_parser(
        "compare",
        help="identifiability between runs (ordered corr, MCC, CKA, ...)",
        description="Compare runs (e.g. the same config with different seeds), one score per"
        f" metric ({metrics}), and the spectral ones again in each run's spectral basis (features"
        " rotated onto the eigenvectors of the augmentation's positive-pair covariance, estimated"
        " on train pairs; column spectral_<metric>). With --basis spectral every score is taken"
        " in the spectral bases (rank r against rank r) and has its plain column. Stored under"
        " RUNS_ROOT/_compare/.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    p.add_argument("--split", default="test", choices=["test", "train"])
    _add_basis(p)
    p.add_argument("--force", action="store_true", help="recompute even if cached")
    p.add_argument(
        "--no-spectral",
        action="store_true",
        help="skip the spectral-basis scores (they need the model and the train images: about"
        " 20 s per run on a CPU the first time)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per pair (run_a, run_b and every metric by its column name)"
        " instead of the table, for scripts",
    )
    p.add_argument(
        "--consensus",
        action="store_true",
        help="print the consensus table instead of the pairs: for each spectral rank r, the mean"
        " and min |corr| of rank r over every pair of runs, the eigenvalue, top images and name of"
        " the run that agrees best, and in how many runs the rank's order is not identifiable."
        " Always in the spectral basis; pass every seed and method of one dataset",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from tricl.analysis import compare, consensus

    if len(args.runs) < 2:
        print("error: compare needs at least two runs (e.g. two seeds)", file=sys.stderr)
        return 2
    progress = not args.no_progress
    if args.consensus:
        table = consensus(args.runs, split=args.split, force=args.force, progress=progress).table
    else:
        comp = compare(
            args.runs,
            split=args.split,
            force=args.force,
            progress=progress,
            spectral=not args.no_spectral,
            basis=args.basis,
        )
        table = comp.pairs  # its columns follow the registry (spectral_* in the trained basis)
    if args.json:
        for row in table.to_dict(orient="records"):
            print(json.dumps(row))
        return 0
    if args.consensus:  # the first few top images keep the text table readable
        table = table.assign(top_indices=[" ".join(map(str, t[:5])) for t in table["top_indices"]])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="turn a solo-learn / official triCL checkpoint into a run directory",
        description="Convert a PyTorch Lightning checkpoint of solo-learn or the official triCL"
        " code (state_dict with backbone.*, projector.*, scale_param) into a run directory. The"
        " file is read with weights_only loading: it never executes code.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, metavar="PATH.ckpt")
    p.add_argument("--dataset", default="cifar10", help="dataset the encoder was trained on")
    p.add_argument(
        "--method",
        default=None,
        help="method to record (default: tricl if the checkpoint has scale_param, else simclr)",
    )
    p.add_argument("--name", default="", help="run folder name (default: the file's stem)")
    p.add_argument(
        "--runs-root",
        type=Path,
        default=None,
        help="folder of runs (default: $TRICL_RUNS or ./checkpoints)",
    )
    p.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from tricl.runs import import_checkpoint

    run = import_checkpoint(
        args.checkpoint,
        runs_root=args.runs_root,
        dataset=args.dataset,
        method=args.method,
        name=args.name,
    )
    print(
        f"imported {args.checkpoint} as {run.path} ({run.config.method},"
        f" {run.config.backbone}, k={run.config.proj_dim})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tricl",
        description="Train, analyse and compare SimCLR / triCL encoders. Dashboard:"
        " streamlit run app/main.py",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_runs, _add_analyze, _add_compare, _add_import):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tricl`` console script."""
    args = build_parser().parse_args(argv)
    user_errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(
            "interrupted; finished epochs are saved: continue with `tricl train --resume RUN`",
            file=sys.stderr,
        )
        return 130
    except user_errors as exc:
        if not _is_ours(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _is_ours(exc: BaseException) -> bool:
    """Errors raised by tricl's own checks (one-line, actionable); anything else is a bug."""
    from tricl.config import ConfigError
    from tricl.runs import RunError
    from tricl.train import TrainingError

    ours: list[type[BaseException]] = [ConfigError, RunError, TrainingError]
    try:
        from tricl.data import DatasetError

        ours.append(DatasetError)
    except ImportError:
        pass
    try:
        from tricl.analysis import AnalysisError

        ours.append(AnalysisError)
    except ImportError:
        pass
    return isinstance(exc, tuple(ours))


if __name__ == "__main__":
    raise SystemExit(main())
