"""Downstream use of the features: linear probe, k-NN, retrieval mAP, and few-feature curves.

The probe and retrieval database come from the TRAIN split, the queries/evaluation from the
evaluation split. With fewer than two classes (a caption CSV without labels) nothing class-based
can be measured: probe, k-NN and retrieval mAP are NaN ("not measured"), not a crash.
Features are first L2-normalised as whole vectors (the geometry the contrastive
loss sees); a subset of features is then taken from the normalised vector, so at k = all the
retrieval ranking is exactly the cosine-similarity ranking.

Few-feature curves reproduce the paper's Fig. 3: for k = 1, 2, 4, ..., all, the linear-probe
accuracy and the retrieval mAP using the top-k, bottom-k and random-k features of an importance
order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Inverse L2 strength of the probe on standardised features; mild, as in linear evaluation.
PROBE_C = 1.0
PROBE_MAX_ITER = 200
KNN_K = 20
KNN_TEMPERATURE = 0.07  # weighted vote exp(sim / T), as the InstDisc / DINO k-NN monitor
RANDOM_SEEDS = (0, 1, 2)
# Above these sizes retrieval uses a fixed random subset (queries x database sort dominates time).
RETRIEVAL_MAX_QUERIES = 1000
RETRIEVAL_MAX_DATABASE = 10_000
# Above this many training rows a probe is fitted on a fixed random subset of them (seed
# PROBE_SUBSAMPLE_SEED): L-BFGS costs grow with the rows and the analysis fits ~200 probes
# (curves, ablation, interventions); the subset moves the accuracy by a fraction of a point. Runs
# of up to this many images (every shipped run) are fitted on all their rows, as before.
PROBE_MAX_TRAIN = 10_000
PROBE_SUBSAMPLE_SEED = 0
# k-NN accuracy is measured on at most this many evaluation images (a fixed random subset, same
# seed) against every train image: all queries against all 50,000 train images would be N^2.
KNN_MAX_QUERIES = 10_000


def l2_normalise(z: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero). Shape: (N, k) -> (N, k)."""
    z = np.asarray(z, dtype=np.float32)
    norm = np.linalg.norm(z, axis=1, keepdims=True)  # (N, 1)
    return z / np.maximum(norm, 1e-12)


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """A fitted linear probe and how it did on held-out data.

    Attributes:
        accuracy: top-1 accuracy on the evaluation rows.
        loss: mean cross-entropy on the evaluation rows (nats).
        predictions: predicted class of each evaluation row. Shape: (N_eval,).
        coef: weights on the standardised features. Shape: (C_train, d), C_train = classes seen
            in training (one row for two classes, as scikit-learn stores binary problems).
        intercept: biases. Shape: (C_train,).
        classes: the class of each of those rows (the classes seen in training; binary: both, the
            one row scoring the second). Shape: (C_seen,).
    """

    accuracy: float
    loss: float
    predictions: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray | None = None


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    *,
    c: float = PROBE_C,
    max_iter: int = PROBE_MAX_ITER,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    max_train: int = PROBE_MAX_TRAIN,
) -> ProbeResult:
    """Multinomial logistic regression on standardised features (deterministic L-BFGS).

    With more than ``max_train`` training rows the scaler and the probe are fitted on a fixed
    random subset of that many (:func:`probe_rows`); the evaluation uses every row.

    Args:
        x_train: training features. Shape: (N_train, d).
        y_train: training labels. Shape: (N_train,).
        x_eval: evaluation features. Shape: (N_eval, d).
        y_eval: evaluation labels. Shape: (N_eval,).
        c: inverse L2 regularisation strength (scikit-learn's ``C``).
        max_iter: L-BFGS iterations.
        init: ``(coef, intercept)`` to start from (e.g. a probe on a superset of the features
            with the dropped columns removed), shapes as :class:`ProbeResult`; None starts at 0.
        max_train: the most training rows fitted on.

    Returns:
        The :class:`ProbeResult` on the evaluation rows; accuracy and loss NaN (and a zero probe)
        when ``y_train`` has fewer than two classes.
    """
    if _one_class(y_train):
        zero = np.zeros((1, x_train.shape[1]))
        return ProbeResult(np.nan, np.nan, np.full(len(y_eval), -1), zero, np.zeros(1))
    # imported here so that reading artifacts (the dashboard) never loads scikit-learn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    rows = probe_rows(len(x_train), max_train)
    if len(rows) < len(x_train):
        x_train, y_train = x_train[rows], y_train[rows]
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(C=c, max_iter=max_iter, warm_start=init is not None)
    if init is not None:
        model.coef_, model.intercept_ = init[0].copy(), init[1].copy()
    # a small problem: extra BLAS / OpenMP threads do not help it, and on a busy machine their
    # spin-waiting made each probe ~100x slower (0.13 s -> 10-20 s measured on 2 shared cores)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # a probe that stops at max_iter is still a valid (slightly under-fitted) probe
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(x_train), y_train)
    proba = model.predict_proba(scaler.transform(x_eval))  # (N_eval, classes seen in training)
    n_classes = int(max(y_train.max(), y_eval.max())) + 1
    full = np.zeros((len(y_eval), n_classes))
    full[:, model.classes_] = proba  # (N_eval, C); a class never seen in training gets p = 0
    p_true = full[np.arange(len(y_eval)), y_eval]  # (N_eval,)
    pred = full.argmax(axis=1)
    return ProbeResult(
        accuracy=float((pred == y_eval).mean()),
        loss=float(-np.log(np.maximum(p_true, 1e-12)).mean()),
        predictions=pred,
        coef=model.coef_,
        intercept=model.intercept_,
        classes=model.classes_,
    )


def probe_rows(n: int, most: int = PROBE_MAX_TRAIN) -> np.ndarray:
    """The training rows a probe is fitted on: all n in order, or a fixed random subset of
    ``most`` (ascending) when there are more. Shape: (min(n, most),)."""
    if n <= most:
        return np.arange(n)
    rng = np.random.default_rng(PROBE_SUBSAMPLE_SEED)
    return np.sort(rng.choice(n, size=most, replace=False))


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    *,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    exclude: np.ndarray | None = None,
    chunk: int = 1024,
    max_queries: int = KNN_MAX_QUERIES,
) -> float:
    """Weighted k-NN classification accuracy with cosine similarity.

    Each neighbour votes for its class with weight ``exp(sim / temperature)`` (Wu et al., 2018).

    Args:
        train_x: database features. Shape: (N_train, d).
        train_y: database labels. Shape: (N_train,).
        eval_x: query features. Shape: (N_eval, d).
        eval_y: query labels. Shape: (N_eval,).
        k: neighbours per query.
        temperature: vote temperature.
        exclude: database row each query may not use (itself, when both are the same split),
            -1 for none. Shape: (N_eval,).
        chunk: queries per block (bounds memory to chunk x N_train).
        max_queries: at most this many queries, a fixed random subset of the rows when there are
            more (:func:`probe_rows`).

    Returns:
        Top-1 accuracy; NaN when ``train_y`` has fewer than two classes.
    """
    if _one_class(train_y):
        return float("nan")
    rows = probe_rows(len(eval_x), max_queries)
    if len(rows) < len(eval_x):  # a fixed subset of the queries
        eval_x, eval_y = eval_x[rows], eval_y[rows]
        exclude = None if exclude is None else exclude[rows]
    db = l2_normalise(train_x)
    queries = l2_normalise(eval_x)
    n_classes = int(max(train_y.max(), eval_y.max())) + 1
    k = min(k, len(db))
    correct = 0
    for start in range(0, len(queries), chunk):
        sim = queries[start : start + chunk] @ db.T  # (B, N_train)
        _mask(sim, None if exclude is None else exclude[start : start + chunk])
        nn_idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (B, k)
        nn_sim = np.take_along_axis(sim, nn_idx, axis=1)  # (B, k)
        votes = np.zeros((len(sim), n_classes))
        np.add.at(
            votes,
            (np.repeat(np.arange(len(sim)), k), train_y[nn_idx].ravel()),
            np.exp(nn_sim / temperature).ravel(),
        )  # (B, C)
        correct += int((votes.argmax(axis=1) == eval_y[start : start + chunk]).sum())
    return correct / len(queries)


def _one_class(labels: np.ndarray) -> bool:
    """Whether the labels hold fewer than two classes (then no class-based score means anything)."""
    return np.unique(labels).size < 2


def _mask(scores: np.ndarray, exclude: np.ndarray | None) -> None:
    """Set ``scores[q, exclude[q]]`` to -inf in place where ``exclude[q] >= 0``. Shape: (B, D)."""
    if exclude is None:
        return
    rows = np.flatnonzero(exclude >= 0)
    scores[rows, exclude[rows]] = -np.inf


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Average precision of every query's ranking, tied scores handled as scikit-learn does.

    For each relevant item, precision is counted at the lowest rank its score reaches, i.e.
    ``#relevant with score >= s / #items with score >= s``: a tie group is retrieved at one
    threshold, which makes the result equal to ``sklearn.metrics.average_precision_score``. Only
    sorted values and binary searches are needed (no argsort), which keeps it fast.

    Args:
        scores: similarity of every database item to every query, higher first; -inf marks an
            item that is never retrieved. Shape: (Q, D).
        relevant: whether each database item is relevant to each query. Shape: (Q, D).

    Returns:
        AP of every query; NaN for a query without relevant items. Shape: (Q,).
    """
    n_items = scores.shape[1]
    all_sorted = np.sort(scores, axis=1)  # (Q, D) ascending
    ap = np.full(len(scores), np.nan)
    for i, (row, rel) in enumerate(zip(scores, relevant)):
        rel_sorted = np.sort(row[rel])  # (R,)
        if len(rel_sorted) == 0:
            continue
        n_ge_all = n_items - np.searchsorted(all_sorted[i], rel_sorted, side="left")  # (R,)
        n_ge_rel = len(rel_sorted) - np.searchsorted(rel_sorted, rel_sorted, side="left")  # (R,)
        ap[i] = np.mean(n_ge_rel / n_ge_all)
    return ap


def retrieval_map(
    query_x: np.ndarray,
    query_y: np.ndarray,
    db_x: np.ndarray,
    db_y: np.ndarray,
    *,
    exclude: np.ndarray | None = None,
    max_block: int = 4_000_000,
) -> float:
    """Mean average precision of retrieving same-class database images for every query.

    Similarity is the negative squared Euclidean distance (for unit vectors, the cosine ranking).

    Args:
        query_x: query features. Shape: (Q, d).
        query_y: query labels. Shape: (Q,).
        db_x: database features. Shape: (D, d).
        db_y: database labels. Shape: (D,).
        exclude: database row that is the query itself (not retrieved, not relevant), -1 for
            none. Shape: (Q,).
        max_block: bound on queries x database entries processed at once (memory).

    Returns:
        mAP over the queries that have at least one relevant database item; NaN when ``db_y``
        has fewer than two classes (every item would be relevant).
    """
    if _one_class(db_y):
        return float("nan")
    query_x = np.asarray(query_x, dtype=np.float32)
    db_x = np.asarray(db_x, dtype=np.float32)
    db_sq = (db_x**2).sum(axis=1)  # (D,)
    chunk = max(1, max_block // len(db_x))
    aps = []
    for start in range(0, len(query_x), chunk):
        qx = query_x[start : start + chunk]
        # ||q - x||^2 up to the per-query constant ||q||^2, which does not change a ranking
        scores = 2 * qx @ db_x.T - db_sq[None, :]  # (B, D)
        relevant = query_y[start : start + chunk, None] == db_y[None, :]  # (B, D)
        if exclude is not None:
            ex = exclude[start : start + chunk]
            _mask(scores, ex)
            rows = np.flatnonzero(ex >= 0)
            relevant[rows, ex[rows]] = False
        aps.append(average_precision(scores, relevant))
    ap = np.concatenate(aps)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def feature_counts(k_total: int) -> list[int]:
    """The k of the few-feature curves: 1, 2, 4, ... below ``k_total``, then ``k_total``."""
    ks = []
    k = 1
    while k < k_total:
        ks.append(k)
        k *= 2
    return [*ks, k_total]


def subsample(labels: np.ndarray, n_max: int, seed: int = 0) -> np.ndarray:
    """Indices of a fixed random subset of at most ``n_max`` rows (all rows, in order, if fewer).

    Shape: (N,) -> (min(N, n_max),).
    """
    if len(labels) <= n_max:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(labels), size=n_max, replace=False))


@dataclass(frozen=True, eq=False)
class DownstreamInputs:
    """Normalised features and labels of the train (probe/database) and evaluation splits.

    Attributes:
        train: L2-normalised train features. Shape: (N_train, k).
        train_y: train labels. Shape: (N_train,).
        test: L2-normalised evaluation features. Shape: (N_eval, k).
        test_y: evaluation labels. Shape: (N_eval,).
        query_rows: evaluation rows used as retrieval queries. Shape: (Q,).
        db_rows: train rows used as the retrieval database. Shape: (D,).
        query_self: position in ``db_rows`` of each query itself when the evaluation split is the
            train split, else -1. Shape: (Q,).
        cache: results of :meth:`evaluate` by feature set (every curve ends with all features).
    """

    train: np.ndarray
    train_y: np.ndarray
    test: np.ndarray
    test_y: np.ndarray
    query_rows: np.ndarray
    db_rows: np.ndarray
    query_self: np.ndarray
    cache: dict[tuple[int, ...], tuple[float, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        train_z: np.ndarray,
        train_y: np.ndarray,
        test_z: np.ndarray,
        test_y: np.ndarray,
        *,
        same_split: bool = False,
        max_queries: int = RETRIEVAL_MAX_QUERIES,
        max_database: int = RETRIEVAL_MAX_DATABASE,
    ) -> DownstreamInputs:
        """Normalise features and pick the retrieval subsets.

        Args:
            train_z: raw train features. Shape: (N_train, k).
            train_y: train labels. Shape: (N_train,).
            test_z: raw evaluation features. Shape: (N_eval, k).
            test_y: evaluation labels. Shape: (N_eval,).
            same_split: the evaluation split is the train split (queries must not find
                themselves).
            max_queries: at most this many retrieval queries (fixed random subset).
            max_database: at most this many database images (fixed random subset).
        """
        query_rows = subsample(test_y, max_queries, seed=1)
        db_rows = subsample(train_y, max_database, seed=2)
        query_self = np.full(len(query_rows), -1)
        if same_split:
            where = {int(r): i for i, r in enumerate(db_rows)}
            query_self = np.array([where.get(int(r), -1) for r in query_rows])
        return cls(
            train=l2_normalise(train_z),
            train_y=np.asarray(train_y),
            test=l2_normalise(test_z),
            test_y=np.asarray(test_y),
            query_rows=query_rows,
            db_rows=db_rows,
            query_self=query_self,
        )

    def evaluate(self, features: np.ndarray) -> tuple[float, float]:
        """Linear-probe accuracy and retrieval mAP using only the given feature columns.

        Args:
            features: column indices to keep (any order: the result depends on the set).
                Shape: (m,).

        Returns:
            ``(linear_acc, retrieval_map)``.
        """
        features = np.sort(features)
        key = tuple(int(i) for i in features)
        if key in self.cache:
            return self.cache[key]
        tr, te = self.train[:, features], self.test[:, features]  # (N_train, m), (N_eval, m)
        acc = linear_probe(tr, self.train_y, te, self.test_y).accuracy
        mean_ap = retrieval_map(
            te[self.query_rows],
            self.test_y[self.query_rows],
            tr[self.db_rows],
            self.train_y[self.db_rows],
            exclude=self.query_self,
        )
        self.cache[key] = (acc, mean_ap)
        return acc, mean_ap


CURVE_COLUMNS = [
    "order",
    "selection",
    "k",
    "linear_acc",
    "retrieval_map",
    "linear_acc_std",
    "retrieval_map_std",
]


def few_feature_curves(
    inputs: DownstreamInputs,
    orders: dict[str, np.ndarray],
    *,
    seeds: Sequence[int] = RANDOM_SEEDS,
    tick: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """Linear-probe accuracy and retrieval mAP with the top-k, bottom-k and random-k features.

    Args:
        inputs: the prepared features (:class:`DownstreamInputs`).
        orders: importance order name -> feature indices, most important first. Shape: (k,) each.
        seeds: random-k is averaged over one random subset per seed.
        tick: called after every evaluated point (progress bars).

    Returns:
        One row per (order, selection, k) with the columns of :data:`CURVE_COLUMNS`; random-k rows
        have ``order == "none"`` and carry the std over seeds (0 for the other rows).
    """
    k_total = inputs.train.shape[1]
    rows = []
    for k in feature_counts(k_total):
        for name, order in orders.items():
            for selection, feats in (("top", order[:k]), ("bottom", order[::-1][:k])):
                acc, mean_ap = inputs.evaluate(feats)
                rows.append((name, selection, k, acc, mean_ap, 0.0, 0.0))
                if tick is not None:
                    tick()
        results = []
        for seed in seeds:
            feats = np.random.default_rng(seed).permutation(k_total)[:k]
            results.append(inputs.evaluate(feats))
            if tick is not None:
                tick()
        res = np.array(results)  # (n_seeds, 2)
        mean, std = res.mean(axis=0), res.std(axis=0)
        rows.append(("none", "random", k, mean[0], mean[1], std[0], std[1]))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def n_curve_points(k_total: int, n_orders: int, n_seeds: int = len(RANDOM_SEEDS)) -> int:
    """How many evaluations :func:`few_feature_curves` makes (for progress bars)."""
    return len(feature_counts(k_total)) * (2 * n_orders + n_seeds)
