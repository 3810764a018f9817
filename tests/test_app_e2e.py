"""The dashboard in a real browser: `streamlit run app/main.py` + Debian's chromium via playwright.

Installs nothing: it drives /usr/bin/chromium (what .ci/run installs) through playwright's Python
package. Screenshots of every page go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from shared_runs import session_dir
from test_app_image_text import TRICLIP, make_image_text_runs
from test_app_pages import make_fixture_runs

from tricl.analysis.image_text import load_text_analysis
from tricl.analysis.metrics import METRICS
from tricl.dashboard import (
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    running_server,
    streamlit_command,
)

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "test-output" / "screenshots"
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
RUN = "tricl_digits_small_cnn_k16_seed0"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin"),
]


def _serve(root: Path, tmp_path_factory) -> Iterator[str]:
    """`streamlit run app/main.py -- --runs-root ROOT` on a free port; yields its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {k: v for k, v in os.environ.items() if k != "TRICL_RUNS"}
    with running_server(streamlit_command(port, root), port, cwd=REPO, log=log, env=env) as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """The dashboard on the image-only fixture runs (SimCLR and triCL, two seeds each)."""
    yield from _serve(
        make_fixture_runs(session_dir(tmp_path_factory, "app_runs")), tmp_path_factory
    )


@pytest.fixture(scope="module")
def image_text_root(tmp_path_factory) -> Path:
    return make_image_text_runs(session_dir(tmp_path_factory, "app_image_text_runs"))


@pytest.fixture(scope="module")
def image_text_server(image_text_root, tmp_path_factory) -> Iterator[str]:
    """The dashboard on the image-text fixture runs (clip and triclip, two seeds each)."""
    yield from _serve(image_text_root, tmp_path_factory)


@pytest.fixture(scope="module")
def tab():
    """One chromium tab for the module's tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 2000})
        tab.set_default_timeout(180_000)
        yield tab
        browser.close()


@pytest.fixture(scope="module")
def page(server, tab):
    """The tab, once the image-only server is up."""
    return tab


def _open(tab, url: str, shot: str) -> None:
    tab.goto(url)
    tab.wait_for_selector(IDLE)
    tab.wait_for_selector("h1")
    tab.wait_for_timeout(500)  # charts and images finish drawing after the script run
    tab.wait_for_selector(IDLE)
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{shot}.png"))
    assert tab.locator('[data-testid="stException"]').count() == 0


_LOADED_IMAGES = (
    "[...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
    ".filter(i => i.complete && i.naturalWidth > 0).length"
)


def _loaded_images(tab, at_least: int = 0) -> int:
    """Images drawn and decoded on the page, once at least ``at_least`` are (the browser fetches
    them after the page reports idle, so counting at once races their download)."""
    if at_least:
        tab.wait_for_function(f"n => {_LOADED_IMAGES} >= n", arg=at_least, timeout=30_000)
    return tab.evaluate(f"() => {_LOADED_IMAGES}")


def _plot_png_buttons(tab) -> int:
    tab.locator(".js-plotly-plot").first.hover()
    return tab.locator('.modebar-btn[data-title^="Download plot as a" i]').count()


# (url path, screenshot, text that must be on the page)
PAGES = [
    ("", "runs", "4 runs in"),
    ("features", "features", "16 of 16 features shown"),
    ("feature", "feature_detail", "highest activation"),
    ("compare", "compare_seeds", "Each method across seeds (image features)"),
    ("embedding", "embedding", "Select points on the map"),
    ("few-features", "few_features", "Linear probe accuracy"),
    ("probe", "probe", "Its strongest features"),
    ("study", "study_results", "Study results"),
]


@pytest.mark.parametrize(("path", "shot", "text"), PAGES, ids=[p[1] for p in PAGES])
def test_page_shows_its_key_content(page, server, path, shot, text):
    _open(page, f"{server}/{path}?run={RUN}", shot)
    page.get_by_text(text).first.wait_for()
    assert page.get_by_role("heading", level=1).count() == 1
    charts = page.locator(".js-plotly-plot").count()
    if charts:  # every chart keeps Plotly's "Download plot as a PNG" button
        assert _plot_png_buttons(page) == charts


def test_study_results_draws_the_figures_of_results_md(page, server):
    results = REPO / "docs" / "RESULTS.md"
    if not results.is_file():
        pytest.skip("no docs/RESULTS.md in this checkout")
    figures = len(re.findall(r"^!\[", results.read_text(), flags=re.M))
    _open(page, f"{server}/study?run={RUN}", "study_results")
    page.get_by_text("Identifiability across seeds").first.wait_for()
    page.wait_for_function(
        "n => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= n",
        arg=figures,
    )
    assert _loaded_images(page, figures) == figures


def test_compare_page_reports_the_spectral_basis(page, server):
    _open(page, f"{server}/compare?run={RUN}", "compare_spectral")
    label = METRICS["ordered_corr_top8"].label  # the registry names the page's columns
    page.get_by_text(f"{label}, spectral basis").first.wait_for()


def test_feature_detail_shows_feature_one_images(page, server):
    _open(page, f"{server}/feature?run={RUN}", "feature_detail_images")
    page.get_by_text("highest activation").wait_for()
    # top grid, bottom grid, saliency overlays, this run and the other seed's matched feature
    page.get_by_text("The same feature in the other seeds").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= 5"
    )
    assert _loaded_images(page, 5) >= 5
    metric = page.locator('[data-testid="stMetricValue"]').first.inner_text()
    assert metric.strip() == "#1"
    assert _plot_png_buttons(page) >= 1


def test_feature_detail_shows_activation_bands_and_interventions(page, server):
    _open(page, f"{server}/feature?run={RUN}", "feature_detail_bands")
    page.get_by_text("Activation ranges").first.wait_for()
    page.get_by_text("Band 1").first.wait_for()
    page.get_by_text("What it does: interventions").first.wait_for()
    page.get_by_text("random directions of equal variance").first.wait_for()


def test_the_steering_slider_moves_the_probe(page, server):
    _open(page, f"{server}/probe?run={RUN}", "probe_steer")
    page.get_by_text("Steer a feature").first.wait_for()
    page.get_by_text("moved by +0 sd").first.wait_for()
    # Streamlit's slider thumb is an <input type="range"> (ARIA role slider) inside stSlider
    thumb = page.locator('[data-testid="stSlider"]').get_by_role("slider").first
    thumb.focus()
    page.keyboard.press("Home")  # the slider's minimum, -4 sd
    page.get_by_text("moved by -4 sd").first.wait_for(timeout=60_000)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_feature_detail_in_the_spectral_basis_shows_the_other_seeds(page, server):
    _open(page, f"{server}/feature?run={RUN}&basis=spectral&feature=2", "feature_detail_spectral")
    page.get_by_text("Feature #2 (spectral basis) in the other seeds").wait_for()
    # this run's panel and the other seed's: its label and the |corr| of the same rank
    page.get_by_text("triCL · digits · k16 · seed 1").first.wait_for()
    page.get_by_text("with this run's #2").first.wait_for()
    assert "basis=spectral" in page.url


def test_state_survives_sidebar_navigation(page, server):
    _open(page, f"{server}/feature?run=tricl_digits_small_cnn_k16_seed1&feature=2", "state_a")
    assert page.locator('[data-testid="stMetricValue"]').first.inner_text().strip() == "#2"
    page.locator('[data-testid="stSidebarNav"] a', has_text="Embedding").click()
    page.wait_for_url("**/embedding?**")
    page.wait_for_selector(IDLE)
    page.get_by_text("Select points on the map").wait_for()
    assert "run=tricl_digits_small_cnn_k16_seed1" in page.url
    assert "feature=2" in page.url


def test_clicking_a_feature_row_opens_it(page, server):
    _open(page, f"{server}/features?run={RUN}", "features_click")
    box = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    # the grid is a canvas: click the selection cell of the third row (header 36 px, rows 44 px)
    page.mouse.click(box["x"] + 16, box["y"] + 36 + 44 * 2 + 22)
    page.wait_for_url("**/feature?**")
    page.wait_for_selector(IDLE)
    page.get_by_text("highest activation").first.wait_for()
    assert "feature=3" in page.url
    assert page.locator('[data-testid="stMetricValue"]').first.inner_text().strip() == "#3"


def test_selecting_points_on_the_map_shows_their_images(page, server):
    _open(page, f"{server}/embedding?run={RUN}", "embedding_before")
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.05 * w, y + 0.05 * h)
    page.mouse.down()
    for fx, fy in [(0.95, 0.05), (0.95, 0.95), (0.05, 0.95), (0.05, 0.06)]:
        page.mouse.move(x + fx * w, y + fy * h, steps=8)
    page.mouse.up()
    page.get_by_text(re.compile(r"^\d+ selected")).wait_for()
    page.wait_for_selector(IDLE)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "embedding_selected.png"))
    assert _loaded_images(page, 1) >= 1


def test_run_outside_the_root_is_refused(page, server):
    _open(page, f"{server}/features?run=..%2F..%2Fetc", "refused")
    page.get_by_text("outside the runs root").first.wait_for()
    page.get_by_text("16 of 16 features shown").wait_for()


def test_a_triclip_runs_features_page_shows_its_captions(tab, image_text_server, image_text_root):
    page = tab
    text = load_text_analysis(image_text_root / TRICLIP)
    tc = text.top_captions
    first = text.features.captions[int(tc.indices[0, 0])]  # feature #1's top caption
    _open(page, f"{image_text_server}/features?run={TRICLIP}", "features_image_text")
    page.get_by_text("The most important features, in words").wait_for()
    page.get_by_text(first, exact=True).first.wait_for()
    page.get_by_text("Caption factors by feature rank").wait_for()
    assert page.locator(".js-plotly-plot").count() == 1  # the factor heatmap
    page.locator('[data-testid="stExpander"] summary', has_text="The numbers").click()
    page.wait_for_selector(IDLE)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "features_image_text_numbers.png"), full_page=True)


def test_the_caption_probe_retrieves_images(tab, image_text_server):
    page = tab
    _open(page, f"{image_text_server}/probe?run={TRICLIP}", "probe_caption_before")
    box = page.get_by_label("Caption", exact=True)
    box.fill("a thick, right-slanted handwritten 7")
    box.press("Enter")
    page.get_by_text("The 16 evaluation images it retrieves").wait_for()
    page.wait_for_selector(IDLE)
    page.screenshot(path=str(SHOTS / "probe_caption.png"), full_page=True)
    assert page.get_by_text("Tokens read:").count() == 1
    assert _loaded_images(page, 1) >= 1


USER_RUN = "tricl_mnist5k_small_cnn_k64_seed0"  # the README's first command, a shipped name too


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory) -> Iterator[str]:
    """The README's path: `tricl train --method tricl --dataset mnist5k --seed 0` (1 epoch) in a
    fresh folder, then `streamlit run app/main.py` there with no flags."""
    here = tmp_path_factory.mktemp("newcomer")
    env = {k: v for k, v in os.environ.items() if k != "TRICL_RUNS"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    train = ["train", "--method", "tricl", "--dataset", "mnist5k", "--seed", "0", "--epochs", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "tricl", *train, "--no-progress"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (here / "runs" / USER_RUN / "model.safetensors").is_file()
    port = free_port()
    cmd = streamlit_command(port, "unused")
    cmd = cmd[: cmd.index("--runs-root") - 1]  # no flags after `--`: the default roots
    with running_server(cmd, port, cwd=here, log=here / "streamlit.log", env=env) as url:
        yield url


def test_the_users_first_run_opens_in_the_dashboard_with_no_flags(tab, readme_server):
    page = tab
    _open(page, readme_server, "newcomer_first_page")  # no run in the URL: the default pick
    page.wait_for_url(f"**run=runs%2F{USER_RUN}**")  # the user's run, listed before the shipped
    assert page.get_by_text("Broken runs").count() == 0
    assert page.get_by_text("broken run(s)").count() == 0
    rows = len([p for p in (REPO / "checkpoints").iterdir() if (p / "config.json").is_file()]) + 1
    table = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    assert table["height"] >= 35 * (rows + 1)  # every row in view: "auto" stops at 10 rows
    _open(page, f"{readme_server}/features?run=runs/{USER_RUN}", "newcomer_features")
    assert page.get_by_role("heading", level=1).inner_text().strip() == "Features"
    page.get_by_text(f"runs/{USER_RUN}").first.wait_for()  # the sidebar names its folder
    page.get_by_role("button", name=re.compile("Analyse now")).first.wait_for()
    assert page.locator('[data-testid="stAlert"]', has_text="in the URL").count() == 0
