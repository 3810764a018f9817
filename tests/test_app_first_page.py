"""The dashboard's first page (issue 22 item 6): what its first script run in a fresh server
process spends CPU on; ``benchmarks/bench_app.py`` times it in a browser, idle and loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tricl.runs import SHIPPED_RUNS_ROOT

APP = Path(__file__).resolve().parent.parent / "app"


def first_run(runs_root: Path, before: str, result: str) -> str:
    """In a fresh interpreter: run ``before``, then the dashboard's first page (AppTest,
    ``--runs-root runs_root``), then print ``result`` (an expression); return what it printed."""
    probe = (
        f"import sys\nsys.argv = ['app/main.py', '--runs-root', {str(runs_root)!r}]\n{before}\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(APP / 'main.py')!r}, default_timeout=120).run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        f"print(repr({result}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(APP.parent)}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=APP.parent, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_the_first_page_skips_streamlits_repl_check(tmp_path):
    """Streamlit's REPL check (``inspect.stack()`` resolving every loaded module: 0.2 CPU s) never
    runs for the dashboard's first element."""
    count = (
        "import streamlit.env_util as env_util\n"
        "calls = []\n"
        "env_util.is_repl = lambda: calls.append(1) or False"
    )
    assert first_run(tmp_path, count, "len(calls)") == "0"


# the readers behind the Runs page's numbers, counted where the page looks them up
COUNT_READS = """
import tricl.analysis.comparison as comparison, tricl.analysis.image_text as image_text
import tricl.analysis.summary as summary
reads = []
def counted(module, name):
    real = getattr(module, name)
    setattr(module, name, lambda *a, **k: reads.append(name) or real(*a, **k))
counted(summary, 'load_summary'); counted(image_text, 'load_zero_shot')
counted(comparison, 'load_pairs')
"""
READ_ALL = ["load_pairs", "load_summary", "load_zero_shot"]
# what the page drew (the table's values, the identifiable line, the importance caption)
DRAWN = "(at.dataframe[0].value.to_json(), [s.value for s in at.success], at.caption[-1].value)"
# the modules a page drawn from kept numbers has no use for (pandas: 0.45 CPU s to import)
UNUSED = ("pandas", "tricl.analysis", "jobs_ui", "torch", "sklearn", "scipy")


@pytest.fixture
def shipped_copy(tmp_path) -> Path:
    """Two shipped image-text runs (their captions' zero-shot metrics included), copied."""
    root = tmp_path / "runs"
    for seed in (0, 1):
        name = f"triclip_mnist5k-captions_small_cnn_k64_seed{seed}"
        if not (SHIPPED_RUNS_ROOT / name / "analysis").is_dir():
            pytest.skip("no shipped runs")
        shutil.copytree(SHIPPED_RUNS_ROOT / name, root / name)
    return root


def test_the_runs_pages_numbers_are_read_once_and_kept_until_a_file_changes(
    shipped_copy, tmp_path, monkeypatch
):
    """A fresh server's first page draws the numbers kept by the last one (no analysis read),
    the same as read; a changed analysis file is read again."""
    monkeypatch.setenv("TRICL_DASHBOARD_CACHE", str(tmp_path / "cache"))
    reads_and_page = f"(sorted(set(reads)), {DRAWN})"
    reads, page = eval(first_run(shipped_copy, COUNT_READS, reads_and_page))
    assert reads == READ_ALL  # no kept numbers yet
    assert (tmp_path / "cache" / "runs_page.json").is_file()
    # the modules are listed before the table's values are looked at (AppTest uses pandas)
    held = f"[m for m in {UNUSED!r} if m in sys.modules]"
    unused, again = eval(first_run(shipped_copy, "", f"({held}, {DRAWN})"))
    assert again == page and unused == []  # the same page; nothing read, nor imported to read
    downstream = next(shipped_copy.glob("*seed1/analysis/test/downstream.csv"))
    os.utime(downstream, ns=(downstream.stat().st_atime_ns, downstream.stat().st_mtime_ns + 10**9))
    assert eval(first_run(shipped_copy, COUNT_READS, reads_and_page)) == (READ_ALL, page)
