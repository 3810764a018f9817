"""The interventions stage: known answers on constructed features (a feature whose ablation
removes one class, a feature that does nothing, the random control's spread), the closed-form
probe against the downstream probe, steering one image, no labels, and the page section."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_app_pages import app_at, make_fixture_runs, open_page, texts

from tricl.analysis import downstream as ds
from tricl.analysis import load_analysis
from tricl.analysis.image_stages import ANALYSIS_STAGES, SPECTRAL_STAGES
from tricl.analysis.split_stages.interventions import fit_probe, interventions, steer
from tricl.bases import BASIS_NAMES
from tricl.report import interventions as report

RUN = "tricl_digits_small_cnn_k16_seed0"


def _constructed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """4 classes in 8 features. Features 1-3 mark classes 1-3 (one each), and class 0 has class
    1's feature 1 too: feature 0 alone tells class 0 from class 1. Features 4-7 are noise.
    -> z (n, 8), labels (n,)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    z = 0.3 * rng.standard_normal((n, 8))
    z[:, 0] += 3.0 * (y == 0)
    z[:, 1:4] += 3.0 * np.eye(4)[y][:, 1:]
    z[:, 1] += 3.0 * (y == 0)
    return z + 1.0, y  # an offset, so no row is near the origin


@pytest.fixture(scope="module")
def known():
    z, y = _constructed(400, 0)
    tz, ty = _constructed(1200, 1)
    return z, y, interventions(z, y, tz, ty, 4, draws=8, queries=100, database=400)


def test_ablating_the_class_feature_removes_that_class_and_nothing_else(known):
    _, _, res = known
    assert res.base_acc > 0.97 and res.base_class_acc.min() > 0.95
    ablated = res.class_acc[0, 0]  # feature 0 set to its mean
    assert ablated[0] < 0.1  # class 0 is gone ...
    assert ablated[1:].min() > 0.9  # ... the others stay
    assert list(res.flow[0, 0, :2]) == [0, 1] and res.flow[0, 0, 2] > 50  # they become 1s
    control = res.base_acc - res.control_acc[0, 0]  # (R,) drops of random directions
    rows = report.rows(res, 0, ["a", "b", "c", "d"], 2.0)
    assert rows[0].verdict == "more than chance" and rows[0].worst_class.startswith("a (-")
    assert rows[0].drop > control.mean() + 5 * control.std()


def test_a_noise_feature_does_no_more_than_chance(known):
    _, _, res = known
    for i in range(4, 8):
        assert res.base_acc - res.acc[i, 0] < 0.02
        assert report.rows(res, i, list("abcd"), 2.0)[0].verdict == "within chance"
    assert np.isfinite(res.map_ablate).all() and res.map_ablate[0] < res.map_ablate[5]


def test_the_closed_form_probe_is_the_downstream_probe(known):
    z, y, res = known
    tz, ty = _constructed(1200, 1)
    probe = fit_probe(tz, ty, 4)
    want = ds.linear_probe(ds.l2_normalise(tz), ty, ds.l2_normalise(z), y)
    got = probe.logits(z).argmax(axis=1)
    assert (got == want.predictions).mean() > 0.995
    assert res.base_acc == pytest.approx(float((got == y).mean()))
    # the rank-one updates give what editing z and recomputing gives
    edited = z.copy()
    edited[:, 2] += 2.0 * res.std[2]
    direct = (probe.logits(edited).argmax(axis=1) == y).mean()
    assert res.acc[2, 1] == pytest.approx(direct, abs=1e-6)


def test_steering_one_image_moves_its_class_probabilities(known):
    z, y, res = known
    row = int(np.flatnonzero(y == 0)[0])
    probs = steer(z[row], 0, [-4.0, 0.0], res)  # (2, 4)
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1)
    assert probs[1].argmax() == 0 and probs[0, 0] < probs[1, 0]


def test_without_labels_nothing_is_measured_and_the_page_says_so():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 4))
    res = interventions(z, np.full(50, -1), z, np.full(50, -1), 0)
    assert not res.measured and np.isnan(res.acc).all()
    assert "No labels" in report.summary(res, 0)


def test_the_stage_is_registered_in_both_bases():
    for registry in (ANALYSIS_STAGES, SPECTRAL_STAGES):
        stage = registry["interventions"]
        assert stage.file == "interventions.npz" and stage.needs == ("features", "importance")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return make_fixture_runs(tmp_path_factory.getbasetemp() / "app_runs")


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_feature_detail_shows_what_the_feature_does(runs_root, monkeypatch, basis):
    at = open_page(app_at(runs_root, monkeypatch, run=RUN, basis=basis), "feature_detail.py")
    a = load_analysis(runs_root / RUN, basis=basis)
    feature = int(a.importance.order(a.importance.default)[0])
    text = texts(at)
    assert "What it does: interventions" in text
    assert report.summary(a.interventions, feature) in text
    frames = [d.value for d in at.dataframe if "vs chance" in d.value.columns]
    assert len(frames) == 1 and len(frames[0]) == 3


def test_a_run_analysed_before_the_stage_renders_with_the_command(tmp_path, runs_root, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(runs_root, root, ignore=shutil.ignore_patterns("interventions.npz"))
    at = open_page(app_at(root, monkeypatch, run=RUN), "feature_detail.py")
    assert report.not_computed(RUN, "trained") in [i.value for i in at.info]


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_the_probe_page_slider_steers_the_probed_image(runs_root, monkeypatch, basis):
    at = open_page(app_at(runs_root, monkeypatch, run=RUN, basis=basis), "probe.py")
    assert "Steer a feature" in texts(at)
    first = next(c.value for c in at.caption if "linear probe reads" in c.value)
    assert "moved by +0 sd" in first
    at.slider(key="_w_steer_amount").set_value(-4.0).run()
    assert not at.exception
    moved = next(c.value for c in at.caption if "linear probe reads" in c.value)
    assert "moved by -4 sd" in moved
    a = load_analysis(runs_root / RUN, basis=basis)
    assert a.interventions.probe_coef.shape[0] == len(a.classes)
