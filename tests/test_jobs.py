"""Background jobs (tricl.jobs) with a real ``tricl analyze`` of a tiny run trained here."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tricl.analysis import load_analysis
from tricl.config import RunConfig
from tricl.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    MAX_JOBS_ENV,
    QUEUED,
    RUNNING,
    STALE,
    JobError,
    JobStatus,
    JobStore,
    analyze_command,
    compare_command,
    job_id,
    last_progress,
)
from tricl.runs import Run
from tricl.train import train

# 12-px digits (the loader resizes the 8x8 pictures): the jobs' analyses read a fifth of the pixels
TINY = {"dataset": "digits", "proj_dim": 16, "proj_hidden_dim": 32, "epochs": 1, "batch_size": 128}
TINY["image_size"] = 12
REPO = Path(__file__).resolve().parent.parent
LOG = "log.txt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Run:
    return train(RunConfig(method="tricl", **TINY), runs_root=tmp_path_factory.mktemp("runs"))


@pytest.fixture()
def fresh_run(trained, tmp_path) -> Path:
    """A copy of the tiny run without any analysis."""
    dst = tmp_path / "runs" / trained.name
    shutil.copytree(trained.path, dst, ignore=shutil.ignore_patterns("analysis"))
    return dst


@pytest.fixture(autouse=True)
def _package_on_path(monkeypatch):
    # the job's subprocess must import this checkout's tricl, not another install
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _wait(store: JobStore, job: str, timeout: float = 240) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = store.status(job)
        if got is not None and not got.running:
            return got
        time.sleep(0.2)
    raise TimeoutError(f"job {job} still running after {timeout} s")


def test_analyze_job_runs_to_done_with_progress_and_writes_the_analysis(fresh_run, tmp_path):
    store = JobStore(tmp_path / "runs" / "_jobs")
    assert load_analysis(fresh_run) is None
    job = store.start(analyze_command([fresh_run]))
    assert job.state in (QUEUED, RUNNING) and job.running and job.pid > 0
    again = store.start(analyze_command([fresh_run]))  # same target: joins, no second process
    assert again.id == job.id and again.pid == job.pid
    seen_progress = set()
    deadline = time.monotonic() + 240
    while (now := store.status(job.id)).running and time.monotonic() < deadline:
        seen_progress.add(now.progress)
        time.sleep(0.2)
    assert now.state == DONE, (store.folder(job.id) / "log.txt").read_text()[-2000:]
    assert now.exit_code == 0 and now.finished >= now.started
    assert load_analysis(fresh_run) is not None
    log = (store.folder(job.id) / "log.txt").read_bytes().decode()
    assert "\r" in log, "tqdm's redraws reach the log"
    assert "linear probe" in now.progress  # the command's last line: its summary
    bars = [p for p in seen_progress if "%|" in p]
    assert bars, f"no progress bar was visible while the job ran: {seen_progress}"


def test_cancel_stops_a_running_job_and_its_process_group(fresh_run, tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.start([*analyze_command([fresh_run]), "--force"])
    time.sleep(1.0)  # the command is importing torch: a real running process
    assert store.status(job.id).running
    final = store.cancel(job.id)
    assert final.state == CANCELLED
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)
    assert store.status(job.id).state == CANCELLED
    assert load_analysis(fresh_run) is None, "a cancelled analysis leaves no artifacts"
    # a new request after a cancel starts a new job in the same folder
    restarted = store.start([*analyze_command([fresh_run]), "--force"])
    assert restarted.id == job.id and restarted.pid != job.pid and restarted.running
    store.cancel(restarted.id)


def test_a_job_whose_process_vanished_is_stale(fresh_run, tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.start(analyze_command([fresh_run]))
    time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)  # the server's machine went down mid-job
    deadline = time.monotonic() + 10
    while store.status(job.id).running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.status(job.id).state == STALE
    assert store.start(analyze_command([fresh_run])).running  # a stale job can be restarted
    store.cancel(job.id)


def test_a_failing_command_reads_as_failed_with_its_output(tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.start(analyze_command([tmp_path / "no_such_run"]))
    final = _wait(store, job.id, timeout=120)
    assert final.state == FAILED and final.exit_code != 0
    assert "no_such_run" in (store.folder(job.id) / "log.txt").read_text()


def test_last_progress_reads_tqdm_redraws():
    out = "start\nanalyse:  10%|#  | 1/10\ranalyse:  50%|#####  | 5/10\r"
    assert last_progress(out) == "analyse:  50%|#####  | 5/10"
    status = JobStatus("x", ("a",), 1, 1, 0.0, progress=last_progress(out))
    assert status.fraction == 0.5
    assert last_progress("") == "" and JobStatus("x", ("a",), 1, 1, 0.0).fraction is None


def test_job_id_depends_on_the_target_not_the_interpreter():
    a = analyze_command(["/r/a"])
    assert job_id(a) == job_id(["/other/python", *a[1:]])
    assert job_id(a) != job_id(analyze_command(["/r/b"]))


def test_job_commands_of_the_trained_basis_keep_their_shipped_form():
    # the trained basis adds no flag, so the ids of jobs started before bases existed still match
    assert analyze_command(["/r/a"])[1:] == ["-m", "tricl", "analyze", "/r/a", "--split", "test"]
    assert compare_command(["/r/a", "/r/b"], "test", "trained")[-2:] == ["--split", "test"]
    assert analyze_command(["/r/a"], basis="spectral")[-2:] == ["--basis", "spectral"]
    assert job_id(analyze_command(["/r/a"])) == "81b889cc1801"


def _copies(trained: Run, root: Path, n: int) -> list[Path]:
    """``n`` copies of the tiny run without analysis, each in its own folder."""
    out = []
    for i in range(n):
        dst = root / f"r{i}" / trained.name
        shutil.copytree(trained.path, dst, ignore=shutil.ignore_patterns("analysis"))
        out.append(dst)
    return out


def test_jobs_beyond_the_limit_wait_in_order_and_a_queued_one_can_be_cancelled(trained, tmp_path):
    runs = _copies(trained, tmp_path, 3)
    store = JobStore(tmp_path / "_jobs", slots=tmp_path / "slots", limit=1)
    first, second, third = (store.start(analyze_command([r])) for r in runs)
    deadline = time.monotonic() + 30
    while store.status(first.id).state != RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # time enough for a second job to start, if nothing held it back
    waiting = [store.status(j.id) for j in (second, third)]
    assert [(s.state, s.position) for s in waiting] == [(QUEUED, 1), (QUEUED, 2)]
    cancelled = store.cancel(third.id)
    assert cancelled.state == CANCELLED and not cancelled.running
    assert store.status(second.id).position == 1
    done = [_wait(store, first.id), _wait(store, second.id)]
    assert [d.state for d in done] == [DONE, DONE], (store.folder(second.id) / LOG).read_text()
    assert done[1].started >= done[0].finished, "the second analysis ran beside the first"
    assert load_analysis(runs[0]) is not None and load_analysis(runs[1]) is not None
    assert load_analysis(runs[2]) is None and (store.folder(third.id) / LOG).read_text() == ""
    assert not list((tmp_path / "slots" / "queue").iterdir()), "no ticket is left behind"


def _sleeper(i: int) -> list[str]:
    return [sys.executable, "-c", f"import time; time.sleep(2); print({i})"]


def test_the_limit_is_configurable_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_JOBS_ENV, "2")
    store = JobStore(tmp_path / "jobs", slots=tmp_path / "slots")
    assert store.limit == 2
    jobs = [store.start(_sleeper(i)) for i in range(3)]
    deadline = time.monotonic() + 20
    while store.status(jobs[1].id).state != RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    states = [store.status(j.id).state for j in jobs]
    assert states == [RUNNING, RUNNING, QUEUED]
    assert [_wait(store, j.id, 60).state for j in jobs] == [DONE] * 3
    for bad in ("0", "two", "-1", ""):
        monkeypatch.setenv(MAX_JOBS_ENV, bad)
        with pytest.raises(JobError, match=MAX_JOBS_ENV):
            JobStore(tmp_path / "jobs")
