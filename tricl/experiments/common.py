"""Shared pieces of the experiments: train seeds of a variant, score identifiability on images.

Tuning never looks at the evaluation images: :func:`validation_scores` uses features of the TRAIN
split only (a probe fitted on 3/4 of it and scored on the remaining 1/4).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tricl.analysis.downstream import linear_probe
from tricl.analysis.identifiability import pair_scores
from tricl.config import RunConfig
from tricl.runs import Run
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
            runs.append(train(resume=path, progress=progress))
        else:
            runs.append(train(cfg, runs_root=root, progress=progress))
    return runs


@torch.no_grad()
def encode(run: Run, x: torch.Tensor, preprocess, batch: int = 500) -> np.ndarray:
    """Projector outputs z of uint8 images ``x`` (N, C, H, W). Shape: (N, k)."""
    enc = run.encoder()
    out = [enc(preprocess(x[i : i + batch])) for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def importance_order(run: Run, z: np.ndarray) -> np.ndarray:
    """softplus(s) order for runs with S, variance order otherwise (most important first)."""
    s = run.encoder().importance()
    scores = s.detach().numpy() if s is not None else z.var(axis=0)
    return np.argsort(-scores, kind="stable")


def validation_scores(runs: list[Run], top: int = 8) -> dict[str, float]:
    """Identifiability across seed pairs and probe accuracy, on the train split only."""
    data = runs[0].load_data()
    x, y = data.train_x, data.train_y.numpy()
    zs = [encode(r, x, data.preprocess) for r in runs]
    ordered = [z[:, importance_order(r, z)] for r, z in zip(runs, zs)]
    pairs = [pair_scores(a, b)[0] for a, b in itertools.combinations(ordered, 2)]
    perm = np.random.RandomState(0).permutation(len(y))  # a probe split that mixes classes
    zs, y = [z[perm] for z in zs], y[perm]
    ordered = [z[perm] for z in ordered]
    n_fit = len(y) * 3 // 4
    top_acc = [
        linear_probe(z[:n_fit, :top], y[:n_fit], z[n_fit:, :top], y[n_fit:]).accuracy
        for z in ordered
    ]
    full_acc = [linear_probe(z[:n_fit], y[:n_fit], z[n_fit:], y[n_fit:]).accuracy for z in zs]
    s_spread = []
    for r in runs:
        s = r.encoder().importance()
        if s is not None:
            s_spread.append(float((s.max() / s.min()).detach()))
    out = {
        "ordered_corr_top8": float(np.mean([p.ordered_corr_top8 for p in pairs])),
        "ordered_corr": float(np.mean([p.ordered_corr for p in pairs])),
        "mcc": float(np.mean([p.mcc for p in pairs])),
        "cka": float(np.mean([p.cka for p in pairs])),
        "rank_match_top8": float(np.mean([p.rank_match_top8 for p in pairs])),
        "top8_acc": float(np.mean(top_acc)),
        "full_acc": float(np.mean(full_acc)),
    }
    if s_spread:
        out["s_max_over_min"] = float(np.mean(s_spread))
    return out


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
