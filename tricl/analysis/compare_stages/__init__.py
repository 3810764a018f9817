"""The comparison's stages over a set of runs, declared one module each (like the per-split
stages of :mod:`tricl.analysis.split_stages`).

This package holds their registry, :data:`COMPARE_STAGES`, the context every stage computes from
(:class:`CompareJob`: the runs, their analyses) and the stage the others build on, ``corr``: the
signed correlations between the runs' ordered features. Every module of the package registers its
stage with :func:`register_compare_stage`, and the package imports them all, so a new comparison
stage is its module and its test: :func:`tricl.analysis.comparison.compare` computes every
registered stage (:func:`compared_stages`; those registered ``on_its_own``, e.g. the consensus, are
asked for by their own entry point) and ``Comparison.values[name]`` holds each value. A stage
registered without ``required`` is optional on the read path, so registering one leaves every
stored comparison readable until ``tricl compare`` computes the new artifact (only it).
A stage that needs another module's stage imports that module first.
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from tricl.analysis.identifiability import corr_matrix
from tricl.analysis.pipeline import Analysis, feature_order
from tricl.analysis.stages import Output, Stage, need_arrays, register_stage
from tricl.runs import Run


@dataclass(frozen=True)
class CompareJob:
    """The comparison stages' context: the runs, their analyses and whether to score spectrally.

    Attributes:
        runs: the runs, in the order given.
        analyses: each run's analysis in the comparison's basis (empty where only stored tables
            are read: :func:`tricl.analysis.comparison.load_pairs`).
        spectral: in the trained basis, also score the runs in their spectral bases.
    """

    runs: list[Run]
    analyses: list[Analysis]
    spectral: bool

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def ordered(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each run's default order and its evaluation features in that order: (N, k_i) each."""
        orders = [feature_order(a) for a in self.analyses]
        return orders, [a.features.z[:, o] for a, o in zip(self.analyses, orders)]

    def pairs(self) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(len(self.runs)), 2))


# The comparison's stages, in ``<root>/_compare/<id>/``.
COMPARE_STAGES: dict[str, Stage] = {}
_REQUIRED: list[str] = []  # read by every load of a comparison (its typed fields)
_ON_ITS_OWN: set[str] = set()  # left out of compare(): asked for by their own entry point


def register_compare_stage(
    stage: Stage, *, required: bool = False, on_its_own: bool = False
) -> Stage:
    """Registers a comparison stage (the modules of this package call it at import).

    Args:
        stage: the stage; its ``compute`` and ``load`` get a :class:`CompareJob`.
        required: every read of a comparison needs it (a typed field of
            :class:`~tricl.analysis.comparison.Comparison`); otherwise its value is in
            ``Comparison.values`` when stored and fresh, and a read without it still succeeds.
        on_its_own: ``compare`` does not compute it; an entry point of its own asks for it.
    """
    register_stage(COMPARE_STAGES, stage)
    if required:
        _REQUIRED.append(stage.name)
    if on_its_own:
        _ON_ITS_OWN.add(stage.name)
    return stage


def compared_stages() -> list[str]:
    """The stages ``compare`` computes: every registered one not asked for on its own."""
    return [n for n in COMPARE_STAGES if n not in _ON_ITS_OWN]


def required_stages() -> list[str]:
    """The stages every read of a comparison needs."""
    return list(_REQUIRED)


def optional_stages() -> list[str]:
    """The stages ``compare`` computes that a read takes when stored and fresh."""
    return [n for n in compared_stages() if n not in _REQUIRED]


CorrValue = tuple[dict[tuple[int, int], np.ndarray], list[np.ndarray]]


def _compute_corr(job: CompareJob, inputs: dict[str, Any]) -> Output:
    orders, ordered = job.ordered()
    arrays = {
        f"corr_{i}_{j}": corr_matrix(ordered[i], ordered[j]).astype(np.float32)
        for i, j in job.pairs()
    }
    arrays.update({f"order_{i}": o for i, o in enumerate(orders)})
    return Output(arrays)


def _load_corr(arrays: dict[str, np.ndarray], meta: dict[str, Any], job: CompareJob) -> CorrValue:
    n = len(job.runs)
    need_arrays(arrays, {f"order_{i}": 1 for i in range(n)})
    orders = [arrays[f"order_{i}"] for i in range(n)]
    corr = {(i, j): arrays[f"corr_{i}_{j}"] for i, j in job.pairs()}
    for (i, j), c in corr.items():
        if c.shape != (len(orders[i]), len(orders[j])):
            raise ValueError(f"corr_{i}_{j} has shape {c.shape}, not the runs' feature counts")
    return corr, orders


# corr.npz: ``corr_<i>_<j>``, the signed correlations between the ordered features of run i (rows)
# and run j (columns), and ``order_<i>``, each run's order (raw feature indices)
register_compare_stage(Stage("corr", "corr.npz", _compute_corr, _load_corr), required=True)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
