"""The Runs page's numbers, kept on disk between server starts (the first page of a fresh server).

What the Runs page draws from the runs' analyses is small: per run a few accuracies, its
importance order and sorted scores, its zero-shot metrics, and one line about the identifiable
seed groups. Reading them (every run's analysis summary, zero-shot metrics and its seed groups'
comparison pair tables) costs a fresh server about 0.3 CPU s for the 15 shipped runs.
:func:`cached` reads them back from one small JSON file instead, if nothing they were read from
has changed since: the stamp is every run's folder, weights, config and analysis files (their
modification times), the stored comparisons beside the runs, and the source files of ``tricl``
and of the app (a new version reads its artifacts afresh). :func:`store` writes it after a full
read that found every run analysed; a page with a run missing its analysis, or a broken one,
reads as before (its job panels and errors drawn) and stores nothing.

The file holds numbers only (JSON, never code): ``$TRICL_DASHBOARD_CACHE/runs_page.json``,
default ``~/.cache/tricl/dashboard``; the last :data:`MAX_ENTRIES` sets of runs are kept. A file
that cannot be read or written is passed over: the page reads the analyses as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import labels
import numpy as np
import readers

import tricl
from tricl.runs import Run, default_runs_root

FILE = "runs_page.json"
MAX_ENTRIES = 8
VERSION = 1
# a new version of the code reads the artifacts afresh (its stages may read them otherwise)
_SOURCES = (Path(__file__).resolve().parent, Path(tricl.__file__).resolve().parent)


@dataclass(frozen=True)
class RunBrief:
    """One run's numbers on the Runs page (``linear_acc``, ``knn_acc``, ``full`` and
    ``importance`` as an ``AnalysisSummary`` names them, for the page's helpers).

    Attributes:
        linear_acc: linear probe accuracy with every feature.
        knn_acc: k-NN accuracy with every feature.
        full: the full-feature metrics (``backbone_linear_acc``, ...).
        top8_acc: linear probe accuracy with the 8 most important features.
        order: the importance order the run is ranked by (``S``, ``variance``, ``ablation``).
        scores: its importance scores, largest first. Shape: (k,).
    """

    linear_acc: float
    knn_acc: float
    full: dict[str, float]
    top8_acc: float
    order: str
    scores: np.ndarray

    @property
    def importance(self) -> Any:
        return SimpleNamespace(default=self.order, scores={self.order: self.scores})

    @classmethod
    def of(cls, summary: Any) -> RunBrief:
        """The brief of an analysis summary (or analysis)."""
        order = summary.importance.default
        scores = np.sort(np.asarray(summary.importance.scores[order], dtype=float))[::-1]
        return cls(
            float(summary.linear_acc),
            float(summary.knn_acc),
            {k: float(v) for k, v in summary.full.items()},
            readers.top8_accuracy(summary),
            order,
            scores,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "linear_acc": self.linear_acc,
            "knn_acc": self.knn_acc,
            "full": self.full,
            "top8_acc": self.top8_acc,
            "order": self.order,
            "scores": self.scores.tolist(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunBrief:
        return cls(
            float(d["linear_acc"]),
            float(d["knn_acc"]),
            {str(k): float(v) for k, v in d["full"].items()},
            float(d["top8_acc"]),
            str(d["order"]),
            np.asarray(d["scores"], dtype=float),
        )


@dataclass(frozen=True)
class RunsPage:
    """What the Runs page draws from the runs' analyses.

    Attributes:
        briefs: each analysed run's numbers, by run name.
        texts: each image-text run's stored zero-shot metrics, by run name.
        identifiable: the seed groups' identifiability line ('' if none).
    """

    briefs: dict[str, RunBrief]
    texts: dict[str, dict[str, float]]
    identifiable: str


def cache_dir() -> Path:
    return Path(os.environ.get("TRICL_DASHBOARD_CACHE") or "~/.cache/tricl/dashboard").expanduser()


def _mtimes(files: Sequence[Path]) -> list[int]:
    out = []
    for f in files:
        try:
            out.append(f.stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return out


def _tree_stamp(folder: Path, pattern: str) -> list[Any]:
    """Names and modification times of the files under ``folder`` matching ``pattern``."""
    try:
        files = sorted(p for p in folder.rglob(pattern) if p.is_file())
    except OSError:
        return []
    return [[str(p.relative_to(folder)), t] for p, t in zip(files, _mtimes(files))]


def stamp(runs: Sequence[Run]) -> list[Any]:
    """What the page's numbers were read from: changes whenever one of them may have."""
    per_run = [
        [
            str(r.path),
            r.name,
            *_mtimes([r.path, r.path / "config.json", r.weights_path]),
            readers.analysis_stamp(r.path),
            readers.artifact_stamp(readers._analysis_folder(r.path) / "text"),
        ]
        for r in runs
    ]
    compares = sorted({str(Path(r.path).parent / "_compare") for r in runs})
    compares.append(str(default_runs_root() / "_compare"))
    return [
        VERSION,
        per_run,
        [[c, _tree_stamp(Path(c), "*")] for c in compares],
        [[str(s), _tree_stamp(s, "*.py")] for s in _SOURCES],
    ]


def _entry_key(runs: Sequence[Run]) -> str:
    return hashlib.sha256("\n".join(str(r.path) for r in runs).encode()).hexdigest()[:16]


def _read_file() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached(runs: Sequence[Run]) -> RunsPage | None:
    """The page's numbers stored for exactly these runs as they are now, else None."""
    entry = _read_file().get(_entry_key(runs))
    if not isinstance(entry, dict) or entry.get("stamp") != _jsonable(stamp(runs)):
        return None
    try:
        page = entry["page"]
        return RunsPage(
            {n: RunBrief.from_json(b) for n, b in page["briefs"].items()},
            {n: {str(k): float(v) for k, v in t.items()} for n, t in page["texts"].items()},
            str(page["identifiable"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def complete(runs: Sequence[Run], found: Mapping[str, Any], texts: Mapping[str, Any]) -> bool:
    """Every run analysed and every image-text run's caption side too (nothing to offer)."""
    return all(r.name in found for r in runs) and all(
        r.name in texts for r in runs if labels.has_text(r)
    )


def store(runs: Sequence[Run], page: RunsPage) -> None:
    """Keep the page's numbers for these runs (the oldest other entries dropped)."""
    data = _read_file()
    data.pop(_entry_key(runs), None)
    while len(data) >= MAX_ENTRIES:
        data.pop(next(iter(data)))
    data[_entry_key(runs)] = {
        "stamp": stamp(runs),
        "page": {
            "briefs": {n: b.to_json() for n, b in page.briefs.items()},
            "texts": page.texts,
            "identifiable": page.identifiable,
        },
    }
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
            json.dump(data, f)
        os.replace(f.name, folder / FILE)
    except OSError:  # a read-only home: the next start reads the analyses again
        if "f" in locals():
            Path(f.name).unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))
