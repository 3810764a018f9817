"""Where the dashboard listens when `streamlit run` starts outside the repository root.

Streamlit reads ``./.streamlit/config.toml`` of the working directory, and (recent versions) the
one beside the main script: ``app/.streamlit/config.toml`` holds ``address = "localhost"``, so a
server started from any folder listens on the loopback interface only. If no address reaches
Streamlit at all (an old Streamlit started elsewhere), it listens on every interface, and
``app/main.py`` then serves a one-line refusal instead of the dashboard.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tricl.dashboard import (
    CHROMIUM,
    CHROMIUM_ARGS,
    bind_refusal,
    free_port,
    running_server,
)

REPO = Path(__file__).resolve().parents[2]
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def _listening(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} writes them) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                local, _, state = line.split()[1:4]
                address, hex_port = local.split(":")
                if int(hex_port, 16) == port and state == LISTEN:
                    found.append(address)
    return found


def _loopback(address: str) -> bool:
    if len(address) == 8:  # IPv4, little-endian bytes: 0100007F is 127.0.0.1
        return bytes.fromhex(address)[::-1][0] == 127
    raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8))
    return socket.inet_ntop(socket.AF_INET6, raw) == "::1"


@contextmanager
def _server(script: Path, cwd: Path, log: Path) -> Iterator[int]:
    """``streamlit run SCRIPT`` from ``cwd`` with no address flag; yields its port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "TRICL_"))}
    env |= {"HOME": str(cwd), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--", "--runs-root", str(cwd / "runs"),
    ]  # fmt: skip
    (cwd / "runs").mkdir(exist_ok=True)
    with running_server(cmd, port, cwd=cwd, log=log, env=env):
        yield port


def test_started_from_another_folder_the_server_listens_on_loopback_only(tmp_path):
    with _server(REPO / "app" / "main.py", tmp_path, tmp_path / "log.txt") as port:
        addresses = _listening(port)
    assert addresses, "nothing listens on the server's port"
    assert all(_loopback(a) for a in addresses), (addresses, (tmp_path / "log.txt").read_text())


def test_an_unset_address_is_refused_and_a_chosen_one_served():
    assert "--server.address 127.0.0.1" in bind_refusal(None)
    assert bind_refusal("") == bind_refusal(None)
    assert "\n" not in bind_refusal(None)
    for chosen in ("localhost", "127.0.0.1", "0.0.0.0", "::"):
        assert bind_refusal(chosen) is None


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin")
def test_a_server_on_every_interface_serves_only_the_refusal(tmp_path):
    from playwright.sync_api import sync_playwright

    # the app without its config file: what an old Streamlit started elsewhere would see
    app = shutil.copytree(REPO / "app", tmp_path / "app", ignore=shutil.ignore_patterns(".*"))
    log = tmp_path / "log.txt"
    with _server(app / "main.py", tmp_path, log) as port:
        assert not all(_loopback(a) for a in _listening(port)), "the server did bind everywhere"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            tab = browser.new_page()
            tab.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
            alert = tab.get_by_text("listening on every network interface")
            alert.wait_for(timeout=120_000)
            shown = tab.inner_text("body")
            browser.close()
    assert "Runs folder" not in shown, "the dashboard was served"
    printed = [line for line in log.read_text().splitlines() if "every network interface" in line]
    assert printed and printed[0].startswith("error: ")
