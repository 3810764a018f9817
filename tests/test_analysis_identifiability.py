"""Identifiability metrics on constructed cases with known answers."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from tricl.analysis.identifiability import (
    corr_matrix,
    hungarian_match,
    linear_cka,
    mcc,
    ordered_correlation,
    rank_match,
)
from tricl.analysis.metrics import score_pair

N, K = 3000, 16


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    """Independent features with distinct scales, columns in importance order. Shape: (N, K)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, K)) * np.linspace(3.0, 0.5, K)


def test_corr_matrix_matches_numpy_corrcoef(features):
    rng = np.random.default_rng(1)
    other = features[:, :5] @ rng.normal(size=(5, 7)) + rng.normal(size=(N, 7))
    expected = np.corrcoef(features.T, other.T)[:K, K:]
    np.testing.assert_allclose(corr_matrix(features, other), expected, atol=1e-10)


def test_constant_feature_correlates_zero():
    a = np.c_[np.ones(50), np.arange(50.0)]
    c = corr_matrix(a, a)
    assert c[0, 0] == 0 and c[0, 1] == 0 and c[1, 1] == pytest.approx(1.0)


def test_identical_runs_score_one(features):
    scores, _ = score_pair(features, features.copy())
    assert scores["ordered_corr"] == pytest.approx(1.0)
    assert scores["ordered_corr_top8"] == pytest.approx(1.0)
    assert scores["mcc"] == pytest.approx(1.0)
    assert scores["cka"] == pytest.approx(1.0)
    assert scores["rank_match_top8"] == 1.0


def test_permutation_and_sign_flip_keep_mcc_but_break_ordered_corr(features):
    rng = np.random.default_rng(2)
    perm = rng.permutation(K)
    signs = rng.choice([-1.0, 1.0], size=K)
    other = features[:, perm] * signs  # same features, shuffled and sign-flipped
    scores, corr = score_pair(features, other)
    assert scores["mcc"] == pytest.approx(1.0)
    assert scores["cka"] == pytest.approx(1.0)
    # only the fixed points of the permutation still line up
    assert scores["ordered_corr"] == pytest.approx(np.mean(perm == np.arange(K)), abs=0.05)
    assert scores["ordered_corr"] < 0.5
    m = hungarian_match(corr)
    np.testing.assert_array_equal(perm[m.cols], m.rows)  # recovers the permutation ...
    np.testing.assert_array_equal(np.sign(m.corr), signs[m.cols])  # ... and the signs


def test_sign_flip_alone_keeps_ordered_corr(features):
    signs = np.where(np.arange(K) % 2 == 0, 1.0, -1.0)
    scores, _ = score_pair(features, features * signs)
    assert scores["ordered_corr"] == pytest.approx(1.0)


def test_sorting_by_own_importance_restores_ordered_corr(features):
    rng = np.random.default_rng(3)
    perm = rng.permutation(K)
    other = features[:, perm]
    importance_b = np.linspace(3.0, 0.5, K)[perm]  # run b learned the same importances
    order_b = np.argsort(-importance_b)
    scores, _ = score_pair(features, other[:, order_b])
    assert scores["ordered_corr"] == pytest.approx(1.0)


def test_rotation_keeps_cka_but_not_mcc(features):
    q = ortho_group.rvs(K, random_state=4)
    scores, _ = score_pair(features, features @ q)
    assert scores["cka"] == pytest.approx(1.0)
    assert scores["mcc"] < 0.8
    assert scores["ordered_corr"] < 0.5


def test_cka_is_invariant_to_isotropic_scaling_not_to_anisotropic(features):
    assert linear_cka(features, 5.0 * features) == pytest.approx(1.0)
    squashed = features * np.r_[np.ones(K // 2), np.full(K // 2, 0.01)]
    assert linear_cka(features, squashed) < 0.99


def test_cka_equals_hsic_gram_form():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(40, 3))
    h = np.eye(40) - 1.0 / 40
    ka, kb = h @ a @ a.T @ h, h @ b @ b.T @ h
    expected = (ka * kb).sum() / np.sqrt((ka * ka).sum() * (kb * kb).sum())
    assert linear_cka(a, b) == pytest.approx(expected)


def test_independent_features_score_near_zero(features):
    other = np.random.default_rng(6).normal(size=(N, K))
    scores, _ = score_pair(features, other)
    assert scores["ordered_corr"] < 0.05
    assert scores["mcc"] < 0.1
    assert scores["cka"] < 0.05


def test_rank_match_ignores_order_inside_the_top_group(features):
    perm = np.r_[np.arange(8)[::-1], np.arange(8, K)]  # reverse the top 8, keep the rest
    corr = corr_matrix(features, features[:, perm])
    assert rank_match(corr, top=8) == 1.0
    assert ordered_correlation(corr, top=8) < 0.05
    swapped = np.r_[np.arange(8, K), np.arange(8)]  # top 8 of a are the bottom 8 of b
    assert rank_match(corr_matrix(features, features[:, swapped]), top=8) == 0.0


def test_runs_with_different_k():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(500, 8))
    b = np.c_[a[:, :4], rng.normal(size=(500, 6))]  # shares 4 features, has 10
    corr = corr_matrix(a, b)
    assert corr.shape == (8, 10)
    assert ordered_correlation(corr, top=4) == pytest.approx(1.0)
    assert mcc(corr) == pytest.approx(0.5, abs=0.08)  # 4 of 8 matched at 1, the rest near 0
