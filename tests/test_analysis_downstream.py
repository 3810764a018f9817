"""Linear probe, k-NN, retrieval mAP, few-feature curves and importance orders."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tricl.analysis.downstream import (
    DownstreamInputs,
    average_precision,
    feature_counts,
    few_feature_curves,
    knn_accuracy,
    linear_probe,
    n_curve_points,
    retrieval_map,
)
from tricl.analysis.importance import (
    ablation_scores,
    compute_importance,
    order_from_scores,
    variance_scores,
)


def _sklearn_map(query_x, query_y, db_x, db_y):
    aps = []
    for q, y in zip(query_x, query_y):
        scores = -((db_x - q) ** 2).sum(axis=1)
        aps.append(average_precision_score(db_y == y, scores))
    return float(np.mean(aps))


def test_retrieval_map_equals_sklearn():
    rng = np.random.default_rng(0)
    db_x, db_y = rng.normal(size=(120, 3)), rng.integers(0, 4, size=120)
    db_x[:, 0] += db_y  # some class signal, so mAP is not just the class frequency
    q_x, q_y = rng.normal(size=(30, 3)), rng.integers(0, 4, size=30)
    q_x[:, 0] += q_y
    got = retrieval_map(q_x, q_y, db_x, db_y)
    assert got == pytest.approx(_sklearn_map(q_x, q_y, db_x, db_y), abs=1e-6)


def test_retrieval_map_with_ties_equals_sklearn():
    rng = np.random.default_rng(1)
    db_x = rng.integers(0, 3, size=(80, 1)).astype(np.float32)  # 3 distinct values: many ties
    db_y = rng.integers(0, 3, size=80)
    q_x = rng.integers(0, 3, size=(20, 1)).astype(np.float32)
    q_y = rng.integers(0, 3, size=20)
    got = retrieval_map(q_x, q_y, db_x, db_y, max_block=100)  # several query blocks
    assert got == pytest.approx(_sklearn_map(q_x, q_y, db_x, db_y), abs=1e-6)


def test_average_precision_known_value():
    # ranking: rel, not, rel -> AP = (1/1 + 2/3) / 2
    ap = average_precision(np.array([[3.0, 2.0, 1.0]]), np.array([[True, False, True]]))
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)


def test_retrieval_excludes_the_query_itself():
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    y = np.array([0, 1, 1, 0])  # each point's nearest neighbour has the other class
    assert retrieval_map(x, y, x, y) > 0.5  # itself found first
    assert retrieval_map(x, y, x, y, exclude=np.arange(4)) < 0.6


def _blobs(n, k, informative, seed, noise=0.3):
    """Labels in 0..3 that only the first ``informative`` features carry. Shapes: (n, k), (n,)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    centres = np.random.default_rng(99).normal(size=(4, informative)) * 3
    x = rng.normal(size=(n, k))
    x[:, :informative] = centres[y] + noise * rng.normal(size=(n, informative))
    return x.astype(np.float32), y


def test_linear_probe_separable_and_deterministic():
    x, y = _blobs(400, 6, informative=3, seed=2)
    xt, yt = _blobs(200, 6, informative=3, seed=3)
    a = linear_probe(x, y, xt, yt)
    b = linear_probe(x, y, xt, yt)
    assert a.accuracy > 0.97
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert a.loss == b.loss


def test_linear_probe_on_noise_is_near_chance():
    x, y = _blobs(400, 6, informative=3, seed=2)
    xt, yt = _blobs(400, 6, informative=3, seed=3)
    assert linear_probe(x[:, 3:], y, xt[:, 3:], yt).accuracy < 0.4


def test_knn_accuracy_on_clusters():
    x, y = _blobs(300, 4, informative=4, seed=4, noise=0.1)
    xt, yt = _blobs(100, 4, informative=4, seed=5, noise=0.1)
    assert knn_accuracy(x, y, xt, yt, k=5) > 0.97


def test_feature_counts():
    assert feature_counts(64) == [1, 2, 4, 8, 16, 32, 64]
    assert feature_counts(10) == [1, 2, 4, 8, 10]
    assert feature_counts(1) == [1]


def test_few_feature_curves_top_beats_bottom():
    k = 8
    x, y = _blobs(500, k, informative=2, seed=6)
    xt, yt = _blobs(300, k, informative=2, seed=7)
    inputs = DownstreamInputs.build(x, y, xt, yt)
    ticks = []
    table = few_feature_curves(inputs, {"good": np.arange(k)}, tick=lambda: ticks.append(1))
    assert len(ticks) == n_curve_points(k, n_orders=1)
    assert set(table["selection"]) == {"top", "bottom", "random"}
    assert sorted(set(table["k"])) == feature_counts(k)
    top2 = table.query("selection == 'top' and k == 2").iloc[0]
    bottom2 = table.query("selection == 'bottom' and k == 2").iloc[0]
    assert top2.linear_acc > 0.9 and bottom2.linear_acc < 0.45
    assert top2.retrieval_map > bottom2.retrieval_map + 0.3
    full = table.query("k == @k")
    assert np.allclose(full["linear_acc"], full["linear_acc"].iloc[0])  # all k features: same set
    assert (table.query("selection == 'random'")["linear_acc_std"] >= 0).all()


def test_order_from_scores_breaks_ties():
    scores = np.array([0.1, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(order_from_scores(scores), [1, 2, 0, 3])
    tie = np.array([0.0, 1.0, 2.0, 0.0])
    np.testing.assert_array_equal(order_from_scores(scores, tie_break=tie), [2, 1, 0, 3])


def test_ablation_finds_the_informative_feature():
    x, y = _blobs(600, 5, informative=1, seed=8, noise=0.05)
    x = x[:, ::-1].copy()  # the informative feature is now the last one
    drop, loss_up, base = ablation_scores(x, y)
    assert base > 0.6
    assert int(np.argmax(drop)) == 4
    assert int(np.argmax(loss_up)) == 4


def test_variance_order_and_default():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300, 4)) * np.array([1.0, 4.0, 2.0, 0.5])
    y = rng.integers(0, 2, size=300)
    assert np.argmax(variance_scores(x)) == 1
    no_s = compute_importance(x, y, None)
    assert no_s.default == "variance" and set(no_s.orders) == {"variance", "ablation"}
    np.testing.assert_array_equal(no_s.order(), [1, 2, 0, 3])
    with_s = compute_importance(x, y, np.array([0.1, 0.2, 0.9, 0.3]))
    assert with_s.default == "S"
    np.testing.assert_array_equal(with_s.order(), [2, 3, 1, 0])
    np.testing.assert_array_equal(with_s.rank()[with_s.order()], np.arange(4))


def test_ablation_is_not_measured_above_its_feature_cap(monkeypatch):
    from tricl.analysis import importance

    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6)) * np.arange(1, 7)
    y = rng.integers(0, 3, size=200)
    ticks = []
    monkeypatch.setattr(importance, "ABLATION_MAX_K", 5)  # 6 features: over the cap
    capped = compute_importance(x, y, None, tick=lambda: ticks.append(1))
    assert "ablation" not in capped.orders and np.isnan(capped.ablation_loss_increase).all()
    assert capped.default == "variance" and capped.order()[0] == 5 and len(ticks) == 6
    monkeypatch.setattr(importance, "ABLATION_MAX_K", 6)  # at the cap: measured
    assert "ablation" in compute_importance(x, y, None).orders
