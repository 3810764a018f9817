"""How runs are named on the pages, and which runs differ only by seed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tricl.methods import method_label
from tricl.runs import Run

# Recipe knobs worth naming in a label when they differ from the defaults.
RECIPE_FIELDS = (
    "decorrelation",
    "tau",
    "s_lr_mult",
    "s_init",
    "s_param",
    "s_placement",
    "s_frozen",
    "temperature",
    "optimizer",
)


def aligned(run: Run) -> bool:
    """Whether ``tricl align`` derived the run."""
    return run.aligned


def has_text(run: Run) -> bool:
    """Whether the run has a text encoder the pages can show (clip / triclip; an aligned copy
    keeps only the image encoder)."""
    return run.image_text and not run.aligned


def parent_name(run: Run) -> str:
    """The name of the run an aligned run was derived from ('' if none recorded)."""
    return str(run.parent.get("name", "")) if run.parent else ""


def run_label(run: Run) -> str:
    """Short label: ``triCL · mnist5k · k64 · seed 0`` (``· aligned`` for an aligned run)."""
    c = run.config
    tail = " · aligned" if aligned(run) else ""
    return f"{method_label(c.method)} · {c.dataset} · k{c.proj_dim} · seed {c.seed}{tail}"


def run_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Run name -> short label, falling back to the folder name where labels collide."""
    labels = {r.name: run_label(r) for r in runs}
    counts = Counter(labels.values())
    return {n: (lab if counts[lab] == 1 else n) for n, lab in labels.items()}


def config_key(run: Run) -> str:
    """The run's configuration without seed, name and device: runs sharing it differ by seed."""
    cfg = run.config.to_dict()
    for k in ("seed", "name", "device", "extra"):
        cfg.pop(k, None)
    cfg["aligned"] = aligned(run)  # an aligned run is no seed of its parent's configuration
    return json.dumps(cfg, sort_keys=True, default=str)


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs of one runs folder grouped by configuration (each group: the same settings,
    several seeds)."""
    groups: dict[tuple[str, Path], list[Run]] = {}
    for r in runs:  # per runs folder: a user's rerun of a shipped recipe is no extra seed of it
        groups.setdefault((config_key(r), r.path.parent), []).append(r)
    return [sorted(g, key=lambda r: r.config.seed) for g in groups.values()]


def recipe_changes(run: Run) -> str:
    """Non-default recipe settings, e.g. ``decorrelation=whiten, s_lr_mult=10.0`` ('' if none)."""
    defaults = type(run.config)()
    return ", ".join(
        f"{f}={getattr(run.config, f)}"
        for f in RECIPE_FIELDS
        if getattr(run.config, f) != getattr(defaults, f)
    )


def group_label(group: Sequence[Run]) -> str:
    """Label of a seed group: method, dataset, backbone, k, epochs, seeds and recipe changes."""
    c = group[0].config
    seeds = ", ".join(str(r.config.seed) for r in group)
    changes = recipe_changes(group[0])
    return (
        f"{method_label(c.method)} · {c.dataset} · {c.backbone} · k{c.proj_dim} · "
        f"{c.epochs} ep · seeds {seeds}" + (f" · {changes}" if changes else "")
    )


def same_config_runs(run: Run, runs: Sequence[Run]) -> list[Run]:
    """The run's seed group in its runs folder (itself first)."""
    key = config_key(run)
    others = [
        r
        for r in runs
        if r.name != run.name and config_key(r) == key and r.path.parent == run.path.parent
    ]
    return [run, *sorted(others, key=lambda r: r.config.seed)]


def other_runs(run: Run, runs: Sequence[Run], with_other_method: bool) -> list[Run]:
    """The run's other seeds, then (if asked) the other methods' runs of the same dataset."""
    group = same_config_runs(run, runs)[1:]
    if not with_other_method:
        return group
    c = run.config
    others = [
        r
        for r in runs
        if r.config.dataset == c.dataset and r.config.method != c.method and r.name != run.name
    ]
    return group + sorted(others, key=lambda r: (r.config.method, r.config.seed))
