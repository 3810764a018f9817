"""The spectral basis: a known answer on latent factors, and the cached estimate of a real run."""

import numpy as np
import pytest
import torch

from tricl.analysis.spectral import SPECTRAL_FILE, estimate, spectral_basis, unresolved_groups
from tricl.config import RunConfig
from tricl.train import train

STRENGTHS = np.array([0.9, 0.7, 0.5, 0.3])


def _factor_pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two views of n samples of 4 binary factors (factor i kept with prob. (1 + lambda_i)/2),
    mixed by a fixed random matrix into 6 features (2 of them redundant)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, 2, (n, 4), generator=g).double() * 2 - 1
    keep = torch.rand(c.shape, generator=g) < torch.tensor((1 + STRENGTHS) / 2)
    c2 = torch.where(keep, c, -c)
    mix = torch.randn(4, 6, generator=g, dtype=torch.float64)
    return c @ mix + 3.0, c2 @ mix + 3.0, c


def test_estimate_recovers_the_factors_in_order_of_strength():
    z1, z2, c = _factor_pairs(20000)
    basis = estimate(z1, z2)
    # 6 features but a rank-4 span: the degenerate directions are dropped
    assert basis.rotation.shape == (6, 4)
    np.testing.assert_allclose(basis.eigenvalues, STRENGTHS, atol=0.02)
    assert (basis.split_half_diff < 0.03).all()
    f = basis.project(z1.numpy())
    corr = np.abs(np.corrcoef(f.T, c.numpy().T)[:4, 4:])  # (rank, factor)
    assert (np.diagonal(corr) > 0.99).all(), corr
    # whitened: unit variance, uncorrelated
    np.testing.assert_allclose(np.cov(f.T, bias=True), np.eye(4), atol=0.05)


def test_estimate_is_invariant_to_an_invertible_mix_of_the_features():
    z1, z2, _ = _factor_pairs(5000)
    mix = torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a, b = estimate(z1, z2), estimate(z1 @ mix, z2 @ mix)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, atol=1e-6)
    fa, fb = a.project(z1.numpy()), b.project((z1 @ mix).numpy())
    np.testing.assert_allclose(np.abs(fa), np.abs(fb), atol=1e-4)  # same basis up to sign


def test_spectral_basis_of_a_run_is_cached_and_repeatable(tmp_path):
    cfg = RunConfig(
        method="tricl", dataset="digits", proj_dim=8, proj_hidden_dim=32, epochs=1, batch_size=128
    )
    run = train(cfg, runs_root=tmp_path, progress=False)
    rng = torch.random.get_rng_state()
    basis = spectral_basis(run, reps=1)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's RNG is left alone
    path = run.path / "analysis" / SPECTRAL_FILE
    assert path.is_file()
    assert basis.rotation.shape[0] == 8 and basis.eigenvalues.shape == basis.rotation.shape[1:]
    assert (np.diff(basis.eigenvalues) <= 0).all()
    assert basis.eigenvalues[0] <= 1 + 1e-9 and basis.pairs == len(run.load_data().train_x)
    stamp = path.stat().st_mtime_ns
    again = spectral_basis(run, reps=1)
    assert path.stat().st_mtime_ns == stamp  # read from the cache
    np.testing.assert_array_equal(again.rotation, basis.rotation)
    fresh = spectral_basis(run, reps=1, force=True)
    np.testing.assert_allclose(fresh.rotation, basis.rotation)  # same seed, same estimate
    other = spectral_basis(run, reps=2)  # other parameters: recomputed
    assert other.pairs == 2 * basis.pairs


def test_features_in_the_basis_are_white(tmp_path):
    z1, z2, _ = _factor_pairs(4000, seed=1)
    basis = estimate(z1, z2)
    f = basis.project(torch.cat([z1, z2]).numpy())
    assert f.mean(axis=0) == pytest.approx(np.zeros(4), abs=1e-8)
    np.testing.assert_allclose(np.cov(f.T, bias=True), np.eye(4), atol=1e-6)


def test_unresolved_groups_mark_equal_eigenvalues_only():
    noise = np.full(5, 0.01)
    # clearly separated: every gap is far above the noise, nothing is grouped
    assert unresolved_groups(np.array([0.9, 0.7, 0.5, 0.3, 0.1]), noise) == []
    # two equal eigenvalues: one group of two (0-based, inclusive)
    assert unresolved_groups(np.array([0.9, 0.6, 0.6, 0.3, 0.1]), noise) == [(1, 2)]
    # a chain of small gaps is one group, even though 0.800 - 0.784 exceeds the noise
    assert unresolved_groups(np.array([0.9, 0.800, 0.792, 0.784, 0.5]), noise) == [(1, 3)]
    # two separate clusters, the last one at the end
    assert unresolved_groups(np.array([0.9, 0.9, 0.5, 0.3, 0.3]), noise) == [(0, 1), (3, 4)]
    # the larger noise of the two neighbours decides
    assert unresolved_groups(np.array([0.9, 0.8]), np.array([0.0, 0.2])) == [(0, 1)]
    # an unknown noise (NaN) links nothing to that rank
    assert unresolved_groups(np.array([0.6, 0.6, 0.6]), np.array([0.1, 0.1, np.nan])) == [(0, 1)]
    assert unresolved_groups(np.array([0.5]), np.array([0.1])) == []
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        unresolved_groups(np.array([0.5, 0.4]), np.array([0.1]))


def _groups_of(strengths: np.ndarray, seed: int) -> list[tuple[int, int]]:
    """Unresolved groups of the basis estimated from 20000 pairs of 4 factors of these strengths."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, 2, (20000, 4), generator=g).double() * 2 - 1
    keep = torch.rand(c.shape, generator=g) < torch.tensor((1 + strengths) / 2)
    mix = torch.randn(4, 6, generator=g, dtype=torch.float64)
    basis = estimate(c @ mix, torch.where(keep, c, -c) @ mix)
    return unresolved_groups(basis.eigenvalues, basis.split_half_diff)


def test_estimated_basis_groups_equally_strong_factors_and_never_distinct_ones():
    seeds = range(20)
    # distinct strengths (gaps 0.2 >> noise): never grouped
    assert all(_groups_of(STRENGTHS, s) == [] for s in seeds)
    # two equal strengths: when a group is marked it is exactly the tied pair; a single split-half
    # difference is a noisy gauge, so a tie is caught in about half of the draws (11 of these 20)
    tied = [_groups_of(np.array([0.9, 0.6, 0.6, 0.3]), s) for s in seeds]
    assert all(g in ([], [(1, 2)]) for g in tied)
    assert sum(g == [(1, 2)] for g in tied) >= 8


def test_as_linear_is_the_projection():
    z1, z2, _ = _factor_pairs(3000, seed=2)
    basis = estimate(z1, z2)
    weight, bias = basis.as_linear()
    assert weight.shape == (basis.rank, 6) and bias.shape == (basis.rank,)
    z = z1.numpy()[:50] * 1.5 - 2.0  # any input, not only the estimate's own features
    np.testing.assert_allclose(z @ weight.T + bias, basis.project(z), rtol=1e-12, atol=1e-10)
    # as a torch layer (how align and saliency use it)
    layer = torch.nn.Linear(6, basis.rank).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
        out = layer(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(out, basis.project(z), rtol=1e-12, atol=1e-10)
    assert len(basis.fingerprint) == 16 and basis.fingerprint == estimate(z1, z2).fingerprint
