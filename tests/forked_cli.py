"""Run the real ``tricl`` command in a fresh process without paying for its imports each time.

A ``python -m tricl`` process spends ~6 CPU seconds importing torch, torchvision and the analysis
stack before a tiny test run takes a fraction of a second, so a test that starts dozens of them
(kill at every write point, resume) is almost all start-up. Here one server process per test worker
imports ``tricl`` once and forks a child for each command: the child is a new process with its own
pid, environment, working directory, stdout and stderr, that runs ``tricl.cli.main`` as ``python -m
tricl`` does and exits (or is SIGKILLed) like one; only the imports are shared.

Use the real subprocess (``tests/faults/conftest.py``'s ``tricl_cli``) where the start-up itself is
under test (the entry point, what a fresh interpreter prints while importing).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what `tricl train` / `tricl analyze` import: done once, in the server
PRELOAD = ("tricl.cli", "tricl.train", "tricl.data", "tricl.analysis.pipeline")


def _child(request: dict) -> None:
    """In the forked child: become ``python -m tricl ARGS`` and exit with its status."""
    import signal
    import traceback

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    os.environ.clear()
    os.environ.update(request["env"])
    if request["cwd"]:
        os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = [str(REPO / "tricl" / "__main__.py"), *request["args"]]
    try:
        from tricl.cli import main

        code = main(request["args"])
    except SystemExit as exc:  # what the interpreter does with an uncaught SystemExit
        code = exc.code
    except BaseException:  # an uncaught exception: traceback, status 1
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def _serve() -> None:
    """The server: import once, then fork a child per JSON request read from stdin."""
    for name in PRELOAD:
        __import__(name)
    os.write(1, b'{"ready": true}\n')
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _child(request)
            finally:
                os._exit(1)
        os.write(1, (json.dumps({"pid": pid}) + "\n").encode())
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os.write(1, (json.dumps({"returncode": code}) + "\n").encode())


class _Server:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self.buf = b""
        assert self._read(600) == {"ready": True}

    def _read(self, timeout: float) -> dict:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the tricl fork server died ({self.proc.wait()})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, request: dict, timeout: float) -> int:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        pid = self._read(60)["pid"]
        try:
            return self._read(timeout)["returncode"]
        except TimeoutError:
            os.kill(pid, 9)
            self._read(60)
            raise

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


_server: _Server | None = None


def forked_tricl(
    args: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``tricl ARGS`` in a new (forked) process: the same result as ``tricl_cli``, in a fraction
    of the time."""
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = _Server()
        atexit.register(_server.close)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    with tempfile.TemporaryDirectory(prefix="tricl-fork-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        request = {
            "args": [str(a) for a in args],
            "env": full_env,
            "cwd": str(cwd) if cwd else None,
            "stdout": str(out),
            "stderr": str(err),
        }
        try:
            code = _server.run(request, timeout)
        except TimeoutError:
            raise subprocess.TimeoutExpired(["tricl", *args], timeout) from None
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "tricl", *args],
            code,
            out.read_text(encoding="utf-8") if out.exists() else "",
            err.read_text(encoding="utf-8") if err.exists() else "",
        )


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    sys.path.pop(0)  # the script's folder (tests/): `python -m tricl` does not see it
    _serve()
