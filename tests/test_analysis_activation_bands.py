"""The activation bands stage: known answers on constructed features, and a real run through
``analyze`` in both bases, where it is the only stage computed on top of a cached analysis."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tricl.analysis import analyze, load_analysis
from tricl.analysis.image_stages import ANALYSIS_STAGES, SPECTRAL_STAGES
from tricl.analysis.split_stages.activation_bands import (
    BANDS,
    SAMPLES,
    ActivationBands,
    activation_bands,
)
from tricl.bases import BASIS_NAMES
from tricl.report.bands import band_rows, class_mix, near_zero_caption, not_computed

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
RUN = SHIPPED / "simclr_mnist5k_small_cnn_k64_seed0"


def _ramp() -> tuple[np.ndarray, np.ndarray]:
    """Feature 0 = 0..99 (bands of 20 each at width 19.8), feature 1 = 50 zeros then 50 tens.
    Labels: row i is class i % 3. z: (100, 2)."""
    z = np.stack([np.arange(100.0), np.r_[np.zeros(50), np.full(50, 10.0)]], axis=1)
    return z.astype(np.float32), np.arange(100) % 3


def _in_band(b: ActivationBands, z: np.ndarray, rows_of: np.ndarray | None = None) -> None:
    """Every sample lies in the band it was drawn from (edges[b] <= a <= edges[b + 1])."""
    k, n_bands, _ = b.samples.shape
    for f in range(k):
        for j in range(n_bands):
            got = b.samples[f, j][b.samples[f, j] >= 0]
            assert len(got) == min(b.counts[f, j], b.samples.shape[2])
            assert len(set(got.tolist())) == len(got)  # without replacement
            rows = got if rows_of is None else rows_of[got]
            a = z[rows, f]
            assert np.all(a >= b.edges[f, j]) and np.all(a <= b.edges[f, j + 1]), (f, j)


def test_bands_of_a_ramp_have_known_edges_counts_classes_and_samples():
    z, labels = _ramp()
    b = activation_bands(z, labels, 3, bands=5, samples=8, seed=0)
    np.testing.assert_allclose(b.edges[0], [0, 19.8, 39.6, 59.4, 79.2, 99], rtol=1e-6)
    np.testing.assert_array_equal(b.counts[0], [20, 20, 20, 20, 20])
    np.testing.assert_array_equal(b.counts[1], [50, 0, 0, 0, 50])  # the empty bands stay empty
    assert (b.counts.sum(axis=1) == 100).all() and (b.class_counts.sum(axis=2) == b.counts).all()
    np.testing.assert_array_equal(b.class_counts[0, 0], [7, 7, 6])  # rows 0..19 by i % 3
    np.testing.assert_array_equal(b.samples[1, 1:4], -1)  # -1 padded: no image in those bands
    _in_band(b, z)
    same = activation_bands(z, labels, 3, bands=5, samples=8, seed=0)
    np.testing.assert_array_equal(b.samples, same.samples)  # deterministic for the seed
    other = activation_bands(z, labels, 3, bands=5, samples=8, seed=1)
    assert not np.array_equal(b.samples, other.samples)


def test_small_bands_are_padded_and_dataset_indices_are_returned():
    z = np.array([[0.0], [1.0], [1.0], [1.0], [10.0]], dtype=np.float32)  # (5, 1)
    rows_to_index = np.array([40, 41, 42, 43, 44])
    b = activation_bands(z, np.zeros(5), 1, bands=2, samples=4, indices=rows_to_index)
    np.testing.assert_array_equal(b.counts, [[4, 1]])
    np.testing.assert_array_equal(sorted(b.samples[0, 0]), [40, 41, 42, 43])
    np.testing.assert_array_equal(b.samples[0, 1], [44, -1, -1, -1])
    row_of = np.full(45, -1)
    row_of[rows_to_index] = np.arange(5)  # dataset index -> row
    _in_band(b, z, rows_of=row_of)


def test_near_zero_fraction_is_exact_on_a_constructed_case():
    # max |a| = 100, so near zero is |a| <= 5: 0, -5, 5, 4.9 are; -5.1, 6, 100, -20 are not
    col = np.array([0, -5, 5, 4.9, -5.1, 6, 100, -20], dtype=np.float32)
    z = np.stack([col, np.zeros(8, dtype=np.float32)], axis=1)  # (8, 2), feature 1 constant 0
    b = activation_bands(z, np.full(8, -1), 0)
    np.testing.assert_allclose(b.near_zero, [0.5, 1.0])
    np.testing.assert_allclose(b.near_zero_threshold, [5.0, 0.0])
    assert b.class_counts.shape == (2, BANDS, 0)  # no labels: no class counts, the rest stays
    np.testing.assert_array_equal(b.counts[1], [8, 0, 0, 0, 0])  # a constant feature: one band


def test_random_features_keep_every_invariant():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((500, 7)).astype(np.float32) ** 3  # (500, 7), heavy tails
    labels = rng.integers(0, 4, 500)
    b = activation_bands(z, labels, 4)
    assert b.samples.shape == (7, BANDS, SAMPLES) and b.edges.shape == (7, BANDS + 1)
    assert (b.counts.sum(axis=1) == 500).all() and (b.class_counts.sum(axis=2) == b.counts).all()
    np.testing.assert_allclose(b.edges[:, 0], z.min(axis=0))
    np.testing.assert_allclose(b.edges[:, -1], z.max(axis=0))
    _in_band(b, z)


def test_the_stage_is_registered_in_both_bases():
    for registry in (ANALYSIS_STAGES, SPECTRAL_STAGES):
        stage = registry["activation_bands"]
        assert stage.file == "activation_bands.npz" and stage.needs == ("features",)


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_a_cached_run_computes_only_the_bands_in_each_basis(tmp_path, basis):
    run = tmp_path / RUN.name
    shutil.copytree(RUN, run, ignore=shutil.ignore_patterns("activation_bands.npz", "text"))
    before = load_analysis(run, basis=basis)  # readable without the new artifact
    assert before is not None and "activation_bands" not in before.values
    out = analyze(run, progress=False, basis=basis)
    assert out.recomputed == ("activation_bands",)  # every other stage was fresh
    after = load_analysis(run, basis=basis)
    bands, z = after.activation_bands, after.features.z  # the basis's own (rotated) z
    want = activation_bands(z, after.features.labels, len(after.classes))
    np.testing.assert_array_equal(bands.samples, want.samples)
    assert bands.counts.shape == (z.shape[1], BANDS)
    assert (bands.counts.sum(axis=1) == len(z)).all()
    _in_band(bands, z.astype(np.float32))
    frac = f"{float(bands.near_zero[0]):.0%}"
    assert f"Near zero on **{frac}**" in near_zero_caption(after, 0)  # the rule from its params


def test_the_page_rows_run_bottom_to_top_with_their_class_mix():
    z, labels = _ramp()
    b = activation_bands(z, labels, 3, bands=5, samples=8)
    rows = band_rows(b, 0, ["a", "b", "c"])
    assert [r.band for r in rows] == [1, 2, 3, 4, 5] and rows[0].low == 0 and rows[-1].high == 99
    assert [r.count for r in rows] == [20] * 5 and rows[0].share == pytest.approx(0.2)
    assert rows[0].class_mix == "a 35% · b 35% · c 30%"  # rows 0..19: 7, 7, 6 of each
    empty = band_rows(b, 1, ["a", "b", "c"])[2]
    assert empty.count == 0 and empty.class_mix == "" and len(empty.samples) == 0
    assert class_mix(np.array([1, 0, 6, 3]), list("wxyz"), top=2) == "y 60% · z 30%"
    unlabelled = activation_bands(z, np.full(100, -1), 0)
    assert all(r.class_mix == "" for r in band_rows(unlabelled, 0, []))
    assert "--basis spectral" in not_computed("run1", "spectral")
