"""Identifiability of image-text runs: the pair basis (CCA) on known answers, and the comparison."""

from __future__ import annotations

import numpy as np
import pytest

from tricl.analysis.pair_basis import estimate_pair_basis
from tricl.analysis.store import AnalysisError

RHO = np.array([0.95, 0.8, 0.6, 0.4, 0.2])


def _paired_factors(n: int, rho: np.ndarray = RHO, seed: int = 0):
    """Image and text features of n pairs with known canonical pairs.

    Latent s (n, r); image factor x_i and text factor y_i each share sqrt(rho_i) of s_i, so
    corr(x_i, y_i) = rho_i and every other pair is uncorrelated. The image side is mixed into 6
    features (one redundant, so its span has rank 5) and the text side into 7, both shifted.

    Returns:
        ``(image_z (n, 6), text_z (n, 7), x (n, r), y (n, r))``.
    """
    rng = np.random.default_rng(seed)
    r = len(rho)
    s = rng.standard_normal((n, r))
    x = np.sqrt(rho) * s + np.sqrt(1 - rho) * rng.standard_normal((n, r))
    y = np.sqrt(rho) * s + np.sqrt(1 - rho) * rng.standard_normal((n, r))
    image = np.hstack([x, x[:, :1] + x[:, 1:2]]) @ rng.standard_normal((r + 1, 6)) + 2.0
    text = y @ rng.standard_normal((r, 7)) - 1.0
    return image, text, x, y


def _abs_diag_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = a.shape[1]
    return np.abs(np.diagonal(np.corrcoef(a.T, b.T)[:k, k:]))


# --------------------------------------------------------------------------- pair basis (CCA)


def test_pair_basis_recovers_the_canonical_pairs_in_order():
    image, text, x, y = _paired_factors(20000)
    basis = estimate_pair_basis(image, text)
    # 6 image features of rank 5 and 7 text features of rank 5: the null directions are dropped
    assert basis.image_rotation.shape == (6, 5) and basis.text_rotation.shape == (7, 5)
    np.testing.assert_allclose(basis.correlations, RHO, atol=0.015)
    assert (np.diff(basis.correlations) < 0).all()
    u, v = basis.project_image(image), basis.project_text(text)
    assert (_abs_diag_corr(u, x) > 0.99).all(), _abs_diag_corr(u, x)
    assert (_abs_diag_corr(v, y) > 0.99).all(), _abs_diag_corr(v, y)
    # the variates are the canonical pairs: corr(u_r, v_r) = rho_r (to the ridge's shrinkage), and
    # each side is white
    pair_corr = np.diagonal(np.corrcoef(u.T, v.T)[:5, 5:])
    np.testing.assert_allclose(pair_corr, basis.correlations, atol=1e-4)
    np.testing.assert_allclose(np.cov(u.T, bias=True), np.eye(5), atol=1e-4)
    np.testing.assert_allclose(np.cov(v.T, bias=True), np.eye(5), atol=1e-4)
    # split-half noise: small, and the well-separated correlations form no group
    assert (basis.split_half_diff < 0.03).all() and basis.groups == []
    assert basis.pairs == 20000


def test_pair_basis_flags_tied_correlations_as_one_group():
    rho = np.array([0.9, 0.6, 0.6, 0.3])  # ranks 2 and 3 cannot be ordered
    image, text, _, _ = _paired_factors(4000, rho=rho, seed=2)
    basis = estimate_pair_basis(image, text)
    assert basis.groups == [(1, 2)]


@pytest.mark.parametrize("ridge", [0.0, None])
def test_pair_basis_is_invariant_to_an_invertible_map_of_either_side(ridge):
    image, text, _, _ = _paired_factors(5000, seed=1)
    rng = np.random.default_rng(7)
    # maps of moderate condition (orthogonal x diag in [0.5, 2] x orthogonal), plus a shift
    mi = np.linalg.qr(rng.standard_normal((6, 6)))[0] @ np.diag(np.linspace(0.5, 2, 6))
    mt = np.diag(np.linspace(2, 0.5, 7)) @ np.linalg.qr(rng.standard_normal((7, 7)))[0]
    kw = {} if ridge is None else {"ridge": ridge}
    a = estimate_pair_basis(image, text, **kw)
    b = estimate_pair_basis(image @ mi + 5.0, text @ mt, **kw)
    # exact without a ridge; the default ridge moves the variates by far less than the noise
    tol = 1e-8 if ridge == 0.0 else 1e-3
    np.testing.assert_allclose(b.correlations, a.correlations, atol=tol)
    # the sign rule (image variate's third moment >= 0) is coordinate-free: signed agreement
    np.testing.assert_allclose(b.project_image(image @ mi + 5.0), a.project_image(image), atol=tol)
    np.testing.assert_allclose(b.project_text(text @ mt), a.project_text(text), atol=tol)


def test_pair_basis_is_deterministic():
    image, text, _, _ = _paired_factors(3000, seed=3)
    a, b = estimate_pair_basis(image, text), estimate_pair_basis(image.copy(), text.copy())
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.correlations, b.correlations)
    np.testing.assert_array_equal(a.split_half_diff, b.split_half_diff)


def test_pair_basis_refuses_unpaired_or_constant_features():
    image, text, _, _ = _paired_factors(100)
    with pytest.raises(AnalysisError, match="one row per pair"):
        estimate_pair_basis(image, text[:-1])
    with pytest.raises(AnalysisError, match="constant"):
        estimate_pair_basis(np.ones((50, 4)), text[:50])
