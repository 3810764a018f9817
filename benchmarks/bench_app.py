"""Dashboard benchmark in headless chromium, measured in one run on this machine.

1. cold start: seconds from launching ``streamlit run app/main.py`` to the first page drawn
   (Runs page). Pages never compute an analysis (a run without one shows an "Analyse now"
   button), so analyse the runs first (``tricl analyze RUN...``) to measure their pages;
2. warm page draws: seconds from clicking a page in the sidebar to the page drawn (script done,
   every image decoded, every chart drawn), median and max over ``--repeats`` visits after one
   warm-up visit of every page (target: under 1.5 s each);
3. warm draws of the feature pages in the spectral basis (sidebar "Feature basis": spectral),
   Feature detail drawing the picked run's feature beside the same rank of its other seeds
   (target: under 1 s with 3 seeds; analyse the runs first with ``tricl analyze --basis
   spectral RUN...``);
4. the server's resident memory (VmRSS) with every page of the runs visited (target: under
   700 MiB: the server never imports torch), and the model worker's beside it.

Needs Debian's chromium at /usr/bin/chromium and playwright's Python package (no browser
download). Usage: python benchmarks/bench_app.py [--runs-root checkpoints] [--repeats 5]
[--run NAME]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

from tricl.dashboard import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    free_port,
    streamlit_command,
    wait_healthy,
)

# sidebar label -> title of the page (its h1)
PAGES = {
    "Runs": "Runs",
    "Features": "Features",
    "Feature detail": "Feature detail",
    "Compare seeds": "Compare seeds",
    "Embedding": "Embedding",
    "Few features": "Few features",
    "Probe an image": "Probe an image",
}
TARGET_S = 1.5
# pages measured again in the spectral basis, with their targets
SPECTRAL_PAGES = {"Feature detail": 1.0, "Features": TARGET_S}

# Drawn: the script run is over, the page's title is shown, every image has decoded and every
# Plotly chart has drawn its plot area.
DRAWN_JS = """
(title) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const h1 = document.querySelector('h1');
  if (!h1 || !h1.textContent.includes(title)) return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
  if (!imgs.every(i => i.complete && i.naturalWidth > 0)) return false;
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return plots.every(p => p.querySelector('.main-svg') !== null);
}
"""


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def analysed(root: Path, basis: str = "") -> tuple[int, int]:
    """(runs with cached analysis artifacts in ``basis`` ("" = trained), runs) under the root."""
    runs = [p for p in root.iterdir() if (p / "config.json").is_file()] if root.is_dir() else []
    done = [p for p in runs if (p / "analysis" / "test" / basis / "downstream.csv").is_file()]
    return len(done), len(runs)


def click_page(tab, label: str, title: str, timeout_s: float) -> None:
    tab.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
    wait_drawn(tab, title, timeout_s)


def warm_draws(tab, pages: dict[str, float], repeats: int) -> float:
    """Median seconds per page (sidebar click -> drawn), visiting another page in between."""
    worst = 0.0
    for label, target in pages.items():
        times = []
        for _ in range(repeats):
            other = "Runs" if label != "Runs" else "Features"
            click_page(tab, other, PAGES[other], 120)
            t = time.perf_counter()
            click_page(tab, label, PAGES[label], 120)
            times.append(time.perf_counter() - t)
        med, top = statistics.median(times), max(times)
        worst = max(worst, med)
        flag = "ok" if med < target else f"OVER {target} s"
        print(f"  {label:<16} median {med:5.2f} s   max {top:5.2f} s   {flag}")
    return worst


def wait_drawn(tab, title: str, timeout_s: float) -> None:
    tab.wait_for_function(DRAWN_JS, arg=title, timeout=timeout_s * 1000, polling=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-root", default=str(REPO / "checkpoints"))
    parser.add_argument("--repeats", type=int, default=5, help="warm visits per page (5)")
    parser.add_argument(
        "--run",
        default="tricl_mnist5k_small_cnn_k64_seed0",
        help="the run the pages show (its other seeds are drawn beside it)",
    )
    parser.add_argument(
        "--first-timeout", type=float, default=1800, help="seconds allowed for the first page"
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(args.runs_root).resolve()
    done, total = analysed(root)
    spectral, _ = analysed(root, "spectral")
    print(f"runs root: {root} ({total} runs, {done} analysed, {spectral} in the spectral basis)")
    if done < total:
        print("  runs without an analysis show an 'Analyse now' panel; run `tricl analyze` first")
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    port = free_port()
    cmd = streamlit_command(port, root)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_healthy(port, proc, timeout=180, poll=0.05)
            t_health = time.perf_counter() - t0
            tab.goto(f"http://127.0.0.1:{port}/?run={args.run}")
            wait_drawn(tab, "Runs", args.first_timeout)
            t_first = time.perf_counter() - t0
            print(f"server start -> health check: {t_health:.2f} s")
            print(f"server start -> first page (Runs) drawn: {t_first:.2f} s")
            print(f"server resident memory, first page drawn: {rss_mib(proc.pid):.0f} MiB")
            for label, title in PAGES.items():  # warm-up: analyses, datasets, encoders cached
                click_page(tab, label, title, args.first_timeout)
            print(f"\nwarm page draws (sidebar click -> drawn), {args.repeats} visits each:")
            worst = warm_draws(tab, dict.fromkeys(PAGES, TARGET_S), args.repeats)
            print(f"slowest page median: {worst:.2f} s (target < {TARGET_S} s)")
            sidebar = tab.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("spectral basis", exact=True).first.click()  # the basis radio
            tab.wait_for_url("**basis=spectral**")
            for label in SPECTRAL_PAGES:  # warm-up in the spectral basis
                click_page(tab, label, PAGES[label], args.first_timeout)
            print(f"\nwarm page draws in the spectral basis ({args.run}):")
            warm_draws(tab, SPECTRAL_PAGES, args.repeats)
            print(f"\nserver resident memory, every page visited: {rss_mib(proc.pid):.0f} MiB")
            for child in children(proc.pid):  # the model worker (and multiprocessing's tracker)
                what = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")[-60:]
                print(f"child {child} ({what.decode(errors='replace').strip()}): ", end="")
                print(f"{rss_mib(child):.0f} MiB resident")
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        finally:
            browser.close()
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
