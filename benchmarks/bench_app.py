"""Dashboard benchmark in headless chromium, measured in one run on this machine.

1. cold start: seconds from launching ``streamlit run app/main.py`` to the first page drawn
   (Runs page). Pages never compute an analysis (a run without one shows an "Analyse now"
   button), so analyse the runs first (``tricl analyze RUN...``) to measure their pages;
2. warm page draws: seconds from clicking a page in the sidebar to the page drawn (script done,
   every image decoded, every chart drawn), median and max over ``--repeats`` visits after one
   warm-up visit of every page (target: under 1.5 s each);
3. the server's resident memory (VmRSS) with every page of the runs visited.

Needs Debian's chromium at /usr/bin/chromium and playwright's Python package (no browser
download). Usage: python benchmarks/bench_app.py [--runs-root checkpoints] [--repeats 5]
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


def analysed(root: Path) -> tuple[int, int]:
    """(runs with cached analysis artifacts, runs) under the root."""
    runs = [p for p in root.iterdir() if (p / "config.json").is_file()] if root.is_dir() else []
    done = [p for p in runs if (p / "analysis" / "test" / "downstream.csv").is_file()]
    return len(done), len(runs)


def wait_drawn(tab, title: str, timeout_s: float) -> None:
    tab.wait_for_function(DRAWN_JS, arg=title, timeout=timeout_s * 1000, polling=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-root", default=str(REPO / "checkpoints"))
    parser.add_argument("--repeats", type=int, default=5, help="warm visits per page (5)")
    parser.add_argument(
        "--first-timeout", type=float, default=1800, help="seconds allowed for the first page"
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(args.runs_root).resolve()
    done, total = analysed(root)
    print(f"runs root: {root} ({total} runs, {done} with cached analysis)")
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
            tab.goto(f"http://127.0.0.1:{port}/")
            wait_drawn(tab, "Runs", args.first_timeout)
            t_first = time.perf_counter() - t0
            print(f"server start -> health check: {t_health:.2f} s")
            print(f"server start -> first page (Runs) drawn: {t_first:.2f} s")
            for label, title in PAGES.items():  # warm-up: analyses, datasets, encoders cached
                tab.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
                wait_drawn(tab, title, args.first_timeout)
            print(f"\nwarm page draws (sidebar click -> drawn), {args.repeats} visits each:")
            worst = 0.0
            for label, title in PAGES.items():
                times = []
                for _ in range(args.repeats):
                    other = "Runs" if label != "Runs" else "Features"
                    tab.locator('[data-testid="stSidebarNav"] a', has_text=other).first.click()
                    wait_drawn(tab, PAGES[other], 120)
                    t = time.perf_counter()
                    tab.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
                    wait_drawn(tab, title, 120)
                    times.append(time.perf_counter() - t)
                med, top = statistics.median(times), max(times)
                worst = max(worst, med)
                flag = "ok" if med < TARGET_S else f"OVER {TARGET_S} s"
                print(f"  {label:<16} median {med:5.2f} s   max {top:5.2f} s   {flag}")
            print(f"slowest page median: {worst:.2f} s (target < {TARGET_S} s)")
            print(f"server resident memory, every page visited: {rss_mib(proc.pid):.0f} MiB")
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
