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
4. image-text runs (clip, triclip), whose Probe page opens in caption mode on the first
   evaluation caption: the warm draw of that page (2.), then a typed caption (Enter -> its
   features, strongest features and retrieved images drawn; each visit types a new caption, so
   the model worker encodes it afresh) and the switch to the image probe (target: 1.5 s);
5. the server's resident memory (VmRSS) with every page of the runs visited (target: under
   700 MiB: the server never imports torch), and the model worker's beside it;
6. the cold start again under load: ``--load N`` processes (default 2, each bounded to
   ``LOAD_BOUND_S``) run beside a fresh server while the first page is drawn: busy loops, or with
   ``--load-with train`` real ``tricl train`` runs (tri-eigen on digits, written to a temporary
   folder), as a training run beside the dashboard would (target: the first page drawn within
   4 s on a loaded 2-core machine too); printed with the load average and its ratio to the idle
   start. ``--first-only`` measures only this and the idle cold start. Each cold start prints
   the CPU seconds of the server and of the browser (Chromium and playwright's driver) until
   the page was drawn, and is measured beside Streamlit's floor: the same server command and
   browser on a page holding only its title (``FLOOR_SCRIPT``), which no change to the
   dashboard can beat. The servers keep the Runs page's numbers in a temporary cache
   (``TRICL_DASHBOARD_CACHE``): the first cold start reads every analysis, as a newcomer's first
   start does, and keeps them; the later ones read them back, as every later start does.

Needs Debian's chromium at /usr/bin/chromium and playwright's Python package (no browser
download). Usage: python benchmarks/bench_app.py [--runs-root checkpoints] [--repeats 5]
[--run NAME | --run RUN_DIR] [--load 2] [--load-with busy|train] [--first-only]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from tricl.dashboard import (
    APP_SCRIPT,
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
# the Probe page's title for runs with a text encoder (app/views/probe.py)
PROBE_IMAGE_TEXT_TITLE = "Probe a caption or an image"
TARGET_S = 1.5
FIRST_PAGE_TARGET_S = 4.0  # server start -> Runs page drawn, idle or loaded
LOAD_BOUND_S = 300  # a busy-loop process of the loaded measurement never outlives this
# Streamlit's floor: a page with only the Runs page's title, started and drawn as the dashboard is
FLOOR_SCRIPT = 'import streamlit as st\n\nst.title("Runs")\n'
BUSY_LOOP = "import time\nend = time.time() + {bound}\nwhile time.time() < end:\n    pass\n"
# typed into the caption probe, one per visit: a caption the page has not encoded yet
CAPTIONS = [f"a {w} handwritten {d}" for d in range(10) for w in ("thin", "thick")]
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


# The caption probe's "Tokens read: ..." line ('' while none is shown).
TOKENS_JS = """
() => {
  const m = document.body.innerText.match(/Tokens read:[^\\n]*/);
  return m ? m[0] : '';
}
"""
# Drawn, with a caption probe whose tokens differ from ``before`` (the new caption's are shown).
CAPTION_DRAWN_JS = f"""
([title, before]) => {{
  const tokens = ({TOKENS_JS})();
  return ({DRAWN_JS})(title) && tokens !== '' && tokens !== before;
}}
"""
# Drawn, with the image probe's strongest features (only the image mode has this heading).
IMAGE_PROBE_DRAWN_JS = f"""
(title) => ({DRAWN_JS})(title) && document.body.innerText.includes('Its strongest features')
"""


def resolve_run(run: str, runs_root: str | None) -> tuple[Path, str, bool]:
    """``(runs root, run name, has a text encoder)`` of ``--run``: a run's name under the runs
    root, or a run directory (its folder is then the runs root). The app, started with that one
    root, names its runs by folder name (``?run=NAME``), so the bench passes the name and checks
    the folder here."""
    from tricl.runs import Run

    given = Path(run)
    if len(given.parts) > 1:  # a run directory
        path = given.resolve()
        root = Path(runs_root).resolve() if runs_root else path.parent
        if path.parent != root:
            sys.exit(f"error: run {run} is not in --runs-root {root}; drop --runs-root")
    else:
        root = Path(runs_root or REPO / "checkpoints").resolve()
        path = root / run
    if not (path / "config.json").is_file():
        sys.exit(f"error: no run {path.name!r} in {root}; pass a run directory or a run's name")
    loaded = Run.load(path)
    return root, path.name, loaded.image_text and not loaded.aligned  # as app/labels.has_text


def page_titles(image_text: bool) -> dict[str, str]:
    """Sidebar label -> the page's title for the run shown (the Probe page names the caption
    probe for runs with a text encoder)."""
    return PAGES | ({"Probe an image": PROBE_IMAGE_TEXT_TITLE} if image_text else {})


def click_page(tab, label: str, title: str, timeout_s: float) -> None:
    tab.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
    wait_drawn(tab, title, timeout_s)


def report(label: str, times: list[float], target: float) -> float:
    """Print the median and max of ``times``; return the median."""
    med, top = statistics.median(times), max(times)
    flag = "ok" if med < target else f"OVER {target} s"
    print(f"  {label:<16} median {med:5.2f} s   max {top:5.2f} s   {flag}")
    return med


def warm_draws(tab, pages: dict[str, float], repeats: int, titles: dict[str, str]) -> float:
    """Median seconds per page (sidebar click -> drawn), visiting another page in between."""
    worst = 0.0
    for label, target in pages.items():
        times = []
        for _ in range(repeats):
            other = "Runs" if label != "Runs" else "Features"
            click_page(tab, other, titles[other], 120)
            t = time.perf_counter()
            click_page(tab, label, titles[label], 120)
            times.append(time.perf_counter() - t)
        worst = max(worst, report(label, times, target))
    return worst


def caption_draws(tab, repeats: int) -> float:
    """Median seconds from Enter on a caption the page has not encoded yet to its probe drawn
    (tokens, feature bars, strongest features, retrieved images); the first is a warm-up."""
    click_page(tab, "Probe an image", PROBE_IMAGE_TEXT_TITLE, 120)
    box = tab.get_by_label("Caption", exact=True)
    times = []
    for caption in CAPTIONS[: repeats + 1]:
        before = tab.evaluate(TOKENS_JS)
        box.fill(caption)
        t = time.perf_counter()
        box.press("Enter")
        tab.wait_for_function(
            CAPTION_DRAWN_JS, arg=[PROBE_IMAGE_TEXT_TITLE, before], timeout=120_000, polling=20
        )
        times.append(time.perf_counter() - t)
    return report("typed caption", times[1:], TARGET_S)


def image_probe_draws(tab, repeats: int) -> float:
    """Median seconds from picking "An image" on the Probe page (which opens in caption mode)
    to the image probe drawn (activations, strongest features with saliency); the first visit
    is a warm-up."""
    times = []
    for _ in range(repeats + 1):
        click_page(tab, "Runs", "Runs", 120)  # leaving the page resets it to caption mode
        click_page(tab, "Probe an image", PROBE_IMAGE_TEXT_TITLE, 120)
        radio = tab.locator('[data-testid="stRadio"]').get_by_text("An image", exact=True)
        t = time.perf_counter()
        radio.first.click()
        tab.wait_for_function(
            IMAGE_PROBE_DRAWN_JS, arg=PROBE_IMAGE_TEXT_TITLE, timeout=120_000, polling=20
        )
        times.append(time.perf_counter() - t)
    return report("image probe", times[1:], TARGET_S)


def wait_drawn(tab, title: str, timeout_s: float) -> None:
    tab.wait_for_function(DRAWN_JS, arg=title, timeout=timeout_s * 1000, polling=20)


def check_shown(tab, name: str) -> None:
    """Stop if the app shows another run than ``name`` (it refused the URL's run)."""
    shown = parse_qs(urlparse(tab.url).query).get("run", [""])[0]
    if shown != name:
        alert = tab.locator('[data-testid="stAlert"]').all_inner_texts()
        why = " ".join(alert[0].split()) if alert else "no message"
        sys.exit(f"error: the app shows run {shown!r}, not {name!r} ({why})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs-root",
        default=None,
        help="the app's runs root (default: the folder of a --run directory, else checkpoints/)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="warm visits per page (5)")
    parser.add_argument(
        "--run",
        default="tricl_mnist5k_small_cnn_k64_seed0",
        help="the run the pages show (its other seeds are drawn beside it): its name under"
        " --runs-root, or its directory",
    )
    parser.add_argument(
        "--first-timeout", type=float, default=1800, help="seconds allowed for the first page"
    )
    parser.add_argument(
        "--first-only",
        action="store_true",
        help="measure only the first page's cold start (idle, and loaded unless --load 0)",
    )
    parser.add_argument(
        "--load",
        type=int,
        default=2,
        help="processes beside the server for the loaded cold start (2 on a 2-core machine:"
        " load 2-4 with the server and browser; 0 skips it)",
    )
    parser.add_argument(
        "--load-with",
        choices=("busy", "train"),
        default="busy",
        help="what those processes run: a Python busy loop, or `tricl train` (a real training"
        " run: tri-eigen on digits, one thread each, into a temporary folder)",
    )
    return parser


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    try:
        kids = children(pid)
    except OSError:  # it has just exited
        return []
    return kids + [d for k in kids for d in descendants(k)]


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes (those that have exited count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # it has exited
            total += cpu_seconds(pid)
    return total


@dataclass
class Start:
    """One cold start: wall seconds to the page drawn, the CPU seconds of the server and of the
    browser (Chromium and playwright's driver, less what launching them cost) until then, and
    the 1-minute load average at the end."""

    wall: float
    server_cpu: float
    browser_cpu: float
    load: float

    def line(self) -> str:
        return (
            f"{self.wall:5.2f} s   (CPU s to then: server {self.server_cpu:.2f}, browser"
            f" {self.browser_cpu:.2f}; load average {self.load:.1f})"
        )


def cold_start(
    p, root: Path, name: str, timeout_s: float, script: Path | None = None, title: str = "Runs"
) -> Start:
    """A fresh server launched, its first page (the Runs page, or ``script``'s) drawn in a
    fresh browser: the wall time and the CPU the server and the browser spent on it."""
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    port = free_port()
    cmd = streamlit_command(port, root)
    if script is not None:
        cmd[cmd.index(str(APP_SCRIPT))] = str(script)
    browser_cpu0 = tree_cpu_seconds(descendants(os.getpid()))  # playwright's driver, browser
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, proc, timeout=180, poll=0.05)
        tab.goto(f"http://127.0.0.1:{port}/?run={name}")
        wait_drawn(tab, title, timeout_s)
        wall = time.perf_counter() - t0
        server = [proc.pid, *descendants(proc.pid)]
        browser_now = [c for c in descendants(os.getpid()) if c not in server]
        return Start(
            wall,
            tree_cpu_seconds(server),
            tree_cpu_seconds(browser_now) - browser_cpu0,
            os.getloadavg()[0],
        )
    finally:
        browser.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def load_command(kind: str, i: int, folder: str) -> list[str]:
    """One loading process, bounded to ``LOAD_BOUND_S``: a busy loop, or a ``tricl train`` run
    (one thread) into ``folder``."""
    if kind == "busy":
        return [sys.executable, "-c", BUSY_LOOP.format(bound=LOAD_BOUND_S)]
    return [
        "timeout", str(LOAD_BOUND_S), sys.executable, "-m", "tricl", "train",
        "--method", "tri-eigen", "--dataset", "digits", "--epochs", "1000",
        "--runs-root", folder, "--name", f"load{i}", "--no-progress",
    ]  # fmt: skip


def floor_and_page(p, root: Path, name: str, timeout_s: float, floor: Path) -> Start:
    """Streamlit's floor, then the dashboard's first page, cold, under the same load; prints
    both and their ratio and returns the dashboard's."""
    bare = cold_start(p, root, name, timeout_s, script=floor)
    page = cold_start(p, root, name, timeout_s)
    print(f"  Streamlit's floor (a page with only a title): {bare.line()}")
    print(f"  the dashboard's Runs page:                    {page.line()}")
    print(
        f"  Runs page / floor: wall {page.wall / bare.wall:.2f}x, server CPU"
        f" {page.server_cpu / bare.server_cpu:.2f}x, browser CPU"
        f" {page.browser_cpu / max(bare.browser_cpu, 1e-9):.2f}x"
    )
    return page


def loaded_start(
    p, root: Path, name: str, args: argparse.Namespace, idle: Start, floor: Path
) -> None:
    """The cold starts (floor and page) with ``args.load`` loading processes beside them;
    prints them against the idle start ``idle``."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="bench_app_load_") as folder:
        busy = [
            subprocess.Popen(
                load_command(args.load_with, i, folder),
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            for i in range(args.load)
        ]
        try:
            # let the load average climb (and a training run reach its epochs) first
            time.sleep(5 if args.load_with == "busy" else 15)
            loaded = floor_and_page(p, root, name, args.first_timeout, floor)
        finally:
            for b in busy:
                b.kill()
                b.wait()
    flag = "ok" if loaded.wall < FIRST_PAGE_TARGET_S else f"OVER {FIRST_PAGE_TARGET_S} s"
    what = "busy loops" if args.load_with == "busy" else "`tricl train` runs"
    print(
        f"server start -> first page drawn with {args.load} {what} beside it (load average"
        f" {loaded.load:.1f}): {loaded.wall:.2f} s, {loaded.wall / idle.wall:.2f}x the idle start"
        f"   {flag}"
    )


def print_memory(proc: subprocess.Popen) -> None:
    """Resident memory of the server and of its children (the model worker)."""
    print(f"\nserver resident memory, every page visited: {rss_mib(proc.pid):.0f} MiB")
    for child in children(proc.pid):  # the model worker (and multiprocessing's tracker)
        what = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")[-60:]
        print(f"child {child} ({what.decode(errors='replace').strip()}): ", end="")
        print(f"{rss_mib(child):.0f} MiB resident")


def measure(tab, name: str, image_text: bool, args: argparse.Namespace) -> None:
    """Everything after the first page: warm draws, the caption probe, the spectral basis."""
    titles = page_titles(image_text)
    for label, title in titles.items():  # warm-up: analyses, datasets, encoders cached
        click_page(tab, label, title, args.first_timeout)
    print(f"\nwarm page draws (sidebar click -> drawn), {args.repeats} visits each:")
    worst = warm_draws(tab, dict.fromkeys(titles, TARGET_S), args.repeats, titles)
    print(f"slowest page median: {worst:.2f} s (target < {TARGET_S} s)")
    if image_text:
        print(
            f"\nprobe page of an image-text run ({args.repeats} each after a warm-up; the visits"
            " above drew it on its first evaluation caption):"
        )
        caption_draws(tab, args.repeats)
        image_probe_draws(tab, args.repeats)
    sidebar = tab.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("spectral basis", exact=True).first.click()  # the basis radio
    tab.wait_for_url("**basis=spectral**")
    for label in SPECTRAL_PAGES:  # warm-up in the spectral basis
        click_page(tab, label, titles[label], args.first_timeout)
    print(f"\nwarm page draws in the spectral basis ({name}):")
    warm_draws(tab, SPECTRAL_PAGES, args.repeats, titles)


def main() -> None:
    args = _parser().parse_args()
    from playwright.sync_api import sync_playwright

    root, name, image_text = resolve_run(args.run, args.runs_root)
    done, total = analysed(root)
    spectral, _ = analysed(root, "spectral")
    print(f"runs root: {root} ({total} runs, {done} analysed, {spectral} in the spectral basis)")
    if done < total:
        print("  runs without an analysis show an 'Analyse now' panel; run `tricl analyze` first")
    print(
        f"run: {name}" + (" (image-text: the caption probe is measured too)" if image_text else "")
    )
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(
            "  PYTHONDONTWRITEBYTECODE is set: the server compiles tricl's and the app's modules"
            " from source at every start (unset it to measure what users see)"
        )
    with sync_playwright() as p:
        if not args.first_only:
            every_page(p, root, name, image_text, args)
        if args.load > 0 or args.first_only:
            first_page_starts(p, root, name, args)


def first_page_starts(p, root: Path, name: str, args: argparse.Namespace) -> None:
    """6: the cold start with a fresh dashboard cache (the analyses read, the Runs page's numbers
    kept), then idle and loaded beside Streamlit's floor (the numbers read back)."""
    with tempfile.TemporaryDirectory(prefix="bench_app_floor_") as folder:
        floor = Path(folder) / "floor.py"
        floor.write_text(FLOOR_SCRIPT)
        os.environ["TRICL_DASHBOARD_CACHE"] = str(Path(folder) / "cache")  # the servers' cache
        print(f"\ncold start again, idle (load average {os.getloadavg()[0]:.1f}):")
        fresh = cold_start(p, root, name, args.first_timeout)
        print(f"  a fresh dashboard cache (every analysis read): {fresh.line()}")
        idle = floor_and_page(p, root, name, args.first_timeout, floor)
        flag = "ok" if idle.wall < FIRST_PAGE_TARGET_S else f"OVER {FIRST_PAGE_TARGET_S} s"
        print(f"server start -> first page drawn, idle: {idle.wall:.2f} s   {flag}")
        what = "busy loops" if args.load_with == "busy" else "`tricl train` runs"
        if args.load > 0:
            print(f"\nthe same with {args.load} {what} beside it:")
            loaded_start(p, root, name, args, idle, floor)


def every_page(p, root: Path, name: str, image_text: bool, args: argparse.Namespace) -> None:
    """1-5: the cold start, then every page warm, the probe and the spectral basis, memory."""
    port = free_port()
    cmd = streamlit_command(port, root)
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, proc, timeout=180, poll=0.05)
        t_health = time.perf_counter() - t0
        tab.goto(f"http://127.0.0.1:{port}/?run={name}")
        wait_drawn(tab, "Runs", args.first_timeout)
        t_first = time.perf_counter() - t0
        check_shown(tab, name)
        print(f"server start -> health check: {t_health:.2f} s")
        flag = "ok" if t_first < FIRST_PAGE_TARGET_S else f"OVER {FIRST_PAGE_TARGET_S} s"
        print(f"server start -> first page (Runs) drawn: {t_first:.2f} s   {flag}")
        print(f"server resident memory, first page drawn: {rss_mib(proc.pid):.0f} MiB")
        measure(tab, name, image_text, args)
        print_memory(proc)
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
