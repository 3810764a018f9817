"""Reproduce the paper's claims at small scale and write ``docs/RESULTS.md`` with figures.

    python -m tricl.experiments.reproduce                        # mnist5k, 3 seeds per method
    python -m tricl.experiments.reproduce --cifar ../shared/data/cifar10-subset   # + CIFAR-10
    python -m tricl.experiments.reproduce --smoke --out /tmp/x   # tiny version (CI)
    python -m tricl.experiments.reproduce --paper-scale          # the paper's CIFAR-10 run (GPU)

``--paper-scale`` (:mod:`tricl.experiments.paper_scale`) trains the paper's own setting instead:
full CIFAR-10, ResNet-18, 200 epochs; it needs a GPU in practice (see its ``--help``).

For each method (SimCLR, triCL, spectral, tri-spectral, and the official code's triCL recipe) it
trains every seed with ``tricl train``'s own function, analyses each run (``tricl analyze``) and
compares the seeds of a method (``tricl compare``); then it writes the tables and PNG figures.
Runs are reused or resumed when they already exist, so the script can be stopped and restarted.
All numbers are on the evaluation (test) split, which no recipe was tuned on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tricl.config import PRECISIONS
from tricl.experiments.arms import ARMS, DEFAULT_METHODS, ArmResult, run_arm
from tricl.experiments.common import train_in_parallel
from tricl.experiments.results import cifar_title, write_report


def _add_section_arguments(p: argparse.ArgumentParser) -> None:
    """The options that rewrite part of an existing RESULTS.md instead of all of it."""
    p.add_argument(
        "--update",
        action="store_true",
        help="rewrite only the dataset sections studied here, in place in the existing"
        " RESULTS.md (each names this command); the rest of the file stays",
    )
    p.add_argument(
        "--no-mnist5k",
        action="store_true",
        help="skip the mnist5k study (with --cifar --update: rewrite the CIFAR section alone)",
    )


def _add_cifar_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the CIFAR study."""
    p.add_argument(
        "--cifar",
        type=Path,
        default=None,
        help="an ImageFolder CIFAR-10 tree (train/, test/) for a second study",
    )
    p.add_argument("--cifar-epochs", type=int, default=10, help="training epochs per CIFAR run")
    p.add_argument(
        "--cifar-precision",
        default="auto",
        choices=list(PRECISIONS),
        help="arithmetic of the CIFAR runs' training steps (RunConfig.precision); bf16 halves a"
        " CPU step where the CPU has AVX-512 BF16 or AMX, and the section's title names it",
    )
    p.add_argument(
        "--cifar-methods",
        nargs="+",
        default=["simclr", "tricl"],
        choices=list(ARMS),
        help="arms of the CIFAR study (each CIFAR run takes minutes on a CPU)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        choices=list(ARMS),
        help="arms of the mnist5k study; the defaults keep it under 40 minutes on 2 cores, add"
        " the others (e.g. --methods " + " ".join(ARMS) + ") for the full comparison",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds per arm")
    p.add_argument("--epochs", type=int, default=15, help="training epochs per run (mnist5k)")
    p.add_argument(
        "--reuse",
        type=Path,
        default=Path("checkpoints"),
        help="finished runs with the same recipe here are used, not retrained (the shipped runs)",
    )
    _add_cifar_arguments(p)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="train and analyse this many runs side by side, each with cores/N threads (2 on a"
        " 2-core machine: two one-thread runs do more per hour than one two-thread run); the"
        " comparisons and tables follow in this process",
    )
    p.add_argument(
        "--synthetic-seeds",
        type=int,
        nargs="*",
        default=[0, 1, 2],
        help="seeds of the known-answer factor check (none to skip it; skipped with --smoke)",
    )
    p.add_argument(
        "--runs-root",
        type=Path,
        default=Path("experiments/runs"),
        help="where the study's runs are kept (reused and resumed)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where RESULTS.md goes (default: docs, or experiments/paper_scale with --paper-scale)",
    )
    p.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="Markdown appended to RESULTS.md (the investigation write-up)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny version for CI: digits, 1 epoch, 2 seeds, simclr and tricl (with --paper-scale:"
        " a small CNN, small widths, 1 epoch on --paper-dataset)",
    )
    p.add_argument(
        "--image-text",
        action="store_true",
        help="add the image-text section (clip vs triclip on mnist5k-captions, the shipped runs"
        " reused; also alone: python -m tricl.experiments.image_text)",
    )
    _add_section_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    from tricl.experiments.paper_scale import add_arguments

    add_arguments(p, list(ARMS))
    return p


def _train_first(
    args: argparse.Namespace, methods: list[str], root: Path, base: dict, reuse: Path | None = None
) -> None:
    """With ``--workers N`` > 1, train and analyse every run of a section in N processes first;
    :func:`run_arm` then finds them finished and their analyses cached."""
    if args.workers > 1:
        jobs = [(ARMS[m][0], seed) for m in methods for seed in args.seeds]
        train_in_parallel(jobs, root, args.workers, reuse=reuse, analyze=True, **base)


def _sections(args: argparse.Namespace, progress: bool) -> list[tuple[str, list[ArmResult], dict]]:
    """Train, analyse and compare every arm of every study the arguments ask for."""
    sections = []
    if args.smoke:
        base = {
            "dataset": "digits",
            "epochs": 1,
            "proj_dim": 16,
            "proj_hidden_dim": 32,
            "batch_size": 128,
            "warmup_epochs": 0,
        }
        methods, seeds = [m for m in args.methods if m in ("simclr", "tricl")], args.seeds[:2]
        results = [run_arm(m, seeds, args.runs_root / "digits", base, progress) for m in methods]
        sections.append(("digits (smoke)", results, base))
    else:
        base = {"dataset": "mnist5k", "epochs": args.epochs}
        if not args.no_mnist5k:
            _train_first(args, args.methods, args.runs_root / "mnist5k", base, args.reuse)
            results = [
                run_arm(m, args.seeds, args.runs_root / "mnist5k", base, progress, reuse=args.reuse)
                for m in args.methods
            ]
            sections.append(("mnist5k (small CNN, 64 features)", results, base))
        if args.cifar is not None:
            cbase = {
                "dataset": f"folder:{args.cifar.resolve()}",
                "epochs": args.cifar_epochs,
                "proj_dim": 128,
            }
            if args.cifar_precision != "auto":  # auto: the recipe (and run names) as before
                cbase["precision"] = args.cifar_precision
            _train_first(args, args.cifar_methods, args.runs_root / "cifar10", cbase)
            cres = [
                run_arm(m, args.seeds, args.runs_root / "cifar10", cbase, progress)
                for m in args.cifar_methods
            ]
            title = cifar_title(args.cifar_epochs, args.cifar_precision)
            sections.append((title, cres, cbase))
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers} (e.g. --workers 2)")
    shown = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m tricl.experiments.reproduce", *shown])
    if args.paper_scale:
        from tricl.experiments.paper_scale import run_paper_scale

        return run_paper_scale(args, command)
    progress = not args.no_progress
    from tricl.data import set_progress

    set_progress(progress)  # --no-progress silences dataset loading too, as in tricl's CLI
    from tricl.cli import is_user_error

    try:
        sections = _sections(args, progress)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if not is_user_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    synthetic = None
    if args.synthetic_seeds and not args.smoke and not args.update:
        from tricl.experiments.synthetic import study

        synthetic = study(
            args.synthetic_seeds, progress=progress, cache=args.runs_root / "synthetic.json"
        )
    notes = args.notes.read_text() if args.notes else ""
    out = args.out if args.out is not None else Path("docs")
    path = write_report(sections, out, notes, synthetic, command, update=args.update)
    if args.image_text and not args.smoke:
        from tricl.experiments import image_text

        study = image_text.run_image_text_study(
            args.seeds, args.runs_root / "image-text", reuse=args.reuse, progress=progress
        )
        section = image_text.image_text_markdown(study, out / "figures")
        path.write_text(image_text.replace_section(path.read_text(), section))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
