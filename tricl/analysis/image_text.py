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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis import text_interventions
from tricl.analysis.pipeline import (
    ANALYSIS_STAGES,
    Analysis,
    analyze,
    feature_order,
    load_analysis,
    load_run,
)
from tricl.analysis.stages import (
    Family,
    Output,
    Progress,
    Stage,
    StageResults,
    Target,
    need_arrays,
    need_columns,
    read_stages,
    register_stage,
)
from tricl.analysis.store import AnalysisError, analysis_dir, normalise_meta
from tricl.analysis.summary import load_summary
from tricl.analysis.text_measures import (
    RECALL_AT,
    TOKEN_COLUMNS,
    TOKEN_MIN_COUNT,
    TOKENS_PER_RANK,
    TOP_CAPTIONS,
    WORD_PATTERN,
    TextAnalysis,
    TextFeatures,
    TopCaptions,
    ZeroShot,
    abs_correlation,
    anchor_weights,
    caption_words,
    class_embeddings,
    correlation_ratio,
    factor_table,
    recall_at,
    similarity,
    token_lift,
    top_captions,
    zero_shot_predictions,
)
from tricl.catalog import parse_dataset
from tricl.runs import Run

__all__ = [
    "RECALL_AT",
    "TEXT",
    "TEXT_FOLDER",
    "TEXT_STAGES",
    "TOKENS_PER_RANK",
    "TOKEN_COLUMNS",
    "TOKEN_MIN_COUNT",
    "TOP_CAPTIONS",
    "WORD_PATTERN",
    "TextAnalysis",
    "TextFeatures",
    "TopCaptions",
    "ZeroShot",
    "abs_correlation",
    "analyze_text",
    "anchor_weights",
    "caption_words",
    "class_embeddings",
    "correlation_ratio",
    "factor_table",
    "has_text",
    "load_text_analysis",
    "load_text_features",
    "recall_at",
    "similarity",
    "text_features",
    "token_lift",
    "top_captions",
    "zero_shot_predictions",
]

TEXT_FOLDER = "text"  # RUN/analysis/<split>/text/
# the stages every reader needs; the others are optional on the read path
_CORE = ("text_features", "zero_shot", "top_captions", "tokens", "factors")


# --------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class _TextJob:
    """The stages' context: the run, split and settings, and the trained analysis built on."""

    run: Run
    split: str
    trained: Analysis
    device: str = "cpu"
    top_n: int = TOP_CAPTIONS
    progress: Progress = field(default_factory=lambda: Progress(False, ""))


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
# each image feature ablated / steered, read through zero-shot and caption retrieval
register_stage(TEXT_STAGES, text_interventions.STAGE)


# --------------------------------------------------------------------------- computing and reading


def has_text(run: Run) -> bool:
    """Whether a run has a text side to analyse (clip / triclip, not an aligned image-only copy)."""
    return run.image_text and not run.aligned


def _require_text(run: Run) -> None:
    if not run.image_text:
        raise AnalysisError(
            f"{run.name} is a {run.config.method} run, trained or imported on images only; the"
            " text analysis needs a clip or triclip run, or an open_clip import on captions"
        )
    if run.aligned:
        parent = (run.parent or {}).get("name", "run")
        raise AnalysisError(
            f"{run.name} is an aligned copy holding only an image encoder; analyse the text of"
            f" its parent ({parent}) instead"
        )


@dataclass(frozen=True)
class _Request:
    """One text-analysis call's arguments."""

    run: Run
    split: str
    device: str = "cpu"
    top_n: int = TOP_CAPTIONS
    progress: bool = False
    summary: bool = False  # read on the trained analysis' summary (no image features read)


def _target(req: _Request, compute: bool) -> Target | None:
    """The text stages' target, built on the trained analysis (computed when ``compute``); None
    when reading and the run has no text side or its trained analysis is not cached."""
    run = req.run
    if compute:
        _require_text(run)
        if req.top_n < 1:
            raise AnalysisError(
                f"top_n must be >= 1, got {req.top_n}; the default is {TOP_CAPTIONS}"
            )
        trained = analyze(run, split=req.split, device=req.device, progress=req.progress)
    else:
        read = load_summary if req.summary else load_analysis
        trained = read(run, split=req.split) if has_text(run) else None
        if trained is None:
            return None
    bar = Progress(req.progress and compute, f"analyze {run.name} (text)")
    job = _TextJob(run, req.split, trained, req.device, req.top_n, bar)
    key = {
        "weights_hash": trained.weights_hash,
        "dataset": run.config.dataset,
        "image_size": run.config.image_size,
        "split": req.split,
        # the image features and their order are the trained analysis's
        "trained": {n: ANALYSIS_STAGES[n].version for n in ("features", "importance")},
    }
    folder = analysis_dir(run.path, req.split) / TEXT_FOLDER
    return Target(folder, normalise_meta(key), job, bar)


# The text side of an image-text run on one split, in ``RUN/analysis/<split>/text/``.
TEXT = Family("text analysis", TEXT_STAGES, _target)


def text_features(
    run: Run | str | Path, split: str = "test", *, progress: bool = True, device: str = "cpu"
) -> TextFeatures:
    """The image and caption features of an image-text run; computed (and cached) if missing.

    Computes the trained image analysis first if it is not cached.

    Raises:
        AnalysisError: an image-only or broken run, an unknown split, an unavailable dataset.
    """
    req = _Request(load_run(run), split, device, 1, progress)
    return TEXT.run(req, ("text_features",))[1].values["text_features"]


def load_text_features(run: Run | str | Path, split: str = "test") -> TextFeatures | None:
    """The cached :class:`TextFeatures`, or None (not computed, stale, torn, or an image-only run).

    Never computes and never imports torch (the dashboard's read path).

    Raises:
        AnalysisError: a broken run or an unknown split.
    """
    got = TEXT.read(_Request(load_run(run), split), ("text_features",), check_params=False)
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
        interventions=v.get(text_interventions.STAGE_NAME),
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
    target, res = TEXT.run(_Request(load_run(run), split, device, top_n, progress), force=force)
    return _assemble(target.ctx, res)


def load_text_analysis(run: Run | str | Path, split: str = "test") -> TextAnalysis | None:
    """The cached :class:`TextAnalysis`, or None (not computed, stale, torn, or an image-only run).

    Never computes and never imports torch (the dashboard's read path); artifacts computed with
    another ``top_n`` are accepted.

    Raises:
        AnalysisError: a broken run or an unknown split.
    """
    got = TEXT.read(_Request(load_run(run), split), _CORE, check_params=False)
    if got is None:
        return None
    target, res = got
    name = text_interventions.STAGE_NAME  # optional: older analyses stay readable
    extra = read_stages(TEXT_STAGES, [name], target, check_params=False, meta_only=_CORE)
    values = res.values | ({} if extra is None else {name: extra.values[name]})
    return _assemble(target.ctx, StageResults(values, res.metas))


def load_zero_shot(run: Run | str | Path, split: str = "test") -> dict[str, float] | None:
    """The cached zero-shot accuracy and retrieval recalls (``TextAnalysis.zero_shot``), or None
    where :func:`load_text_analysis` gives None for them; no feature array is read."""
    req = _Request(load_run(run), split, summary=True)
    got = TEXT.read(req, ["zero_shot"], check_params=False, meta_only=("text_features",))
    return None if got is None else got[1].values["zero_shot"].metrics
