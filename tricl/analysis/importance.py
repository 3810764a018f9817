"""Importance orders of the k features: learned S, variance, and leave-one-out ablation.

- ``S``: the diagonal of triCL's importance matrix, ``softplus(s)`` (runs whose method has S).
- ``variance``: variance of each feature of the L2-normalised z over the TRAIN split: the share of
  the cosine similarity's spread a feature carries. Label-free, like S.
- ``index``: the features' own positions, feature 0 first, for a method whose loss orders its
  outputs (NeuralEF-CLR: feature j is the j-th eigenfunction). Only runs of such a method have it.
- ``ablation``: the drop in linear-probe accuracy when one feature is removed (ties broken by the
  rise in the probe's cross-entropy). Fitted on 80% of the TRAIN split and measured on the other
  20%, so the test split that the few-feature curves use never chose the order.

The default order is the method's (``Method.order`` in :mod:`tricl.methods`): ``S`` where the
run has S, ``index`` for a method that orders its outputs, else ``variance``. All are unsupervised,
so the top-k curves of triCL, NeuralEF-CLR and SimCLR compare like with like (the ablation order
uses labels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tricl.analysis.downstream import l2_normalise, linear_probe
from tricl.methods import method_order

ABLATION_VAL_FRACTION = 0.2
ABLATION_SEED = 0
# Leave-one-out ablation fits one probe per feature; above this many features (an imported
# ResNet-50 has 2,048) it is not measured and the variance order ranks the run.
ABLATION_MAX_K = 512


@dataclass(frozen=True, eq=False)
class Importance:
    """Importance scores and orders of the k features.

    Attributes:
        default: name of the order the dashboard shows by default ("S", "variance" or "index").
        scores: order name -> score per feature, higher is more important. Shape: (k,) each.
        orders: order name -> feature indices, most important first. Shape: (k,) each.
        ablation_loss_increase: rise of the probe's validation cross-entropy when each feature is
            removed (the tie-breaker of the ablation order). Shape: (k,).
        ablation_base_acc: validation accuracy of the probe on all features.
    """

    default: str
    scores: dict[str, np.ndarray]
    orders: dict[str, np.ndarray]
    ablation_loss_increase: np.ndarray = field(repr=False)
    ablation_base_acc: float = float("nan")

    def order(self, name: str | None = None) -> np.ndarray:
        """Feature indices, most important first, of order ``name`` (default order if None)."""
        name = self.default if name is None else name
        if name not in self.orders:
            raise KeyError(f"no importance order {name!r}; this run has {sorted(self.orders)}")
        return self.orders[name]

    def rank(self, name: str | None = None) -> np.ndarray:
        """Rank of every feature in an order (0 = most important). Shape: (k,)."""
        order = self.order(name)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return rank


def order_from_scores(scores: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Feature indices sorted by descending score (then descending ``tie_break``, then index).

    Shapes: (k,), (k,) -> (k,).
    """
    keys = [np.arange(len(scores))]
    if tie_break is not None:
        keys.append(-np.asarray(tie_break))
    keys.append(-np.asarray(scores))
    return np.lexsort(keys)  # the last key is the primary one


def index_scores(k: int) -> np.ndarray:
    """Scores that rank the features by position, feature 0 first: ``k - i``. Shape: (k,)."""
    return np.arange(k, 0, -1).astype(np.float32)


def _s_scores(train_z: np.ndarray, s: np.ndarray | None) -> np.ndarray | None:
    return None if s is None else np.asarray(s, dtype=np.float32)


def default_scores(method: str, train_z: np.ndarray, s: np.ndarray | None) -> np.ndarray:
    """Scores of the method's default order (see :func:`tricl.methods.method_order`).

    Args:
        method: the run's method.
        train_z: its raw features on the train split. Shape: (N, k).
        s: the diagonal of S, or None for a run without S. Shape: (k,).

    Returns:
        Higher is more important (variance where the order needs an S the run lacks).
        Shape: (k,).
    """
    scores = ORDER_SCORES[method_order(method, s is not None)](train_z, s)
    return variance_scores(train_z) if scores is None else scores


def variance_scores(train_z: np.ndarray) -> np.ndarray:
    """Variance of every feature of the L2-normalised z. Shape: (N, k) -> (k,)."""
    return l2_normalise(train_z).var(axis=0).astype(np.float32)


# The label-free orders by name (tricl.methods.FEATURE_ORDERS): ``scores(train_z, s)`` -> (k,),
# higher is more important, or None where the run cannot be ranked so (no S).
ORDER_SCORES: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray | None]] = {
    "S": _s_scores,
    "variance": lambda train_z, s: variance_scores(train_z),
    "index": lambda train_z, s: index_scores(train_z.shape[1]),
}


def ablation_scores(
    train_z: np.ndarray,
    train_y: np.ndarray,
    *,
    val_fraction: float = ABLATION_VAL_FRACTION,
    seed: int = ABLATION_SEED,
    tick: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Leave-one-out ablation: how much the linear probe loses without each feature.

    Args:
        train_z: raw features of the train split. Shape: (N, k).
        train_y: their labels. Shape: (N,).
        val_fraction: share of rows held out to measure the probe.
        seed: the fixed split.
        tick: called after every probe (progress bars).

    Returns:
        ``(acc_drop, loss_increase, base_acc)``: accuracy drop and cross-entropy rise per feature,
        shapes (k,) and (k,), and the accuracy with all features.
    """
    x = l2_normalise(train_z)
    y = np.asarray(train_y)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, round(val_fraction * len(y)))
    val, fit = perm[:n_val], perm[n_val:]
    x_fit, y_fit, x_val, y_val = x[fit], y[fit], x[val], y[val]
    base = linear_probe(x_fit, y_fit, x_val, y_val)
    k = x.shape[1]
    acc_drop = np.zeros(k, dtype=np.float32)
    loss_inc = np.zeros(k, dtype=np.float32)
    for i in range(k):
        keep = np.delete(np.arange(k), i)  # (k - 1,)
        # starting from the full probe minus feature i halves the L-BFGS iterations
        init = (base.coef[:, keep], base.intercept)
        res = linear_probe(x_fit[:, keep], y_fit, x_val[:, keep], y_val, init=init)
        acc_drop[i] = base.accuracy - res.accuracy
        loss_inc[i] = res.loss - base.loss
        if tick is not None:
            tick()
    return acc_drop, loss_inc, base.accuracy


def compute_importance(
    train_z: np.ndarray,
    train_y: np.ndarray,
    s: np.ndarray | None,
    *,
    method: str = "",
    tick: Callable[[], None] | None = None,
) -> Importance:
    """All importance orders of a run.

    Args:
        train_z: raw features of the train split. Shape: (N, k).
        train_y: their labels, -1 without labels. Shape: (N,).
        s: the diagonal of S, or None for a run without S. Shape: (k,).
        method: the run's method; its ``order`` is the default (empty or unknown: S if the run
            has S, else variance). A method ordered by ``index`` also gets that order.
        tick: called after every ablation probe.

    Returns:
        The :class:`Importance`; without two classes of labels, or with more than
        :data:`ABLATION_MAX_K` features, it has no ``ablation`` order (its loss increases and base
        accuracy NaN).
    """
    scores: dict[str, np.ndarray] = {}
    default = method_order(method, s is not None)
    # S whenever the run has it, the method's own order, and variance for every run
    for name in dict.fromkeys(("S", default, "variance")):
        values = ORDER_SCORES[name](train_z, s)
        if values is not None:
            scores[name] = values
    if default not in scores:  # a run saved without S cannot be ranked by it
        default = "variance"
    orders = {name: order_from_scores(values) for name, values in scores.items()}
    labelled = np.unique(np.asarray(train_y)[np.asarray(train_y) >= 0]).size >= 2
    if not labelled or train_z.shape[1] > ABLATION_MAX_K:
        # no labels (or one class): no probe to ablate; above ABLATION_MAX_K features one probe
        # per feature costs hours (2,048 probes of an imported ResNet-50): no ablation order
        # ("not measured"), the variance order ranks such a run
        loss_inc = np.full(train_z.shape[1], np.nan, dtype=np.float32)
        for _ in range(train_z.shape[1]) if tick is not None else ():
            tick()  # the progress bar counted one probe per feature
        return Importance(default, scores, orders, ablation_loss_increase=loss_inc)
    acc_drop, loss_inc, base_acc = ablation_scores(train_z, train_y, tick=tick)
    scores["ablation"] = acc_drop
    orders["ablation"] = order_from_scores(acc_drop, tie_break=loss_inc)
    return Importance(
        default=default,
        scores=scores,
        orders=orders,
        ablation_loss_increase=loss_inc,
        ablation_base_acc=base_acc,
    )
