"""Interventions: what a feature *does* to the run's linear probe and retrieval, against chance.

Correlation says what excites a feature; an intervention says what the representation loses
without it. For every feature ``i`` this stage edits the evaluation features z and measures the
run's full linear probe (fitted once, on the unedited train features, as the downstream stage
fits it: L2-normalised rows, standardised columns) and the retrieval mAP:

- **ablate**: ``z_i`` set to its train mean;
- **steer + / -**: ``z_i`` moved by ``+-STEER_SD`` train standard deviations.

The **control** is the same intervention, of the same size, along random directions: for a
random unit direction ``d`` with coordinate ``t = z . d``, ablation moves every row by
``-(t - mean t) * c`` along ``d`` and steering by ``+-STEER_SD * sd_i`` along ``d``, where
``c = sd_i / sd(t)`` makes the moves' spread equal to feature ``i``'s. So the control asks: does
removing *this* much variance from a random direction hurt as much? :data:`DRAWS` directions
(seeded, the same for every feature) give a mean and a spread.

Every edit is a rank-one change of z, so the probe's logits and the rows' norms update in closed
form (``O(N C)`` per intervention, whatever k is); retrieval uses :data:`QUERIES` queries of the
evaluation split against :data:`DATABASE` train images and covers the first
:data:`RETRIEVAL_FEATURES` features of the default importance order (NaN for the rest).

The probe's parameters are stored too, so steering one image (the Probe page's slider, in the
model worker) applies exactly this probe. Without labels nothing here is measurable: the artifact
holds NaN and says so. The artifact is ``interventions.npz`` in each basis's split folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tricl.analysis import downstream as ds
from tricl.analysis.features import Features
from tricl.analysis.image_stages import SplitJob, register_split_stage
from tricl.analysis.importance import Importance
from tricl.analysis.stages import Output, Stage, need_arrays

KINDS = ("ablate", "steer +", "steer -")
STEER_SD = 2.0  # steering moves a feature by this many train standard deviations
DRAWS = 8  # random control directions
SEED = 0
QUERIES = 200  # retrieval queries (evaluation split) ...
DATABASE = 1000  # ... against this many train images
RETRIEVAL_FEATURES = 64  # retrieval measured for this many features of the default order


@dataclass(frozen=True, eq=False)
class Interventions:
    """Each feature's interventions (k features, 3 kinds as :data:`KINDS`, R control draws,
    C classes; C = 0 and NaN scores without labels).

    Attributes:
        base_acc: the probe's accuracy on the unedited evaluation features.
        base_class_acc: its accuracy on each class. Shape: (C,).
        base_map: retrieval mAP unedited (the subset's queries and database).
        acc: accuracy after each intervention. Shape: (k, 3).
        class_acc: per-class accuracy after each. Shape: (k, 3, C).
        changed: fraction of images whose predicted class changed. Shape: (k, 3).
        flow: the most frequent change of prediction, ``(from, to, images)`` (-1 when none).
            Shape: (k, 3, 3).
        control_acc: accuracy after the same intervention along each random direction.
            Shape: (k, 3, R).
        map_ablate: retrieval mAP with the feature ablated (NaN beyond the covered features).
            Shape: (k,).
        control_map: the same along the random directions. Shape: (k, R).
        mean: each feature's train mean. Shape: (k,).
        std: its train standard deviation. Shape: (k,).
        probe_mu: the probe's column means of the L2-normalised train features. Shape: (k,).
        probe_sd: their standard deviations. Shape: (k,).
        probe_coef: the probe's weights on the standardised columns, one row per class.
            Shape: (C, k).
        probe_intercept: its biases. Shape: (C,).
    """

    base_acc: float
    base_class_acc: np.ndarray
    base_map: float
    acc: np.ndarray
    class_acc: np.ndarray
    changed: np.ndarray
    flow: np.ndarray
    control_acc: np.ndarray
    map_ablate: np.ndarray
    control_map: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    probe_mu: np.ndarray
    probe_sd: np.ndarray
    probe_coef: np.ndarray
    probe_intercept: np.ndarray

    @property
    def k(self) -> int:
        return int(self.acc.shape[0])

    @property
    def measured(self) -> bool:
        """Whether there were labels to measure with (else every score is NaN)."""
        return bool(np.isfinite(self.base_acc))


@dataclass(frozen=True)
class Probe:
    """A linear probe as the downstream stage fits it, in closed form:
    ``logits = ((z / |z|) - mu) / sd @ coef.T + intercept``.

    Shapes: mu, sd (k,); coef (C, k); intercept (C,).
    """

    mu: np.ndarray
    sd: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        """The weights on the L2-normalised (unstandardised) features. Shape: (C, k)."""
        return self.coef / self.sd[None, :]

    def logits(self, z: np.ndarray) -> np.ndarray:
        """Class scores of raw features. z: (N, k) -> (N, C)."""
        unit = ds.l2_normalise(z)
        return ((unit - self.mu) / self.sd) @ self.coef.T + self.intercept

    def probabilities(self, z: np.ndarray) -> np.ndarray:
        """Softmax of :meth:`logits`. z: (N, k) -> (N, C)."""
        lg = self.logits(z)
        lg = lg - lg.max(axis=1, keepdims=True)
        e = np.exp(lg)
        return e / e.sum(axis=1, keepdims=True)


def fit_probe(train_z: np.ndarray, train_y: np.ndarray, n_classes: int) -> Probe:
    """The full linear probe of the downstream stage, with its standardisation made explicit
    (the probe is fitted on already standardised columns, so its own scaler is the identity)."""
    unit = ds.l2_normalise(train_z)
    mu = unit.mean(axis=0)
    sd = unit.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    x = (unit - mu) / sd
    res = ds.linear_probe(x, train_y, x[:1], train_y[:1])
    coef = np.zeros((n_classes, x.shape[1]))
    intercept = np.full(n_classes, -1e9)  # a class never seen in training is never predicted
    classes = np.asarray(res.classes)
    if len(classes) == 2 and res.coef.shape[0] == 1:  # binary: one row scores the second class
        coef[classes[1]], intercept[classes[1]] = res.coef[0], res.intercept[0]
        intercept[classes[0]] = 0.0
    else:
        coef[classes], intercept[classes] = res.coef, res.intercept
    return Probe(mu.astype(np.float64), sd.astype(np.float64), coef, intercept)


def _rank_one_logits(
    probe: Probe, base: np.ndarray, sq: np.ndarray, proj: np.ndarray, w_dir: np.ndarray, delta
) -> np.ndarray:
    """Logits after ``z' = z + delta * d`` for a unit direction ``d`` (a rank-one edit), for one
    direction or a batch of them (leading axes ``...``).

    base: ``z @ W.T`` (N, C) with W = :attr:`Probe.weights`; sq: ``|z|^2`` (N,); proj: ``z . d``
    (..., N); w_dir: ``W @ d`` (..., C); delta: the move of each row (..., N) or a scalar.
    -> (..., N, C).
    """
    proj = np.asarray(proj)
    shape = np.broadcast_shapes(proj.shape, sq.shape)
    delta = np.broadcast_to(np.asarray(delta, dtype=np.float64), shape)
    norm = np.sqrt(np.maximum(sq + 2 * delta * proj + delta**2, 1e-24))  # (..., N)
    shift = probe.intercept - probe.weights @ probe.mu  # (C,)
    return (base + delta[..., None] * w_dir[..., None, :]) / norm[..., None] + shift


def _scores(pred: np.ndarray, base_pred: np.ndarray, y: np.ndarray, n_classes: int):
    """Accuracy, per-class accuracy, fraction changed and the most frequent change."""
    acc = float((pred == y).mean())
    hits = np.bincount(y, weights=(pred == y), minlength=n_classes)
    class_acc = hits / np.maximum(np.bincount(y, minlength=n_classes), 1)
    moved = pred != base_pred
    flow = np.array([-1, -1, 0])
    if moved.any():
        pairs = np.bincount(base_pred[moved] * n_classes + pred[moved])
        top = int(pairs.argmax())
        flow = np.array([top // n_classes, top % n_classes, int(pairs[top])])
    return acc, class_acc, float(moved.mean()), flow


def directions(k: int, draws: int, seed: int) -> np.ndarray:
    """Random unit directions in feature space, seeded. -> (R, k)."""
    d = np.random.default_rng(seed).standard_normal((draws, k))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _retrieval(
    zq: np.ndarray, yq: np.ndarray, zd: np.ndarray, yd: np.ndarray, edits
) -> list[float]:
    """Retrieval mAP of the L2-normalised rows after each edit ``(d, delta_q, delta_d)``."""
    out = []
    for d, dq, dd in edits:
        q = zq + np.asarray(dq)[:, None] * d[None, :]
        x = zd + np.asarray(dd)[:, None] * d[None, :]
        out.append(ds.retrieval_map(ds.l2_normalise(q), yq, ds.l2_normalise(x), yd))
    return out


def _retrieval_effects(
    z,
    labels,
    train_z,
    train_labels,
    dirs,
    t_mean,
    t_sd,
    mean,
    std,
    covered,
    *,
    queries,
    database,
    seed,
):
    """Retrieval mAP unedited, with each covered feature ablated, and along the random
    directions (half the draws: each edit costs a sort). -> (base, (k,), (k, R))."""
    n, k = z.shape
    draws = len(dirs)
    eye = np.eye(k)
    # retrieval: a fixed subset of queries and database rows
    rng = np.random.default_rng(seed)
    qi = np.sort(rng.permutation(n)[: min(queries, n)])
    di = np.sort(rng.permutation(len(train_z))[: min(database, len(train_z))])
    zq, yq, zd, yd = z[qi], labels[qi], train_z[di], train_labels[di]
    base_map = _retrieval(zq, yq, zd, yd, [(eye[0], np.zeros(len(qi)), np.zeros(len(di)))])[0]
    map_ablate = np.full(k, np.nan)
    control_map = np.full((k, draws), np.nan)
    rdraws = max(1, draws // 2)  # retrieval costs a sort per edit: half the draws
    tqs = [zq @ dirs[r] for r in range(rdraws)]  # (Q,) each
    tds = [zd @ dirs[r] for r in range(rdraws)]  # (D,) each
    for i in covered:
        edits = [(eye[i], mean[i] - zq[:, i], mean[i] - zd[:, i])]
        for r in range(rdraws):
            c = std[i] / t_sd[r]
            edits.append((dirs[r], -(tqs[r] - t_mean[r]) * c, -(tds[r] - t_mean[r]) * c))
        got = _retrieval(zq, yq, zd, yd, edits)
        map_ablate[i], control_map[i, :rdraws] = got[0], got[1:]
    return base_map, map_ablate, control_map


def _probe_effects(
    z: np.ndarray,
    labels: np.ndarray,
    probe,
    base_logits: tuple[np.ndarray, np.ndarray, np.ndarray],
    dirs: np.ndarray,
    dir_stats: tuple[np.ndarray, np.ndarray],
    feature_stats: tuple[np.ndarray, np.ndarray],
    steer_sd: float,
    tick=None,
) -> tuple[np.ndarray, ...]:
    """The probe's response to each feature's three interventions (ablate, steer +, steer -), and
    to the same-size edits along the random directions ``dirs`` (R, k).

    ``base_logits``: the unedited logits (N, C), squared norms (N,) and predictions (N,);
    ``dir_stats``: the directions' train mean and sd (R,); ``feature_stats``: the features' train
    mean and sd (k,). Returns ``acc`` (k, 3), ``class_acc`` (k, 3, C), ``changed`` (k, 3),
    ``flow`` (k, 3, 3) and ``control_acc`` (k, 3, R).
    """
    base, sq, base_pred = base_logits
    (t_mean, t_sd), (mean, std) = dir_stats, feature_stats
    w = probe.weights  # (C, k)
    n_classes, k, draws = w.shape[0], z.shape[1], len(dirs)
    proj_r = np.ascontiguousarray((z @ dirs.T).T)  # (R, N)
    w_dirs = np.stack([w @ dirs[r] for r in range(draws)])  # (R, C)
    acc = np.zeros((k, 3))
    class_acc = np.zeros((k, 3, n_classes))
    changed = np.zeros((k, 3))
    flow = np.zeros((k, 3, 3), dtype=np.int64)
    control_acc = np.zeros((k, 3, draws))
    for i in range(k):
        moves = (mean[i] - z[:, i], steer_sd * std[i], -steer_sd * std[i])
        for j, delta in enumerate(moves):
            pred = _rank_one_logits(probe, base, sq, z[:, i], w[:, i], delta).argmax(axis=1)
            acc[i, j], class_acc[i, j], changed[i, j], flow[i, j] = _scores(
                pred, base_pred, labels, n_classes
            )
        # the random directions all at once: (R, N) moves, (R, N, C) logits
        c = std[i] / t_sd  # (R,)
        rmoves = (-(proj_r - t_mean[:, None]) * c[:, None], steer_sd * std[i], -steer_sd * std[i])
        for j, delta in enumerate(rmoves):
            lg = _rank_one_logits(probe, base, sq, proj_r, w_dirs, delta)  # (R, N, C)
            control_acc[i, j] = (lg.argmax(axis=2) == labels).mean(axis=1)
        if tick is not None:
            tick()
    return acc, class_acc, changed, flow, control_acc


def interventions(
    z: np.ndarray,
    labels: np.ndarray,
    train_z: np.ndarray,
    train_labels: np.ndarray,
    n_classes: int,
    *,
    order: np.ndarray | None = None,
    steer_sd: float = STEER_SD,
    draws: int = DRAWS,
    seed: int = SEED,
    queries: int = QUERIES,
    database: int = DATABASE,
    retrieval_features: int = RETRIEVAL_FEATURES,
    tick=None,
) -> Interventions:
    """Every feature's interventions (see :class:`Interventions` and the module's text).

    Args:
        z: evaluation features. Shape: (N, k).
        labels: their classes. Shape: (N,).
        train_z: train features (the probe's and the control's statistics). Shape: (M, k).
        train_labels: their classes. Shape: (M,).
        n_classes: C.
        order: the default importance order (retrieval covers its first features). Shape: (k,).
        tick: called once per feature (progress).
    """
    z = np.asarray(z, dtype=np.float64)
    train_z = np.asarray(train_z, dtype=np.float64)
    n, k = z.shape
    mean, std = train_z.mean(axis=0), train_z.std(axis=0)
    labels = np.asarray(labels, dtype=np.int64)
    train_labels = np.asarray(train_labels, dtype=np.int64)
    if n_classes < 2 or np.unique(train_labels).size < 2:
        return _unmeasured(k, draws, mean, std)
    probe = fit_probe(train_z, train_labels, n_classes)
    w = probe.weights  # (C, k)
    base, sq = z @ w.T, (z**2).sum(axis=1)  # (N, C), (N,)
    base_pred = _rank_one_logits(probe, base, sq, np.zeros(n), np.zeros(n_classes), 0.0)
    base_pred = base_pred.argmax(axis=1)
    base_acc, base_class_acc, _, _ = _scores(base_pred, base_pred, labels, n_classes)
    dirs = directions(k, draws, seed)  # (R, k)
    t_train = train_z @ dirs.T  # (M, R)
    t_mean, t_sd = t_train.mean(axis=0), np.maximum(t_train.std(axis=0), 1e-12)  # (R,)
    acc, class_acc, changed, flow, control_acc = _probe_effects(
        z, labels, probe, (base, sq, base_pred), dirs, (t_mean, t_sd), (mean, std), steer_sd, tick
    )
    covered_order = (np.arange(k) if order is None else np.asarray(order))[:retrieval_features]
    base_map, map_ablate, control_map = _retrieval_effects(
        z, labels, train_z, train_labels, dirs, t_mean, t_sd, mean, std, covered_order,
        queries=queries, database=database, seed=seed,
    )  # fmt: skip
    f32 = np.float32
    return Interventions(
        base_acc=base_acc,
        base_class_acc=base_class_acc.astype(f32),
        base_map=float(base_map),
        acc=acc.astype(f32),
        class_acc=class_acc.astype(f32),
        changed=changed.astype(f32),
        flow=flow.astype(np.int32),
        control_acc=control_acc.astype(f32),
        map_ablate=map_ablate.astype(f32),
        control_map=control_map.astype(f32),
        mean=mean.astype(f32),
        std=std.astype(f32),
        probe_mu=probe.mu.astype(f32),
        probe_sd=probe.sd.astype(f32),
        probe_coef=probe.coef.astype(f32),
        probe_intercept=probe.intercept.astype(f32),
    )


def _unmeasured(k: int, draws: int, mean: np.ndarray, std: np.ndarray) -> Interventions:
    nan = np.float32(np.nan)
    return Interventions(
        base_acc=float("nan"),
        base_class_acc=np.zeros(0, np.float32),
        base_map=float("nan"),
        acc=np.full((k, 3), nan),
        class_acc=np.zeros((k, 3, 0), np.float32),
        changed=np.full((k, 3), nan),
        flow=np.full((k, 3, 3), -1, np.int32),
        control_acc=np.full((k, 3, draws), nan),
        map_ablate=np.full(k, nan),
        control_map=np.full((k, draws), nan),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        probe_mu=np.zeros(k, np.float32),
        probe_sd=np.ones(k, np.float32),
        probe_coef=np.zeros((0, k), np.float32),
        probe_intercept=np.zeros(0, np.float32),
    )


def probe_of(res: Interventions) -> Probe:
    """The stored probe (to steer one image as the stage steered the split)."""
    return Probe(
        res.probe_mu.astype(np.float64),
        res.probe_sd.astype(np.float64),
        res.probe_coef.astype(np.float64),
        res.probe_intercept.astype(np.float64),
    )


def steer(z: np.ndarray, feature: int, amounts_sd, res: Interventions) -> np.ndarray:
    """Class probabilities of one image's features with ``feature`` moved by each amount (in
    train standard deviations). z: (k,) -> (len(amounts), C)."""
    amounts = np.atleast_1d(np.asarray(amounts_sd, dtype=np.float64))
    rows = np.repeat(np.asarray(z, dtype=np.float64)[None, :], len(amounts), axis=0)
    rows[:, feature] += amounts * float(res.std[feature])
    return probe_of(res).probabilities(rows)


def _params(job: SplitJob) -> dict[str, Any]:
    return {
        "steer_sd": STEER_SD,
        "draws": DRAWS,
        "seed": SEED,
        "queries": QUERIES,
        "database": DATABASE,
        "retrieval_features": RETRIEVAL_FEATURES,
        "probe": {"c": ds.PROBE_C, "max_iter": ds.PROBE_MAX_ITER},
    }


def _compute(job: SplitJob, inputs: dict[str, Any]) -> Output:
    f: Features = inputs["features"]
    imp: Importance = inputs["importance"]
    job.progress.add(f.k + 1)
    res = interventions(
        f.z,
        f.labels,
        f.train_z,
        f.train_labels,
        f.n_classes,
        order=imp.orders[imp.default],
        tick=job.progress.tick,
    )
    job.progress.tick()
    arrays = {n: v for n, v in vars(res).items() if isinstance(v, np.ndarray)}
    scores = (("base_acc", res.base_acc), ("base_map", res.base_map))
    meta = {n: (v if np.isfinite(v) else None) for n, v in scores}  # JSON has no NaN
    return Output(arrays, meta)


_NDIM = {
    "base_class_acc": 1,
    "acc": 2,
    "class_acc": 3,
    "changed": 2,
    "flow": 3,
    "control_acc": 3,
    "map_ablate": 1,
    "control_map": 2,
    "mean": 1,
    "std": 1,
    "probe_mu": 1,
    "probe_sd": 1,
    "probe_coef": 2,
    "probe_intercept": 1,
}


def _load(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: SplitJob) -> Interventions:
    need_arrays(arrays, _NDIM)
    k = arrays["acc"].shape[0]
    if arrays["acc"].shape != (k, len(KINDS)) or arrays["control_acc"].shape[:2] != (k, 3):
        raise ValueError("the intervention tables disagree in shape")
    base_acc, base_map = meta["base_acc"], meta["base_map"]
    return Interventions(
        base_acc=float("nan") if base_acc is None else float(base_acc),
        base_map=float("nan") if base_map is None else float(base_map),
        **{n: arrays[n] for n in _NDIM},
    )


register_split_stage(
    Stage(
        "interventions",
        "interventions.npz",
        _compute,
        _load,
        needs=("features", "importance"),
        params=_params,
    )
)
