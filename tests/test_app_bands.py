"""Feature detail's activation ranges in Streamlit's AppTest, in both bases, and for runs whose
analysis predates the stage (they render, with the command that computes it)."""

from __future__ import annotations

import shutil

import pytest
from shared_runs import session_dir
from test_app_pages import app_at, make_fixture_runs, open_page, texts

from tricl.analysis import load_analysis
from tricl.bases import BASIS_NAMES
from tricl.report.bands import band_rows, near_zero_caption, not_computed

RUN = "tricl_digits_small_cnn_k16_seed0"


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return make_fixture_runs(session_dir(tmp_path_factory, "app_runs"))


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_feature_detail_draws_the_bands_bottom_to_top(runs_root, monkeypatch, basis):
    at = open_page(app_at(runs_root, monkeypatch, run=RUN, basis=basis), "feature_detail.py")
    a = load_analysis(runs_root / RUN, basis=basis)
    feature = int(a.importance.order(a.importance.default)[0])
    text = texts(at)
    assert "Activation ranges" in text and near_zero_caption(a, feature) in text
    rows = band_rows(a.activation_bands, feature, a.classes)
    heads = [m.value for m in at.markdown if str(m.value).startswith("**Band ")]
    assert heads == [f"**Band {r.band}**: {r.low:.2f} … {r.high:.2f}" for r in rows]


def test_a_run_analysed_before_the_stage_still_renders(tmp_path, runs_root, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(runs_root, root, ignore=shutil.ignore_patterns("activation_bands.npz"))
    at = open_page(app_at(root, monkeypatch, run=RUN), "feature_detail.py")
    assert not_computed(RUN, "trained") in [i.value for i in at.info]
    assert "Activation ranges" in texts(at)
