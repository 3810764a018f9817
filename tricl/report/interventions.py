"""Feature detail's interventions: what ablating or steering a feature does, next to chance.

Shaped from the stored ``interventions`` stage
(:class:`tricl.analysis.split_stages.interventions.Interventions`, read as
``analysis.values["interventions"]``); nothing here reads a model, a dataset or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STAGE = "interventions"  # the stage's name in Analysis.values
KIND_LABELS = ("ablate (set to its mean)", "steer +{sd:g} sd", "steer -{sd:g} sd")
CHANCE_Z = 2.0  # an effect beyond this many control standard deviations is "more than chance"


@dataclass(frozen=True)
class InterventionRow:
    """One intervention on one feature, against its random control.

    Attributes:
        kind: what was done (e.g. "ablate (set to its mean)").
        accuracy: the probe's accuracy after it.
        drop: base accuracy minus that (points of accuracy lost; negative: gained).
        control_mean: the mean drop of the same-size intervention along random directions.
        control_sd: their standard deviation.
        verdict: "more than chance", "within chance" or "not measured".
        changed: share of images whose predicted class changed.
        confusion: the most frequent change of prediction, e.g. "4 → 9 (31 images)", or "".
        worst_class: the class that lost most accuracy and how much, e.g. "4 (-62 pts)", or "".
    """

    kind: str
    accuracy: float
    drop: float
    control_mean: float
    control_sd: float
    verdict: str
    changed: float
    confusion: str
    worst_class: str


def not_computed(run_name: str, basis: str) -> str:
    return (
        f"Interventions are not computed for this run yet: run `tricl analyze {run_name}"
        f" --basis {basis}`"
        " (or the job button above) to measure them."
    )


def judge(drop: float, control: np.ndarray) -> str:
    """Whether a drop exceeds its random control by more than :data:`CHANCE_Z` spreads."""
    control = control[np.isfinite(control)]
    if not np.isfinite(drop) or len(control) == 0:
        return "not measured"
    spread = max(float(control.std()), 0.005)  # half a point: below that, noise of the split
    beyond = drop - float(control.mean()) > CHANCE_Z * spread
    return "more than chance" if beyond else "within chance"


def rows(res: Any, feature: int, classes: Sequence[Any], steer_sd: float) -> list[InterventionRow]:
    """The three interventions of feature ``feature`` (its raw index) as table rows."""
    out = []
    for j, label in enumerate(KIND_LABELS):
        acc = float(res.acc[feature, j])
        drop = res.base_acc - acc
        control = res.base_acc - res.control_acc[feature, j].astype(np.float64)  # (R,)
        confusion = worst = ""
        frm, to, n = (int(v) for v in res.flow[feature, j])
        if n > 0 and frm >= 0 and len(classes):
            confusion = f"{classes[frm]} → {classes[to]} ({n} images)"
        if len(classes) and res.class_acc.shape[2]:
            loss = res.base_class_acc - res.class_acc[feature, j]  # (C,)
            c = int(np.argmax(loss))
            if loss[c] > 0:
                worst = f"{classes[c]} (-{100 * loss[c]:.0f} pts)"
        finite = control[np.isfinite(control)]
        out.append(
            InterventionRow(
                kind=label.format(sd=steer_sd),
                accuracy=acc,
                drop=drop,
                control_mean=float(finite.mean()) if len(finite) else float("nan"),
                control_sd=float(finite.std()) if len(finite) else float("nan"),
                verdict=judge(drop, control),
                changed=float(res.changed[feature, j]),
                confusion=confusion,
                worst_class=worst,
            )
        )
    return out


def retrieval_caption(res: Any, feature: int) -> str:
    """Retrieval mAP with the feature ablated, against the same-size random ablations."""
    got = float(res.map_ablate[feature])
    if not np.isfinite(got):
        return (
            "Retrieval mAP is measured for the first features of the default order only; this"
            " one is not among them."
        )
    control = res.control_map[feature]
    control = control[np.isfinite(control)].astype(np.float64)
    drop, cdrop = res.base_map - got, res.base_map - control
    verdict = judge(drop, cdrop)
    return (
        f"Retrieval mAP {res.base_map:.3f} → **{got:.3f}** when ablated"
        f" (random directions of equal variance: {np.mean(control):.3f} ± {np.std(control):.3f};"
        f" {verdict})."
    )


def summary(res: Any, feature: int) -> str:
    """One line: does ablating this feature matter more than chance?"""
    if not res.measured:
        return "No labels: the probe and retrieval cannot be measured, so no intervention is."
    r = rows(res, feature, [], 0.0)[0]
    return (
        f"Ablating it moves the linear probe from {res.base_acc:.3f} to **{r.accuracy:.3f}**"
        f" ({100 * r.drop:+.1f} pts lost; random directions of equal variance:"
        f" {100 * r.control_mean:+.1f} ± {100 * r.control_sd:.1f}): **{r.verdict}**."
    )


def table(res: Any, feature: int, classes: Sequence[Any], steer_sd: float) -> list[dict]:
    """The rows as plain records for a table."""
    return [
        {
            "intervention": r.kind,
            "accuracy": round(r.accuracy, 3),
            "pts lost": round(100 * r.drop, 1),
            "random (pts lost)": f"{100 * r.control_mean:+.1f} ± {100 * r.control_sd:.1f}",
            "vs chance": r.verdict,
            "predictions changed": f"{r.changed:.0%}",
            "main confusion": r.confusion,
            "class hit most": r.worst_class,
        }
        for r in rows(res, feature, classes, steer_sd)
    ]


# --------------------------------------------------------------------------- image-text runs


def text_not_computed(run_name: str, basis: str) -> str:
    return (
        "The effect on zero-shot and on the captions an image retrieves is not computed for this"
        f" run in this basis yet: run `tricl analyze {run_name} --basis {basis}` (or the job"
        " button above) to measure it."
    )


def _spread(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)].astype(np.float64)
    return (float(finite.mean()), float(finite.std())) if len(finite) else (np.nan, np.nan)


def text_table(eff: Any, feature: int, classes: Sequence[Any], steer_sd: float) -> list[dict]:
    """The three interventions' effect on zero-shot accuracy and on the retrieved captions
    (``eff``: a :class:`tricl.analysis.text_interventions.TextEffects`), against chance."""
    out = []
    base_zs = float(eff.base[0])
    for j, label in enumerate(KIND_LABELS):
        row: dict[str, Any] = {"intervention": label.format(sd=steer_sd)}
        if eff.has_zero_shot:
            drop = base_zs - float(eff.zs_acc[feature, j])
            control = base_zs - eff.zs_control[feature, j].astype(np.float64)  # (R,)
            mean, sd = _spread(control)
            worst = ""
            loss = eff.base_zs_class_acc - eff.zs_class_acc[feature, j]  # (C,)
            if len(classes) and len(loss) and loss.max() > 0:
                c = int(np.argmax(loss))
                worst = f"{classes[c]} (-{100 * loss[c]:.0f} pts)"
            row |= {
                "zero-shot acc": round(float(eff.zs_acc[feature, j]), 3),
                "pts lost": round(100 * drop, 1),
                "random (pts lost)": f"{100 * mean:+.1f} ± {100 * sd:.1f}",
                "vs chance": judge(drop, control),
                "class hit most": worst,
            }
        top = float(eff.top_changed[feature, j])
        mean, sd = _spread(eff.top_changed_control[feature, j])
        row |= {
            "caption R@1": round(float(eff.r1[feature, j]), 3),
            "caption R@5": round(float(eff.r5[feature, j]), 3),
            "top caption changed": f"{top:.0%}" if np.isfinite(top) else "",
            "random (changed)": f"{mean:.0%} ± {sd:.0%}" if np.isfinite(mean) else "",
            "captions vs chance": judge(top, eff.top_changed_control[feature, j]),
        }
        out.append(row)
    return out


def text_summary(eff: Any, feature: int) -> str:
    """One line: what ablating the feature does to zero-shot and to the retrieved captions."""
    parts = []
    if eff.has_zero_shot:
        acc = float(eff.zs_acc[feature, 0])
        control = float(eff.base[0]) - eff.zs_control[feature, 0].astype(np.float64)
        mean, sd = _spread(control)
        verdict = judge(float(eff.base[0]) - acc, control)
        parts.append(
            f"Ablating it moves zero-shot accuracy from {eff.base[0]:.3f} to **{acc:.3f}**"
            f" (random directions: {100 * mean:+.1f} ± {100 * sd:.1f} pts lost): **{verdict}**."
        )
    else:
        parts.append("No class labels: zero-shot accuracy cannot be measured.")
    top = float(eff.top_changed[feature, 0])
    if np.isfinite(top):
        mean, _ = _spread(eff.top_changed_control[feature, 0])
        verdict = judge(top, eff.top_changed_control[feature, 0])
        parts.append(
            f"The top caption of **{top:.0%}** of images changes (random directions:"
            f" {mean:.0%}): **{verdict}**."
        )
    return " ".join(parts)


TEXT_NOTE = (
    "Image-text run: the edited image embedding is compared with the unchanged text embeddings"
    " (the class prompts; the distinct evaluation captions, for a fixed sample of evaluation"
    " images: R@k, its own caption among the k most similar), by the similarity the run was"
    " trained with; captions are measured against 4 of the 8 random directions."
)
