"""Shared pieces of the experiments: train seeds of a variant, score identifiability on images.

Tuning never looks at the evaluation images: :func:`validation_scores` uses features of the TRAIN
split only (a probe fitted on 3/4 of it and scored on the remaining 1/4).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tricl.analysis.downstream import linear_probe
from tricl.analysis.features import extract
from tricl.analysis.importance import default_scores, order_from_scores
from tricl.analysis.metrics import METRICS, score_pair
from tricl.config import RunConfig
from tricl.runs import Run, RunError
from tricl.train import default_run_name, train


@dataclass(frozen=True)
class Variant:
    """A named training recipe; ``changes`` override :class:`RunConfig` defaults."""

    name: str
    changes: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def config(self, seed: int, **base: Any) -> RunConfig:
        """The run of this variant with ``seed``; a plain method keeps the default run name."""
        cfg = RunConfig(**{**base, **self.changes, "seed": seed})
        if set(self.changes) <= {"method"} and self.name == cfg.method:
            return cfg
        return cfg.replace(name=default_run_name(cfg).replace(cfg.method, self.name, 1))


def _same_recipe(path: Path, cfg: RunConfig) -> bool:
    try:
        found = RunConfig.from_dict(json.loads((path / "config.json").read_text())["config"])
    except (OSError, KeyError, ValueError):
        return False
    return found.replace(device=cfg.device) == cfg


def train_seeds(
    variant: Variant,
    seeds: list[int],
    root: Path,
    progress: bool = False,
    reuse: Path | None = None,
    **base: Any,
) -> list[Run]:
    """Train (or resume) one run per seed under ``root``.

    A finished run with the same recipe under ``reuse`` (e.g. the shipped ``checkpoints/``) is
    used as it is instead of being trained again.
    """
    runs = []
    for seed in seeds:
        cfg = variant.config(seed, **base)
        path = root / default_run_name(cfg)
        shared = reuse / default_run_name(cfg) if reuse is not None else None
        if shared is not None and _same_recipe(shared, cfg):
            run = Run.load(shared)
            if run.epochs_done >= cfg.epochs:
                runs.append(run)
                continue
        if (path / "config.json").exists():
            if not _same_recipe(path, cfg):
                raise RunError(
                    f"{path} holds a run of another recipe (a different epoch count, precision or"
                    " setting); give this study its own --runs-root, or move that run away"
                )
            runs.append(train(resume=path, progress=progress))
        else:
            runs.append(train(cfg, runs_root=root, progress=progress))
    return runs


def importance_order(run: Run, z: np.ndarray) -> np.ndarray:
    """The run's default feature order, most important first: its method's order (S, index or
    variance).

    The analysis's definitions (:mod:`tricl.analysis.importance`): S is ``Encoder.importance()``,
    variance that of the L2-normalised features, index the features' own positions.

    Args:
        run: the trained run.
        z: its features on the train split. Shape: (N, k).

    Returns:
        Feature indices. Shape: (k,).
    """
    s = run.encoder().importance()
    s_np = None if s is None else s.detach().numpy()
    return order_from_scores(default_scores(run.config.method, z, s_np))


def probe_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation probe's rows of a train split of ``n``: ``(fit, held)``, 3/4 and 1/4.

    A fixed shuffle (seed 0) so that both parts mix classes. Shapes: (3n/4,), (n - 3n/4,).
    """
    perm = np.random.RandomState(0).permutation(n)
    return perm[: n * 3 // 4], perm[n * 3 // 4 :]


def _probe_accuracies(
    zs: list[np.ndarray], ordered: list[np.ndarray], y: np.ndarray, top: int
) -> dict[str, float]:
    """Mean linear-probe accuracy on the top features and on all, fitted on 3/4 of the rows.

    Args:
        zs: each run's features. Shape: (N, k) each.
        ordered: the same, columns in the run's importance order. Shape: (N, k) each.
        y: labels. Shape: (N,).
        top: features the top-k probe keeps.
    """
    fit, held = probe_split(len(y))

    def accuracy(z: np.ndarray) -> float:
        return linear_probe(z[fit], y[fit], z[held], y[held]).accuracy

    return {
        f"top{top}_acc": float(np.mean([accuracy(z[:, :top]) for z in ordered])),
        "full_acc": float(np.mean([accuracy(z) for z in zs])),
    }


def validation_scores(runs: list[Run], top: int = 8) -> dict[str, float]:
    """Identifiability across seed pairs and probe accuracy, on the TRAIN split only.

    Args:
        runs: runs of one recipe that differ only in seed (at least two).
        top: features the top-k probe keeps.

    Returns:
        The mean over seed pairs of every metric of :data:`tricl.analysis.metrics.METRICS` (its
        names as keys), ``top{top}_acc`` and ``full_acc`` (mean probe accuracy over the runs) and,
        for runs with S, ``s_max_over_min`` (mean spread of S).
    """
    data = runs[0].load_data()
    zs = [extract(r.encoder(), data.train_x, data.preprocess)[0] for r in runs]  # (N, k) each
    ordered = [z[:, importance_order(r, z)] for r, z in zip(runs, zs)]
    pairs = [score_pair(a, b)[0] for a, b in itertools.combinations(ordered, 2)]
    out = {name: float(np.mean([p[name] for p in pairs])) for name in METRICS}
    out |= _probe_accuracies(zs, ordered, data.train_y.numpy(), top)
    spreads = [s.max() / s.min() for s in (r.encoder().importance() for r in runs) if s is not None]
    if spreads:
        out["s_max_over_min"] = float(np.mean([float(v.detach()) for v in spreads]))
    return out
