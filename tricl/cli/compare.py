"""``tricl compare``: identifiability between runs, the table, the verdict lines and where the
comparison is stored (the command's parser and its checks before anything is computed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_basis(p: argparse.ArgumentParser) -> None:
    from tricl.analysis.pipeline import BASES

    # no argparse choices: a wrong name gets the one-line error of get_basis, not a usage dump
    p.add_argument(
        "--basis",
        default="trained",
        help=f"basis of the features, one of {', '.join(BASES)}: trained = the projector's"
        " outputs in their importance order; spectral = each run's spectral basis (most"
        " augmentation-invariant first; the basis is estimated once per run on train pairs,"
        " about 20 s for a small CNN on a CPU, 1.5 h for a 224-px ResNet-50, then cached)."
        " Recommended: spectral to compare features across"
        " seeds (the trained axes are not identifiable at this scale)",
    )


def add_compare(sub: argparse._SubParsersAction) -> None:
    from tricl.analysis.metrics import METRICS

    metrics = "; ".join(f"{m.name}: {m.legend}" for m in METRICS.values())
    p = sub.add_parser(
        "compare",
        help="identifiability between runs (ordered corr, MCC, CKA, ...)",
        description="Compare runs (e.g. the same config with different seeds), one score per"
        f" metric ({metrics}), and the spectral ones again in each run's spectral basis (features"
        " rotated onto the eigenvectors of the augmentation's positive-pair covariance, estimated"
        " on train pairs; column spectral_<metric>). With --basis spectral every score is taken"
        " in the spectral bases (rank r against rank r) and has its plain column. When every run is"
        " clip / triclip, their image AND text features are compared too (a second table with a"
        " side column, and the mean ± std over seed pairs of each configuration); in --basis"
        " spectral each side is rotated onto the run's pair basis (the canonical correlation of"
        " its train image and text features). Stored in _compare/ beside the runs; for the"
        " shipped runs in $TRICL_RUNS or ./runs (checkpoints/ only keeps what it ships).",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument(
        "--runs-root",
        type=Path,
        default=None,
        help="store the comparison in RUNS_ROOT/_compare (default: beside the runs; for the"
        " shipped runs $TRICL_RUNS or ./runs, reading what checkpoints/_compare already holds)",
    )
    add_basis(p)
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
    from tricl.bases import BasisError, get_basis

    if len(args.runs) < 2:
        print("error: compare needs at least two runs (e.g. two seeds)", file=sys.stderr)
        return 2
    try:  # a bad --basis is named first, before any run is opened
        get_basis(args.basis)
    except BasisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _check_one_dataset(args.runs)
    progress = not args.no_progress
    stored = not args.force and _stored(args, None)
    out_root = _compare_out_root(args, stored)
    if not (stored or (out_root is not None and _stored(args, out_root))):
        print(
            f"comparing {len(args.runs)} runs: analysing any run without a stored analysis and"
            " estimating the spectral bases first (about 20 s per run for a small CNN on a CPU the"
            " first time, 1.5 h for a 224-px ResNet-50)",
            file=sys.stderr,  # stdout stays the table or pure JSON
        )
    if args.consensus:
        done = consensus(
            args.runs, split=args.split, force=args.force, progress=progress, out_root=out_root
        )
        table = done.table
    else:
        done = compare(
            args.runs,
            split=args.split,
            force=args.force,
            progress=progress,
            spectral=not args.no_spectral,
            basis=args.basis,
            out_root=out_root,
        )
        table = done.pairs  # its columns follow the registry (spectral_* in the trained basis)
    print(f"comparison stored in {done.path}", file=sys.stderr)
    extras = [] if args.consensus else _compare_extras(args, progress, out_root)
    if args.json:
        # a score not measured (NaN: too few images for a held-out fit) is JSON's null
        tables = [table] + [extra.rows(got) for extra, got in extras]  # image-text: a "side" key
        for t in tables:
            for row in t.astype(object).where(t.notna(), None).to_dict(orient="records"):
                print(json.dumps(row))
        return 0
    if args.consensus:  # the first few top images keep the text table readable
        table = table.assign(top_indices=[" ".join(map(str, t[:5])) for t in table["top_indices"]])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if not args.consensus:  # the verdict words of the Compare page and the README
        from tricl.analysis.pipeline import load_run
        from tricl.report.verdicts import verdict_lines

        whitened = all(load_run(r).aligned for r in args.runs)  # aligned axes are whitened
        print("\n".join(verdict_lines(table, args.basis, whitened=whitened)))
    for extra, got in extras:
        print(extra.report(got))
    return 0


def _check_one_dataset(paths: list[Path]) -> None:
    """Refuse runs of different datasets before any of them is analysed (config.json only)."""
    from tricl.runs import Run, RunError

    datasets: dict[str, str] = {}
    for path in paths:
        run = Run.load(path)
        datasets.setdefault(run.config.dataset, run.name)
    if len(datasets) > 1:
        named = ", ".join(f"{name} ({dataset})" for dataset, name in datasets.items())
        raise RunError(
            f"the runs come from different datasets: {named}; compare runs of one dataset"
            " (e.g. the seeds of one configuration)"
        )


def _stored(args: argparse.Namespace, out_root: Path | None) -> bool:
    """Whether what ``compare`` is asked for is already stored (read only, never computed)."""
    from tricl.analysis import AnalysisError, load_comparison, load_consensus
    from tricl.analysis.extra_families import applicable
    from tricl.analysis.pipeline import load_run

    try:
        if args.consensus:
            return load_consensus(args.runs, split=args.split, out_root=out_root) is not None
        got = load_comparison(
            args.runs,
            split=args.split,
            out_root=out_root,
            spectral=not args.no_spectral,
            basis=args.basis,
        )
        if got is None:
            return False
        return all(  # and what the runs' kind adds (e.g. image-text: image AND text features)
            extra.load(args.runs, split=args.split, basis=args.basis, out_root=out_root) is not None
            for extra in applicable([load_run(r) for r in args.runs])
        )
    except (AnalysisError, ValueError, OSError):  # compare itself says what is wrong
        return False


def _compare_out_root(args: argparse.Namespace, stored: bool) -> Path | None:
    """Where ``compare`` stores its result: ``--runs-root``/_compare if given; for the shipped
    runs the user's runs root, unless ``checkpoints/_compare`` already holds the result
    (``stored``: it is read there and nothing is written); else None (beside the runs)."""
    from tricl.runs import default_runs_root, is_shipped

    if args.runs_root is not None:
        return args.runs_root / "_compare"
    if stored or not all(is_shipped(r) for r in args.runs):
        return None
    return default_runs_root() / "_compare"


def _compare_extras(
    args: argparse.Namespace, progress: bool, out_root: Path | None
) -> list[tuple[Any, Any]]:
    """What the runs' kind adds to the comparison (extra stage families that apply to every run,
    e.g. image-text: image AND text features), as (family, result) pairs; a family that applies
    to only some of the runs is left out with a note (mixed runs keep the image comparison)."""
    from tricl.analysis.extra_families import EXTRA_FAMILIES, partly
    from tricl.analysis.pipeline import load_run

    runs = [load_run(r) for r in args.runs]
    done = []
    for extra in EXTRA_FAMILIES.values():
        if others := partly(extra, runs):
            print(f"note: {extra.not_compared.format(names=', '.join(others))}", file=sys.stderr)
        if not extra.applies(runs):
            continue
        got = extra.compare(
            runs,
            split=args.split,
            basis=args.basis,
            force=args.force,
            progress=progress,
            out_root=out_root,
        )
        done.append((extra, got))
    return done
