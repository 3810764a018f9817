"""Background jobs from the dashboard under ``--confine``: two visitors, one analysis at a time.

Two AppTest sessions of one server (two tabs, or two visitors) each ask for the analysis of a
different run. The first job runs; the second waits, shown as "Queued (position 1)", and its
Cancel button removes it from the queue before it ever ran. Every job file stays inside the runs
root the server was confined to.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_app_pages import TINY, app_at, texts

from tricl.config import RunConfig
from tricl.jobs import CANCELLED, QUEUED, RUNNING, JobStore, analyze_command
from tricl.train import train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def fresh_root(tmp_path_factory) -> Path:
    """Two tiny triCL seeds, never analysed."""
    root = tmp_path_factory.mktemp("confined") / "runs"
    for seed in (0, 1):
        train(RunConfig(method="tricl", seed=seed, **TINY), runs_root=root, progress=False)
    return root


def _progress_text(at) -> str:
    return "\n".join(p.proto.text for p in at.get("progress"))


def _ask_for_analysis(root: Path, name: str, monkeypatch):
    at = app_at(root, monkeypatch, "--confine", run=name)
    at.run()
    at.switch_page("views/features.py").run()
    at.button(key=f"start_analyse_{name}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_second_visitors_job_is_queued_shown_and_cancelled(fresh_root, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("TRICL_MAX_JOBS", raising=False)
    names = sorted(p.name for p in fresh_root.iterdir())
    store = JobStore(fresh_root / "_jobs")
    first_tab = _ask_for_analysis(fresh_root, names[0], monkeypatch)
    first = store.find(analyze_command([fresh_root / names[0]]))
    deadline = time.monotonic() + 60
    while store.status(first.id).state != RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.status(first.id).state == RUNNING
    try:
        second_tab = _ask_for_analysis(fresh_root, names[1], monkeypatch)
        second = store.find(analyze_command([fresh_root / names[1]]))
        assert (second.state, second.position) == (QUEUED, 1), second
        assert "Queued (position 1)" in _progress_text(second_tab)
        assert "Running for" in _progress_text(first_tab.run())

        second_tab.button(key=f"cancel_analyse_{names[1]}").click().run()
        assert store.status(second.id).state == CANCELLED
        assert "The last try was cancelled." in texts(second_tab)
        assert (store.folder(second.id) / "log.txt").read_text() == "", "the queued job ran"
    finally:
        store.cancel(first.id)
    jobs_files = {p.resolve() for p in (fresh_root / "_jobs").rglob("*")}
    assert all(fresh_root.resolve() in p.parents for p in jobs_files)
