"""Uploads at Streamlit's size limit, through a real server and browser.

``app/.streamlit/config.toml`` sets ``maxUploadSize = 20``. Streamlit's upload widget counts that
in the browser's megabytes: 1 MB = 1,000,000 bytes (1,048,576 only in browsers on Windows), so a
file of exactly 20,000,000 bytes is accepted and probed, and one byte more is refused before it
reaches the server (an upload of 20 MiB, 20,971,520 bytes, is refused too: that is why a test of
"exactly 20 MiB" never showed a probe). The server's own limit is looser (20 MiB plus 1 MB of
multipart overhead), so the widget's is the one a visitor meets. The file is a 28x28 PNG padded
with zeros after its end chunk: decoders stop at the end chunk, so it decodes in a millisecond
whatever its size. (The pixel limit, 8192 a side, is checked by the page itself:
``test_app_inputs.py``.)
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tricl.dashboard import CHROMIUM, CHROMIUM_ARGS, free_port, running_server, streamlit_command
from tricl.runs import SHIPPED_RUNS_ROOT

REPO = Path(__file__).resolve().parents[2]
RUN = "simclr_mnist5k_small_cnn_k64_seed0"
LIMIT = 20 * 1000 * 1000  # maxUploadSize = 20, in the widget's (decimal) megabytes
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin"),
]


def _png_of(size: int) -> bytes:
    """A 28x28 grey PNG padded with zeros to ``size`` bytes (decoders stop at its IEND)."""
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    data = buf.getvalue()
    return data + bytes(size - len(data))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """The dashboard (started from the repository root) on a copy of one shipped run."""
    root = tmp_path_factory.mktemp("upload_runs")
    shutil.copytree(SHIPPED_RUNS_ROOT / RUN, root / RUN)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRICL_RUNS"}
    env |= {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = streamlit_command(port, root)
    with running_server(cmd, port, cwd=REPO, log=root.parent / "streamlit.log", env=env) as url:
        yield url


@pytest.mark.parametrize(
    ("size", "probed"), [(LIMIT, True), (LIMIT + 1, False)], ids=["at_limit", "one_byte_over"]
)
def test_an_upload_at_the_limit_is_probed_and_one_byte_over_is_refused(
    server, tmp_path, size, probed
):
    from playwright.sync_api import sync_playwright

    upload = tmp_path / "limit.png"
    upload.write_bytes(_png_of(size))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 2000})
        tab.set_default_timeout(600_000)  # a loaded CI machine: the first probe imports torch
        tab.goto(f"{server}/probe?run={RUN}")
        tab.wait_for_selector(IDLE)
        tab.get_by_text("Upload", exact=True).click()
        tab.wait_for_selector('input[type="file"]', state="attached")
        tab.locator('input[type="file"]').set_input_files(str(upload))
        if probed:
            tab.get_by_text("Its strongest features").wait_for()
            tab.wait_for_selector(IDLE)
        else:
            tab.get_by_text(re.compile("or smaller")).wait_for()
        body = tab.inner_text("body")
        browser.close()
    assert ("Its strongest features" in body) == probed, body[-2000:]
    assert ("or smaller" in body) != probed
