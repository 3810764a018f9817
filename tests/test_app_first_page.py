"""The dashboard's first page (issue 22 item 6): what its first script run in a fresh server
process spends CPU on; ``benchmarks/bench_app.py`` times it in a browser, idle and loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
