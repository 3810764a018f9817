"""Start the Streamlit dashboard as a server process (shared by the benchmark and the e2e test).

``streamlit run app/main.py`` is the product's main job; this module only builds that command,
finds a free local port, waits for the server's health check, and names the headless Chromium
that drives it (Debian's package; playwright never downloads a browser here).

What the server exposes: it listens on ``localhost`` only (``app/.streamlit/config.toml``, which
Streamlit reads wherever it is started; ``.streamlit/config.toml`` links to it for Streamlit
versions that read the working directory's only), so only this machine can open it. If no
address was set at all (Streamlit then listens on every interface), ``app/main.py`` refuses to
serve (:func:`bind_refusal`). It shows the runs of its runs roots (every run's config, metrics,
analysis artifacts and the dataset images they point to), lets a visitor start ``tricl analyze``
/ ``tricl compare`` jobs on those runs (one runs at a time per server, the others queued;
``TRICL_MAX_JOBS=N`` allows N), runs uploaded images through a run's encoder, and by default lets
a visitor type any folder of the server's disk into the sidebar's "Runs folder" box.
To open it to a network::

    streamlit run app/main.py --server.address 0.0.0.0 -- --confine

``--confine`` (or ``TRICL_CONFINE=1``) keeps the "Runs folder" box inside the runs roots the
server was started with; put an authenticating reverse proxy in front of it on an untrusted
network (Streamlit has no login of its own).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP_SCRIPT = REPO / "app" / "main.py"
CHROMIUM = Path("/usr/bin/chromium")
# without the background-networking flags Chromium floods a closed network with refused requests
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def bind_refusal(address: str | None) -> str | None:
    """Why the dashboard must not serve with this ``server.address``, or None if it may.

    Streamlit listens on every network interface when no address is set (no config file was
    read: an old Streamlit started outside the repository root). An address given on purpose,
    ``0.0.0.0`` included, is served.
    """
    if address:
        return None
    return (
        "the tricl dashboard is listening on every network interface because no"
        " server.address was set (Streamlit read no app/.streamlit/config.toml); stop it and"
        " start it from the repository root or pass --server.address 127.0.0.1"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(port: int, runs_root: str | Path, *app_args: str) -> list[str]:
    """``streamlit run app/main.py -- --runs-root ROOT ARGS`` on 127.0.0.1:``port``, headless."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--", "--runs-root", str(runs_root), *app_args,
    ]  # fmt: skip


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float, poll: float = 0.3) -> None:
    """Block until the server on ``port`` answers its health check.

    Raises:
        RuntimeError: the server process exited first.
        TimeoutError: no answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return
        except OSError:
            time.sleep(poll)
    raise TimeoutError(f"streamlit did not answer on port {port} within {timeout} s")


@contextmanager
def running_server(
    cmd: Sequence[str],
    port: int,
    *,
    cwd: str | Path,
    log: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Iterator[str]:
    """Start ``cmd`` (a Streamlit server listening on ``port``) from ``cwd``, its output in
    ``log``; yield its URL once healthy, and stop it however the block ends."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(port, proc, timeout=timeout)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
