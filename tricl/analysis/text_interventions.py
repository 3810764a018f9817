"""Interventions read through an image-text run's text side: zero-shot accuracy and the captions
an image retrieves, against the same random-direction control as the probe's.

In an image-text run (clip, triclip, an open_clip import on captions) an image is classified and
matched to captions by comparing its embedding z with text embeddings in one shared space. So
ablating or steering image feature ``i`` (as :mod:`tricl.analysis.split_stages.interventions`
does: set to its train mean, moved by ``+-STEER_SD`` train sd; the control moves random
directions by the same amount, with the same seeded directions) edits z *before* the similarity
with the unchanged text embeddings: the class prompts' (the ``zero_shot`` stage's ``class_z``:
the text tower is not run again) and the evaluation captions' (``text_features``).

Every edit is rank-one, ``z' = z + delta v``, so with ``w`` the diagonal of S on image anchors
(ones for clip) and T the L2-normalised texts:

- zero-shot scores ``((z w) T^T + delta (v w) T^T) / |z'|`` (class prompts: all images, all
  features);
- caption scores of one image ``(z w) T^T + delta (v w) T^T`` (an image's own norm does not
  change its ranking of captions): recall@1/5 of :data:`QUERIES` evaluation images against the
  distinct evaluation captions (right: the image's own caption text; ties in key order, as
  :func:`tricl.analysis.text_measures.recall_at`), and the share of images whose top caption
  changes. Captions are measured for the first :data:`RETRIEVAL_FEATURES` features of the
  basis's order, against half the control draws (NaN elsewhere).

In a rotated basis (spectral: ``u = (z - m) R``) moving ``u_i`` by ``delta`` and no other
coordinate moves z by ``delta pinv(R)[i]``; a random unit direction ``d`` of u moves z along
``d pinv(R)``. The artifact (``text/interventions.npz``) holds every basis whose rotation is at
hand when the stage runs: the trained axes always, the spectral basis when the run's spectral
basis is cached (its fingerprint is a parameter, so the stage reruns once it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tricl.analysis.spectral import load_spectral_basis
from tricl.analysis.split_stages.interventions import (
    DRAWS,
    KINDS,
    QUERIES,
    RETRIEVAL_FEATURES,
    SEED,
    STEER_SD,
    directions,
)
from tricl.analysis.stages import Output, Stage, need_arrays
from tricl.analysis.text_measures import TextFeatures, ZeroShot, anchor_weights, normalise
from tricl.bases import Rotation

STAGE_NAME = "interventions"  # in the text family's registry; its value: basis -> TextEffects
BASES = ("trained", "spectral")


@dataclass(frozen=True, eq=False)
class TextEffects:
    """One basis's effects (k features, 3 kinds as :data:`KINDS`, R control draws, C classes;
    C = 0 and NaN zero-shot scores without labels).

    Attributes:
        base: zero-shot accuracy, caption recall@1 and @5 unedited. Shape: (3,).
        base_zs_class_acc: zero-shot accuracy of each class unedited. Shape: (C,).
        zs_acc: zero-shot accuracy after each intervention. Shape: (k, 3).
        zs_class_acc: per class. Shape: (k, 3, C).
        zs_changed: share of images whose zero-shot class changed. Shape: (k, 3).
        zs_control: zero-shot accuracy after the same move along each random direction.
            Shape: (k, 3, R).
        r1: caption recall@1 after each intervention (NaN beyond the covered features).
            Shape: (k, 3).
        r5: caption recall@5. Shape: (k, 3).
        top_changed: share of images whose top caption changed. Shape: (k, 3).
        r1_control: recall@1 along the random directions (NaN for the draws not run).
            Shape: (k, 3, R).
        top_changed_control: top caption changes along them. Shape: (k, 3, R).
        std: each feature's train sd in this basis (the slider's unit). Shape: (k,).
        direction: the move of z (trained axes) for a unit move of each feature. Shape: (k, d).
    """

    base: np.ndarray
    base_zs_class_acc: np.ndarray
    zs_acc: np.ndarray
    zs_class_acc: np.ndarray
    zs_changed: np.ndarray
    zs_control: np.ndarray
    r1: np.ndarray
    r5: np.ndarray
    top_changed: np.ndarray
    r1_control: np.ndarray
    top_changed_control: np.ndarray
    std: np.ndarray
    direction: np.ndarray

    @property
    def k(self) -> int:
        return int(self.zs_acc.shape[0])

    @property
    def has_zero_shot(self) -> bool:
        """Whether there were class labels (and prompts) to classify with."""
        return bool(np.isfinite(self.base[0]))


_NDIM = {
    "base": 1,
    "base_zs_class_acc": 1,
    "zs_acc": 2,
    "zs_class_acc": 3,
    "zs_changed": 2,
    "zs_control": 3,
    "r1": 2,
    "r5": 2,
    "top_changed": 2,
    "r1_control": 3,
    "top_changed_control": 3,
    "std": 1,
    "direction": 2,
}


class _Captions:
    """Caption retrieval of a fixed set of query images against the distinct captions, after a
    rank-one edit of the queries' z (see the module's text)."""

    def __init__(self, zq: np.ndarray, keys: np.ndarray, own: np.ndarray, w: np.ndarray):
        self.keys_w = normalise(keys)  # (U, d)
        self.w = w  # (d,)
        self.base = (zq * w) @ self.keys_w.T  # (Q, U)
        self.own = own  # (Q,) index of each query's own caption among the keys
        self.before = np.arange(len(keys))[None, :] < own[:, None]  # (Q, U) earlier keys
        self.rows = np.arange(len(zq))
        self.top0 = self.base.argmax(axis=1)  # (Q,)

    def measure(self, v: np.ndarray, delta) -> tuple[float, float, float]:
        """Recall@1, recall@5 and the share of top captions changed, for ``z + delta v``."""
        g = (v * self.w) @ self.keys_w.T  # (U,)
        scores = self.base + np.asarray(delta, dtype=np.float64).reshape(-1, 1) * g  # (Q, U)
        own = scores[self.rows, self.own][:, None]  # (Q, 1)
        rank = (scores > own).sum(axis=1) + ((scores == own) & self.before).sum(axis=1)  # (Q,)
        changed = scores.argmax(axis=1) != self.top0
        return float((rank < 1).mean()), float((rank < 5).mean()), float(changed.mean())


class _ZeroShot:
    """Zero-shot classification of the evaluation images after a rank-one edit of their z (see
    the module's text); NaN scores when there are no labels or prompts."""

    def __init__(self, z: np.ndarray, labels: np.ndarray, class_z: np.ndarray, w: np.ndarray):
        self.n_classes = len(class_z)
        self.measured = self.n_classes >= 2 and bool((labels >= 0).all())
        self.z, self.labels, self.w = z, labels, w
        self.classes = normalise(class_z) if self.measured else np.zeros((0, z.shape[1]))  # (C, d)
        self.base, self.sq = (z * w) @ self.classes.T, (z**2).sum(axis=1)  # (N, C), (N,)
        self.base_pred = self.base.argmax(axis=1) if self.measured else None  # (N,)

    def scores(self, v: np.ndarray, delta) -> np.ndarray:
        """Class scores after ``z + delta v``. v: (d,); delta: (N,) or a scalar. -> (N, C)."""
        delta = np.broadcast_to(np.asarray(delta, dtype=np.float64), self.sq.shape)
        norm = np.sqrt(np.maximum(self.sq + 2 * delta * (self.z @ v) + delta**2 * (v @ v), 1e-24))
        g = (v * self.w) @ self.classes.T  # (C,)
        return (self.base + delta[:, None] * g[None, :]) / norm[:, None]

    def accuracy(self, v: np.ndarray, delta) -> float:
        return float((self.scores(v, delta).argmax(axis=1) == self.labels).mean())

    def measure(self, scores: np.ndarray) -> tuple[float, np.ndarray, float]:
        """Accuracy, per-class accuracy (C,) and share of classes changed, of ``scores``."""
        pred = scores.argmax(axis=1)
        hit = pred == self.labels
        per_class = np.bincount(self.labels, weights=hit, minlength=self.n_classes)
        per_class = per_class / np.maximum(np.bincount(self.labels, minlength=self.n_classes), 1)
        return float(hit.mean()), per_class, float((pred != self.base_pred).mean())


def _in_basis(
    z: np.ndarray, train_z: np.ndarray, rotation: Rotation | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation and train features in the basis (N, k), (M, k), and each basis feature's
    direction in the trained axes (k, d): the pseudo-inverse of the rotation."""
    if rotation is None:
        return z, train_z, np.eye(z.shape[1])
    back = np.linalg.pinv(np.asarray(rotation.rotation, dtype=np.float64))  # (k, d)
    return rotation.project(z), rotation.project(train_z), back


def _unfilled(k: int, draws: int, classes: int) -> dict[str, np.ndarray]:
    """The effects' arrays, NaN until measured (k features, 3 interventions, draws controls)."""
    out = {n: np.full((k, 3), np.nan) for n in ("zs_acc", "zs_changed", "r1", "r5", "top_changed")}
    out |= {n: np.full((k, 3, draws), np.nan) for n in _CONTROLS}
    return out | {"zs_class_acc": np.full((k, 3, classes), np.nan)}


def effects(
    z: np.ndarray,
    train_z: np.ndarray,
    labels: np.ndarray,
    class_z: np.ndarray,
    caption_ids: np.ndarray,
    caption_z: np.ndarray,
    weights: np.ndarray | None,
    *,
    rotation: Rotation | None = None,
    order: np.ndarray | None = None,
    steer_sd: float = STEER_SD,
    draws: int = DRAWS,
    seed: int = SEED,
    queries: int = QUERIES,
    retrieval_features: int = RETRIEVAL_FEATURES,
    tick=None,
) -> TextEffects:
    """Every feature's effect on zero-shot and caption retrieval (see :class:`TextEffects`).

    Args:
        z: evaluation image features, trained axes. Shape: (N, d).
        train_z: train image features (each feature's mean and sd). Shape: (M, d).
        labels: class of each image (-1 without labels). Shape: (N,).
        class_z: the zero-shot classes' prompt embeddings, none without labels. Shape: (C, d).
        caption_ids: which distinct caption is each image's own. Shape: (N,).
        caption_z: the distinct evaluation captions' features. Shape: (U, d).
        weights: S's diagonal on image anchors, None for clip. Shape: (d,).
        rotation: the basis (None: the trained axes).
        order: the basis's default order (captions cover its first features). Shape: (k,).
        tick: called once per feature (progress).
    """
    z = np.asarray(z, dtype=np.float64)
    train_z = np.asarray(train_z, dtype=np.float64)
    n, dim = z.shape
    w = np.ones(dim) if weights is None else np.asarray(weights, dtype=np.float64)
    u, tu, back = _in_basis(z, train_z, rotation)
    k = u.shape[1]
    mean, std = tu.mean(axis=0), tu.std(axis=0)
    dirs = directions(k, draws, seed)  # (R, k), the probe's control directions
    dirs_z = dirs @ back  # (R, d)
    t_eval, t_train = u @ dirs.T, tu @ dirs.T  # (N, R), (M, R)
    t_mean, t_sd = t_train.mean(axis=0), np.maximum(t_train.std(axis=0), 1e-12)
    zs = _ZeroShot(z, np.asarray(labels, dtype=np.int64), class_z, w)
    qi = np.sort(np.random.default_rng(seed).permutation(n)[: min(queries, n)])
    caps = _Captions(z[qi], caption_z, np.asarray(caption_ids)[qi], w)
    c = zs.n_classes if zs.measured else 0
    out = _unfilled(k, draws, c)
    base, base_class = [np.nan, *caps.measure(np.zeros(dim), 0.0)[:2]], np.zeros(0)
    if zs.measured:
        base[0], base_class, _ = zs.measure(zs.base)
    covered = set((np.arange(k) if order is None else np.asarray(order))[:retrieval_features])
    cdraws = max(1, draws // 2)  # captions: half the draws, as the probe's retrieval
    for i in range(k):
        moves = (mean[i] - u[:, i], steer_sd * std[i], -steer_sd * std[i])
        controls = [
            (-(t_eval[:, r] - t_mean[r]) * std[i] / t_sd[r], steer_sd * std[i], -steer_sd * std[i])
            for r in range(draws)
        ]
        for j, delta in enumerate(moves):
            if zs.measured:
                acc, per_class, changed = zs.measure(zs.scores(back[i], delta))
                out["zs_acc"][i, j], out["zs_class_acc"][i, j] = acc, per_class
                out["zs_changed"][i, j] = changed
                for r in range(draws):
                    out["zs_control"][i, j, r] = zs.accuracy(dirs_z[r], controls[r][j])
            if i in covered:
                r1, r5, top = caps.measure(back[i], _rows(delta, qi))
                out["r1"][i, j], out["r5"][i, j], out["top_changed"][i, j] = r1, r5, top
                for r in range(cdraws):
                    r1, _, top = caps.measure(dirs_z[r], _rows(controls[r][j], qi))
                    out["r1_control"][i, j, r], out["top_changed_control"][i, j, r] = r1, top
        if tick is not None:
            tick()
    f32 = np.float32
    out |= {"base_zs_class_acc": base_class, "std": std, "direction": back}
    return TextEffects(base=np.array(base, f32), **{n: a.astype(f32) for n, a in out.items()})


_CONTROLS = ("zs_control", "r1_control", "top_changed_control")


def _rows(delta, rows: np.ndarray):
    """A per-image move restricted to ``rows`` (a scalar move as it is)."""
    return delta[rows] if np.ndim(delta) else delta


def steer_captions(
    z: np.ndarray, direction: np.ndarray, amounts: np.ndarray, keys: np.ndarray, weights, top: int
) -> np.ndarray:
    """The ``top`` captions an image retrieves with its z moved by each amount along
    ``direction`` (the Probe page's slider, in the model worker).

    Shapes: z (d,), direction (d,), amounts (A,) in z units, keys (U, d) the captions' features,
    weights (d,) or None -> (A, top) key indices, best first (ties in key order).
    """
    z = np.asarray(z, dtype=np.float64)
    w = np.ones(len(z)) if weights is None else np.asarray(weights, dtype=np.float64)
    rows = z[None, :] + np.asarray(amounts, dtype=np.float64)[:, None] * direction[None, :]
    scores = (rows * w) @ normalise(keys).T  # (A, U)
    return np.argsort(-scores, axis=1, kind="stable")[:, :top]


# --------------------------------------------------------------------------- the stage


def _distinct(captions: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Index of each distinct caption's first occurrence (U,) and each caption's id (N,)."""
    _, first, ids = np.unique(np.array(captions, dtype=str), return_index=True, return_inverse=True)
    return first, ids


def _rotations(job: Any, f: TextFeatures) -> dict[str, tuple[Rotation | None, np.ndarray]]:
    """The bases measured and their default orders: trained always, spectral when cached."""
    out: dict[str, tuple[Rotation | None, np.ndarray]] = {"trained": (None, f.order)}
    basis = load_spectral_basis(job.run)
    if basis is not None:
        out["spectral"] = (basis, np.arange(basis.rank))
    return out


def _compute(job: Any, inputs: dict[str, Any]) -> Output:
    f: TextFeatures = inputs["text_features"]
    zs: ZeroShot = inputs["zero_shot"]
    w = anchor_weights(f.importance, job.run.config.s_placement, "image")
    first, ids = _distinct(f.captions)
    bases = _rotations(job, f)
    job.progress.add(sum(len(order) for _, order in bases.values()))
    arrays: dict[str, np.ndarray] = {}
    for name, (rotation, order) in bases.items():
        res = effects(
            f.image_z,
            f.train_image_z,
            f.labels,
            zs.class_z,
            ids,
            f.text_z[first],
            w,
            rotation=rotation,
            order=order,
            tick=job.progress.tick,
        )
        arrays |= {f"{name}__{n}": v for n, v in vars(res).items()}
    return Output(arrays, {"bases": list(bases)})


def _params(job: Any) -> dict[str, Any]:
    basis = load_spectral_basis(job.run)
    return {
        "steer_sd": STEER_SD,
        "draws": DRAWS,
        "seed": SEED,
        "queries": QUERIES,
        "retrieval_features": RETRIEVAL_FEATURES,
        "captions": "distinct evaluation captions; recall@1/5 and top caption changed",
        "spectral": None if basis is None else basis.fingerprint,
    }


def _load(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: Any) -> dict[str, TextEffects]:
    out = {}
    for name in meta["bases"]:
        if name not in BASES:
            raise ValueError(f"unknown basis {name!r} in the text interventions")
        mine = {n: arrays[f"{name}__{n}"] for n in _NDIM}
        need_arrays(mine, _NDIM)
        k = mine["zs_acc"].shape[0]
        if mine["zs_acc"].shape != (k, len(KINDS)) or mine["direction"].shape[0] != k:
            raise ValueError("the text intervention tables disagree in shape")
        out[name] = TextEffects(**mine)
    return out


STAGE = Stage(
    STAGE_NAME,
    "interventions.npz",
    _compute,
    _load,
    needs=("text_features", "zero_shot"),
    params=_params,
)
