"""Streaming top-k, class means and class selectivity against brute-force references."""

import numpy as np
import pandas as pd
import pytest

from tricl.analysis.activations import (
    StreamingTopK,
    class_means,
    class_selectivity,
    histograms,
    iter_chunks,
    top_bottom_images,
)


def _random_chunks(z: np.ndarray, rng: np.random.Generator):
    """Rows of z in chunks of random sizes, with dataset indices offset by 1000."""
    start = 0
    while start < len(z):
        size = int(rng.integers(1, 300))
        yield z[start : start + size], np.arange(start, min(start + size, len(z))) + 1000
        start += size


@pytest.mark.parametrize("n", [1, 7, 32])
def test_streaming_top_k_equals_full_sort(n):
    rng = np.random.default_rng(n)
    z = rng.normal(size=(5000, 9)).astype(np.float32)
    top = top_bottom_images(_random_chunks(z, rng), n)
    full_desc = np.argsort(-z, axis=0)[:n].T  # (k, n)
    full_asc = np.argsort(z, axis=0)[:n].T  # (k, n)
    np.testing.assert_array_equal(top.top_indices, full_desc + 1000)
    np.testing.assert_array_equal(top.bottom_indices, full_asc + 1000)
    np.testing.assert_array_equal(top.top_values, np.take_along_axis(z.T, full_desc, axis=1))
    np.testing.assert_array_equal(top.bottom_values, np.take_along_axis(z.T, full_asc, axis=1))


def test_streaming_top_k_with_fewer_rows_than_n():
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    vals, idx = _run(z, n=10)
    assert vals.shape == (3, 5)
    np.testing.assert_array_equal(idx, np.argsort(-z, axis=0).T)


def _run(z, n):
    top = StreamingTopK(z.shape[1], n)
    for values, indices in iter_chunks(z, np.arange(len(z)), chunk=2):
        top.update(values, indices)
    return top.result()


def test_streaming_top_k_memory_is_bounded_by_n():
    top = StreamingTopK(4, 3)
    rng = np.random.default_rng(1)
    for i in range(50):
        top.update(rng.normal(size=(100, 4)), np.arange(100) + 100 * i)
        assert top._values.shape[0] <= 3


def test_class_means_equal_pandas_groupby():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(600, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=600)
    labels[labels == 2] = 3  # class 2 has no images
    got = class_means(z, labels, n_classes=4)  # (k, C)
    expected = pd.DataFrame(z).groupby(labels).mean().reindex(range(4)).to_numpy().T
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.isnan(got[:, 2]).all()


def test_class_selectivity_pure_and_uniform_features():
    labels = np.repeat(np.arange(4), 25)  # 100 images, 25 per class
    pure = np.arange(25, 50)  # all class 1
    uniform = np.r_[0:5, 25:30, 50:55, 75:80]  # 5 of each class
    sel = class_selectivity(np.stack([pure[:20], uniform]), labels, n_classes=4)
    np.testing.assert_array_equal(sel.dominant_class[:1], [1])
    np.testing.assert_allclose(sel.dominant_share, [1.0, 0.25])
    np.testing.assert_allclose(sel.entropy_bits, [0.0, 2.0], atol=1e-6)
    np.testing.assert_array_equal(sel.counts[1], [5, 5, 5, 5])


def test_histograms_count_every_value():
    z = np.random.default_rng(3).normal(size=(1000, 3))
    counts, edges = histograms(z, bins=10)
    assert counts.shape == (3, 10) and edges.shape == (3, 11)
    np.testing.assert_array_equal(counts.sum(axis=1), 1000)
    np.testing.assert_allclose(edges[:, 0], z.min(axis=0), rtol=1e-6)
