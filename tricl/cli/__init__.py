"""The ``tricl`` command: ``train | runs | analyze | compare | import | align | visualize``.

Every flag's help says the recommended value and what goes wrong otherwise (DINO style). Errors the
user can fix end the command with one line on stderr and exit status 2; nothing is left
half-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any, NoReturn

from tricl.cli.compare import add_basis, add_compare
from tricl.cli.imports import add_import
from tricl.cli.visualize import add_visualize
from tricl.config import RunConfig


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr, exit status 2, like tricl's own."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`RunConfig` field, with the field's own help text and choices."""
    from tricl.catalog import DATASET_INFO
    from tricl.config import field_choices

    for f in dataclasses.fields(RunConfig):
        if not f.metadata.get("cli", True):
            continue
        help_text = f.metadata["help"]
        if f.name == "dataset":
            names = sorted(k for k, v in DATASET_INFO.items() if not v.takes_path)
            help_text = f"one of {names}, or " + help_text.removeprefix("a dataset name, ")
        if f.type == "bool":
            p.add_argument(_flag(f.name), action="store_true", help=help_text)
            continue
        kind = {"int": int, "float": float}.get(str(f.type), str)
        choices = field_choices(f) or None
        p.add_argument(_flag(f.name), type=kind, default=f.default, choices=choices, help=help_text)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an encoder with any --method and write a run directory",
        description="Train an encoder with a contrastive method and write a run directory"
        " (config.json, model.safetensors, train_state.pt, metrics.jsonl) under --runs-root."
        " New runs go to $TRICL_RUNS or ./runs; the runs shipped in checkpoints/ are never"
        " touched unless you pass --runs-root checkpoints. On several GPUs: torchrun"
        " --nproc_per_node N -m tricl train ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_config_flags(p)
    p.add_argument(
        "--runs-root",
        type=Path,
        default=None,
        help="folder of run directories (default: $TRICL_RUNS or ./runs)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN",
        help="continue a killed or unfinished run from its last epoch (other flags ignored);"
        " ends with the same weights as an uninterrupted run",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars at all (logs, CI)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from tricl.train import train

    if args.resume is not None:
        run = train(resume=args.resume, progress=not args.no_progress)
    else:
        names = [f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("cli", True)]
        cfg = RunConfig(**{name: getattr(args, name) for name in names})
        _check_run_target(cfg, args.runs_root)
        run = train(cfg, runs_root=args.runs_root, progress=not args.no_progress)
    from tricl import distributed

    if distributed.is_main():
        rows = run.metrics()
        loss = f"{rows[-1]['loss']:.4f}" if rows else "n/a"
        # the progress bar's mean_loss at the end of the last epoch is this same epoch mean
        print(
            f"run {run.path} ({run.epochs_done}/{run.config.epochs} epochs, final loss {loss},"
            " the mean of the last epoch)"
        )
    return 0


def _check_run_target(cfg: RunConfig, runs_root: Path | None) -> None:
    """Refuse a --name that is not one folder name and a --runs-root that is a file, before the
    data loads (RunConfig takes any string as a name; the run format's rules live in tricl.runs)."""
    from tricl.runs import check_run_name, check_runs_root, default_runs_root

    if cfg.name:
        check_run_name(cfg.name)
    check_runs_root(runs_root if runs_root is not None else default_runs_root())


def _add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list runs with method, dataset, seed, epochs, final loss",
        description="List the run directories: yours ($TRICL_RUNS or ./runs) and the runs"
        " shipped in the repository's checkpoints/, or those of one --runs-root.",
    )
    p.add_argument(
        "--runs-root",
        type=Path,
        default=None,
        help="list only this folder of runs (default: $TRICL_RUNS or ./runs, and the shipped runs)",
    )
    p.set_defaults(func=_cmd_runs)


def _print_runs(runs: list) -> None:
    from tricl.runs import BrokenRun

    width = max([16, *(len(r.config.dataset) for r in runs if not isinstance(r, BrokenRun))])
    print(f"{'run':<44} {'method':<12} {'dataset':<{width}} {'seed':>4} {'epochs':>7} {'loss':>9}")
    for r in runs:
        if isinstance(r, BrokenRun):
            print(f"{r.name:<44} BROKEN: {r.reason}")
            continue
        s = r.summary()
        loss = f"{s['final_loss']:.4f}" if isinstance(s["final_loss"], int | float) else "-"
        aligned = f"  aligned from {r.parent['name']}" if s["aligned"] else ""
        print(
            f"{s['run']:<44} {s['method']:<12} {s['dataset']:<{width}} {s['seed']:>4}"
            f" {s['epochs']:>7} {loss:>9}{aligned}"
        )


def _cmd_runs(args: argparse.Namespace) -> int:
    from tricl.runs import SHIPPED_RUNS_ROOT, list_runs, run_roots

    roots = [args.runs_root] if args.runs_root is not None else run_roots()
    listed = [(root, list_runs(root)) for root in roots]
    if not any(runs for _, runs in listed):
        shown = " or ".join(str(r) for r in roots)
        print(f"no runs under {shown}; train one: tricl train --method tricl --dataset mnist5k")
        return 0
    for i, (root, runs) in enumerate(listed):
        shipped = root.resolve() == SHIPPED_RUNS_ROOT
        if len(listed) > 1:
            title = "shipped runs (read-only examples)" if shipped else "your runs"
            print(("\n" if i else "") + f"{title} in {root}:")
        if runs:
            _print_runs(runs)
        else:
            print("  (none yet)")
    return 0


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="compute the dashboard's artifacts for runs (cached in RUN/analysis/)",
        description="Compute features, importance orders, per-feature statistics, top images,"
        " UMAP and few-feature curves for each run; for a clip / triclip run also its caption"
        " features, zero-shot accuracy, retrieval recall, top captions, token lift and factor"
        " table; cached, so an unchanged run is instant.",
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
    add_basis(p)
    p.add_argument(
        "--describe",
        type=int,
        default=8,
        metavar="N",
        help="print a one-line description of the first N features (classes that raise and"
        " lower each, its selectivity, for image-text runs its top words; 0: none); the"
        " Features page describes all",
    )
    p.add_argument("--force", action="store_true", help="recompute even if cached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_analyze)


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
        labelled = len(set(a.features.labels.tolist())) >= 2
        extras = _analyze_extras(run, args)
        if labelled:  # the descriptions are read off the class statistics
            _print_descriptions(run, a, extras, args.describe)
        else:
            print(f"{run}: no class labels: probe, k-NN and retrieval mAP are NaN, no ablation")
        # last: a job's last output line is what the dashboard's job panel shows
        print(f"{run}: {a.summary()}")
    return 0


def _analyze_extras(run: Path, args: argparse.Namespace) -> list[tuple[Any, Any]]:
    """The extra stage families of the run's kind (e.g. an image-text run's caption side), on
    the run's own dataset only: one summary line each; returns (family, result) pairs."""
    from tricl.analysis.extra_families import applicable
    from tricl.analysis.pipeline import load_run

    if args.dataset is not None:  # they read what the run was trained on (e.g. its captions)
        return []
    done = []
    for extra in applicable([load_run(run)]):
        got = extra.analyze(
            run, args.split, force=args.force, progress=not args.no_progress, device=args.device
        )
        print(f"{run}: {got.summary()}")
        done.append((extra, got))
    return done


def _print_descriptions(run: Path, a: Any, extras: list[tuple[Any, Any]], n: int) -> None:
    """The first ``n`` features of the analysis in its default order, one line each (with the
    words an extra family gives a feature, e.g. its top caption words)."""
    from tricl.bases import get_basis
    from tricl.report.describe import describe_all, top_words

    if n <= 0:
        return
    basis = get_basis(a.basis)
    tables = [t for extra, got in extras if (t := extra.words(got, basis)) is not None]
    words = (lambda f: top_words(tables[0], f)) if tables else None
    order = a.importance.order(a.importance.default)
    print(f"{run}: features ({basis.feature_ref(a.importance.default)}), described:")
    for rank, line in enumerate(describe_all(a, order[:n], words), 1):
        print(f"  #{rank}: {line}")
    if n < a.k:
        print(f"  ({a.k - n} more: --describe {a.k}, or the Features page)")


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align",
        help="export runs whose own axes are their spectral basis (identifiable features)",
        description="For each run, write a new run <RUN>-aligned: the same weights plus a fixed"
        " linear layer after the projector that rotates the features onto the run's spectral"
        " basis (centring included), with the basis's eigenvalues as the importance, so feature"
        " #i is spectral rank i wherever the checkpoint is loaded. The basis is estimated on the"
        " train split (about 20 s per run for a small CNN on a CPU, 1.5 h for a 224-px ResNet-50,"
        " or read from the run's cache). The new run"
        " records its parent and the basis it used; it cannot be resumed or aligned again.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="runs of one dataset")
    p.add_argument(
        "--runs-root",
        type=Path,
        default=None,
        help="folder for the aligned runs (default: $TRICL_RUNS or ./runs)",
    )
    p.add_argument(
        "--device", default="cpu", help="where a missing spectral basis is estimated (default: cpu)"
    )
    p.set_defaults(func=_cmd_align)


def _cmd_align(args: argparse.Namespace) -> int:
    from tricl.align import align
    from tricl.analysis.spectral import spectral_basis

    basis_of = functools.partial(spectral_basis, device=args.device)
    for run in align(args.runs, basis_of, runs_root=args.runs_root):
        ev = run.encoder().importance()
        print(
            f"aligned {run.parent['name']} -> {run.path} ({run.aligned_dim} features, eigenvalues"
            f" {float(ev[0]):.3f} .. {float(ev[-1]):.3f})"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tricl.methods import METHODS

    methods = ", ".join(f"{spec.label} ({name})" for name, spec in METHODS.items())
    parser = _Parser(
        prog="tricl",
        description=f"Train, analyse and compare contrastive encoders: {methods}. Dashboard:"
        " streamlit run app/main.py",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_train,
        _add_runs,
        _add_analyze,
        add_compare,
        add_import,
        _add_align,
        add_visualize,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tricl`` console script."""
    args = build_parser().parse_args(argv)
    from tricl.data import set_progress

    # --no-progress silences dataset loading too, whatever command loads the data
    set_progress(not getattr(args, "no_progress", False))
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
        if not is_user_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        set_progress(True)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by tricl's own checks (one-line, actionable): a command prints
    it as ``error: ...`` and exits 2; anything else is a bug and keeps its traceback."""
    from tricl.config import ConfigError
    from tricl.runs import RunError
    from tricl.sources import SourceError
    from tricl.train import TrainingError

    ours: list[type[BaseException]] = [ConfigError, RunError, TrainingError, SourceError]
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
