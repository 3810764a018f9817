"""``compare(runs)``: identifiability between every pair of runs, cached under ``_compare/``.

Each run's features are taken from its analysis (computed if missing) in the run's default
importance order, so "feature #i" means the same thing as on the run's own pages. Runs must have
been evaluated on the same images (same dataset, split, image size and order), which the features'
image hash checks.

Files in ``<out_root>/<id>/`` where ``id`` hashes the runs' names and weights:

- ``pairs.csv(.json)``: one row per ordered pair (a before b in the given order) with
  ``run_a, run_b, ordered_corr, ordered_corr_top8, mcc, cka, rank_match_top8``, and with
  ``spectral=True`` the top-8 ordered |corr|, top-8 rank match and MCC of the two runs' features
  in their spectral bases (``spectral_corr_top8, spectral_rank_match_top8, spectral_mcc``);
- ``corr.npz``: ``corr_<i>_<j>``, the signed correlation matrix between the ordered features of run
  i (rows) and run j (columns), and ``order_<i>``, each run's order (raw feature indices);
- ``matches.csv(.json)``: for each feature of the first run, its Hungarian match in every other run.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis.identifiability import hungarian_match, pair_scores
from tricl.analysis.pipeline import Analysis, analyze, feature_order, load_analysis, load_run
from tricl.analysis.store import (
    FORMAT_VERSION,
    AnalysisError,
    load_npz,
    load_table,
    locked,
    normalise_meta,
    save_npz,
    save_table,
    to_json,
)
from tricl.runs import Run, default_runs_root

PAIR_COLUMNS = [
    "run_a",
    "run_b",
    "ordered_corr",
    "ordered_corr_top8",
    "mcc",
    "cka",
    "rank_match_top8",
]
# The same pair scores after rotating each run onto its spectral basis (tricl.analysis.spectral):
# the order the augmentation graph's eigenvalues give, estimated on train pairs.
SPECTRAL_COLUMNS = ["spectral_corr_top8", "spectral_rank_match_top8", "spectral_mcc"]
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


@dataclass(frozen=True, eq=False)
class Comparison:
    """Identifiability between runs.

    Attributes:
        runs: run names, in the order given.
        weights_hashes: each run's weights hash.
        split: evaluation split the features come from.
        pairs: one row per pair i < j, columns :data:`PAIR_COLUMNS`.
        corr: ``(i, j)`` -> signed correlations between run i's features (rows) and run j's
            (columns), both in their own importance order. Shape: (k_i, k_j).
        orders: each run's importance order (raw feature indices, most important first).
            Shape: (k_i,) each.
        matches: for every feature of the first run (``rank_a``: position in its order), the matched
            feature in each other run (``rank_b``, raw ``feature_b``), with the signed ``corr``,
            ``abs_corr`` and ``sign``; columns :data:`MATCH_COLUMNS`.
        path: folder the artifacts live in.
        recomputed: whether this call computed them (False: read from the cache).
    """

    runs: list[str]
    weights_hashes: list[str]
    split: str
    pairs: pd.DataFrame
    corr: dict[tuple[int, int], np.ndarray]
    orders: list[np.ndarray]
    matches: pd.DataFrame
    path: Path
    recomputed: bool = False
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def abs_corr(self, i: int, j: int) -> np.ndarray:
        """|corr| between the ordered features of run i (rows) and run j. Shape: (k_i, k_j)."""
        if (i, j) in self.corr:
            return np.abs(self.corr[(i, j)])
        return np.abs(self.corr[(j, i)]).T


SPECTRAL_PARAMS = {"reps": 4, "seed": 0}


def _spectral_scores(runs: list[Run], analyses: list[Analysis]) -> pd.DataFrame:
    """Pair scores of the runs' evaluation features in their spectral bases, one row per pair."""
    from tricl.analysis.spectral import spectral_basis

    rotated = [
        spectral_basis(r, **SPECTRAL_PARAMS).project(a.features.z) for r, a in zip(runs, analyses)
    ]
    rows = []
    for i, j in itertools.combinations(range(len(runs)), 2):
        scores, _ = pair_scores(rotated[i], rotated[j])
        rows.append((scores.ordered_corr_top8, scores.rank_match_top8, scores.mcc))
    return pd.DataFrame(rows, columns=SPECTRAL_COLUMNS)


def _check_same_images(analyses: list[Analysis]) -> None:
    first = analyses[0]
    for other in analyses[1:]:
        fa, fb = first.features, other.features
        if fa.images_hash != fb.images_hash or len(fa.labels) != len(fb.labels):
            raise AnalysisError(
                f"{first.run_name} and {other.run_name} were evaluated on different images"
                f" ({fa.dataset}/{fa.split}, {len(fa.labels)} images vs {fb.dataset}/{fb.split},"
                f" {len(fb.labels)} images); compare runs of the same dataset and image size"
            )


def _default_out_root(runs: list[Run]) -> Path:
    """``<parent>/_compare`` when all runs share a parent folder, else ``<runs root>/_compare``."""
    parents = {r.path.resolve().parent for r in runs}
    return (parents.pop() if len(parents) == 1 else default_runs_root()) / "_compare"


def _compare_id(names: list[str], hashes: list[str], split: str) -> str:
    text = to_json({"runs": names, "hashes": hashes, "split": split})
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _read(folder: Path, meta: dict[str, Any]) -> Comparison | None:
    pairs = load_table(folder / "pairs.csv")
    matches = load_table(folder / "matches.csv")
    arrays = load_npz(folder / "corr.npz")
    if pairs is None or matches is None or arrays is None:
        return None
    if not all(m == meta for m in (pairs[1], matches[1], arrays[1])):
        return None
    n = len(meta["runs"])
    return Comparison(
        runs=list(meta["runs"]),
        weights_hashes=list(meta["weights_hashes"]),
        split=meta["split"],
        pairs=pairs[0],
        corr={(i, j): arrays[0][f"corr_{i}_{j}"] for i, j in itertools.combinations(range(n), 2)},
        orders=[arrays[0][f"order_{i}"] for i in range(n)],
        matches=matches[0],
        path=folder,
        meta=meta,
    )


def _prepare(
    runs: Sequence[Run | str | Path], split: str, spectral: bool, compute: bool, progress: bool
) -> tuple[list[Run], list[Analysis], dict[str, Any]] | None:
    """The runs, their analyses and the comparison's meta; None when an analysis is missing and
    ``compute`` is False."""
    loaded = [load_run(r) for r in runs]
    if len(loaded) < 2:
        raise AnalysisError("compare needs at least two runs, e.g. the same config with two seeds")
    names = [r.name for r in loaded]
    if len({r.path.resolve() for r in loaded}) < len(loaded):
        raise AnalysisError(f"a run is given twice ({', '.join(names)}); pass each run once")
    if len(set(names)) < len(names):
        raise AnalysisError(
            f"two runs share a folder name ({', '.join(names)}); rename one so results can be told"
            " apart"
        )
    # an existing analysis is used as it is (whatever its top_n); only missing ones are computed
    analyses = []
    for r in loaded:
        a = load_analysis(r, split=split)
        if a is None:
            if not compute:
                return None
            a = analyze(r, split=split, progress=progress)
        analyses.append(a)
    _check_same_images(analyses)
    meta = normalise_meta(
        {
            "runs": names,
            "weights_hashes": [a.weights_hash for a in analyses],
            "split": split,
            "format": FORMAT_VERSION,
            "orders": [a.importance.default for a in analyses],
            "spectral": SPECTRAL_PARAMS if spectral else None,
        }
    )
    return loaded, analyses, meta


def _folder(loaded: list[Run], meta: dict[str, Any], out_root: Path | None) -> Path:
    root = Path(out_root) if out_root is not None else _default_out_root(loaded)
    return root / _compare_id(meta["runs"], meta["weights_hashes"], meta["split"])


def load_comparison(
    runs: Sequence[Run | str | Path],
    *,
    split: str = "test",
    out_root: Path | None = None,
    spectral: bool = True,
) -> Comparison | None:
    """The cached comparison of ``runs``, or None if it (or a run's analysis) is not cached.

    Never computes anything (the dashboard's read path); arguments as in :func:`compare`.

    Raises:
        AnalysisError: fewer than two runs, a broken run, or runs evaluated on different images.
    """
    prepared = _prepare(runs, split, spectral, compute=False, progress=False)
    if prepared is None:
        return None
    loaded, _, meta = prepared
    return _read(_folder(loaded, meta, out_root), meta)


def compare(
    runs: Sequence[Run | str | Path],
    *,
    split: str = "test",
    out_root: Path | None = None,
    force: bool = False,
    progress: bool = True,
    spectral: bool = True,
) -> Comparison:
    """Identifiability between every pair of runs (ordered correlation, MCC, CKA, rank match).

    Args:
        runs: two or more runs (or their folders), e.g. one config trained with several seeds.
        split: evaluation split.
        out_root: where comparisons are stored; default ``_compare`` beside the runs (the runs'
            common parent, e.g. ``checkpoints/_compare``), else ``<runs root>/_compare``.
        force: recompute even if cached (the runs' analyses are reused if fresh).
        progress: progress bars for analyses that still need computing.
        spectral: also score the runs in their spectral bases (post hoc, see
            :mod:`tricl.analysis.spectral`; about 20 s per run on a CPU the first time, then
            cached with the run).

    Returns:
        The :class:`Comparison`.

    Raises:
        AnalysisError: fewer than two runs, a broken run, or runs evaluated on different images.
    """
    loaded, analyses, meta = _prepare(runs, split, spectral, compute=True, progress=progress)
    names, hashes = list(meta["runs"]), list(meta["weights_hashes"])
    folder = _folder(loaded, meta, out_root)
    if not force and (cached := _read(folder, meta)) is not None:
        return cached
    with locked(folder):
        if not force and (cached := _read(folder, meta)) is not None:
            return cached
        orders = [feature_order(a) for a in analyses]
        ordered = [a.features.z[:, o] for a, o in zip(analyses, orders)]  # (N, k_i) each
        rows, corr = [], {}
        for i, j in itertools.combinations(range(len(analyses)), 2):
            scores, c = pair_scores(ordered[i], ordered[j])
            corr[(i, j)] = c.astype(np.float32)
            rows.append((names[i], names[j], *vars(scores).values()))
        pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS)
        if spectral:
            pairs = pairs.join(_spectral_scores(loaded, analyses))
        match_rows = []
        for j in range(1, len(analyses)):
            m = hungarian_match(corr[(0, j)])
            for ra, rb, c in zip(m.rows, m.cols, m.corr):
                match_rows.append(
                    (
                        int(ra),
                        int(orders[0][ra]),
                        names[j],
                        int(rb),
                        int(orders[j][rb]),
                        float(c),
                        abs(float(c)),
                        1 if c >= 0 else -1,
                    )
                )
        matches = pd.DataFrame(match_rows, columns=MATCH_COLUMNS)
        arrays = {f"corr_{i}_{j}": c for (i, j), c in corr.items()}
        arrays.update({f"order_{i}": o for i, o in enumerate(orders)})
        save_npz(folder / "corr.npz", arrays, meta)
        save_table(folder / "pairs.csv", pairs, meta)
        save_table(folder / "matches.csv", matches, meta)
    return Comparison(
        runs=names,
        weights_hashes=hashes,
        split=split,
        pairs=pairs,
        corr=corr,
        orders=orders,
        matches=matches,
        path=folder,
        recomputed=True,
        meta=meta,
    )
