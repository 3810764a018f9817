"""The dashboard in Streamlit's AppTest, on tiny real runs: every page, URL state, bad input."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_runs import built_once, session_dir
from streamlit.testing.v1 import AppTest

from tricl.analysis import analyze, compare, consensus
from tricl.config import RunConfig
from tricl.jobs import JobStore, analyze_command, consensus_command
from tricl.report.describe import describe, describe_all
from tricl.report.features import class_facts, class_facts_caption
from tricl.report.verdicts import VERDICTS
from tricl.runs import Run, list_runs
from tricl.train import train

APP = Path(__file__).resolve().parent.parent / "app"
MAIN = APP / "main.py"
REPO_DOCS = APP.parent / "docs"
PAGE_FILES = sorted(p.name for p in (APP / "views").glob("*.py"))
TINY = {"dataset": "digits", "proj_dim": 16, "proj_hidden_dim": 32, "epochs": 1, "batch_size": 128}
TIMEOUT = 120  # seconds per script run: a cold first run imports torch and reads every artifact


def make_fixture_runs(root: Path) -> Path:
    """The fixture runs in ``root``, built by the first caller of the session (any xdist worker;
    see :mod:`shared_runs`) and reused by the rest."""
    with built_once(root) as todo:
        if todo:
            _build_fixture_runs(root)
    return root


def _build_fixture_runs(root: Path) -> Path:
    """Two seeds each of SimCLR and triCL on sklearn digits, analysed and compared once, in the
    trained and the spectral basis, and their consensus.

    Training writes ``root/.done`` last, so a second caller in the same session reuses the runs.
    """
    if (root / ".done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    groups = []
    for method in ("simclr", "tricl"):
        runs = [
            train(RunConfig(method=method, seed=s, **TINY), runs_root=root, progress=False)
            for s in (0, 1)
        ]
        for r in runs:
            analyze(r, progress=False)
            analyze(r, progress=False, basis="spectral")
        groups.append(runs)
    for runs in groups:
        compare(runs, progress=False)
        compare(runs, progress=False, basis="spectral")
    consensus([r for runs in groups for r in runs], progress=False)
    (root / ".done").write_text("ok")
    return root


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return make_fixture_runs(session_dir(tmp_path_factory, "app_runs"))


@pytest.fixture(scope="session")
def runs(runs_root) -> dict[str, Run]:
    return {r.name: r for r in list_runs(runs_root) if isinstance(r, Run)}


def app_module(name: str):
    """app/<name>.py as a module (the app's folder is not a package), loaded once.

    It is registered under its plain name, the one the app's own ``import state`` uses, so the
    tests and the AppTest runs share one copy.
    """
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, APP / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def app_at(root: Path, monkeypatch, *args: str, **query: str) -> AppTest:
    """The dashboard as ``streamlit run app/main.py -- --runs-root ROOT ARGS``, URL ``query``."""
    monkeypatch.setattr(sys, "argv", ["app/main.py", "--runs-root", str(root), *args])
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT)
    at.query_params.update(query)
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page != "runs.py":
        at.switch_page(f"views/{page}").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [i.value for i in at.info]
    parts += [h.value for h in (*at.title, *at.subheader)]
    return "\n".join(str(p) for p in parts)


def _charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def _png(size: int = 20) -> bytes:
    buf = io.BytesIO()
    img = np.zeros((size, size), np.uint8)
    img[4:16, 8:12] = 255  # a bright bar: a "1"
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- every page


def test_every_page_file_is_in_the_navigation():
    nav = MAIN.read_text()
    assert PAGE_FILES, "app/views/ has no pages"
    for name in PAGE_FILES:
        assert f'"views/{name}"' in nav, f"{name} is not registered in app/main.py"


@pytest.mark.parametrize("basis", ["trained", "spectral"])
@pytest.mark.parametrize("page", PAGE_FILES)
def test_page_renders(page, basis, runs_root, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch, basis=basis), page)
    assert len(at.title) == 1
    assert at.caption, "every page explains what it shows under its title"
    assert not at.error, [e.value for e in at.error]
    # every table comes with a CSV download
    assert len(at.get("download_button")) >= len(at.dataframe)


def test_runs_page_table_and_charts(runs_root, runs, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch), "runs.py")
    table = at.dataframe[0].value
    assert sorted(table["run"]) == sorted(runs)
    assert {"method", "seed", "epochs", "loss", "linear probe acc", "top-8 acc"} <= set(table)
    assert table["linear probe acc"].between(0, 1).all()
    assert table["top-8 acc"].between(0, 1).all()
    assert set(table["method"]) == {"SimCLR", "triCL"}
    assert len(_charts(at)) == 2  # training curves and importance spectrum


def test_runs_page_labels_an_aligned_run_with_its_parent(runs_root, runs, tmp_path, monkeypatch):
    import shutil

    from tricl.align import align
    from tricl.analysis import spectral_basis

    root = tmp_path / "runs"
    parent = runs["tricl_digits_small_cnn_k16_seed0"]
    shutil.copytree(parent.path, root / parent.name)
    (child,) = align([root / parent.name], spectral_basis, runs_root=root)
    at = open_page(app_at(root, monkeypatch), "runs.py")
    table = at.dataframe[0].value.set_index("run")
    assert table.loc[child.name, "aligned from"] == parent.name
    assert table.loc[parent.name, "aligned from"] == ""


def test_order_caption_names_the_variance_fallback_only_in_the_trained_basis(runs):
    from tricl.analysis import load_analysis

    draw = app_module("draw")
    simclr = runs["simclr_digits_small_cnn_k16_seed0"]
    trained = load_analysis(simclr)
    spectral = load_analysis(simclr, basis="spectral")
    assert "no learned S" in draw.order_caption(trained, trained.importance.default)
    caption = draw.order_caption(spectral, spectral.importance.default)
    assert "eigenvalue" in caption and "no learned S" not in caption
    # a method that orders its own outputs (NeuralEF-CLR) is not a variance fallback
    from dataclasses import replace

    indexed = replace(
        trained.importance, orders={**trained.importance.orders, "index": np.arange(16)}
    )
    caption = draw.order_caption(replace(trained, importance=indexed), "index")
    assert "first eigenfunction" in caption and "no learned S" not in caption
    # tri-eigen's S is solved by its head, not learned: the caption must not say softplus(s)
    tri = load_analysis(runs["tricl_digits_small_cnn_k16_seed0"])
    assert "softplus" in draw.order_caption(tri, "S")
    caption = draw.order_caption(replace(tri, method="tri-eigen"), "S")
    assert "eigenvalues solved" in caption and "softplus" not in caption


def test_features_page_lists_every_feature_in_importance_order(runs_root, runs, monkeypatch):
    name = "tricl_digits_small_cnn_k16_seed0"
    at = open_page(app_at(runs_root, monkeypatch, run=name), "features.py")
    table = at.dataframe[0].value
    a = analyze(runs[name], progress=False)
    assert list(table["#"]) == list(range(1, a.k + 1))
    assert list(table["feature"]) == list(a.importance.order("S"))
    assert table["importance"].is_monotonic_decreasing
    assert table["top images"].str.startswith("data:image/png;base64,").all()
    assert list(table["description"]) == describe_all(a, a.importance.order("S"))
    # filter by selectivity: only features at least that selective remain
    cut = float(np.median(table["selectivity"]))
    at.slider[0].set_value(cut).run()
    kept = at.dataframe[0].value
    assert 0 < len(kept) < len(table) or (table["selectivity"] >= cut).all()
    assert (kept["selectivity"] >= cut).all()


def test_feature_detail_defaults_to_feature_one(runs_root, runs, monkeypatch):
    name = "tricl_digits_small_cnn_k16_seed1"
    at = open_page(app_at(runs_root, monkeypatch, run=name), "feature_detail.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Feature"] == "#1"
    a = analyze(runs[name], progress=False)
    top = a.importance.order("S")[0]
    facts = class_facts(a, top)
    # the header describes the feature (classes raising and lowering it, selectivity) instead
    # of naming one dominant class
    assert "Top images' class" not in metrics and "Selectivity" not in metrics
    assert f"**Description**  \n{describe(a, top).text}" in texts(at)
    assert class_facts_caption(facts, a.classes) in texts(at)
    # top-N, bottom-N, saliency grid, and this run + the other seed's matched feature
    assert len(at.image) >= 5
    assert len(_charts(at)) == 2  # activation by class, class means
    assert "match: #" in texts(at)


def test_compare_page_gives_a_verdict_per_method(runs_root, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch), "compare_seeds.py")
    text = texts(at)
    assert "SimCLR" in text and "triCL" in text
    assert "identifiable" in text.lower()
    # each card: one table line per basis, every label whole (metric tiles cut two to "top-8 ...")
    head = "| basis | top-8 ordered corr | MCC | CKA | verdict |"
    assert text.count(head) == 2, text
    words = {v.word for v in VERDICTS}
    for basis in ("trained basis", "spectral basis"):
        lines = [ln for ln in text.splitlines() if ln.startswith(f"| {basis} |")]
        assert len(lines) == 2 and all(any(w in ln for w in words) for ln in lines), lines
    assert not at.metric
    summary = at.dataframe[0].value
    assert set(summary["verdict, spectral basis"]) <= words
    # summary table (one row per method), consensus ranks, the pair table of the picked runs
    assert len(at.dataframe[0].value) == 2
    assert "mean_abs_corr" in at.dataframe[1].value
    assert len(at.dataframe[2].value) == 1
    assert len(_charts(at)) == 2  # bars per method, |corr| heatmap


# --------------------------------------------------------------------------- URL state


def test_run_and_feature_come_from_the_url_and_stay_in_it(runs_root, monkeypatch):
    name = "simclr_digits_small_cnn_k16_seed1"
    at = open_page(app_at(runs_root, monkeypatch, run=name, feature="3"), "feature_detail.py")
    assert at.selectbox(key="_w_run").value == name
    assert {m.label: m.value for m in at.metric}["Feature"] == "#3"
    at.number_input(key="_w_feature").set_value(5).run()
    assert at.query_params["feature"] == "5"
    at.switch_page("views/embedding.py").run()
    assert at.query_params["run"] == name and at.query_params["feature"] == "5"


def test_compared_runs_live_in_the_url(runs_root, monkeypatch):
    pair = "tricl_digits_small_cnn_k16_seed0,tricl_digits_small_cnn_k16_seed1"
    at = open_page(app_at(runs_root, monkeypatch, runs=pair), "compare_seeds.py")
    assert at.multiselect(key="_w_runs").value == pair.split(",")
    assert at.query_params["runs"] == pair
    assert at.dataframe[2].value["a"].str.startswith("triCL").all()  # after the consensus table


@pytest.mark.parametrize("bad", ["../outside_run", "/etc", "..", "a/../../b"])
def test_url_naming_a_run_outside_the_root_is_refused(bad, runs_root, tmp_path, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch, run=bad), "features.py")
    errors = [e.value for e in at.error]
    assert any("outside the runs root" in e for e in errors), errors
    # the page still works, on a run of the root
    assert at.selectbox(key="_w_run").value in {p.name for p in runs_root.iterdir()}
    assert at.dataframe


def test_url_naming_a_real_run_outside_the_root_is_refused(runs_root, runs, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    src = runs["tricl_digits_small_cnn_k16_seed0"].path
    shutil.copytree(src, outside / "stray_run")
    rel = Path("..") / outside.relative_to(tmp_path.parent) / "stray_run"
    at = open_page(app_at(runs_root, monkeypatch, run=str(rel)), "runs.py")
    assert any("outside the runs root" in e.value for e in at.error)
    assert "stray_run" not in set(at.dataframe[0].value["run"])


def test_sidebar_opens_a_run_directory_or_another_root(runs_root, runs, tmp_path, monkeypatch):
    mine = tmp_path / "imports" / "my_run"
    shutil.copytree(runs["tricl_digits_small_cnn_k16_seed1"].path, mine)
    at = open_page(app_at(tmp_path / "empty", monkeypatch), "runs.py")
    assert "No runs in" in texts(at)
    at.text_input(key="_w_root").set_value(str(mine)).run()  # one run directory: added
    assert at.selectbox(key="_w_run").value == "my_run"
    at.switch_page("views/features.py").run()
    assert not at.exception and len(at.dataframe[0].value) == 16
    at.text_input(key="_w_root").set_value(str(runs_root)).run()  # a folder: the new root
    assert len(at.selectbox(key="_w_run").options) == 5  # its 4 runs + the added one


# --------------------------------------------------------------------------- bad input


def test_empty_runs_folder_shows_how_to_train(tmp_path, monkeypatch):
    for page in ("runs.py", "features.py", "compare_seeds.py"):
        at = open_page(app_at(tmp_path, monkeypatch), page)
        text = texts(at)
        assert "No runs in" in text, page
        assert "tricl train --method tricl" in text, page


def test_broken_run_is_listed_with_its_reason_and_the_others_work(runs_root, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(runs_root, root)
    (root / "half_written").mkdir()
    (root / "half_written" / "config.json").write_text("{not json")
    at = open_page(app_at(root, monkeypatch), "runs.py")
    tables = [d.value for d in at.dataframe]
    broken = next(t for t in tables if "reason" in t)
    assert list(broken["run"]) == ["half_written"]
    assert "unreadable" in broken["reason"].iloc[0]
    good = next(t for t in tables if "linear probe acc" in t)
    assert len(good) == 4
    at.switch_page("views/features.py").run()
    assert not at.exception and at.dataframe


def test_uploaded_non_image_gets_a_clear_message(runs_root, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch), "probe.py")
    at.radio[0].set_value("Upload").run()
    at.file_uploader[0].set_value(("notes.txt", b"these are not pixels", "text/plain")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("notes.txt is not an image" in e and "PNG" in e for e in errors), errors
    assert not _charts(at)


def test_uploaded_image_is_probed(runs_root, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch), "probe.py")
    at.radio[0].set_value("Upload").run()
    at.file_uploader[0].set_value(("one.png", _png(), "image/png")).run()
    assert not at.exception and not at.error
    assert len(_charts(at)) == 1
    assert "Feature #" in texts(at)


def test_missing_analysis_runs_as_a_job_and_the_page_reads_it(runs, tmp_path, monkeypatch):
    root = tmp_path / "fresh"
    src = runs["simclr_digits_small_cnn_k16_seed0"].path
    shutil.copytree(src, root / src.name, ignore=shutil.ignore_patterns("analysis"))
    monkeypatch.setenv("PYTHONPATH", str(APP.parent))  # the job imports this checkout's tricl
    at = open_page(app_at(root, monkeypatch), "runs.py")
    assert "no stored analysis yet" in texts(at)
    assert at.dataframe[0].value["linear probe acc"].isna().all()  # the table is drawn anyway
    t0 = time.monotonic()
    at.button(key="start_runs_page").click().run()
    assert time.monotonic() - t0 < 30, "the script run waited for the analysis"
    assert not at.exception
    store = JobStore(root / "_jobs")
    job = store.find(analyze_command([root / src.name]))
    assert job is not None and job.running, "the click started a job that is still running"
    assert at.get("progress"), "the page shows the job's progress"
    at.switch_page("views/compare_seeds.py").run()  # other pages answer while the job runs
    assert not at.exception and at.title[0].value == "Compare seeds"
    deadline = time.monotonic() + 240
    while store.status(job.id).running and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.status(job.id).state == "done"
    at.switch_page("views/runs.py").run()
    assert "no stored analysis yet" not in texts(at)
    assert at.dataframe[0].value["linear probe acc"].between(0, 1).all()


def test_running_job_can_be_cancelled_from_the_page(runs, tmp_path, monkeypatch):
    root = tmp_path / "fresh"
    src = runs["tricl_digits_small_cnn_k16_seed1"].path
    shutil.copytree(src, root / src.name, ignore=shutil.ignore_patterns("analysis"))
    monkeypatch.setenv("PYTHONPATH", str(APP.parent))
    at = open_page(app_at(root, monkeypatch), "features.py")
    at.button(key=f"start_analyse_{src.name}").click().run()
    store = JobStore(root / "_jobs")
    job = store.find(analyze_command([root / src.name]))
    assert job is not None and job.running
    at.button(key=f"cancel_analyse_{src.name}").click().run()
    assert not at.exception
    assert store.status(job.id).state == "cancelled"
    assert "The last try was cancelled." in texts(at)
    assert at.button(key=f"start_analyse_{src.name}").label == "Analyse now"  # offered again
    assert not (root / src.name / "analysis" / "test" / "downstream.csv").exists()


def test_page_source_never_computes():
    """No module of the app calls the compute paths of the analysis package."""
    for path in [*APP.glob("*.py"), *APP.glob("views/*.py")]:
        text = path.read_text().replace("load_comparison(", "").replace("load_analysis(", "")
        text = text.replace("from tricl.report import compare", "")  # view-models, not the stage
        readers = ("load_consensus(", "_consensus(", "readers.consensus(", "jobs_ui.consensus(")
        readers += ("def consensus(",)
        for reader in readers:
            text = text.replace(reader, "")
        calls = ("analyze(", "compare(", "consensus(", "spectral_basis(", "import analyze")
        for call in (*calls, "import compare", "import consensus"):
            assert call not in text, f"{path.name} calls {call}"


# --------------------------------------------------------------------------- helpers


def test_runs_roots_default_to_shipped_and_user_runs_and_the_flag_narrows(tmp_path):
    state = app_module("state")
    arg = state.parse_options(["--runs-root", str(tmp_path)], {"TRICL_RUNS": "/elsewhere"})
    assert arg.roots == (tmp_path.resolve(),) and not arg.confine
    env = state.parse_options(["-x", "tests/test_app_pages.py"], {"TRICL_RUNS": str(tmp_path)})
    assert env.roots == ((APP.parent / "checkpoints").resolve(), tmp_path.resolve())
    gone = state.parse_options([], {"TRICL_RUNS": str(tmp_path / "not_there")})
    assert gone.roots == ((APP.parent / "checkpoints").resolve(),)
    extra = state.parse_options(["--run", str(tmp_path / "r")], {})
    assert extra.extra_runs == ((tmp_path / "r").resolve(),)
    assert state.parse_options(["--confine"], {}).confine
    assert state.parse_options([], {"TRICL_CONFINE": "1"}).confine


def test_confined_folder_box_accepts_only_folders_inside_the_root(runs_root, tmp_path):
    state = app_module("state")
    opts = state.parse_options(["--runs-root", str(runs_root), "--confine"], {})
    run_dir = next(p for p in runs_root.iterdir() if (p / "config.json").is_file())
    new, picked = state.opened_folder(opts, str(run_dir))
    assert picked == run_dir.name and new.extra_runs == (run_dir.resolve(),)
    for outside in (tmp_path, runs_root / "..", "/etc"):
        with pytest.raises(state.RunRefused, match="outside the runs root"):
            state.opened_folder(opts, str(outside))
    link = tmp_path / "inside_root_link"
    link.symlink_to(tmp_path.parent, target_is_directory=True)
    with pytest.raises(state.RunRefused, match="outside the runs root"):
        state.opened_folder(opts, str(link))  # resolved first: a symlink cannot leave the root
    free = state.parse_options(["--runs-root", str(runs_root)], {})
    assert state.opened_folder(free, str(tmp_path))[0].roots == (tmp_path.resolve(),)


def test_run_passed_by_path_is_listed(runs_root, runs, tmp_path):
    state = app_module("state")
    src = runs["tricl_digits_small_cnn_k16_seed0"].path
    mine = tmp_path / "mine" / "my_import"
    shutil.copytree(src, mine)
    idx = state.run_index(state.AppOptions((tmp_path / "empty_root",), (mine,)))
    assert idx.names == ["my_import"]
    assert state.resolve_run_name(idx, "my_import").path == mine


def test_resolve_run_name_refuses_paths(runs_root):
    state = app_module("state")
    idx = state.run_index(state.AppOptions((runs_root,)))
    name = idx.names[0]
    assert state.resolve_run_name(idx, name).name == name
    for bad in ("..", "../x", "/abs", f"{name}/..", "a\\b", "", ".", "a\x00b"):
        with pytest.raises(state.RunRefused, match="outside the runs root"):
            state.resolve_run_name(idx, bad)
    with pytest.raises(state.RunRefused, match="no run 'nope'"):
        state.resolve_run_name(idx, "nope")


def test_seed_groups_pair_runs_that_differ_only_by_seed(runs):
    common = app_module("labels")
    groups = common.seed_groups(list(runs.values()))
    assert sorted(len(g) for g in groups) == [2, 2]
    for g in groups:
        assert len({r.config.method for r in g}) == 1
        assert [r.config.seed for r in g] == [0, 1]


def test_grid_tiles_images_in_rows():
    common = app_module("draw")
    imgs = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(5)])  # (5, 4, 4, 3)
    g = common.grid(imgs, cols=3, scale=2, pad=1)
    assert g.shape == (2 * 8 + 1, 3 * 8 + 2, 3)
    assert g[0, 0, 0] == 0 and g[0, 9, 0] == 1 and g[9, 9, 0] == 4
    assert g[9, 18, 0] == 255  # the empty sixth tile is padding


def test_config_key_ignores_seed_and_name(runs):
    common = app_module("labels")
    a, b = (runs[f"tricl_digits_small_cnn_k16_seed{s}"] for s in (0, 1))
    assert common.config_key(a) == common.config_key(b)
    assert json.loads(common.config_key(a))["method"] == "tricl"


def test_group_label_names_non_default_recipe_settings(runs):
    common = app_module("labels")
    a = runs["tricl_digits_small_cnn_k16_seed0"]
    assert common.recipe_changes(a) == ""
    variant = Run(a.path, a.config.replace(decorrelation="whiten", s_lr_mult=10.0), a.info)
    assert common.recipe_changes(variant) == "decorrelation=whiten, s_lr_mult=10.0"
    assert common.group_label([variant]).endswith("decorrelation=whiten, s_lr_mult=10.0")
    assert common.config_key(variant) != common.config_key(a)


def test_study_page_shows_the_results_tables_and_figures(runs_root, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch), "study.py")
    text = texts(at)
    if not (REPO_DOCS / "RESULTS.md").is_file():
        assert "tricl.experiments.reproduce" in text
        return
    assert "Identifiability across seeds" in text
    # the study's scores in the Compare page's verdict words: SimCLR's spectral 0.77 ± 0.04 on
    # mnist5k is not called identifiable here and "not identifiable" there
    verdicts = next(d.value for d in at.dataframe if "verdict" in d.value)
    simclr = verdicts[(verdicts["method"] == "simclr") & (verdicts["basis"] == "spectral basis")]
    assert simclr["verdict"].iloc[0] == "Borderline"
    assert set(verdicts["verdict"]) <= {v.word for v in VERDICTS}
    if "## What the study shows" in (REPO_DOCS / "RESULTS.md").read_text():  # findings first
        assert text.index("What the study shows") < text.index("Identifiability across seeds")
    if "**In one sentence:**" in (REPO_DOCS / "RESULTS.md").read_text():  # the answer leads
        assert at.info[0].value.startswith("**In one sentence:**")
    figures = len(re.findall(r"^!\[", (REPO_DOCS / "RESULTS.md").read_text(), flags=re.M))
    assert figures >= 3
    assert len(at.get("image")) == figures


def test_study_section_first_moves_one_section_after_the_preamble():
    draw = app_module("draw")
    text = "# T\npre\n## A\na\n### a1\nx\n## B\nb\n## C\nc"
    assert draw.section_first(text, "## B") == "# T\npre\n## B\nb\n## A\na\n### a1\nx\n## C\nc"
    assert draw.section_first(text, "## C") == "# T\npre\n## C\nc\n## A\na\n### a1\nx\n## B\nb"
    assert draw.section_first(text, "## Z") == text


def test_study_blocks_split_markdown_around_images():
    blocks = app_module("draw").markdown_blocks("# T\ntext\n![a](figures/a.png)\nmore\n![b](b.png)")
    assert blocks == [
        ("md", "# T\ntext"),
        ("img", "figures/a.png"),
        ("md", "more"),
        ("img", "b.png"),
    ]


# --------------------------------------------------------------------------- the spectral basis


def test_junk_basis_in_the_url_falls_back_to_trained_with_a_message(runs_root, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch, basis="junk"), "features.py")
    assert "basis 'junk' in the URL is not one of trained, spectral" in texts(at)
    assert at.radio(key="_w_basis").value == "trained"
    assert "feature" in at.dataframe[0].value  # the trained table: raw feature indices
    assert "basis" not in at.query_params


def test_basis_lives_in_the_url(runs_root, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch), "features.py")
    assert "basis" not in at.query_params
    at.radio(key="_w_basis").set_value("spectral").run()
    assert at.query_params["basis"] == "spectral"
    assert "eigenvalue of the run's spectral basis" in texts(at)
    assert "group" in at.dataframe[0].value


def test_features_page_in_the_spectral_basis_marks_unresolved_groups(runs_root, runs, monkeypatch):
    name = "tricl_digits_small_cnn_k16_seed0"
    at = open_page(app_at(runs_root, monkeypatch, run=name, basis="spectral"), "features.py")
    s = analyze(runs[name], progress=False, basis="spectral")
    table = at.dataframe[0].value
    assert list(table["#"]) == list(range(1, s.k + 1))
    assert "feature" not in table  # the rank is the feature
    np.testing.assert_allclose(table["importance"], s.importance.scores["eigenvalue"], rtol=1e-6)
    grouped = {r for lo, hi in s.groups for r in range(lo, hi + 1)}
    assert [bool(g) for g in table["group"]] == [r in grouped for r in range(s.k)]
    text = texts(at)
    assert "order not identifiable from the data" in text or "identifiable from the data" in text
    assert "afe to compare across seeds" in text


def test_ranges_and_groups_are_written_one_based():
    draw = app_module("draw")
    assert draw.ranges_label([0, 1, 2, 5, 7, 8]) == "#1-#3, #6, #8-#9"
    md = draw.groups_markdown(((2, 4),), 8)
    assert "**#3-#5**: order not identifiable from the data" in md
    assert "**Safe to compare across seeds:** #1-#2, #6-#8." in md


def test_feature_detail_in_the_spectral_basis_shows_the_same_rank_in_every_seed(
    runs_root, runs, monkeypatch
):
    name = "tricl_digits_small_cnn_k16_seed0"
    other = "tricl_digits_small_cnn_k16_seed1"
    query = {"run": name, "basis": "spectral", "feature": "2"}
    at = open_page(app_at(runs_root, monkeypatch, **query), "feature_detail.py")
    assert not at.error, [e.value for e in at.error]
    text = texts(at)
    assert "Feature #2 (spectral basis) in the other seeds" in text
    a = analyze(runs[name], progress=False, basis="spectral")
    b = analyze(runs[other], progress=False, basis="spectral")
    corr = abs(np.corrcoef(a.features.z[:, 1], b.features.z[:, 1])[0, 1])
    assert f"#2: |corr| {corr:.2f} with this run's #2" in text
    assert "triCL · digits · k16 · seed 1" in text
    # the other method's runs on the same dataset, behind the checkbox: the page reads their
    # stored spectral comparison, and offers the job that stores it (it never correlates itself)
    at.checkbox(key="_w_other_method").check().run()
    key = f"start_same_rank_{name}_4_spectral"
    assert at.button(key=key).label == "Compare now"
    assert "with this run's #2" not in texts(at)
    every = sorted(runs.values(), key=lambda r: (r.config.method, r.config.seed, r.name))
    compare(every, progress=False, basis="spectral")  # what the job runs
    at.run()
    text = texts(at)
    assert "SimCLR · digits · k16 · seed 0" in text and "SimCLR · digits · k16 · seed 1" in text
    assert text.count("with this run's #2") == 3


def test_compare_page_shows_the_consensus_and_the_ranks_safe_to_compare(runs_root, monkeypatch):
    at = open_page(app_at(runs_root, monkeypatch), "compare_seeds.py")
    text = texts(at)
    assert "Consensus features (spectral basis)" in text
    assert "Safe to compare across seeds" in text or "safe to compare" in text
    cons = next(d.value for d in at.dataframe if "mean_abs_corr" in d.value)
    assert list(cons["rank"]) == list(range(1, len(cons) + 1))
    assert (cons["min_abs_corr"] <= cons["mean_abs_corr"] + 1e-12).all()
    assert cons["top images"].str.startswith("data:image/png;base64,").all()
    assert at.get("download_button")  # CSV export


def test_bases_agree_with_the_analysis_package():
    from tricl.analysis import BASES

    assert app_module("state").BASES == BASES


def test_worker_embeds_and_attributes_in_the_spectral_basis(runs):
    """The rotated feature the worker explains is the spectral basis's projection of z."""
    from tricl import serve
    from tricl.analysis import load_spectral_basis

    run = runs["simclr_digits_small_cnn_k16_seed0"]
    image = serve.split_images(run.config.dataset, run.config.image_size, "test")[3]
    args = (str(run.path), run.weights_hash)
    z = serve.embed(*args, "trained", run.config.dataset, image)
    zs = serve.embed(*args, "spectral", run.config.dataset, image)
    expected = load_spectral_basis(run).project(z[None])[0]
    np.testing.assert_allclose(zs, expected, rtol=1e-4, atol=1e-4)
    maps, acts = serve.saliency(
        *args, "spectral", run.config.dataset, image[None], [1], "saliency", False
    )
    assert maps[0].shape == image.shape[1:] and maps[0].min() >= 0 and maps[0].max() <= 1
    assert acts[0] == pytest.approx(float(zs[1]), abs=1e-4)


HEAVY = ("torch", "captum", "umap", "sklearn", "torchvision", "kornia")


def _heavy_imports(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code`` in the repository."""
    import os
    import subprocess

    held = f"[m for m in {HEAVY!r} if m in sys.modules]"
    probe = f"import sys; sys.path.insert(0, 'app'); {code}; print({held})"
    env = {**os.environ, "PYTHONPATH": str(APP.parent)}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=APP.parent, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


def test_dashboard_server_modules_never_import_torch():
    """The Streamlit process stays small: torch lives in the model worker only."""
    tricl_side = "import tricl.runs, tricl.jobs, tricl.methods, tricl.serve, tricl.analysis.metrics"
    if heavy := _heavy_imports(tricl_side):
        pytest.skip(f"the tricl modules the app imports still pull in {heavy} (tricl.runs)")
    server = "import state, readers, draw, labels, jobs_ui, models, text_ui, main"
    assert _heavy_imports(server) == []


def test_reading_stored_artifacts_never_imports_torch(runs):
    """What the server's readers call (load_analysis/_comparison/_consensus) stays torch-free."""
    if heavy := _heavy_imports("import tricl.analysis.pipeline, tricl.analysis.comparison"):
        pytest.skip(f"tricl.analysis.pipeline/comparison still import {heavy} at module level")
    paths = [str(r.path) for r in runs.values()]
    code = (
        "from tricl.analysis import load_analysis, load_comparison, load_consensus; "
        f"ps = {paths!r}; "
        "assert load_analysis(ps[0], basis='spectral') is not None; "
        "load_consensus(sorted(ps))"  # reads whatever it finds; no comment: the probe appends
    )
    assert _heavy_imports(code) == []


def test_a_dead_model_worker_is_an_error_and_the_next_call_starts_a_new_one():
    import math
    import os

    app_module("draw")  # models imports it by its plain name, as the app does
    models = app_module("models")
    assert models.call(math.sqrt, 16.0) == 4.0
    with pytest.raises(models.WorkerFailed, match="model worker stopped"):
        models.call(os._exit, 1)  # the worker process dies mid-call
    assert models.call(math.sqrt, 9.0) == 3.0


def test_missing_spectral_analysis_offers_the_spectral_job(runs, tmp_path, monkeypatch):
    root = tmp_path / "fresh"
    src = runs["tricl_digits_small_cnn_k16_seed0"].path
    shutil.copytree(src, root / src.name, ignore=shutil.ignore_patterns("spectral"))
    at = open_page(app_at(root, monkeypatch, basis="spectral"), "features.py")
    assert "have no stored analysis in the spectral basis yet" in texts(at)
    assert at.button(key=f"start_analyse_{src.name}_spectral").label == "Analyse now"
    command = analyze_command([root / src.name], "test", "spectral")
    assert command[-2:] == ["--basis", "spectral"]
    assert JobStore(root / "_jobs").find(command) is None  # opening the page starts nothing


def test_missing_consensus_runs_as_a_job_and_the_page_reads_it(runs, tmp_path, monkeypatch):
    root = tmp_path / "fresh"
    for r in runs.values():  # analysed in both bases, no comparison or consensus stored
        shutil.copytree(r.path, root / r.name)
    monkeypatch.setenv("PYTHONPATH", str(APP.parent))  # the job imports this checkout's tricl
    at = open_page(app_at(root, monkeypatch), "compare_seeds.py")
    assert "no stored consensus of these 4 runs yet" in texts(at).lower()
    at.button(key="start_consensus_digits").click().run()
    store = JobStore(root / "_jobs")
    job = store.find(consensus_command(sorted(r.path for r in list_runs(root)), "test"))
    assert job is not None
    deadline = time.monotonic() + 240
    while store.status(job.id).running and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.status(job.id).state == "done", store.folder(job.id)
    at.run()
    assert "no stored consensus" not in texts(at).lower()
    assert any("mean_abs_corr" in d.value for d in at.dataframe)
