"""``tricl visualize``: an image optimised to drive one feature of a run, cached with the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from tricl.cli.compare import add_basis


def add_visualize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visualize",
        help="optimise an image that drives one feature (cached in RUN/analysis/featvis/)",
        description="Feature visualisation by optimisation: an image, parameterised by a 1/f-scaled"
        " Fourier spectrum (colours decorrelated for RGB), optimised with Adam to drive feature N"
        " of the run while it is jittered, scaled and rotated at random each step. In the"
        " spectral basis the objective is the feature's direction (the rotation onto the basis),"
        " not an axis. Deterministic for a seed; stored per run, basis, feature and settings, so"
        " asking again is instant. At 28-32 px the images are low-fidelity: read them beside the"
        " feature's top images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", type=Path, metavar="RUN")
    p.add_argument(
        "--feature",
        type=int,
        required=True,
        metavar="N",
        help="the feature's index in the basis's outputs, from 0: in the trained basis its index"
        " in z (Feature detail's tooltip on 'Feature' shows it), in the spectral basis rank - 1",
    )
    add_basis(p)
    p.add_argument(
        "--steps",
        type=int,
        default=256,
        help="optimisation steps (256 is the recipe's; under ~100 the image stays grey noise)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the start image and transforms")
    p.add_argument("--device", default="cpu", help="cpu or cuda (where the encoder runs)")
    p.add_argument("--force", action="store_true", help="make it again even if cached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_visualize)


def _cmd_visualize(args: argparse.Namespace) -> int:
    from tricl.analysis import load_analysis
    from tricl.analysis.featvis import VisSettings
    from tricl.analysis.optvis import visualize

    try:
        settings = VisSettings(steps=args.steps, seed=args.seed)
    except ValueError as exc:
        from tricl.analysis import AnalysisError

        raise AnalysisError(f"{exc}; see `tricl visualize --help`") from None
    vis = visualize(
        args.run,
        args.feature,
        args.basis,
        settings,
        device=args.device,
        force=args.force,
        progress=not args.no_progress,
    )
    line = f"{args.run}: feature {vis.feature} ({vis.basis} basis): activation {vis.activation:.3f}"
    analysis = load_analysis(args.run, basis=vis.basis)  # read only, if stored
    if analysis is not None:
        top = float(analysis.top_images.top_values[vis.feature, 0])
        line += f" (its top {analysis.split} image: {top:.3f})"
    print(f"{line} -> {vis.path}")
    return 0
