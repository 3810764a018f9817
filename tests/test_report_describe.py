"""Feature descriptions from stored statistics: known answers, without Streamlit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from tricl.report import describe

CLASSES = list(range(10))


def _stats(z: np.ndarray, labels: np.ndarray, top_n: int = 100) -> dict:
    """The statistics the stats stage stores, measured on activations ``z`` (N,)."""
    means = np.array([z[labels == c].mean() for c in CLASSES])  # (C,)
    top = labels[np.argsort(-z)[:top_n]]
    counts = np.bincount(top, minlength=len(CLASSES))
    return {
        "class_means": means,
        "mean": float(z.mean()),
        "std": float(z.std()),
        "classes": CLASSES,
        "top_class": int(counts.argmax()),
        "top_share": float(counts.max() / top_n),
        "top_n": top_n,
    }


def _labels(n: int = 2000) -> np.ndarray:
    return np.arange(n) % 10  # (n,) 200 images a class


def test_a_feature_high_on_one_class_names_it_and_its_top_images():
    rng = np.random.default_rng(0)
    labels = _labels()
    z = rng.standard_normal(len(labels)) + 4.0 * (labels == 6)  # class 6 raises it
    d = describe.describe_feature(**_stats(z, labels))
    assert [c for c, _ in d.high] == ["6"] and d.low == () and not d.diffuse
    assert d.high[0][1] > 2.0  # (4 - 0.4) / std(z), std ~ 1.6
    assert d.selective and d.top_class == "6" and d.top_share > 0.9
    assert d.text.startswith("high: 6 (+") and d.text.endswith("top-100: 100% 6")


def test_a_feature_low_on_one_class_is_described_by_that_class_not_its_top_images():
    """The issue's case: every 1 is far below, the top images are a near-chance mix."""
    rng = np.random.default_rng(1)
    labels = _labels()
    z = rng.standard_normal(len(labels)) - 5.0 * (labels == 1)
    d = describe.describe_feature(**_stats(z, labels))
    assert d.high == () and [c for c, _ in d.low] == ["1"]
    assert d.low[0][1] < -2.0 and not d.selective  # (-5 + 0.5) / std(z), std ~ 1.8
    assert d.text == f"low: 1 ({d.low[0][1]:+.1f} sd) · top-100 mixed"


def test_a_diffuse_feature_says_so_instead_of_naming_a_class():
    rng = np.random.default_rng(2)
    labels = _labels()
    z = rng.standard_normal(len(labels)) + 0.35 * (labels == 3)  # a small class effect only
    d = describe.describe_feature(**_stats(z, labels))
    assert d.diffuse and d.high == d.low == ()
    assert d.text.startswith("diffuse: no class ≥ 0.5 sd from the mean (most: 3, +0.3 sd)")
    assert "high" not in d.text and "low" not in d.text


def test_signed_features_name_both_sides_most_extreme_first_and_count_the_rest():
    means = np.array([0.0, -2.0, 0.0, 0.6, 1.0, 0.0, 1.5, 0.7, 0.8, 0.9])
    d = describe.describe_feature(means, 0.0, 1.0, CLASSES, 6, 0.3, 100)
    assert d.text.startswith("high: 6 (+1.5 sd), 4, 9, 8, +2 more · low: 1 (-2.0 sd)")
    # a constant feature has nothing to describe
    flat = describe.describe_feature(np.zeros(10), 0.0, 0.0, CLASSES, 0, 0.1, 100)
    assert flat.constant and flat.text.startswith("constant")


def test_words_and_the_consensus_read_the_stored_tables():
    tokens = pd.DataFrame(
        {
            "feature": [0, 0, 0, 1],
            "token": ["thick", "seven", "thin", "one"],
            "lift": [1.3, 2.1, -0.4, 0.9],
        }
    )
    assert describe.top_words(tokens, 0) == ["seven", "thick"]  # a negative lift does not raise
    means = np.zeros((2, 10))
    means[0, 6], means[1, 1] = 2.0, -3.0
    stats = SimpleNamespace(
        class_means=means,
        mean=np.zeros(2),
        std=np.ones(2),
        dominant_class=np.array([6, 8]),
        dominant_share=np.array([0.9, 0.15]),
        selectivity_n=100,
    )
    a = SimpleNamespace(stats=stats, classes=CLASSES, k=2)
    lines = describe.describe_all(a, [1, 0], lambda f: describe.top_words(tokens, f))
    assert lines == [
        "low: 1 (-3.0 sd) · top-100 mixed · words: one",
        "high: 6 (+2.0 sd) · top-100: 90% 6 · words: seven, thick",
    ]
    table = pd.DataFrame({"rank": [1, 2, 3], "representative": ["run_a", "run_a", "run_b"]})
    got = describe.consensus_descriptions(table, {"run_a": a})
    assert got == ["high: 6 (+2.0 sd) · top-100: 90% 6", "low: 1 (-3.0 sd) · top-100 mixed", ""]


def test_images_without_labels_are_not_described_by_class():
    stats = SimpleNamespace(class_means=np.zeros((1, 1)), mean=np.zeros(1), std=np.ones(1))
    a = SimpleNamespace(stats=stats, classes=[0], k=1, has_labels=False)
    assert describe.describe_all(a, [0]) == [describe.NO_LABELS]
    assert describe.line(a, 0, ["thick"]) == f"{describe.NO_LABELS} · words: thick"
