"""Analysis backend: turns run directories into the artifacts the dashboard draws.

Python API (the CLI's ``tricl analyze`` / ``tricl compare`` call the same functions)::

    from tricl.analysis import analyze, compare, feature_order, load_analysis

    a = analyze("checkpoints/tricl_mnist5k_small_cnn_k64_seed0")   # cached in RUN/analysis/test/
    s = analyze(run, basis="spectral")        # in RUN/analysis/test/spectral/; s.groups: unresolved
    a.importance.default, feature_order(a)[:8], a.linear_acc, a.curves()
    c = compare([run_seed0, run_seed1])                            # cached in checkpoints/_compare/
    c.pairs
    compare([run_seed0, run_seed1], basis="spectral").abs_corr(0, 1)[r, r]  # rank r vs rank r
    consensus([run_seed0, run_seed1, simclr_seed0]).table      # spectral ranks all runs share

Modules: :mod:`~tricl.analysis.stages` (a stage, a family of stages over a target, the runner),
:mod:`~tricl.analysis.store` (files, locking), :mod:`~tricl.analysis.image_stages` (the per-split
stages of a run), :mod:`~tricl.analysis.pipeline` (``analyze``, in each basis),
:mod:`~tricl.analysis.spectral` (spectral basis), :mod:`~tricl.analysis.comparison` (``compare``,
``consensus``), :mod:`~tricl.analysis.metrics` (the metrics registry, built on
:mod:`~tricl.analysis.identifiability`); what the stages compute with:
:mod:`~tricl.analysis.features` (z and h), :mod:`~tricl.analysis.importance` (orders),
:mod:`~tricl.analysis.activations` (top images, class statistics),
:mod:`~tricl.analysis.embedding` (UMAP), :mod:`~tricl.analysis.downstream` (probes, retrieval,
few-feature curves), :mod:`~tricl.analysis.saliency` (captum maps); image-text runs:
:mod:`~tricl.analysis.image_text` (the caption side; measures in
:mod:`~tricl.analysis.text_measures`), :mod:`~tricl.analysis.pair_basis`,
:mod:`~tricl.analysis.image_text_compare`, which reach the CLI as extra stage families
(:mod:`~tricl.analysis.extra_families`). The bases themselves are :mod:`tricl.bases`.

The artifact dataclasses hold NumPy arrays, so they are frozen but compare by identity
(``eq=False``): compare their fields with ``np.testing`` instead.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use, so ``tricl.analysis.AnalysisError`` or the pure NumPy modules
# (activations, identifiability) do not pull in torch, scikit-learn and umap.
_EXPORTS = {
    "STAGES": "pipeline",
    "BASES": "pipeline",
    "BASIS_VIEWS": "pipeline",
    "Analysis": "pipeline",
    "FeatureStats": "pipeline",
    "analyze": "pipeline",
    "feature_order": "pipeline",
    "load_analysis": "pipeline",
    "AnalysisError": "store",
    "Comparison": "comparison",
    "compare": "comparison",
    "load_comparison": "comparison",
    "Consensus": "comparison",
    "consensus": "comparison",
    "load_consensus": "comparison",
    "spectral_basis": "spectral",
    "load_spectral_basis": "spectral",
    "SpectralBasis": "spectral",
    "unresolved_groups": "spectral",
    "group_label": "spectral",
    "METRICS": "metrics",
    "Embedding": "embedding",
    "Features": "features",
    "Importance": "importance",
    "TopImages": "activations",
}
__all__ = [
    "BASES",
    "BASIS_VIEWS",
    "METRICS",
    "STAGES",
    "Analysis",
    "AnalysisError",
    "Comparison",
    "Consensus",
    "Embedding",
    "FeatureStats",
    "Features",
    "Importance",
    "SpectralBasis",
    "TopImages",
    "analyze",
    "compare",
    "consensus",
    "feature_order",
    "group_label",
    "load_analysis",
    "load_comparison",
    "load_consensus",
    "load_spectral_basis",
    "spectral_basis",
    "unresolved_groups",
]

if TYPE_CHECKING:
    from tricl.analysis.activations import TopImages
    from tricl.analysis.comparison import (
        Comparison,
        Consensus,
        compare,
        consensus,
        load_comparison,
        load_consensus,
    )
    from tricl.analysis.embedding import Embedding
    from tricl.analysis.features import Features
    from tricl.analysis.importance import Importance
    from tricl.analysis.metrics import METRICS
    from tricl.analysis.pipeline import (
        BASES,
        BASIS_VIEWS,
        STAGES,
        Analysis,
        FeatureStats,
        analyze,
        feature_order,
        load_analysis,
    )
    from tricl.analysis.spectral import (
        SpectralBasis,
        group_label,
        load_spectral_basis,
        spectral_basis,
        unresolved_groups,
    )
    from tricl.analysis.store import AnalysisError


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tricl.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tricl.analysis.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
