"""Shared pieces of the experiments: train seeds of a variant, score identifiability on images.

Tuning never looks at the evaluation images: :func:`validation_scores` uses features of the TRAIN
split only (a probe fitted on 3/4 of it and scored on the remaining 1/4).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tricl.analysis.downstream import linear_probe
from tricl.analysis.features import extract
from tricl.analysis.importance import default_scores, order_from_scores
from tricl.analysis.metrics import METRICS, score_pair
from tricl.config import RunConfig
from tricl.runs import WEIGHTS_FILE, Run, RunError
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


def same_recipe(path: Path, cfg: RunConfig) -> bool:
    """Whether ``path`` holds a run of recipe ``cfg`` (any device; epochs done or not)."""
    try:
        found = RunConfig.from_dict(json.loads((path / "config.json").read_text())["config"])
    except (OSError, KeyError, ValueError):
        return False
    return found.replace(device=cfg.device) == cfg


def finished(path: Path, cfg: RunConfig) -> bool:
    """Whether ``path`` is a run of recipe ``cfg`` with all its epochs done (one killed before
    its first epoch ended has no weights yet: unfinished, and resumed from the start)."""
    if not same_recipe(path, cfg) or not (path / WEIGHTS_FILE).is_file():
        return False
    return Run.load(path).epochs_done >= cfg.epochs


def _plan(
    variant: Variant, seed: int, root: Path, reuse: Path | None, base: dict[str, Any]
) -> tuple[RunConfig, Path, Path | None]:
    """The run of ``variant`` with ``seed``: ``(config, its folder under root, a finished run of
    the same recipe under reuse or None)``.

    Raises:
        RunError: ``root`` holds a run of that name with another recipe (resuming it would
            silently continue the other recipe).
    """
    cfg = variant.config(seed, **base)
    path = root / default_run_name(cfg)
    shared = reuse / default_run_name(cfg) if reuse is not None else None
    if shared is not None and finished(shared, cfg):
        return cfg, path, shared
    if (path / "config.json").exists() and not same_recipe(path, cfg):
        raise RunError(
            f"{path} holds a run of another recipe (a different epoch count, precision or"
            " setting); give this study its own --runs-root, or move that run away"
        )
    return cfg, path, None


def _worker_init(threads: int, parent: int) -> None:
    """Each worker process: its share of the cores, no progress bars (several would garble one
    terminal), and it dies with its parent (pid ``parent``)."""
    import torch

    from tricl.data import set_progress

    _die_with_parent(parent)
    torch.set_num_threads(threads)
    set_progress(False)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends this process SIGTERM when its parent dies.

    A pool's workers otherwise outlive a killed study (SIGTERM or SIGKILL to the study process
    alone) and go on training; the run's training lock then refuses the restarted study's
    workers. A parent already gone before the request counts as dead.
    """
    import ctypes
    import os
    import signal

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def _train_one(cfg: RunConfig, path: Path) -> Path:
    """A worker's job: train (or resume) one run."""
    if (path / "config.json").exists():
        train(resume=path, progress=False)
    else:
        train(cfg, runs_root=path.parent, progress=False)
    return path


def _analyze_one(path: Path) -> Path:
    """A worker's job: a run's analyses in the trained and the spectral basis (cached in the run,
    so the study's own calls read them)."""
    from tricl.analysis import analyze

    analyze(path, progress=False)
    analyze(path, basis="spectral", progress=False)
    return path


@contextlib.contextmanager
def _blank_main() -> Iterator[None]:
    """While workers start, ``__main__`` is an empty module.

    A spawned worker first re-runs its parent's ``__main__`` file, whatever it is (a script, or
    a Streamlit page that Streamlit's test harness left there). The workers' jobs live in this
    module, so they need none of it."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def train_in_parallel(
    jobs: list[tuple[Variant, int]],
    root: Path,
    workers: int,
    reuse: Path | None = None,
    analyze: bool = False,
    **base: Any,
) -> list[Path]:
    """Train the unfinished runs of ``jobs`` ((variant, seed) pairs) in ``workers`` processes.

    Each process gets ``cpu_count // workers`` threads: on a small CPU, separate runs side by side
    use the cores better than one run's threads do. A finished run (here or under ``reuse``) is
    skipped and a killed one resumed, as in :func:`train_seeds`, which afterwards finds every run
    finished. A run's weights depend on its thread count only through float summation order.
    With ``analyze``, each run's analyses (trained and spectral basis) are computed too, in the
    same processes, as soon as its training is done.

    Returns:
        The folders trained or resumed here, in the order they finished.
    """
    import concurrent.futures
    import multiprocessing
    import os

    todo, ready = [], []
    for variant, seed in jobs:
        cfg, path, shared = _plan(variant, seed, root, reuse, base)
        if shared is not None or finished(path, cfg):
            ready.append(shared or path)
        else:
            todo.append((cfg, path))
    # the cores this process may use (a container's share), not the host's count
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // workers)
    trained: list[Path] = []
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(threads, os.getpid())
    )
    with _blank_main(), pool:
        trains = {pool.submit(_train_one, cfg, path) for cfg, path in todo}
        pending = set(trains)
        if analyze:
            pending |= {pool.submit(_analyze_one, path) for path in ready}
        try:
            while pending:
                done, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    path = future.result()
                    if future in trains:
                        trained.append(path)
                        print(f"trained {path.name} ({len(trained)}/{len(todo)})", flush=True)
                        if analyze:
                            pending.add(pool.submit(_analyze_one, path))
        except BaseException:  # a failed run (or Ctrl-C) stops the queue; the rest resume later
            for future in pending:
                future.cancel()
            raise
    return trained


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
        cfg, path, shared = _plan(variant, seed, root, reuse, base)
        if shared is not None:
            runs.append(Run.load(shared))
        elif finished(path, cfg):  # as it is: resuming would only load the dataset again
            runs.append(Run.load(path))
        elif (path / "config.json").exists():
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
