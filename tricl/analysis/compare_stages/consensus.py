"""``consensus.csv(.json)``, with the spectral comparison of a set of runs: per spectral rank, the
agreement over every pair of runs and a representative run's eigenvalue and top images. Asked for
on its own (:func:`tricl.analysis.comparison.consensus`), not by ``compare``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis.compare_stages import CompareJob, register_compare_stage
from tricl.analysis.stages import Output, Stage, need_columns

CONSENSUS_COLUMNS = [
    "rank",
    "mean_abs_corr",
    "min_abs_corr",
    "eigenvalue",
    "representative",
    "top_indices",
    "unresolved_runs",
]


def _rank_agreement(corr: dict[tuple[int, int], np.ndarray], n: int, ranks: int) -> np.ndarray:
    """|corr| of rank r of run i with rank r of run j, symmetric, 0 on the diagonal.

    Shape: (n, n, ranks).
    """
    agree = np.zeros((n, n, ranks))
    for (i, j), c in corr.items():
        agree[i, j] = agree[j, i] = np.abs(np.diagonal(c)[:ranks])
    return agree


def _compute_consensus(job: CompareJob, inputs: dict[str, Any]) -> Output:
    corr, _ = inputs["corr"]
    n = len(job.runs)
    ranks = min(a.k for a in job.analyses)
    agree = _rank_agreement(corr, n, ranks)  # (n, n, ranks)
    pairs = np.stack([agree[i, j] for i, j in job.pairs()])  # (n_pairs, ranks)
    # the representative of rank r agrees best, on average, with every other run's rank r
    rep = (agree.sum(axis=1) / (n - 1)).argmax(axis=0)  # (ranks,)
    rows = []
    for r in range(ranks):
        a = job.analyses[rep[r]]
        unresolved = sum(any(lo <= r <= hi for lo, hi in b.groups) for b in job.analyses)
        rows.append(
            (
                r + 1,
                float(pairs[:, r].mean()),
                float(pairs[:, r].min()),
                float(a.importance.scores["eigenvalue"][r]),
                a.run_name,
                " ".join(str(int(i)) for i in a.top_images.top_indices[r]),
                unresolved,
            )
        )
    return Output(pd.DataFrame(rows, columns=CONSENSUS_COLUMNS))


def _load_consensus(table: pd.DataFrame, meta: dict[str, Any], job: CompareJob) -> pd.DataFrame:
    need_columns(table, CONSENSUS_COLUMNS)
    if list(table["rank"]) != list(range(1, len(table) + 1)):
        raise ValueError("the consensus ranks are not 1..r")
    table = table.copy()
    # stored as space-separated text so the CSV stays flat; read back as lists of dataset indices
    table["top_indices"] = [[int(i) for i in str(t).split()] for t in table["top_indices"]]
    return table


register_compare_stage(
    Stage(
        "consensus",
        "consensus.csv",
        _compute_consensus,
        _load_consensus,
        needs=("corr",),
        params=lambda job: {"representative": "highest mean |corr| of rank r with the others"},
    ),
    on_its_own=True,
)
