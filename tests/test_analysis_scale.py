"""What keeps the analysis within memory at scale: the batch from the model's feature maps, the
features filled in place, the spectral basis from running moments, UMAP of a subsample."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tricl.analysis.embedding import Embedding, subsample_rows, umap_embedding
from tricl.analysis.features import LIVE_MAPS, batch_size_for, extract
from tricl.analysis.spectral import PairMoments, estimate, estimate_from


class _ConvEncoder(nn.Module):
    """A conv stem (8 maps at the input size), pooled; z = a linear map of h."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x).relu().mean(dim=(2, 3))  # (B, 8)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)  # (B, 4)


def _floats(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255


def test_the_batch_shrinks_with_the_input_so_activations_stay_within_the_budget():
    enc = _ConvEncoder()
    small = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    large = torch.zeros(1, 3, 224, 224, dtype=torch.uint8)
    budget = 64 << 20
    per_image = 8 * 224 * 224 * 4  # the stem's float32 map is the largest output
    assert batch_size_for(enc, small, _floats, budget=budget) == 256  # capped
    b = batch_size_for(enc, large, _floats, budget=budget)
    assert b == budget // (LIVE_MAPS * per_image) == 10
    assert batch_size_for(enc, large, _floats, budget=1) == 1  # never 0


def test_extract_fills_the_same_features_whatever_the_batch():
    torch.manual_seed(0)
    enc = _ConvEncoder()
    x = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8)
    z1, h1 = extract(enc, x, _floats, batch_size=3)
    z7, h7 = extract(enc, x, _floats, batch_size=7)
    assert z1.shape == (7, 4) and h1.shape == (7, 8) and z1.dtype == np.float32
    np.testing.assert_allclose(z1, z7, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h1, h7, rtol=1e-5, atol=1e-6)
    z_auto, _ = extract(enc, x, _floats)  # the budget's batch
    np.testing.assert_allclose(z_auto, z7, rtol=1e-5, atol=1e-6)


def _reference_cross_covariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The whitened cross-view covariance from the centred features themselves (float64)."""
    z = torch.cat([z1, z2])
    centred = z - z.mean(0)
    w, v = torch.linalg.eigh(centred.T @ centred / len(z))
    keep = w > 1e-6 * w.max()
    whiten = v[:, keep] / w[keep].sqrt()
    a, b = (z1 - z.mean(0)) @ whiten, (z2 - z.mean(0)) @ whiten
    return (a.T @ b + b.T @ a) / (2 * len(a))


def test_running_moments_give_the_basis_of_the_whole_feature_matrices():
    torch.manual_seed(0)
    c = torch.randn(400, 6, dtype=torch.float64)
    mix = torch.randn(6, 6, dtype=torch.float64)
    z1 = (c + 0.3 * torch.randn(400, 6, dtype=torch.float64)) @ mix + 5.0  # far from centred
    z2 = (c + 0.3 * torch.randn(400, 6, dtype=torch.float64)) @ mix + 5.0
    want = torch.linalg.eigvalsh(_reference_cross_covariance(z1, z2)).flip(0)
    basis = estimate(z1, z2)
    np.testing.assert_allclose(basis.eigenvalues, want.numpy(), atol=1e-9)
    # the same moments added batch by batch (as the stage streams them), halves at row 200
    halves = (PairMoments(6), PairMoments(6))
    for start in range(0, 400, 64):
        part = slice(start, start + 64)
        cut = min(max(200 - start, 0), 64)
        halves[0].add(z1[part][:cut], z2[part][:cut])
        halves[1].add(z1[part][cut:], z2[part][cut:])
    streamed = estimate_from(*halves)
    assert streamed.pairs == 400
    np.testing.assert_allclose(streamed.eigenvalues, basis.eigenvalues, atol=1e-10)
    np.testing.assert_allclose(streamed.split_half_diff, basis.split_half_diff, atol=1e-10)
    np.testing.assert_allclose(np.abs(streamed.rotation), np.abs(basis.rotation), atol=1e-8)


def test_umap_maps_a_fixed_subsample_when_there_are_more_images_than_it_shows():
    rows = subsample_rows(100, most=30)
    assert len(rows) == 30 and np.all(np.diff(rows) > 0) and rows.max() < 100
    np.testing.assert_array_equal(rows, subsample_rows(100, most=30))  # repeatable
    np.testing.assert_array_equal(subsample_rows(20, most=30), np.arange(20))
    z = np.random.default_rng(0).standard_normal((60, 5)).astype(np.float32)
    emb = umap_embedding(z, most=25)
    assert emb.coords.shape == (25, 2) and emb.n_total == 60 and emb.subsampled
    np.testing.assert_array_equal(emb.rows, subsample_rows(60, most=25))


def test_an_embedding_stored_without_rows_maps_every_row():
    emb = Embedding(np.zeros((12, 2), dtype=np.float32), {})
    np.testing.assert_array_equal(emb.rows, np.arange(12))
    assert emb.n_total == 12 and not emb.subsampled
