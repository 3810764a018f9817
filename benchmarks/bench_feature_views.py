"""Benchmark of the feature views that say what a feature does (issue 25); prints, asserts nothing.

1. The new per-split stages (``activation_bands``, ``interventions``) on every shipped run, in
   both bases: seconds each, computed on a copy of the run whose two artifacts were removed (the
   other stages read fresh). Target: under 30 s together per run on this CPU.
2. Feature detail drawn warm with every panel (images and classes, activation ranges,
   interventions, saliency, the other seeds), in Streamlit's AppTest on a shipped triCL run:
   the mean of 3 reruns after a first, cold draw. Target: <= 1 s.
3. The Probe page's steering slider: one slider step (a rerun whose only new work is the model
   worker's ``steer`` call). Target: <= 0.3 s.

AppTest runs the page script in this process, so 2. and 3. are the script's own time: the
browser's layout and the websocket are not in them.

Usage::

    python benchmarks/bench_feature_views.py                 # everything (~5 min, 2 cores)
    python benchmarks/bench_feature_views.py --only stages   # one part (stages | detail | slider)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints"
RUN = "tricl_mnist5k_small_cnn_k64_seed0"
NEW_STAGES = ("activation_bands", "interventions")


def bench_stages() -> None:
    from tricl.analysis import analyze
    from tricl.bases import BASIS_NAMES

    print("1. new stages per shipped run (s): " + ", ".join(NEW_STAGES))
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(p for p in SHIPPED.iterdir() if p.is_dir() and "_seed" in p.name):
            run = Path(tmp) / src.name
            ignore = shutil.ignore_patterns(*(f"{s}.npz" for s in NEW_STAGES))
            shutil.copytree(src, run, ignore=ignore)
            row, total = [], 0.0
            for basis in BASIS_NAMES:
                out = analyze(run, progress=False, basis=basis)
                secs = [out.timings.get(s, float("nan")) for s in NEW_STAGES]
                total += sum(secs)
                row.append(f"{basis} " + " + ".join(f"{s:.2f}" for s in secs))
            totals.append(total)
            print(f"   {src.name:48s} {'; '.join(row)}; together {total:.2f}")
            shutil.rmtree(run)
    print(
        f"   per run, both bases together: median {statistics.median(totals):.2f} s, max"
        f" {max(totals):.2f} s (target < 30 s)"
    )


def _app(page: str, **query: str):
    from streamlit.testing.v1 import AppTest

    sys.argv = ["app/main.py", "--runs-root", str(SHIPPED)]
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    at.query_params.update({"run": RUN, **query})
    at.run()
    at.switch_page(f"views/{page}").run()
    if at.exception:
        raise SystemExit(f"{page} raised: {[e.value for e in at.exception]}")
    return at


def _rerun(at, times: int = 3) -> list[float]:
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        at.run()
        out.append(time.perf_counter() - t0)
    return out


def bench_detail() -> None:
    t0 = time.perf_counter()
    at = _app("feature_detail.py")
    cold = time.perf_counter() - t0
    warm = _rerun(at)
    panels = [s.value for s in at.subheader]
    print(f"2. Feature detail ({RUN}, panels: {', '.join(panels)})")
    print(
        f"   cold {cold:.2f} s (first draw, worker start); warm mean {statistics.mean(warm):.3f} s"
        f" (runs {', '.join(f'{w:.3f}' for w in warm)}; target <= 1 s)"
    )


def bench_slider() -> None:
    at = _app("probe.py")
    slider = at.slider(key="_w_steer_amount")
    steps = []
    for value in (1.0, 2.0, -1.0, -2.0, 3.0):
        slider.set_value(value)
        t0 = time.perf_counter()
        at.run()
        steps.append(time.perf_counter() - t0)
    print("3. Probe page steering slider, one step = one rerun with the worker's steer call")
    print(
        f"   mean {statistics.mean(steps):.3f} s, max {max(steps):.3f} s over {len(steps)} steps"
        " (target <= 0.3 s)"
    )


PARTS = {"stages": bench_stages, "detail": bench_detail, "slider": bench_slider}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(PARTS), help="run one part")
    args = ap.parse_args()
    for name, fn in PARTS.items():
        if args.only in (None, name):
            fn()


if __name__ == "__main__":
    main()
