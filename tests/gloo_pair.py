"""Run a worker script as two gloo ranks in fresh interpreters and read what rank 0 saved."""

import os
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent


def run_two_ranks(worker: str, tmp_path: Path, *args: str) -> dict:
    """``python -c worker RANK INIT_FILE *args OUT`` for ranks 0 and 1; rank 0's saved dict.

    Fresh interpreters, not multiprocessing.spawn, which re-imports the parent's ``__main__``.
    The workers import the test modules (``tests/``) and this checkout's tricl.
    """
    out = tmp_path / "rank0.pt"
    path = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", worker, str(rank), str(tmp_path / "init"), *args, str(out)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    return torch.load(out, weights_only=True)
