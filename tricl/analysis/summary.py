"""A run's analysis in brief: what a table of runs shows, read without the feature arrays.

:func:`load_summary` checks the same freshness as :func:`~tricl.analysis.pipeline.load_analysis`
(every artifact it builds on belongs to the current weights and stage versions) but reads only the
importance scores, the few-feature curves and the metas: the features' arrays (most of an
analysis' bytes) are checked from their meta alone. The Runs page reads one per run, and a stored
comparison's freshness is checked against them (:func:`~tricl.analysis.comparison.load_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tricl.analysis.importance import Importance
from tricl.analysis.pipeline import (
    Analysis,
    Headline,
    _Request,
    get_basis,
    load_analysis,
    load_run,
)
from tricl.runs import Run


@dataclass(frozen=True, eq=False)
class AnalysisSummary(Headline):
    """The headline numbers of a stored analysis (``linear_acc``, ``knn_acc``, ``curves()`` as
    :class:`~tricl.analysis.pipeline.Analysis` gives them).

    Attributes:
        run_name: the run folder's name.
        weights_hash: hash of ``model.safetensors`` the analysis was computed from.
        dataset: dataset spec of the evaluation images.
        images_hash: hash of the evaluation images and labels.
        importance: importance scores and orders, with the default named.
        downstream: few-feature curves (see :meth:`curves`).
        full: full-feature metrics (``linear_acc``, ``knn_acc``, ``backbone_linear_acc``, ...).
    """

    run_name: str
    weights_hash: str
    dataset: str
    images_hash: str
    importance: Importance
    downstream: pd.DataFrame
    full: dict[str, float]

    @classmethod
    def of(cls, analysis: Analysis) -> AnalysisSummary:
        """The summary of an analysis already read."""
        f = analysis.features
        return cls(
            analysis.run_name,
            analysis.weights_hash,
            f.dataset,
            f.images_hash,
            analysis.importance,
            analysis.downstream,
            analysis.full,
        )

    @property
    def k(self) -> int:
        return len(self.importance.scores[self.importance.default])


# what a summary reads in full; the features (and whatever else they need) by their meta only
_SUMMARY_STAGES = ("importance", "downstream")


def load_summary(
    run: Run | str | Path, *, split: str = "test", basis: str = "trained"
) -> AnalysisSummary | None:
    """The summary of a run's stored analysis, or None if an artifact it reads or builds on is
    missing, corrupt or stale.

    Never computes and never raises for a bad cache file. In the trained basis the feature arrays
    are not read; the spectral analysis builds on the whole trained one, so it is read whole.

    Raises:
        AnalysisError: a broken run, an unknown split or an unknown basis.
    """
    view = get_basis(basis)
    if view.shared:  # a basis built on the trained analysis: read it whole
        found = load_analysis(run, split=split, basis=basis)
        return None if found is None else AnalysisSummary.of(found)
    req = _Request(load_run(run), basis, split)
    got = view.family.read(req, _SUMMARY_STAGES, check_params=False, meta_only=("features",))
    if got is None:
        return None
    target, res = got
    features: dict[str, Any] = res.metas["features"]
    return AnalysisSummary(
        run_name=target.ctx.run.name,
        weights_hash=features["key"]["weights_hash"],
        dataset=features["key"]["dataset"],
        images_hash=str(features["images_hash"]),
        importance=res.values["importance"],
        downstream=res.values["downstream"],
        full={**features["backbone"], **res.metas["downstream"]["full"]},
    )
