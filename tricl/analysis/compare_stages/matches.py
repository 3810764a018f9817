"""``matches.csv(.json)``: for each feature of the first run, its Hungarian match in every other
run (by |corr|)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tricl.analysis.compare_stages import CompareJob, register_compare_stage
from tricl.analysis.identifiability import hungarian_match
from tricl.analysis.stages import Output, Stage, need_columns

MATCH_COLUMNS = [
    "rank_a",
    "feature_a",
    "run_b",
    "rank_b",
    "feature_b",
    "corr",
    "abs_corr",
    "sign",
]


def _compute_matches(job: CompareJob, inputs: dict[str, Any]) -> Output:
    corr, orders = inputs["corr"]
    names, rows = job.names, []
    for j in range(1, len(job.runs)):
        m = hungarian_match(corr[(0, j)])
        for ra, rb, c in zip(m.rows, m.cols, m.corr):
            ra, rb, c = int(ra), int(rb), float(c)
            sign = 1 if c >= 0 else -1
            rows.append((ra, int(orders[0][ra]), names[j], rb, int(orders[j][rb]), c, abs(c), sign))
    return Output(pd.DataFrame(rows, columns=MATCH_COLUMNS))


def _load_matches(table: pd.DataFrame, meta: dict[str, Any], job: CompareJob) -> pd.DataFrame:
    need_columns(table, MATCH_COLUMNS)
    return table


register_compare_stage(
    Stage("matches", "matches.csv", _compute_matches, _load_matches, needs=("corr",)),
    required=True,
)
