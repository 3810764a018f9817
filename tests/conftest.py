"""Settings every test file shares.

The suite runs on two pytest-xdist workers (``-n 2`` in pyproject's addopts: most of its time is
single-threaded Python, subprocess start-up and page scripts, so two workers use both cores). Each
worker then gets one BLAS / OpenMP / torch thread: two workers with two spinning threads each on
two cores made small probes up to 100x slower (see ``tricl.analysis.downstream.linear_probe``).
Subprocesses inherit the setting.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

# the dashboard's kept Runs page numbers (app/runs_brief.py) go to a folder of the test session,
# never the user's ~/.cache; tests that check them set their own
if not os.environ.get("TRICL_DASHBOARD_CACHE"):
    import atexit
    import shutil
    import tempfile

    os.environ["TRICL_DASHBOARD_CACHE"] = tempfile.mkdtemp(prefix="tricl-dashboard-cache-")
    atexit.register(shutil.rmtree, os.environ["TRICL_DASHBOARD_CACHE"], ignore_errors=True)
