"""The analysis in the spectral basis: trained features projected, the same artifacts on them."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from tricl.analysis import (
    BASES,
    METRICS,
    AnalysisError,
    analyze,
    compare,
    consensus,
    load_analysis,
    load_comparison,
    load_consensus,
    load_spectral_basis,
    pipeline,
    unresolved_groups,
)
from tricl.analysis.comparison import CONSENSUS_COLUMNS, pair_columns
from tricl.analysis.spectral import RUN_STAGES, SPECTRAL_FILE
from tricl.config import RunConfig
from tricl.runs import Run
from tricl.train import train

TINY = {"dataset": "digits", "proj_dim": 16, "proj_hidden_dim": 32, "epochs": 1, "batch_size": 128}


@pytest.fixture(scope="module")
def tricl_run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("runs")
    return train(RunConfig(method="tricl", **TINY), runs_root=root, progress=False)


@pytest.fixture(scope="module")
def spectral(tricl_run):
    return analyze(tricl_run, basis="spectral", progress=False)


def _copy(run: Run, dest: Path) -> Path:
    shutil.copytree(run.path, dest)
    return dest


def test_bases_are_trained_and_spectral():
    assert BASES == ("trained", "spectral")


def test_spectral_features_are_the_projected_trained_features(tricl_run, spectral):
    trained = load_analysis(tricl_run)
    basis = load_spectral_basis(tricl_run)
    assert trained is not None and basis is not None  # both computed on the way
    assert spectral.basis == "spectral" and trained.basis == "trained" and trained.groups == ()
    f, t = spectral.features, trained.features
    assert spectral.k == basis.rank
    np.testing.assert_allclose(f.z, basis.project(t.z), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f.train_z, basis.project(t.train_z), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(f.h, t.h)
    np.testing.assert_array_equal(f.labels, t.labels)
    # white on the train split it was estimated on (up to the augmentations): unit-ish scale
    assert 0.3 < float(f.train_z.std(axis=0).mean()) < 3.0
    # the embedding is the trained one, shared
    np.testing.assert_array_equal(spectral.embedding.coords, trained.embedding.coords)
    assert spectral.full["backbone_linear_acc"] == trained.full["backbone_linear_acc"]


def test_spectral_importance_is_the_eigenvalue_order(tricl_run, spectral):
    basis = load_spectral_basis(tricl_run)
    imp = spectral.importance
    assert imp.default == "eigenvalue" and list(imp.orders) == ["eigenvalue"]
    np.testing.assert_array_equal(imp.order(), np.arange(basis.rank))
    np.testing.assert_allclose(imp.scores["eigenvalue"], basis.eigenvalues, rtol=1e-6)
    assert spectral.groups == tuple(unresolved_groups(basis.eigenvalues, basis.split_half_diff))
    assert all(b > a for a, b in spectral.groups)


def test_spectral_artifacts_are_computed_on_the_rotated_features(spectral):
    f = spectral.features
    np.testing.assert_allclose(spectral.stats.mean, f.z.mean(axis=0), rtol=1e-4, atol=1e-5)
    means = np.stack([f.z[f.labels == c].mean(axis=0) for c in range(f.n_classes)], axis=1)
    np.testing.assert_allclose(spectral.stats.class_means, means, rtol=1e-4, atol=1e-5)
    top = spectral.top_images
    assert top.top_indices.shape == (spectral.k, 32)
    for r in (0, spectral.k - 1):
        np.testing.assert_allclose(top.top_values[r, 0], f.z[:, r].max(), rtol=1e-6)
        assert f.z[top.top_indices[r, 0], r] == pytest.approx(top.top_values[r, 0])
    curves = spectral.curves()
    assert set(curves["selection"]) == {"top", "bottom", "random"}
    assert 0.0 < spectral.linear_acc <= 1.0


def test_spectral_analysis_is_cached_and_read_only_when_loaded(tricl_run, spectral, tmp_path):
    again = analyze(tricl_run, basis="spectral", progress=False)
    assert again.recomputed == ()
    loaded = load_analysis(tricl_run, basis="spectral")
    assert loaded is not None and loaded.groups == spectral.groups
    np.testing.assert_array_equal(loaded.features.z, spectral.features.z)
    folder = tricl_run.path / "analysis" / "test" / "spectral"
    assert {p.name for p in folder.iterdir()} >= {"features.npz", "stats.npz", "downstream.csv"}
    # a copy without its spectral basis: nothing to read, and loading computes nothing
    copy = _copy(tricl_run, tmp_path / "copy")
    (copy / "analysis" / SPECTRAL_FILE).unlink()
    assert load_analysis(copy, basis="spectral") is None
    assert not (copy / "analysis" / SPECTRAL_FILE).exists()
    assert load_analysis(copy) is not None  # the trained basis is untouched


def test_bumping_a_spectral_stage_recomputes_only_it(tricl_run, spectral, tmp_path, monkeypatch):
    copy = _copy(tricl_run, tmp_path / "copy")
    stage = pipeline.SPECTRAL_STAGES["top_images"]
    monkeypatch.setitem(
        pipeline.SPECTRAL_STAGES, "top_images", dataclasses.replace(stage, version=9)
    )
    trained_files = sorted((copy / "analysis" / "test").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in trained_files]
    out = analyze(copy, basis="spectral", progress=False)
    assert out.recomputed == ("top_images",)
    assert [p.stat().st_mtime_ns for p in trained_files] == stamps  # trained artifacts untouched


def test_a_new_spectral_basis_recomputes_every_spectral_stage_only(
    tricl_run, spectral, tmp_path, monkeypatch
):
    copy = _copy(tricl_run, tmp_path / "copy")
    stage = RUN_STAGES["spectral"]
    monkeypatch.setitem(RUN_STAGES, "spectral", dataclasses.replace(stage, version=9))
    assert load_analysis(copy, basis="spectral") is None  # the basis is stale: nothing to read
    trained_files = sorted((copy / "analysis" / "test").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in trained_files]
    out = analyze(copy, basis="spectral", progress=False)
    assert out.recomputed == tuple(pipeline.SPECTRAL_STAGES)
    assert [p.stat().st_mtime_ns for p in trained_files] == stamps
    np.testing.assert_allclose(out.features.z, spectral.features.z, rtol=1e-5, atol=1e-5)


def test_unknown_basis_is_one_line_error(tricl_run):
    for call in (
        lambda: analyze(tricl_run, basis="junk", progress=False),
        lambda: load_analysis(tricl_run, basis="junk"),
    ):
        with pytest.raises(AnalysisError) as err:
            call()
        msg = str(err.value)
        assert "junk" in msg and "trained, spectral" in msg and "\n" not in msg


@pytest.fixture(scope="module")
def simclr_run(tricl_run) -> Run:
    return train(
        RunConfig(method="simclr", **TINY), runs_root=tricl_run.path.parent, progress=False
    )


@pytest.fixture(scope="module")
def twin(tricl_run, tmp_path_factory) -> Path:
    """The tricl run under another name in another folder: the same features, rank by rank."""
    dest = tmp_path_factory.mktemp("twins") / "tricl_twin"
    analyze(tricl_run, basis="spectral", progress=False)  # copied along: nothing to recompute
    return _copy(tricl_run, dest)


def test_compare_in_the_spectral_basis_pairs_ranks(tricl_run, simclr_run, twin, tmp_path):
    comp = compare([tricl_run, twin], basis="spectral", out_root=tmp_path)
    assert comp.basis == "spectral"
    k = load_spectral_basis(tricl_run).rank
    np.testing.assert_allclose(np.diagonal(comp.abs_corr(0, 1)), np.ones(k), atol=1e-4)
    assert list(comp.pairs.columns) == pair_columns(spectral=False)
    assert load_comparison([tricl_run, twin], basis="spectral", out_root=tmp_path) is not None
    # its plain scores are the trained comparison's spectral-basis scores
    runs = [tricl_run, simclr_run]
    in_trained = compare(runs, out_root=tmp_path, progress=False).pairs.iloc[0]
    in_spectral = compare(runs, basis="spectral", out_root=tmp_path, progress=False).pairs.iloc[0]
    for m in METRICS.values():
        if m.spectral:
            assert in_spectral[m.name] == pytest.approx(in_trained[m.spectral_name], abs=1e-3)
    # the two bases are stored apart
    assert (
        load_comparison(runs, out_root=tmp_path).path
        != load_comparison(runs, basis="spectral", out_root=tmp_path).path
    )
    with pytest.raises(AnalysisError, match="unknown basis 'junk'"):
        compare(runs, basis="junk", out_root=tmp_path)


def test_consensus_on_a_run_its_twin_and_another_method(tricl_run, simclr_run, twin, tmp_path):
    runs = [tricl_run, twin, simclr_run]
    assert load_consensus(runs, out_root=tmp_path) is None  # never computes
    cons = consensus(runs, out_root=tmp_path, progress=False)
    table = cons.table
    assert list(table.columns) == CONSENSUS_COLUMNS
    spectra = [analyze(r, basis="spectral", progress=False) for r in runs]
    ranks = min(a.k for a in spectra)
    assert list(table["rank"]) == list(range(1, ranks + 1))
    comp = compare(runs, basis="spectral", out_root=tmp_path, progress=False)
    for r in range(ranks):
        pair = [comp.abs_corr(i, j)[r, r] for i, j in ((0, 1), (0, 2), (1, 2))]
        assert table["mean_abs_corr"][r] == pytest.approx(np.mean(pair), abs=1e-6)
        assert table["min_abs_corr"][r] == pytest.approx(np.min(pair), abs=1e-6)
    # the twins agree perfectly, so one of them represents every rank (the first on a tie)
    assert set(table["representative"]) == {tricl_run.name}
    rep = spectra[0]
    np.testing.assert_allclose(table["eigenvalue"], rep.importance.scores["eigenvalue"][:ranks])
    assert table["top_indices"][3] == [int(i) for i in rep.top_images.top_indices[3]]
    in_group = [sum(lo <= r <= hi for lo, hi in a.groups) for r in range(ranks) for a in spectra]
    assert table["unresolved_runs"].sum() == sum(in_group)
    # cached: read back equal, never recomputed
    again = load_consensus(runs, out_root=tmp_path)
    assert again is not None and again.table.equals(table)
    assert consensus(runs, out_root=tmp_path, progress=False).recomputed == ()
