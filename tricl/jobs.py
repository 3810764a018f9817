"""Background jobs: ``tricl analyze`` / ``compare`` / ``visualize`` in a subprocess, outside any
page.

The dashboard never computes an analysis inside a page's script run (a run's first analysis takes
minutes and the server would answer nobody meanwhile). It starts a job instead::

    store = JobStore(runs_root / "_jobs")
    job = store.start(analyze_command([run.path]))     # joins the running job for those runs
    store.status(job.id).progress                      # last tqdm line, e.g. "analyse ...: 40%"
    store.cancel(job.id)

A job is a small supervisor process (``python -m tricl.jobs supervise DIR``) in its own process
group; it runs the command in that group, copies its output to ``DIR/log.txt`` and keeps
``DIR/status.json`` (written atomically) up to date: command, pid, times, state, exit code and the
last progress line. The job's folder name is a hash of the command, so a second request for the
same target finds the same folder; a lock file makes "is it running? else start it" one step.
Cancelling sends SIGTERM to the group, then SIGKILL. A job whose process vanished without writing
its end (server killed, machine rebooted) reads as ``stale``.

At most ``limit`` jobs run their command at once (``TRICL_MAX_JOBS``, default 1): an analysis
uses every core it is given, and each visitor's click would otherwise start one more. The others
wait ``queued`` in arrival order. The cap is a set of slot lock files shared by every store of a
process (the dashboard's server: all its sessions, all its runs roots), so it holds across tabs
and visitors; a supervisor takes a slot with ``flock`` and its command inherits it, so the kernel
frees the slot when they end, however they end. A queued job can be cancelled like a running one.

Pure Python, no Streamlit: usable from tests and scripts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO

from tricl.bases import Basis, get_basis

STATUS_FILE = "status.json"
LOG_FILE = "log.txt"
CANCEL_FILE = "cancel"
LOCK_FILE = "job.lock"
QUEUED, RUNNING = "queued", "running"
DONE, FAILED, CANCELLED, STALE = "done", "failed", "cancelled", "stale"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (DONE, FAILED, CANCELLED, STALE)
MAX_JOBS_ENV = "TRICL_MAX_JOBS"
QUEUE_DIR = "queue"
# tqdm's "12/40" counter; the last one on a progress line gives the fraction done
_COUNTER = re.compile(r"(\d+)/(\d+)")
_STATUS_EVERY_S = 0.5  # how often the supervisor rewrites status.json while output flows
_QUEUE_POLL_S = 0.1  # how often a queued supervisor looks for a free slot (or a cancel)


class JobError(ValueError):
    """A job cannot be started, found or cancelled; the message names the fix."""


@dataclass(frozen=True)
class JobStatus:
    """What ``status.json`` holds.

    Attributes:
        id: the job's folder name (a hash of its command).
        command: the command line the job runs.
        pid: the supervisor's pid, which is also the job's process-group id.
        pid_start: the supervisor's start time in clock ticks (guards against pid reuse).
        started: Unix time the job was asked for, then the time its command started.
        state: queued, running, done, failed, cancelled or stale.
        exit_code: the command's exit status once finished (negative: killed by that signal).
        finished: Unix time the job ended (None while queued or running).
        progress: the last line of progress output (tqdm redraws with carriage returns).
        ticket: the job's place in the queue (a file name in the slots' ``queue/`` folder).
        position: 1 for the next queued job to run, 2 for the one after it, ...; None unless
            queued (computed when the status is read).
    """

    id: str
    command: tuple[str, ...]
    pid: int
    pid_start: int
    started: float
    state: str = RUNNING
    exit_code: int | None = None
    finished: float | None = None
    progress: str = ""
    ticket: str = ""
    position: int | None = None

    @property
    def running(self) -> bool:
        """Not finished yet: queued for a slot or running its command."""
        return self.state in ACTIVE

    @property
    def queued(self) -> bool:
        return self.state == QUEUED

    @property
    def fraction(self) -> float | None:
        """Share of the current progress bar done (0 … 1), or None if the line has no counter."""
        found = _COUNTER.findall(self.progress)
        if not found:
            return None
        done, total = map(int, found[-1])
        return min(done / total, 1.0) if total > 0 else None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started


def analyze_command(
    runs: Sequence[str | Path], split: str = "test", basis: str | Basis = "trained"
) -> list[str]:
    """``python -m tricl analyze RUN... --split SPLIT [--basis BASIS]`` with this interpreter.

    The trained basis adds no flag: its command (and so its job id) is the one it had before
    bases existed.
    """
    command = [sys.executable, "-m", "tricl", "analyze", *map(str, runs), "--split", split]
    return command + get_basis(basis).cli_args()


def compare_command(
    runs: Sequence[str | Path], split: str = "test", basis: str | Basis = "trained"
) -> list[str]:
    """``python -m tricl compare RUN... --split SPLIT [--basis BASIS]`` (analyses missing runs
    first)."""
    command = [sys.executable, "-m", "tricl", "compare", *map(str, runs), "--split", split]
    return command + get_basis(basis).cli_args()


def consensus_command(runs: Sequence[str | Path], split: str = "test") -> list[str]:
    """``python -m tricl compare RUN... --split SPLIT --consensus`` (analyses every run in its
    spectral basis first if needed)."""
    return [*compare_command(runs, split), "--consensus"]


def visualize_command(run: str | Path, feature: int, basis: str | Basis = "trained") -> list[str]:
    """``python -m tricl visualize RUN --feature N [--basis BASIS]``: one feature's
    visualisation (cached per run, basis and feature, so each feature is its own job)."""
    command = [sys.executable, "-m", "tricl", "visualize", str(run), "--feature", str(feature)]
    return command + get_basis(basis).cli_args()


def job_id(command: Sequence[str]) -> str:
    """The folder name of a command's job: the same target always maps to the same job."""
    return hashlib.sha256(json.dumps(list(command[1:])).encode()).hexdigest()[:12]


def last_progress(text: str) -> str:
    """The last non-empty line of terminal output, splitting at tqdm's carriage returns too."""
    for line in reversed(re.split(r"[\r\n]", text)):
        if line.strip():
            return line.strip()
    return ""


def _proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks, or None if it is gone or a zombie (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (name) "
    return None if fields[0] in "ZX" else int(fields[19])


def _write_status(folder: Path, status: JobStatus) -> None:
    tmp = folder / f".{STATUS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, folder / STATUS_FILE)


def _read_status(folder: Path) -> JobStatus | None:
    try:
        raw = json.loads((folder / STATUS_FILE).read_text())
        return JobStatus(**{**raw, "command": tuple(raw["command"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None


# Supervisors this process started; polled so that finished ones are reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def max_jobs() -> int:
    """How many jobs may run their command at once: ``$TRICL_MAX_JOBS``, default 1.

    Raises:
        JobError: the variable is not a whole number of at least 1.
    """
    raw = os.environ.get(MAX_JOBS_ENV, "1").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise JobError(
            f"{MAX_JOBS_ENV}={raw!r} is not a whole number of at least 1; set it to the number"
            " of analyses that may run at once (unset: 1)"
        )
    return int(raw)


def default_slots() -> Path:
    """The slots of this process's jobs: one folder per server process, shared by its stores."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"tricl-job-slots-{uid}-{os.getpid()}"


def _ticket_alive(path: Path) -> bool:
    """Whether the supervisor that holds this queue ticket still runs (name: ``NS-PID-START``)."""
    try:
        _, pid, start = path.name.split("-")
        return _proc_start(int(pid)) == int(start)
    except ValueError:
        return False


def queue_position(slots: Path, ticket: str) -> int | None:
    """1 + the live tickets ahead of ``ticket`` (dead ones are removed); None without a ticket."""
    queue = slots / QUEUE_DIR
    if not ticket or not (queue / ticket).exists():
        return None
    ahead = 0
    for other in sorted(queue.iterdir()):
        if other.name >= ticket:
            break
        if _ticket_alive(other):
            ahead += 1
        else:  # its supervisor died while queued
            other.unlink(missing_ok=True)
    return ahead + 1


def _take_slot(slots: Path, limit: int) -> BinaryIO | None:
    """An open, flock-ed slot file (one of ``limit``), or None while all are held."""
    for i in range(limit):
        fh = open(slots / f"slot-{i}.lock", "ab")  # noqa: SIM115 (held for the job's life)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        return fh
    return None


class JobStore:
    """The jobs under one folder (e.g. ``<runs root>/_jobs``), one sub-folder per job.

    Args:
        root: the jobs folder.
        slots: the folder of the run slots and the queue, shared by every store that shares
            the cap (default: this process's, :func:`default_slots`).
        limit: how many jobs of those stores run at once (default: :func:`max_jobs`).
    """

    def __init__(
        self, root: str | Path, slots: str | Path | None = None, limit: int | None = None
    ) -> None:
        self.root = Path(root)
        self.slots = Path(slots) if slots is not None else default_slots()
        self.limit = limit if limit is not None else max_jobs()
        if self.limit < 1:
            raise JobError(f"a job limit of {self.limit} runs nothing; use 1 or more")

    def folder(self, job: str) -> Path:
        return self.root / job

    @contextlib.contextmanager
    def _locked(self, job: str) -> Iterator[Path]:
        folder = self.folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / LOCK_FILE, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def status(self, job: str) -> JobStatus | None:
        """The job's status (``stale`` if its process vanished mid-run), or None if unknown."""
        _reap()
        got = _read_status(self.folder(job))
        if got is not None and got.queued and _proc_start(got.pid) == got.pid_start:
            return replace(got, position=queue_position(self.slots, got.ticket))
        if got is None or not got.running or _proc_start(got.pid) == got.pid_start:
            return got
        # the supervisor may have written its end between our read and the liveness check
        again = _read_status(self.folder(job))
        if again is not None and not again.running:
            return again
        return replace(got, state=STALE, finished=time.time())

    def find(self, command: Sequence[str]) -> JobStatus | None:
        """The job of this command (running or finished), if there is one."""
        return self.status(job_id(command))

    def start(self, command: Sequence[str]) -> JobStatus:
        """Queues ``command`` as a job, or joins the job already queued or running it.

        The job runs its command as soon as it is first in the queue and one of the ``limit``
        slots is free (at once, when nothing else runs).

        Args:
            command: the command line, e.g. :func:`analyze_command`.

        Returns:
            The job's status (queued, or running if it was already).
        """
        job = job_id(command)
        with self._locked(job) as folder:
            current = self.status(job)
            if current is not None and current.running:
                return current
            (folder / CANCEL_FILE).unlink(missing_ok=True)
            (folder / LOG_FILE).write_text("")
            (folder / "command.json").write_text(json.dumps(list(command)))
            (self.slots / QUEUE_DIR).mkdir(parents=True, exist_ok=True)
            supervise = [sys.executable, "-m", "tricl.jobs", "supervise", str(folder)]
            with open(folder / "supervisor.txt", "wb") as err:
                proc = subprocess.Popen(
                    [*supervise, str(self.slots), str(self.limit)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,  # own process group: cancel kills the command too
                )
            _CHILDREN[proc.pid] = proc
            pid_start = _proc_start(proc.pid) or 0
            ticket = f"{time.time_ns():020d}-{proc.pid}-{pid_start}"
            (self.slots / QUEUE_DIR / ticket).write_text(str(folder))
            status = JobStatus(
                job, tuple(command), proc.pid, pid_start, time.time(), QUEUED, ticket=ticket
            )
            _write_status(folder, status)
            return replace(status, position=queue_position(self.slots, ticket))

    def cancel(self, job: str, grace_s: float = 5.0) -> JobStatus | None:
        """Stops a running job: SIGTERM to its process group, SIGKILL after ``grace_s``.

        Returns:
            The job's final status (None if there is no such job).
        """
        with self._locked(job) as folder:
            current = self.status(job)
            if current is None or not current.running:
                return current
            (folder / CANCEL_FILE).write_text("")
            _signal_group(current.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while _group_alive(current.pid) and time.monotonic() < deadline:
                _reap()
                time.sleep(0.05)
            if _group_alive(current.pid):
                _signal_group(current.pid, signal.SIGKILL)
                while _group_alive(current.pid) and time.monotonic() < deadline + grace_s:
                    _reap()
                    time.sleep(0.05)
            final = _read_status(folder)
            if final is None or final.running:  # killed before it could record its end
                final = replace(current, state=CANCELLED, finished=time.time())
                _write_status(folder, final)
            return final


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process of the group is left."""
    _reap()
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            fields = text[text.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in "ZX":
                return True
    return False


def _wait_for_slot(folder: Path, slots: Path, limit: int, ticket: str) -> BinaryIO | None:
    """Waits until this job is first in the queue and a slot is free; None if cancelled first."""
    try:
        while not (folder / CANCEL_FILE).exists():
            if queue_position(slots, ticket) in (1, None):
                slot = _take_slot(slots, limit)
                if slot is not None:
                    return slot
            time.sleep(_QUEUE_POLL_S)
        return None
    finally:
        if ticket:
            (slots / QUEUE_DIR / ticket).unlink(missing_ok=True)


def supervise(folder: Path, slots: Path, limit: int) -> int:
    """Runs the job's command (the body of ``python -m tricl.jobs supervise DIR SLOTS LIMIT``).

    Waits for a slot (see :class:`JobStore`), copies the command's output to the log, keeps the
    last progress line in ``status.json``, and records the end: done, failed, or cancelled if a
    cancel was requested (while queued or running).
    """
    command = json.loads((folder / "command.json").read_text())
    deadline = time.monotonic() + 30
    got = None
    while time.monotonic() < deadline:  # the starter writes status.json once it knows our pid
        got = _read_status(folder)
        if got is not None and got.pid == os.getpid():
            break
        time.sleep(0.02)
    # SIGTERM reaches the whole group; the supervisor outlives the command to record its end
    signal.signal(signal.SIGTERM, lambda *_: None)
    slot = _wait_for_slot(folder, slots, limit, got.ticket if got is not None else "")
    if slot is None:
        _update(folder, state=CANCELLED, exit_code=None, finished=time.time())
        return 0
    _update(folder, state=RUNNING, started=time.time())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the command inherits the slot's lock: the slot stays taken while it runs, whatever happens
    # to this supervisor
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, pass_fds=[slot.fileno()]
    )
    tail, last_write = "", 0.0
    with open(folder / LOG_FILE, "ab") as log:
        for chunk in iter(lambda: child.stdout.read1(4096), b""):
            log.write(chunk)
            log.flush()
            tail = (tail + chunk.decode(errors="replace"))[-4096:]
            if time.monotonic() - last_write > _STATUS_EVERY_S:
                _update(folder, progress=last_progress(tail))
                last_write = time.monotonic()
    code = child.wait()
    state = CANCELLED if (folder / CANCEL_FILE).exists() else DONE if code == 0 else FAILED
    _update(folder, progress=last_progress(tail), state=state, exit_code=code, finished=time.time())
    return code


def _update(folder: Path, **changes: object) -> None:
    current = _read_status(folder)
    if current is not None:
        _write_status(folder, replace(current, **changes))


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "supervise":
        raise SystemExit("usage: python -m tricl.jobs supervise JOB_DIR SLOTS_DIR LIMIT")
    supervise(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
