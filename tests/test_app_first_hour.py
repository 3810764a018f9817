"""A newcomer's first hour with the dashboard (issue 22): their own runs open beside the shipped
ones of the same name, the dashboard opens on a triCL run, Few features follows the picked run,
and the Runs page shows every row and says what its importance chart shows."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from shared_runs import session_dir
from streamlit.testing.v1 import AppTest
from test_app_pages import MAIN, TIMEOUT, app_at, app_module, make_fixture_runs, open_page, texts

from tricl.runs import SHIPPED_RUNS_ROOT, Run, list_runs

SHIPPED_TRICL = "tricl_mnist5k_small_cnn_k64_seed0"
SHIPPED_TRICLIP = "triclip_mnist5k-captions_small_cnn_k64_seed0"
needs_shipped = pytest.mark.skipif(
    not (SHIPPED_RUNS_ROOT / SHIPPED_TRICL / "config.json").is_file(), reason="no shipped runs"
)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return make_fixture_runs(session_dir(tmp_path_factory, "app_runs"))


@pytest.fixture(scope="module")
def runs(runs_root) -> dict[str, Run]:
    return {r.name: r for r in list_runs(runs_root) if isinstance(r, Run)}


def default_app(monkeypatch, user_root: Path, **query: str) -> AppTest:
    """``streamlit run app/main.py`` with no flags: the shipped runs and ``$TRICL_RUNS``."""
    monkeypatch.setattr(sys, "argv", ["app/main.py"])
    monkeypatch.setenv("TRICL_RUNS", str(user_root))
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT)
    at.query_params.update(query)
    return at


@pytest.fixture
def two_roots(runs, tmp_path) -> tuple[Path, Path, str]:
    """Two roots holding a run folder of the same name (another run in each)."""
    shipped, mine = tmp_path / "shipped", tmp_path / "runs"
    name = "tricl_digits_small_cnn_k16_seed0"
    shutil.copytree(runs[name].path, shipped / name)
    shutil.copytree(runs["tricl_digits_small_cnn_k16_seed1"].path, mine / name)
    return shipped, mine, name


def test_runs_of_two_roots_may_share_a_folder_name_and_both_open(two_roots):
    state = app_module("state")
    shipped, mine, name = two_roots
    idx = state.run_index(state.AppOptions((shipped.resolve(), mine.resolve())))
    assert not idx.broken
    assert idx.names == [f"runs/{name}", name]  # the user's runs first
    assert state.resolve_run_name(idx, name).path == (shipped / name).resolve()
    assert state.resolve_run_name(idx, f"runs/{name}").path == (mine / name).resolve()
    assert state.resolve_run_name(idx, f"shipped/{name}").path == (shipped / name).resolve()
    with pytest.raises(state.RunRefused, match="outside the runs root"):
        state.resolve_run_name(idx, f"runs/../{name}")


@needs_shipped
def test_the_users_run_named_like_a_shipped_one_opens_from_the_url(runs, tmp_path, monkeypatch):
    """The README's `tricl train --method tricl --dataset mnist5k --seed 0` writes
    runs/tricl_mnist5k_small_cnn_k64_seed0, a shipped run's name: both must open."""
    mine = tmp_path / "runs"
    shutil.copytree(runs["tricl_digits_small_cnn_k16_seed0"].path, mine / SHIPPED_TRICL)
    at = default_app(monkeypatch, mine, run=f"runs/{SHIPPED_TRICL}")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["run"] == f"runs/{SHIPPED_TRICL}"
    assert "broken run" not in " ".join(w.value for w in at.warning)
    at.switch_page("views/features.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "16 of 16 features shown" in texts(at)  # the user's k16 run, not the shipped k64
    assert at.query_params["run"] == f"runs/{SHIPPED_TRICL}"


@needs_shipped
def test_the_dashboard_opens_on_a_tricl_run_of_the_default_data(tmp_path, monkeypatch):
    at = default_app(monkeypatch, tmp_path / "no_runs_yet")
    at.run()
    assert not at.exception
    assert at.session_state["run"] == SHIPPED_TRICL


def test_the_default_run_follows_the_method_preference_not_the_alphabet(runs_root):
    state = app_module("state")
    idx = state.run_index(state.AppOptions((runs_root,)))
    assert idx.names[0].startswith("simclr")  # what the dashboard used to open on
    assert idx.default.name == "tricl_digits_small_cnn_k16_seed0"


@needs_shipped
def test_few_features_shows_the_picked_runs_dataset_and_says_so(tmp_path, monkeypatch):
    at = default_app(monkeypatch, tmp_path / "no_runs_yet", run=SHIPPED_TRICLIP)
    open_page(at, "few_features.py")
    assert next(s for s in at.selectbox if s.label == "Dataset").value == "mnist5k-captions"
    shown = texts(at)
    assert "Runs on **mnist5k-captions**" in shown and f"`{SHIPPED_TRICLIP}` among them" in shown
    assert "SimCLR" not in shown.split("Runs on")[1].split("\n")[0]


def test_runs_table_leaves_missing_numbers_blank_and_keeps_scores_in_view(runs_root, monkeypatch):
    """(Every row shown: tests/test_app_e2e.py measures the table in the browser.)"""
    at = open_page(app_at(runs_root, monkeypatch), "runs.py")
    frame = at.dataframe[0]
    assert frame.proto.placeholder == ""  # not "None"
    columns = list(frame.value.columns)
    assert columns.index("importance") < columns.index("k-NN acc")  # the order beside top-8
    assert "backbone" not in columns  # the same for every run: it only pushed scores right


def test_importance_caption_reports_what_the_chart_shows(runs_root, runs, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch), "runs.py")
    caption = next(c.value for c in at.caption if "8 most important features" in c.value)
    assert "ranks its features" not in caption
    assert "triCL (S)" in caption and "SimCLR (variance)" in caption
    assert "an even spread gives 50% at k = 16" in caption


def test_a_seed_group_stays_inside_its_runs_folder(two_roots):
    """The README's recipe rerun into ./runs is no fourth seed of the shipped runs: comparing it
    with the shipped run of the same folder name would be refused."""
    state, labels = app_module("state"), app_module("labels")
    shipped, mine, name = two_roots
    idx = state.run_index(state.AppOptions((shipped.resolve(), mine.resolve())))
    users = idx.get(f"runs/{name}")
    assert labels.same_config_runs(users, idx.runs) == [users]
    assert [len(g) for g in labels.seed_groups(idx.runs)] == [1, 1]
