"""The text side of an image-text run's analysis (``clip``, ``triclip``): cached stages.

Stages of :data:`TEXT_STAGES` and their files in ``RUN/analysis/<split>/text/``, computed after the
trained image analysis (:func:`tricl.analysis.pipeline.analyze`) and built on it:

=============  ==================  ============================================================
stage          file                content
=============  ==================  ============================================================
text_features  text_features.npz   caption features z of the evaluation and train splits, the
                                   evaluation captions, their factor values (generated captions)
zero_shot      zero_shot.npz       class-prompt features; zero-shot accuracy and retrieval
                                   recall@1/5 (in the meta)
top_captions   top_captions.npz    per feature rank: the distinct captions with the highest value
tokens         tokens.csv          per feature rank: the words whose presence raises it most
factors        factors.csv         per feature rank: |corr| of image and text features with class,
                                   thickness, slant and size
=============  ==================  ============================================================

Features are the projector outputs z, raw (not normalised) and stored in half precision, exactly as
the image analysis's features stage stores them; the image features are the trained analysis's
(read from its ``features.npz``, not encoded twice) unless its images differ from the captions'
images, and the feature order is the trained analysis's default order
(:func:`tricl.analysis.pipeline.feature_order`: S for triclip, variance for clip), so rank r here is
rank r on the image pages. The key of every artifact is the trained analysis's (weights hash,
dataset, image size, split) plus the versions of its features and importance stages.

Similarity is the one the method was trained with (:func:`tricl.losses.build_image_text_loss`):
both modalities' z L2-normalised, then ``f^T S g`` with S = diag(softplus(s)) on the anchors the
run's ``s_placement`` weights (``both``: every anchor; ``first_view``: image anchors only, so
text->image is the plain cosine), and S = I for clip. The temperature scales every similarity of a
row alike, so it changes no ranking and is left out.

Reading (:func:`load_text_features`, :func:`load_text_analysis`) never computes and never imports
torch: the dashboard's server calls them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis.pipeline import (
    ANALYSIS_STAGES,
    Analysis,
    _Progress,
    analyze,
    feature_order,
    load_analysis,
    load_run,
)
from tricl.analysis.stages import (
    Output,
    Stage,
    StageResults,
    Target,
    need_arrays,
    need_columns,
    read_stages,
    register_stage,
    run_stages,
)
from tricl.analysis.store import AnalysisError, analysis_dir, normalise_meta
from tricl.catalog import parse_dataset
from tricl.runs import Run

TEXT_FOLDER = "text"  # RUN/analysis/<split>/text/
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


# --------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class _TextJob:
    """The stages' context: the run, split and settings, and the trained analysis built on."""

    run: Run
    split: str
    trained: Analysis
    device: str = "cpu"
    top_n: int = TOP_CAPTIONS
    progress: _Progress = field(default_factory=lambda: _Progress(False, ""))


TEXT_STAGES: dict[str, Stage] = {}


def _utf8(texts: list[str] | tuple[str, ...]) -> np.ndarray:
    """Texts as a fixed-width bytes array (one byte per ASCII character; npz needs no pickle)."""
    return np.array([t.encode() for t in texts], dtype=bytes)


def _texts(array: np.ndarray) -> tuple[str, ...]:
    return tuple(bytes(b).decode() for b in array)


def _labels(y: Any, has_labels: bool) -> np.ndarray:
    """int64 labels of a (N,) label tensor, or -1 for every image of unlabelled data."""
    return y.numpy().astype(np.int64) if has_labels else np.full(len(y), -1, dtype=np.int64)


def _encode_images(job: _TextJob, data: Any) -> dict[str, np.ndarray]:
    """Image features of the captions' own images (when they are not the trained analysis's)."""
    from tricl.analysis.features import extract

    encoder = job.run.encoder(job.device)
    images = data.images
    z, _ = extract(encoder, images.split(job.split)[0], images.preprocess, device=job.device)
    train_z = z
    if job.split != "train":
        train_z, _ = extract(encoder, images.train_x, images.preprocess, device=job.device)
    return {"image_z": z.astype(np.float16), "train_image_z": train_z.astype(np.float16)}


def _compute_text_features(job: _TextJob, inputs: dict[str, Any]) -> Output:
    from tricl.analysis.features import images_hash
    from tricl.text.encoder import embed_captions, n_caption_batches

    run, same = job.run, job.split == "train"
    data = run.load_image_text()
    eval_x, eval_y, captions = data.split(job.split)
    job.progress.add(n_caption_batches(captions) + n_caption_batches(data.train_captions))
    tokenizer, encoder = run.tokenizer(), run.text_encoder(job.device)
    embed = {"device": job.device, "tick": job.progress.tick}
    text_z, truncated = embed_captions(encoder, tokenizer, captions, **embed)
    train_text_z = text_z
    if not same:
        train_text_z, more = embed_captions(encoder, tokenizer, data.train_captions, **embed)
        truncated += more
    factors = getattr(data, f"{job.split}_factors")
    names = list(factors.names) if factors is not None else []
    # feature matrices in half precision, as the image analysis's features stage stores them
    arrays = {
        "text_z": text_z.astype(np.float16),
        "train_text_z": train_text_z.astype(np.float16),
        "captions": _utf8(captions),
        "labels": _labels(eval_y, data.has_labels),
        "train_labels": _labels(data.images.train_y, data.has_labels),
        "factor_values": factors.values if factors is not None else np.zeros((len(captions), 0)),
    }
    eval_hash = images_hash(eval_x, eval_y)
    if eval_hash != job.trained.features.images_hash:
        arrays |= _encode_images(job, data)
    meta = {
        "class_names": list(data.images.classes) if data.has_labels else [],
        "factor_names": names,
        "images_hash": eval_hash,
        "truncated": truncated,
    }
    return Output(arrays, meta)


def _load_text_features(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _TextJob
) -> TextFeatures:
    need_arrays(
        arrays,
        {"text_z": 2, "train_text_z": 2, "captions": 1, "labels": 1, "train_labels": 1}
        | {"factor_values": 2},
    )
    f = job.trained.features
    image_z = arrays.get("image_z", f.z)
    train_image_z = arrays.get("train_image_z", f.train_z)
    n, names = len(image_z), [str(x) for x in meta["factor_names"]]
    if arrays["text_z"].shape != image_z.shape or arrays["train_text_z"].shape != (
        train_image_z.shape
    ):
        raise ValueError("the caption features do not match the image features in shape")
    if not n == len(arrays["captions"]) == len(arrays["labels"]) == len(arrays["factor_values"]):
        raise ValueError("captions, labels and factor values disagree in length")
    if arrays["factor_values"].shape[1] != len(names):
        raise ValueError("the factor values do not match the factor names")
    return TextFeatures(
        image_z=np.asarray(image_z, dtype=np.float32),
        text_z=arrays["text_z"].astype(np.float32),
        train_image_z=np.asarray(train_image_z, dtype=np.float32),
        train_text_z=arrays["train_text_z"].astype(np.float32),
        labels=arrays["labels"].astype(np.int64),
        captions=_texts(arrays["captions"]),
        class_names=tuple(str(c) for c in meta["class_names"]),
        order=feature_order(job.trained),
        importance=f.s,
        images_hash=str(meta["images_hash"]),
        train_labels=arrays["train_labels"].astype(np.int64),
        factors={name: arrays["factor_values"][:, j] for j, name in enumerate(names)},
        truncated=int(meta["truncated"]),
    )


register_stage(
    TEXT_STAGES,
    Stage("text_features", "text_features.npz", _compute_text_features, _load_text_features),
)


def _prompt_templates(job: _TextJob) -> list[str]:
    """The zero-shot templates of the run's caption dataset (none for an unknown one)."""
    from tricl.text.prompts import PROMPT_SETS

    prompt_set = PROMPT_SETS.get(parse_dataset(job.run.config.dataset)[0])
    return list(prompt_set.templates) if prompt_set is not None else []


def _class_prompts(job: _TextJob, f: TextFeatures) -> tuple[list[list[str]], np.ndarray]:
    """The prompts of every class and their class embeddings (C, k); none when unlabelled."""
    if not f.has_labels:
        return [], np.zeros((0, f.k))
    from tricl.text.encoder import embed_captions
    from tricl.text.prompts import class_prompts

    try:
        prompts = class_prompts(parse_dataset(job.run.config.dataset)[0], f.class_names)
    except ValueError as exc:
        raise AnalysisError(f"cannot classify zero-shot for {job.run.name}: {exc}") from None
    flat = [p for ps in prompts for p in ps]
    z, _ = embed_captions(job.run.text_encoder(job.device), job.run.tokenizer(), flat)
    c, t = len(prompts), len(prompts[0])
    return prompts, class_embeddings(z.reshape(c, t, f.k))  # (C*T, k) -> (C, T, k) -> (C, k)


def _compute_zero_shot(job: _TextJob, inputs: dict[str, Any]) -> Output:
    f: TextFeatures = inputs["text_features"]
    job.progress.add(3)
    placement = job.run.config.s_placement
    w_image = anchor_weights(f.importance, placement, "image")
    w_text = anchor_weights(f.importance, placement, "text")
    _, text_ids = np.unique(np.array(f.captions, dtype=str), return_inverse=True)  # (N,)
    i2t = recall_at(f.image_z, f.text_z, w_image, text_ids, text_ids)
    job.progress.tick()
    t2i = recall_at(f.text_z, f.image_z, w_text, text_ids, text_ids)
    job.progress.tick()
    metrics: dict[str, float] = {
        **{f"i2t_r{k}": v for k, v in i2t.items()},
        **{f"t2i_r{k}": v for k, v in t2i.items()},
        "n_distinct_captions": int(text_ids.max()) + 1,
    }
    prompts, class_z = _class_prompts(job, f)
    if prompts:
        predicted = zero_shot_predictions(f.image_z, class_z, w_image)  # (N,)
        metrics["zero_shot_acc"] = float((predicted == f.labels).mean())
        metrics["n_prompts_per_class"] = len(prompts[0])
        metrics["n_classes"] = len(prompts)
    job.progress.tick()
    arrays = {
        "class_z": class_z.astype(np.float32),
        "prompts": _utf8([p for ps in prompts for p in ps]),
    }
    return Output(arrays, {"metrics": metrics})


def _load_zero_shot(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _TextJob) -> ZeroShot:
    need_arrays(arrays, {"class_z": 2, "prompts": 1})
    metrics = {str(k): float(v) for k, v in meta["metrics"].items()}
    if not {f"{d}_r{k}" for d in ("i2t", "t2i") for k in RECALL_AT} <= set(metrics):
        raise ValueError("the zero-shot meta lacks the retrieval recalls")
    flat, c = _texts(arrays["prompts"]), len(arrays["class_z"])
    t = len(flat) // c if c else 0
    if c * t != len(flat):
        raise ValueError("the prompts do not split evenly over the classes")
    prompts = tuple(flat[i * t : (i + 1) * t] for i in range(c))
    return ZeroShot(metrics=metrics, prompts=prompts, class_z=arrays["class_z"])


register_stage(
    TEXT_STAGES,
    Stage(
        "zero_shot",
        "zero_shot.npz",
        _compute_zero_shot,
        _load_zero_shot,
        needs=("text_features",),
        params=lambda job: {
            "templates": _prompt_templates(job),
            "recall_at": list(RECALL_AT),
            "s_placement": job.run.config.s_placement,
            "similarity": "f^T S g of L2-normalised z (S = I for clip); class = mean prompt",
            "hit": "retrieved caption text equals the true caption text",
        },
    ),
)


def _compute_top_captions(job: _TextJob, inputs: dict[str, Any]) -> Output:
    f: TextFeatures = inputs["text_features"]
    return Output(dict(vars(top_captions(f.text_z, f.captions, f.order, job.top_n))))


def _load_top_captions(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], job: _TextJob
) -> TopCaptions:
    need_arrays(arrays, {"feature": 1, "indices": 2, "values": 2, "counts": 2})
    shape = arrays["indices"].shape
    if not (shape == arrays["values"].shape == arrays["counts"].shape) or shape[0] != len(
        arrays["feature"]
    ):
        raise ValueError("top caption arrays disagree in shape")
    return TopCaptions(**{n: arrays[n] for n in ("feature", "indices", "values", "counts")})


register_stage(
    TEXT_STAGES,
    Stage(
        "top_captions",
        "top_captions.npz",
        _compute_top_captions,
        _load_top_captions,
        needs=("text_features",),
        params=lambda job: {"top_n": job.top_n, "distinct_texts": True},
    ),
)


def _compute_tokens(job: _TextJob, inputs: dict[str, Any]) -> Output:
    f: TextFeatures = inputs["text_features"]
    return Output(token_lift(f.text_z, f.captions, f.order))


def _load_tokens(table: pd.DataFrame, meta: dict[str, Any], job: _TextJob) -> pd.DataFrame:
    need_columns(table, TOKEN_COLUMNS)
    return table


register_stage(
    TEXT_STAGES,
    Stage(
        "tokens",
        "tokens.csv",
        _compute_tokens,
        _load_tokens,
        needs=("text_features",),
        params=lambda job: {
            "min_count": TOKEN_MIN_COUNT,
            "per_rank": TOKENS_PER_RANK,
            "words": WORD_PATTERN,
            "lift": "(mean with - mean without) / std, caption features",
        },
    ),
)


def _compute_factors(job: _TextJob, inputs: dict[str, Any]) -> Output:
    return Output(factor_table(inputs["text_features"]))


def _load_factors(table: pd.DataFrame, meta: dict[str, Any], job: _TextJob) -> pd.DataFrame:
    scores = list(table.columns[2:])
    need_columns(table, ["rank", "feature", *scores])
    if len(scores) % 2 or any(
        not (a.startswith("image_") and b == "text_" + a.removeprefix("image_"))
        for a, b in zip(scores[::2], scores[1::2], strict=True)
    ):
        raise ValueError(f"factor columns {scores} are not image_/text_ pairs")
    return table


register_stage(
    TEXT_STAGES,
    Stage(
        "factors",
        "factors.csv",
        _compute_factors,
        _load_factors,
        needs=("text_features",),
        params=lambda job: {"class": "correlation ratio eta", "factors": "|Pearson corr|"},
    ),
)


# --------------------------------------------------------------------------- computing and reading


def has_text(run: Run) -> bool:
    """Whether a run has a text side to analyse (clip / triclip, not an aligned image-only copy)."""
    return run.image_text and not run.aligned


def _require_text(run: Run) -> None:
    if not run.image_text:
        raise AnalysisError(
            f"{run.name} is a {run.config.method} run, trained on images only; the text analysis"
            " needs a clip or triclip run"
        )
    if run.aligned:
        parent = (run.parent or {}).get("name", "run")
        raise AnalysisError(
            f"{run.name} is an aligned copy holding only an image encoder; analyse the text of"
            f" its parent ({parent}) instead"
        )


def _target(job: _TextJob) -> Target:
    run = job.run
    key = {
        "weights_hash": job.trained.weights_hash,
        "dataset": run.config.dataset,
        "image_size": run.config.image_size,
        "split": job.split,
        # the image features and their order are the trained analysis's
        "trained": {n: ANALYSIS_STAGES[n].version for n in ("features", "importance")},
    }
    folder = analysis_dir(run.path, job.split) / TEXT_FOLDER
    return Target(folder, normalise_meta(key), job)


def _run(
    run: Run | str | Path,
    split: str,
    wanted: tuple[str, ...],
    *,
    force: bool,
    progress: bool,
    device: str,
    top_n: int,
) -> tuple[_TextJob, StageResults]:
    """The trained analysis (computed if missing), then the wanted text stages."""
    r = load_run(run)
    _require_text(r)
    if top_n < 1:
        raise AnalysisError(f"top_n must be >= 1, got {top_n}; the default is {TOP_CAPTIONS}")
    trained = analyze(r, split=split, device=device, progress=progress)
    bar = _Progress(progress, f"analyze {r.name} (text)")
    job = _TextJob(r, split, trained, device, top_n, bar)
    try:
        res = run_stages(TEXT_STAGES, wanted, _target(job), force=force, on_stage=bar.stage)
    finally:
        bar.close()
    return job, res


def _read(run: Run | str | Path, split: str, wanted: tuple[str, ...]) -> tuple | None:
    """``(job, results)`` from the cache, or None if the run has no text side or a stage is
    missing, stale or torn (never computes)."""
    r = load_run(run)
    if not has_text(r):
        return None
    trained = load_analysis(r, split=split)
    if trained is None:
        return None
    job = _TextJob(r, split, trained)
    res = read_stages(TEXT_STAGES, wanted, _target(job), check_params=False)
    return None if res is None else (job, res)


def text_features(
    run: Run | str | Path, split: str = "test", *, progress: bool = True, device: str = "cpu"
) -> TextFeatures:
    """The image and caption features of an image-text run; computed (and cached) if missing.

    Computes the trained image analysis first if it is not cached.

    Raises:
        AnalysisError: an image-only or broken run, an unknown split, an unavailable dataset.
    """
    _, res = _run(
        run, split, ("text_features",), force=False, progress=progress, device=device, top_n=1
    )
    return res.values["text_features"]


def load_text_features(run: Run | str | Path, split: str = "test") -> TextFeatures | None:
    """The cached :class:`TextFeatures`, or None (not computed, stale, torn, or an image-only run).

    Never computes and never imports torch (the dashboard's read path).

    Raises:
        AnalysisError: a broken run or an unknown split.
    """
    got = _read(run, split, ("text_features",))
    return None if got is None else got[1].values["text_features"]


def _assemble(job: _TextJob, res: StageResults) -> TextAnalysis:
    v = res.values
    zero_shot: ZeroShot = v["zero_shot"]
    return TextAnalysis(
        run_name=job.run.name,
        split=job.split,
        features=v["text_features"],
        zero_shot=zero_shot.metrics,
        prompts=zero_shot.prompts,
        top_captions=v["top_captions"],
        tokens=v["tokens"],
        factors=v["factors"],
        recomputed=res.recomputed,
        timings=res.timings,
    )


def analyze_text(
    run: Run | str | Path,
    split: str = "test",
    *,
    force: bool = False,
    progress: bool = True,
    device: str = "cpu",
    top_n: int = TOP_CAPTIONS,
) -> TextAnalysis:
    """Compute (or read from the cache) every text-side artifact of an image-text run.

    Args:
        run: a clip or triclip run, or its folder.
        split: evaluation split (``test`` or ``train``); the train split's features are kept too.
        force: recompute every text stage (the trained image analysis is reused when fresh).
        progress: draw a progress bar.
        device: where the encoders run.
        top_n: distinct captions kept per feature.

    Returns:
        The :class:`TextAnalysis`; ``recomputed`` names the stages this call computed.

    Raises:
        AnalysisError: an image-only or broken run, an unknown split, an unavailable dataset, a
            dataset without zero-shot prompts.
    """
    job, res = _run(
        run, split, tuple(TEXT_STAGES), force=force, progress=progress, device=device, top_n=top_n
    )
    return _assemble(job, res)


def load_text_analysis(run: Run | str | Path, split: str = "test") -> TextAnalysis | None:
    """The cached :class:`TextAnalysis`, or None (not computed, stale, torn, or an image-only run).

    Never computes and never imports torch (the dashboard's read path); artifacts computed with
    another ``top_n`` are accepted.

    Raises:
        AnalysisError: a broken run or an unknown split.
    """
    got = _read(run, split, tuple(TEXT_STAGES))
    return None if got is None else _assemble(*got)
