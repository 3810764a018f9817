"""Interventions of image-text runs read through the text side: known answers on constructed
features (a feature whose ablation destroys zero-shot for one class and moves its captions,
noise features within chance, a rotated basis), captions without labels, the stage on a tiny
run in both bases (and a text analysis from before it), the Feature detail table and the Probe
page's slider with the retrieved captions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_analysis_interventions import _constructed  # the same 4-class, 8-feature set
from test_app_image_text import TRICLIP, it_root  # noqa: F401 (the session's fixture runs)
from test_app_pages import app_at, open_page, texts

from tricl.analysis import analyze
from tricl.analysis.image_text import analyze_text, load_text_analysis
from tricl.analysis.store import analysis_dir
from tricl.analysis.text_interventions import effects, steer_captions
from tricl.bases import Rotation
from tricl.report import interventions as report

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def known():
    """A text tower aligned with the classes: each class's prompt (and its one caption) is the
    class's mean train image embedding; an image's own caption is its class's."""
    z, y = _constructed(400, 0)
    tz, ty = _constructed(1200, 1)
    class_z = np.stack([tz[ty == c].mean(axis=0) for c in range(4)])  # (4, 8)
    return z, y, tz, class_z, effects(z, tz, y, class_z, y, class_z, None, queries=100)


def test_ablating_the_class_feature_destroys_zero_shot_for_that_class(known):
    *_, eff = known
    assert eff.base[0] == 1.0 and eff.base[1] == 1.0  # zero-shot and caption R@1 unedited
    ablated = eff.zs_class_acc[0, 0]  # feature 0 set to its mean
    assert ablated[0] == 0.0 and ablated[1:].min() == 1.0  # class 0 is gone, the rest stay
    assert eff.zs_changed[0, 0] == pytest.approx(1 - eff.zs_acc[0, 0])
    row = report.text_table(eff, 0, CLASSES, 2.0)[0]
    assert row["vs chance"] == "more than chance" and row["class hit most"] == "a (-100 pts)"
    # its images now retrieve class 1's caption: R@1 falls by class 0's share, top captions move
    share0 = 1 - eff.zs_acc[0, 0]
    assert eff.r1[0, 0] == pytest.approx(1 - share0, abs=0.06)
    assert eff.top_changed[0, 0] > 0.15 and row["captions vs chance"] == "more than chance"
    assert "**more than chance**" in report.text_summary(eff, 0)


def test_noise_features_are_within_chance(known):
    *_, eff = known
    for i in range(4, 8):
        assert eff.zs_acc[i].min() > 0.98 and eff.top_changed[i].max() < 0.02
        for row in report.text_table(eff, i, CLASSES, 2.0):
            assert row["vs chance"] == "within chance"
            assert row["captions vs chance"] == "within chance"
    # the control: every random direction is measured for zero-shot, half of them for captions
    assert np.isfinite(eff.zs_control).all()
    assert np.isfinite(eff.r1_control[:, :, :4]).all() and np.isnan(eff.r1_control[:, :, 4:]).all()


def test_a_rotated_basis_moves_the_trained_directions_it_maps(known):
    """A basis that permutes and scales the axes: its feature j is trained feature perm[j]."""
    z, y, tz, class_z, eff = known
    perm = np.array([3, 0, 5, 1, 7, 2, 6, 4])
    rotation = Rotation(np.full(8, 0.5), 2.0 * np.eye(8)[:, perm])
    got = effects(z, tz, y, class_z, y, class_z, None, rotation=rotation, queries=100)
    back = np.argsort(perm)  # basis feature of each trained feature
    np.testing.assert_allclose(got.zs_acc[back], eff.zs_acc, atol=1e-6)
    np.testing.assert_allclose(got.r1[back], eff.r1, atol=1e-6)
    np.testing.assert_allclose(got.std[back], 2.0 * eff.std, rtol=1e-5)
    np.testing.assert_allclose(got.direction[back] * 2.0, np.eye(8), atol=1e-6)


def test_without_labels_only_the_captions_are_measured(known):
    z, y, tz, class_z, _ = known
    eff = effects(z, tz, np.full(len(y), -1), np.zeros((0, 8)), y, class_z, None, queries=100)
    assert not eff.has_zero_shot and eff.zs_class_acc.shape == (8, 3, 0)
    assert np.isnan(eff.zs_acc).all() and eff.top_changed[0, 0] > 0.15
    assert "zero-shot accuracy cannot be measured" in report.text_summary(eff, 0)
    assert "zero-shot acc" not in report.text_table(eff, 0, [], 2.0)[0]


def test_steering_moves_the_retrieved_captions(known):
    z, y, _, class_z, eff = known
    row = int(np.flatnonzero(y == 1)[0])  # a class-1 image: feature 0 makes it a class 0
    amounts = np.array([0.0, 3.0]) * eff.std[0]
    top = steer_captions(z[row], eff.direction[0], amounts, class_z, None, 2)  # (2, 2)
    assert top[0, 0] == 1 and top[1, 0] == 0


# --------------------------------------------------------------------------- the stage


def test_the_stage_on_a_tiny_run_in_both_bases(it_root, tmp_path):  # noqa: F811
    run = tmp_path / TRICLIP
    shutil.copytree(it_root / TRICLIP, run)
    text_dir = analysis_dir(run, "test") / "text"
    (text_dir / "interventions.npz").unlink()
    older = load_text_analysis(run)  # an analysis from before the stage still reads
    assert older is not None and older.interventions is None
    got = analyze_text(run, progress=False)
    assert got.recomputed == ("interventions",)
    assert set(got.interventions) <= {"trained", "spectral"} and "trained" in got.interventions
    analyze(run, basis="spectral", progress=False)  # the spectral basis is now cached ...
    got = analyze_text(run, progress=False)
    assert got.recomputed == ("interventions",)  # ... so the stage reruns, with it
    assert set(got.interventions) == {"trained", "spectral"}
    for name, eff in got.interventions.items():
        assert eff.base[0] == pytest.approx(got.zero_shot["zero_shot_acc"], abs=1e-6), name
        assert eff.zs_acc.shape == (eff.k, 3) and np.isfinite(eff.zs_control).all()
    assert set(load_text_analysis(run).interventions) == {"trained", "spectral"}
    assert analyze_text(run, progress=False).recomputed == ()


def test_feature_detail_reads_the_feature_through_the_text_side(it_root, monkeypatch):  # noqa: F811
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP), "feature_detail.py")
    assert "Through the text side" in texts(at)
    frames = [d.value for d in at.dataframe if "captions vs chance" in d.value.columns]
    assert len(frames) == 1 and len(frames[0]) == 3 and "zero-shot acc" in frames[0].columns


def test_the_probe_slider_moves_the_retrieved_captions(it_root, monkeypatch):  # noqa: F811
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP), "probe.py")
    at.radio(key="_w_probe_kind").set_value("An image").run()
    at.slider(key="_w_steer_amount").set_value(-4.0).run()
    assert not at.exception
    table = at.table[-1].value
    assert list(table.columns) == ["as it is", "moved by -4 sd"] and len(table) == 5
