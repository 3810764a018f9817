"""Benchmark of the feature views that say what a feature does (issue 25); prints, asserts nothing.

1. The new per-split stages (``activation_bands``, ``interventions``) on every shipped run, in
   both bases, and for the image-text runs the text side's ``interventions`` (zero-shot and
   retrieved captions, both bases in one artifact): seconds each, computed on a copy of the run
   whose artifacts of those stages were removed (the other stages read fresh). Wall seconds, and
   the CPU seconds of the stages' compute (what a loaded machine inflates far less); the load
   averages are printed before and after. Target: under 30 s together per run on this CPU.
2. Feature detail drawn warm with every panel (images and classes, activation ranges,
   interventions, saliency, the other seeds), in Streamlit's AppTest on a shipped triCL run:
   the mean of 3 reruns after a first, cold draw. Target: <= 1 s.
3. The Probe page's steering slider: one slider step (a rerun whose only new work is the model
   worker's ``steer`` call), on the triCL run and on a triCLIP run (where the worker also ranks
   the captions for the moved image). Target: <= 0.3 s.

AppTest runs the page script in this process, so 2. and 3. are the script's own time: the
browser's layout and the websocket are not in them.

Usage::

    python benchmarks/bench_feature_views.py                 # everything (~5 min, 2 cores)
    python benchmarks/bench_feature_views.py --only stages   # one part (stages | detail | slider)
"""

from __future__ import annotations

import argparse
import os
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
TEXT_STAGE = "interventions"  # the text side's (image-text runs)
RUN_TEXT = "triclip_mnist5k-captions_small_cnn_k64_seed0"


def _cpu_clocks() -> dict[str, float]:
    """CPU seconds each new stage's compute took in this process, by stage name: a figure that a
    loaded machine inflates far less than wall time. The stages' registries are wrapped in place
    (this process only)."""
    from dataclasses import replace

    from tricl.analysis.image_stages import ANALYSIS_STAGES, SPECTRAL_STAGES
    from tricl.analysis.image_text import TEXT_STAGES

    clocks: dict[str, float] = {}

    def timed(name, compute):
        def run(job, inputs):
            t0 = time.process_time()
            try:
                return compute(job, inputs)
            finally:
                clocks[name] = clocks.get(name, 0.0) + time.process_time() - t0

        return run

    for registry, names, tag in (
        (ANALYSIS_STAGES, NEW_STAGES, "trained"),
        (SPECTRAL_STAGES, NEW_STAGES, "spectral"),
        (TEXT_STAGES, (TEXT_STAGE,), "text"),
    ):
        for n in names:
            registry[n] = replace(registry[n], compute=timed(f"{tag} {n}", registry[n].compute))
    return clocks


def bench_stages() -> None:
    from tricl.analysis import analyze
    from tricl.analysis.image_text import analyze_text, has_text
    from tricl.analysis.pipeline import load_run
    from tricl.bases import BASIS_NAMES

    clocks = _cpu_clocks()
    print(
        f"1. new stages per shipped run, wall s (CPU s): {', '.join(NEW_STAGES)}; image-text runs"
    )
    print(f"   also the text side's {TEXT_STAGE} (both bases at once); load {_load()}")
    totals, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(p for p in SHIPPED.iterdir() if p.is_dir() and "_seed" in p.name):
            run = Path(tmp) / src.name
            ignore = shutil.ignore_patterns(*(f"{s}.npz" for s in (*NEW_STAGES, TEXT_STAGE)))
            shutil.copytree(src, run, ignore=ignore)
            clocks.clear()
            row, total = [], 0.0
            for basis in BASIS_NAMES:
                out = analyze(run, progress=False, basis=basis)
                secs = [out.timings.get(s, float("nan")) for s in NEW_STAGES]
                total += sum(secs)
                row.append(f"{basis} " + " + ".join(f"{s:.2f}" for s in secs))
            if has_text(load_run(run)):
                secs = analyze_text(run, progress=False).timings.get(TEXT_STAGE, float("nan"))
                total += secs
                row.append(f"text {secs:.2f}")
            cpu = sum(clocks.values())
            totals.append(total)
            cpus.append(cpu)
            print(f"   {src.name:48s} {'; '.join(row)}; together {total:.2f} ({cpu:.2f})")
            shutil.rmtree(run)
    print(
        f"   per run, both bases together: median {statistics.median(totals):.2f} s, max"
        f" {max(totals):.2f} s (target < 30 s); CPU median {statistics.median(cpus):.2f} s, max"
        f" {max(cpus):.2f} s; load {_load()}"
    )


def _load() -> str:
    """The 1, 5 and 15 minute load averages (as ``uptime`` prints them)."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _app(page: str, **query: str):
    from streamlit.testing.v1 import AppTest

    sys.argv = ["app/main.py", "--runs-root", str(SHIPPED)]
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    at.query_params.update({"run": RUN} | query)
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
    print("3. Probe page steering slider, one step = one rerun with the worker's steer call")
    for run in (RUN, RUN_TEXT):
        at = _app("probe.py", run=run)
        if run == RUN_TEXT:  # an image-text run opens on the caption probe
            at.radio(key="_w_probe_kind").set_value("An image").run()
        slider = at.slider(key="_w_steer_amount")
        steps = []
        for value in (1.0, 2.0, -1.0, -2.0, 3.0):
            slider.set_value(value)
            t0 = time.perf_counter()
            at.run()
            steps.append(time.perf_counter() - t0)
        what = " (probe and retrieved captions)" if run == RUN_TEXT else ""
        print(
            f"   {run}{what}: mean {statistics.mean(steps):.3f} s, max {max(steps):.3f} s over"
            f" {len(steps)} steps (target <= 0.3 s)"
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
