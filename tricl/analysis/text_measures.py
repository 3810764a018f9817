"""The text side's artifacts and measures, pure NumPy: what the image-text stages compute with.

:mod:`tricl.analysis.image_text` declares the stages (and re-exports these names); the dashboard
computes similarities with :func:`similarity` and :func:`anchor_weights` without the stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tricl.analysis.store import AnalysisError

TOP_CAPTIONS = 10  # distinct captions kept per feature
TOKEN_MIN_COUNT = 5  # a word must be in at least this many evaluation captions to get a lift
TOKENS_PER_RANK = 5
RECALL_AT = (1, 5)
RETRIEVAL_CHUNK = 512  # queries per similarity block (memory: chunk x N float64)
# Words, lower-cased; hyphenated words stay whole ("left-slanted" is one factor word).
WORD_PATTERN = r"[a-z0-9]+(?:['-][a-z0-9]+)*"
# Which anchors S weights, per s_placement of tricl.losses (a test checks this against the loss).
S_WEIGHTED_ANCHORS: dict[str, tuple[str, ...]] = {
    "both": ("image", "text"),
    "first_view": ("image",),
}


# --------------------------------------------------------------------------- artifacts


@dataclass(frozen=True, eq=False)
class TextFeatures:
    """An image-text run's image and caption features on the evaluation split (and train split).

    Attributes:
        image_z: eval-split image features, raw, feature index order. Shape: (N, k).
        text_z: eval-split caption features, row i the caption of image i. Shape: (N, k).
        train_image_z: train-split image features (bases and probes). Shape: (M, k).
        train_text_z: train-split caption features. Shape: (M, k).
        labels: class index of each eval image, -1 when the dataset has no labels. Shape: (N,).
        captions: the N eval-split captions.
        class_names: class names (label i is ``class_names[i]``); ``()`` when unlabelled.
        order: feature indices, most important first: the image pages' default order
            (``feature_order`` of the trained analysis). Shape: (k,).
        importance: the diagonal of S (triclip), None (clip). Shape: (k,).
        images_hash: identifies the eval images (as ``Features.images_hash`` does).
        train_labels: class index of each train image, -1 when unlabelled. Shape: (M,).
        factors: factor name -> value of each eval caption's factor (generated captions:
            thickness, slant, size); empty for a CSV. Shape: (N,) each.
        truncated: distinct captions cut to the context length when encoded.
    """

    image_z: np.ndarray
    text_z: np.ndarray
    train_image_z: np.ndarray
    train_text_z: np.ndarray
    labels: np.ndarray
    captions: tuple[str, ...]
    class_names: tuple[str, ...]
    order: np.ndarray
    importance: np.ndarray | None
    images_hash: str
    train_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    truncated: int = 0

    @property
    def k(self) -> int:
        """Number of features."""
        return int(self.text_z.shape[1])

    @property
    def has_labels(self) -> bool:
        """Whether the images have classes (zero-shot accuracy and the class factor need them)."""
        return len(self.class_names) > 0


@dataclass(frozen=True, eq=False)
class TopCaptions:
    """The captions with the highest value of each feature, in importance order.

    Row r is feature rank r + 1, i.e. feature ``feature[r]`` = ``TextFeatures.order[r]``. A
    caption text is listed once (generated captions repeat, and equal texts have equal
    features); ``counts`` says how many eval captions share it.

    Attributes:
        feature: feature index of each row (the order). Shape: (k,).
        indices: index into ``TextFeatures.captions`` of the first caption with that text, highest
            value first. Shape: (k, n).
        values: the feature's value on it. Shape: (k, n).
        counts: eval captions with that same text. Shape: (k, n).
    """

    feature: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True, eq=False)
class ZeroShot:
    """Zero-shot and retrieval results (the ``zero_shot`` stage's value).

    Attributes:
        metrics: ``zero_shot_acc`` (absent when unlabelled), ``i2t_r1``, ``i2t_r5``, ``t2i_r1``,
            ``t2i_r5``, ``n_prompts_per_class``, ``n_classes``, ``n_distinct_captions``.
        prompts: the prompts of each class, ``prompts[c][t]``.
        class_z: the normalised mean of each class's normalised prompt features. Shape: (C, k).
    """

    metrics: dict[str, float]
    prompts: tuple[tuple[str, ...], ...]
    class_z: np.ndarray


@dataclass(frozen=True, eq=False)
class TextAnalysis:
    """Every text-side artifact of an image-text run on one split.

    Attributes:
        run_name: the run folder's name.
        split: evaluation split.
        features: the :class:`TextFeatures`.
        zero_shot: zero-shot accuracy and retrieval recall (keys in :class:`ZeroShot`).
        prompts: the zero-shot prompts of each class, ``prompts[c][t]`` (``()`` when unlabelled).
        top_captions: :class:`TopCaptions`, row r = feature rank r + 1.
        tokens: columns ``rank, feature, token, lift, count``: per feature rank (1-based) the
            words whose presence raises the caption feature most, lift in units of the feature's
            std, at most :data:`TOKENS_PER_RANK` per rank, highest lift first.
        factors: one row per feature rank 1..k, columns ``rank, feature`` then
            ``image_<f>, text_<f>`` for f in class (correlation ratio eta), thickness, slant, size
            (|Pearson corr|), those the dataset has.
        interventions: basis name -> each image feature's effect on zero-shot and caption
            retrieval (:class:`tricl.analysis.text_interventions.TextEffects`); None when not
            computed yet.
        recomputed: stages computed by the call that returned this object.
        timings: seconds each recomputed stage took.
    """

    run_name: str
    split: str
    features: TextFeatures
    zero_shot: dict[str, float]
    prompts: tuple[tuple[str, ...], ...]
    top_captions: TopCaptions
    tokens: pd.DataFrame
    factors: pd.DataFrame
    interventions: dict | None = None
    recomputed: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: zero-shot accuracy and retrieval recall@1/5 both ways."""
        m = self.zero_shot
        zs = "n/a (no class labels)"
        if "zero_shot_acc" in m:
            zs = f"{m['zero_shot_acc']:.3f} ({int(m['n_prompts_per_class'])} prompts per class)"
        return (
            f"zero-shot {zs}; image->text R@1 {m['i2t_r1']:.3f} R@5 {m['i2t_r5']:.3f};"
            f" text->image R@1 {m['t2i_r1']:.3f} R@5 {m['t2i_r5']:.3f}"
        )


# --------------------------------------------------------------------------- the measures


def normalise(z: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (a zero row stays zero). Shape: (N, k) -> (N, k)."""
    z = np.asarray(z, dtype=np.float64)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def anchor_weights(importance: np.ndarray | None, s_placement: str, anchor: str) -> np.ndarray:
    """The diagonal the run's similarity applies to ``anchor`` (``image`` or ``text``) rows.

    Args:
        importance: the diagonal of S, or None (clip: S = I). Shape: (k,).
        s_placement: the run's ``s_placement``, a key of :data:`S_WEIGHTED_ANCHORS`.
        anchor: the modality of the query rows.

    Returns:
        S's diagonal if that anchor is weighted, else ones; None when there is no S.
    """
    if importance is None:
        return None
    if s_placement not in S_WEIGHTED_ANCHORS:
        raise AnalysisError(f"unknown s_placement {s_placement!r}; use {list(S_WEIGHTED_ANCHORS)}")
    if anchor in S_WEIGHTED_ANCHORS[s_placement]:
        return np.asarray(importance, dtype=np.float64)
    return np.ones(len(importance))


def similarity(queries: np.ndarray, keys: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The trained similarity ``q^T S k`` of L2-normalised rows (S from :func:`anchor_weights`).

    Shapes: (Q, k), (D, k), (k,) or None -> (Q, D), float64.
    """
    q = normalise(queries)
    if weights is not None:
        q = q * weights  # (Q, k)
    return q @ normalise(keys).T  # (Q, k) @ (k, D) -> (Q, D)


def class_embeddings(prompt_z: np.ndarray) -> np.ndarray:
    """CLIP's zero-shot classifier: per class, the normalised mean of its normalised prompts.

    Shape: (C, T, k) -> (C, k).
    """
    c, t, k = prompt_z.shape
    per_prompt = normalise(prompt_z.reshape(c * t, k)).reshape(c, t, k)  # (C, T, k)
    return normalise(per_prompt.mean(axis=1))  # (C, k)


def zero_shot_predictions(
    image_z: np.ndarray, class_z: np.ndarray, weights: np.ndarray | None
) -> np.ndarray:
    """The class whose prompt embedding is most similar to each image (first on a tie).

    Shapes: (N, k), (C, k), (k,) or None -> (N,) int64.
    """
    return similarity(image_z, class_z, weights).argmax(axis=1)


def recall_at(
    queries: np.ndarray,
    keys: np.ndarray,
    weights: np.ndarray | None,
    query_ids: np.ndarray,
    key_ids: np.ndarray,
    ks: tuple[int, ...] = RECALL_AT,
) -> dict[int, float]:
    """Retrieval recall@K: the share of queries with a correct key among their top K.

    A key is correct when its text id equals the query's (generated captions repeat: the same
    label, levels and template give the same text, and such a caption is as right as the image's
    own). Keys are ranked by :func:`similarity`, ties in key order (a stable sort).

    Args:
        queries: query features. Shape: (Q, k).
        keys: key features. Shape: (D, k).
        weights: S's diagonal for the query anchors, or None. Shape: (k,).
        query_ids: id of each query's caption text. Shape: (Q,).
        key_ids: id of each key's caption text. Shape: (D,).
        ks: the K values.

    Returns:
        K -> recall@K.
    """
    k_max = min(max(ks), len(keys))
    hits = dict.fromkeys(ks, 0)
    for start in range(0, len(queries), RETRIEVAL_CHUNK):
        block = slice(start, start + RETRIEVAL_CHUNK)
        sim = similarity(queries[block], keys, weights)  # (B, D)
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k_max]  # (B, K_max)
        match = key_ids[top] == query_ids[block, None]  # (B, K_max)
        for k in ks:
            hits[k] += int(match[:, :k].any(axis=1).sum())
    return {k: hits[k] / len(queries) for k in ks}


def caption_words(caption: str) -> list[str]:
    """The distinct words of a caption, lower-cased, in order of appearance."""
    return list(dict.fromkeys(re.findall(WORD_PATTERN, caption.lower())))


def token_lift(
    z: np.ndarray,
    captions: list[str] | tuple[str, ...],
    order: np.ndarray,
    *,
    min_count: int = TOKEN_MIN_COUNT,
    per_rank: int = TOKENS_PER_RANK,
) -> pd.DataFrame:
    """The words whose presence in a caption raises each feature most.

    ``lift = (mean of z_f over captions with the word - mean over those without) / std(z_f)``
    (population std over all captions), for words in at least ``min_count`` captions and not in
    all of them; only words that raise the feature (lift > 0) are kept.

    Args:
        z: caption features. Shape: (N, k).
        captions: the N captions.
        order: feature indices, most important first. Shape: (k,).
        min_count: fewest captions a word must be in.
        per_rank: words kept per feature, highest lift first (ties: alphabetical).

    Returns:
        Columns ``rank`` (1-based), ``feature``, ``token``, ``lift``, ``count`` (captions with it).
    """
    z = np.asarray(z, dtype=np.float64)
    n = len(captions)
    words = [caption_words(c) for c in captions]
    counts = pd.Series([w for ws in words for w in ws], dtype=object).value_counts()
    vocab = sorted(w for w, c in counts.items() if min_count <= c < n)
    col = {w: j for j, w in enumerate(vocab)}
    present = np.zeros((n, len(vocab)))  # (N, W)
    for i, ws in enumerate(words):
        present[i, [col[w] for w in ws if w in col]] = 1.0
    count = present.sum(axis=0)  # (W,)
    with_sum = present.T @ z  # (W, N) @ (N, k) -> (W, k)
    mean_with = with_sum / np.maximum(count, 1)[:, None]
    mean_without = (z.sum(axis=0) - with_sum) / np.maximum(n - count, 1)[:, None]  # (W, k)
    std = z.std(axis=0)  # (k,)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(std > 0, (mean_with - mean_without) / std, np.nan)  # (W, k)
    rows = []
    for rank, feature in enumerate(order, start=1):
        values = lift[:, feature]  # (W,)
        best = [j for j in np.argsort(-values, kind="stable") if values[j] > 0]  # NaN: False
        for j in best[:per_rank]:
            rows.append((rank, int(feature), vocab[j], float(values[j]), int(count[j])))
    return pd.DataFrame(rows, columns=TOKEN_COLUMNS)


TOKEN_COLUMNS = ["rank", "feature", "token", "lift", "count"]


def correlation_ratio(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correlation ratio eta = sqrt(between-class variance / total variance) of each column.

    Unlike |corr| with the class index, it scores a feature that separates the classes in any
    order. NaN for a constant column. Shapes: (N, k), (N,) -> (k,).
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)  # (N, k)
    total = (centred**2).sum(axis=0)  # (k,)
    between = np.zeros(x.shape[1])
    for c in np.unique(labels):
        members = centred[labels == c]  # (N_c, k)
        between += len(members) * members.mean(axis=0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, np.sqrt(between / total), np.nan)


def abs_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|Pearson correlation| of each column with y; NaN where either is constant.

    Shapes: (N, k), (N,) -> (k,).
    """
    xc = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0)  # (N, k)
    yc = np.asarray(y, dtype=np.float64) - np.mean(y)  # (N,)
    denom = np.sqrt((xc**2).sum(axis=0) * (yc**2).sum())  # (k,)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, np.abs(yc @ xc) / denom, np.nan)


def factor_table(features: TextFeatures) -> pd.DataFrame:
    """Which feature rank carries which caption factor, on the image and the text side.

    Returns:
        One row per rank 1..k: ``rank, feature``, then ``image_class, text_class`` (correlation
        ratio, labelled data only) and ``image_<f>, text_<f>`` (|corr|) for each factor f.
    """
    order = features.order
    table = {"rank": np.arange(1, len(order) + 1), "feature": order.astype(np.int64)}
    sides = {"image": features.image_z[:, order], "text": features.text_z[:, order]}  # (N, k)
    scorers = {}
    if features.has_labels:
        scorers["class"] = lambda x: correlation_ratio(x, features.labels)
    for name, values in features.factors.items():
        scorers[name] = lambda x, v=values: abs_correlation(x, v)
    for name, score in scorers.items():
        for side, x in sides.items():
            table[f"{side}_{name}"] = score(x)
    return pd.DataFrame(table)


def top_captions(
    z: np.ndarray, captions: list[str] | tuple[str, ...], order: np.ndarray, n: int
) -> TopCaptions:
    """The ``n`` distinct captions with the highest value of each feature (see TopCaptions).

    Shapes: z (N, k), order (k,).
    """
    # the distinct texts (sorted, so equal values list alphabetically) and where each first is
    _, first, counts = np.unique(
        np.array(captions, dtype=str), return_index=True, return_counts=True
    )
    values = np.asarray(z, dtype=np.float32)[first][:, order]  # (U, k) in rank order
    n = min(n, len(first))
    best = np.argsort(-values, axis=0, kind="stable")[:n].T  # (k, n) rows of first
    return TopCaptions(
        feature=np.asarray(order, dtype=np.int64),
        indices=first[best].astype(np.int64),
        values=np.take_along_axis(values.T, best, axis=1),
        counts=counts[best].astype(np.int64),
    )
