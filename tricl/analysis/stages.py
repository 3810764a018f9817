"""Analysis stages: one declaration each, and the one mechanism that runs a family of them.

A :class:`Stage` declares its file, the stages it needs, its own version, its parameters and how it
computes and loads. A :class:`Family` is a set of stages over one kind of target: its registry (an
ordered ``dict``, each stage after its needs) and how a request becomes a :class:`Target` (folder,
key, context). ``family.run(request)`` computes what is missing, ``family.read(request)`` only
reads (the dashboard's path); every analysis entry point is one of these two calls. The families:

- :data:`tricl.analysis.image_stages.ANALYSIS_STAGES` (``pipeline.BASIS_VIEWS[b].family``): one
  run on one evaluation split, ``RUN/analysis/<split>/`` (features, importance, stats, top images,
  embedding, downstream), and the same stages in the spectral basis, ``.../spectral/``;
- :data:`tricl.analysis.spectral.SPECTRAL`: one run, ``RUN/analysis/`` (the spectral basis,
  estimated on the train split whatever the evaluation split);
- :data:`tricl.analysis.comparison.COMPARE`: a set of runs, ``<root>/_compare/<id>/``;
- image-text runs: :data:`tricl.analysis.image_text.TEXT` (a run's caption side),
  :data:`tricl.analysis.pair_basis.PAIR` (its pair basis) and
  :data:`tricl.analysis.image_text_compare.IMAGE_TEXT` (a set of runs); a kind of run's families
  reach ``tricl analyze`` / ``tricl compare`` through :mod:`tricl.analysis.extra_families`.

:func:`run_stages` resolves what a request needs (topological order), reads what is fresh and
computes the rest under the folder's lock; :func:`read_stages` only reads.
An artifact is fresh when its meta holds the target's key (weights hash, dataset, split...), the
stage's name and version, the versions of every stage it needs (directly or not) and, when asked,
the parameters. So bumping one stage's ``version`` recomputes that stage and its dependants only.
A file that cannot be read, or whose content does not have the declared type and shape (``load``
raises), counts as missing: it is a cache, so it is recomputed.

Adding a stage to a family is one ``register_stage`` next to its compute and load functions; the
family's results carry its value by name (``Analysis.values``, ``StageResults.values``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tricl.analysis.store import (
    AnalysisError,
    load_npz,
    load_npz_meta,
    load_table,
    locked,
    normalise_meta,
    save_npz,
    save_table,
)

# Artifacts written before stages had versions carry ``format: 2`` in their key: they are
# version 1 of their stage (see :func:`migrate`, the one place that knows about them).
LEGACY_FORMAT = 2
# What a stage's ``load`` raises on content of the wrong type or shape: the file is then corrupt.
CORRUPT = (KeyError, ValueError, TypeError, IndexError, AttributeError)

Payload = dict[str, np.ndarray] | pd.DataFrame


@dataclass(frozen=True)
class Output:
    """What a stage's ``compute`` returns.

    Attributes:
        payload: arrays for an ``.npz`` stage, a table for a ``.csv`` stage.
        meta: extra JSON-serialisable facts stored with it (read back by ``load``).
    """

    payload: Payload
    meta: dict[str, Any] = field(default_factory=dict)


def _no_params(ctx: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Stage:
    """One cached analysis step.

    Attributes:
        name: registry key; also the key of its value in :class:`StageResults`.
        file: artifact file name in the target's folder (``.npz``, or ``.csv`` with a JSON sidecar).
        compute: ``compute(ctx, inputs) -> Output``; ``inputs`` maps each name in ``needs`` to its
            loaded value.
        load: ``load(payload, meta, ctx) -> value``; raises one of :data:`CORRUPT` when the payload
            does not have the declared type or shape.
        needs: stages whose values ``compute`` reads.
        version: bump when the stage's content or meaning changes; recomputes it and its
            dependants.
        params: ``params(ctx) -> dict``, the settings the artifact depends on (stored and compared).
    """

    name: str
    file: str
    compute: Callable[[Any, dict[str, Any]], Output]
    load: Callable[[Payload, dict[str, Any], Any], Any]
    needs: tuple[str, ...] = ()
    version: int = 1
    params: Callable[[Any], dict[str, Any]] = _no_params

    @property
    def is_table(self) -> bool:
        return self.file.endswith(".csv")


def register_stage(registry: dict[str, Stage], stage: Stage) -> Stage:
    """Adds ``stage`` to ``registry``; the stages it needs must be registered first."""
    if stage.name in registry:
        raise ValueError(f"stage {stage.name!r} is registered twice; pick another name")
    missing = [n for n in stage.needs if n not in registry]
    if missing:
        raise ValueError(f"stage {stage.name!r} needs {missing}; register those first")
    registry[stage.name] = stage
    return stage


def ancestors(registry: dict[str, Stage], name: str) -> list[str]:
    """Every stage ``name`` needs, directly or not, in registry (= dependency) order."""
    seen: set[str] = set()
    todo = list(registry[name].needs)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(registry[n].needs)
    return [n for n in registry if n in seen]


def resolve(registry: dict[str, Stage], wanted: Iterable[str]) -> list[str]:
    """The wanted stages and everything they need, each after its needs."""
    wanted = list(wanted)
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise AnalysisError(f"unknown stage(s) {unknown}; known: {list(registry)}")
    keep = set(wanted).union(*(ancestors(registry, n) for n in wanted))
    return [n for n in registry if n in keep]  # registration order is a topological order


class Progress:
    """A tqdm bar over work units, drawn from the first unit of work on; or nothing."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled, self.desc, self.bar = enabled, desc, None

    def add(self, n: int) -> None:
        """Adds ``n`` units of work to do (the first call draws the bar)."""
        if self.enabled and self.bar is None:  # a cached analysis never draws a bar
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, desc=self.desc, unit="step", dynamic_ncols=True)
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def stage(self, name: str) -> None:
        """Names the stage being computed."""
        if self.bar is not None:
            self.bar.set_postfix_str(name)

    def tick(self) -> None:
        """One unit of work done."""
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(frozen=True)
class Target:
    """What a registry's stages are computed for.

    Attributes:
        folder: where the artifacts live (and the lock).
        key: what every artifact must have been computed for (weights hashes, dataset, split...).
        ctx: handed to each stage's ``params``, ``compute`` and ``load``.
        progress: the bar a family's ``run`` names each stage on and closes at the end (if any).
    """

    folder: Path
    key: dict[str, Any]
    ctx: Any
    progress: Progress | None = None


@dataclass(frozen=True)
class StageResults:
    """Values of the stages a request resolved to.

    Attributes:
        values: stage name -> loaded value.
        metas: stage name -> the artifact's meta (key, version, params, extra facts).
        recomputed: stages this call computed, in order (empty: all read from the cache).
        timings: seconds each recomputed stage took.
    """

    values: dict[str, Any]
    metas: dict[str, dict[str, Any]]
    recomputed: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)


def migrate(meta: dict[str, Any], registry: dict[str, Stage], name: str, target: Target) -> Any:
    """The meta in today's layout; artifacts of format 2 become version 1 of their stage.

    Format-2 files kept their key fields either under ``key`` (per-split stages) or at the top
    (spectral basis, comparison) and had no per-stage version: they read as version 1, needing
    version 1 of every stage before them, with the parameters they recorded (none: ``{}``).
    """
    if not isinstance(meta, dict) or "version" in meta:
        return meta
    old_key = meta.get("key", meta)
    if not isinstance(old_key, dict) or old_key.get("format") != LEGACY_FORMAT:
        return meta
    return {
        **meta,
        "key": {k: old_key[k] for k in target.key if k in old_key},
        "stage": meta.get("stage", name),
        "version": 1,
        "needs": {n: 1 for n in ancestors(registry, name)},
        "params": meta.get("params", {}),
    }


def _expected(registry: dict[str, Stage], name: str, target: Target) -> dict[str, Any]:
    stage = registry[name]
    return {
        "key": target.key,
        "stage": name,
        "version": stage.version,
        "needs": {n: registry[n].version for n in ancestors(registry, name)},
        "params": normalise_meta(stage.params(target.ctx)),
    }


def read_stage(
    registry: dict[str, Stage],
    name: str,
    target: Target,
    *,
    check_params: bool = True,
    meta_only: bool = False,
) -> tuple[Any, dict[str, Any]] | None:
    """``(value, meta)`` of a stage's artifact if present, fresh and well-formed, else None.

    With ``meta_only`` the value is None and only the meta is read and checked (an npz's arrays
    are not read): the stage is fresh, its value is not needed.
    """
    stage = registry[name]
    path = target.folder / stage.file
    if meta_only and not stage.is_table:
        raw = (None, meta) if (meta := load_npz_meta(path)) is not None else None
    else:
        raw = load_table(path) if stage.is_table else load_npz(path)
    if raw is None:
        return None
    payload, meta = raw
    meta = migrate(meta, registry, name, target)
    want = _expected(registry, name, target)
    if not isinstance(meta, dict):
        return None
    fields = ("key", "stage", "version", "needs", *(("params",) if check_params else ()))
    if any(meta.get(f) != want[f] for f in fields):
        return None
    if meta_only:
        return None, meta
    try:
        return stage.load(payload, meta, target.ctx), meta
    except CORRUPT:
        return None


def _read_all(
    registry: dict[str, Stage],
    names: list[str],
    target: Target,
    check_params: bool,
    meta_only: frozenset[str] = frozenset(),
) -> dict[str, tuple[Any, dict[str, Any]]]:
    out = {}
    for n in names:
        got = read_stage(registry, n, target, check_params=check_params, meta_only=n in meta_only)
        if got is not None:
            out[n] = got
    return out


def _compute(registry: dict[str, Stage], name: str, target: Target, got: dict) -> None:
    stage = registry[name]
    out = stage.compute(target.ctx, {n: got[n][0] for n in stage.needs})
    meta = {**_expected(registry, name, target), **out.meta}
    path = target.folder / stage.file
    if stage.is_table:
        save_table(path, out.payload, meta)
    else:
        save_npz(path, out.payload, meta)
    if (read := read_stage(registry, name, target)) is None:
        raise AnalysisError(
            f"{path} did not read back right after writing it; check that nothing else writes"
            " there and that the disk is not full"
        )
    got[name] = read


def read_stages(
    registry: dict[str, Stage],
    wanted: Iterable[str],
    target: Target,
    *,
    check_params: bool = True,
    meta_only: Iterable[str] = (),
) -> StageResults | None:
    """The wanted stages (and what they need) from the cache; None if one is missing or stale.

    Never computes and never raises for a bad file (the dashboard's read path).

    Args:
        registry: the stages.
        wanted: names of the stages whose values are wanted.
        target: folder, key and context.
        check_params: False accepts artifacts computed with other parameters (not another key or
            other versions), e.g. another ``top_n``.
        meta_only: stages (wanted or needed) checked fresh from their meta alone; their value
            is None (a summary that needs the features fresh but not their arrays).
    """
    names = resolve(registry, wanted)
    got = _read_all(registry, names, target, check_params, frozenset(meta_only))
    if len(got) < len(names):
        return None
    return StageResults({n: got[n][0] for n in names}, {n: got[n][1] for n in names})


def run_stages(
    registry: dict[str, Stage],
    wanted: Iterable[str],
    target: Target,
    *,
    force: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> StageResults:
    """The wanted stages (and what they need): read if fresh, else computed under the lock.

    Args:
        registry: the stages, each registered after the ones it needs.
        wanted: names of the stages whose values are wanted.
        target: folder, key and context.
        force: recompute every resolved stage even if cached.
        on_stage: called with each stage's name before it is computed (progress display).

    Returns:
        The :class:`StageResults`; ``recomputed`` names the stages this call computed.
    """
    if not force and (cached := read_stages(registry, wanted, target)) is not None:
        return cached
    names = resolve(registry, wanted)
    timings: dict[str, float] = {}
    with locked(target.folder):
        # another process may have finished the work while this one waited for the lock
        got = {} if force else _read_all(registry, names, target, check_params=True)
        todo = [n for n in names if n not in got]
        for n in todo:
            t0 = time.perf_counter()
            if on_stage is not None:
                on_stage(n)
            _compute(registry, n, target, got)
            timings[n] = time.perf_counter() - t0
    values = {n: got[n][0] for n in names}
    return StageResults(values, {n: got[n][1] for n in names}, tuple(todo), timings)


Wanted = Iterable[str] | None  # stage names; None: every stage of the family


@dataclass(frozen=True)
class Family:
    """A set of stages over one kind of target: a run, a run on a split, a set of runs.

    Attributes:
        name: how messages name it (``"comparison"``).
        stages: its registry, each stage registered after the ones it needs.
        target: ``target(request, compute) -> Target | None``: where and for what key the
            request's artifacts live, with the context its stages read. With ``compute`` False it
            must not compute anything, and returns None when an input it builds on (another
            family's result, e.g. a run's analysis) is not cached.
    """

    name: str
    stages: dict[str, Stage]
    target: Callable[[Any, bool], Target | None]

    def run(
        self, request: Any, wanted: Wanted = None, *, force: bool = False
    ) -> tuple[Target, StageResults]:
        """The wanted stages of the request's target: read if fresh, else computed.

        Args:
            request: what the family's ``target`` turns into a target.
            wanted: stage names (and what they need); None for all.
            force: recompute every resolved stage even if cached (its inputs are reused).

        Returns:
            ``(target, results)``.
        """
        target = self.target(request, True)
        if target is None:  # with compute=True a target builds its inputs, so this is a bug
            raise AnalysisError(f"an input of the {self.name} went missing; run it again")
        bar = target.progress
        try:
            res = run_stages(
                self.stages,
                self.stages if wanted is None else wanted,
                target,
                force=force,
                on_stage=None if bar is None else bar.stage,
            )
        finally:
            if bar is not None:
                bar.close()
        return target, res

    def read(
        self,
        request: Any,
        wanted: Wanted = None,
        *,
        check_params: bool = True,
        meta_only: Iterable[str] = (),
    ) -> tuple[Target, StageResults] | None:
        """``(target, results)`` from the cache, or None if an input or a stage is missing or stale.

        Never computes; ``check_params`` and ``meta_only`` as in :func:`read_stages`.
        """
        target = self.target(request, False)
        if target is None:
            return None
        names = self.stages if wanted is None else wanted
        res = read_stages(
            self.stages, names, target, check_params=check_params, meta_only=meta_only
        )
        return None if res is None else (target, res)


def need_arrays(arrays: dict[str, np.ndarray], ndims: dict[str, int]) -> None:
    """Raise ValueError unless every named array is present with its number of dimensions."""
    for name, ndim in ndims.items():
        if arrays[name].ndim != ndim:
            raise ValueError(f"array {name!r} has {arrays[name].ndim} dimensions, not {ndim}")


def need_columns(table: pd.DataFrame, columns: list[str]) -> None:
    """Raise ValueError unless the table has exactly these columns, in this order."""
    if list(table.columns) != list(columns):
        raise ValueError(f"columns {list(table.columns)} are not {columns}")
