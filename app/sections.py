"""Page sections contributed by a kind of run: the pages' one extension point.

A page names its extension points (``"features.header"``, ``"probe.kinds"``, ...) and calls
:func:`draw` there with a :class:`Context`; every section registered at that point whose
``applies(ctx)`` holds is drawn, in registration order. A kind of run with views of its own (the
caption side of image-text runs) registers its sections with :func:`register_section` in its
own ``app/<name>_sections.py`` (:mod:`text_ui_sections`), which this module loads the first time
a page asks (:data:`PLUGINS`), so the pages never ask what kind of run they show.

The points, and what a section drawn there returns (the page uses the value, if any):

- ``features.header`` / ``feature_detail.header``: notes under the page header;
- ``features.table``: a :class:`Columns` the Features table adds (drawn before the table);
- ``features.end``: sections under the Features table;
- ``feature_detail.words``: a function from a raw feature index to the words that describe it;
- ``feature_detail.interventions``: sections after "What it does" (Feature detail);
- ``interventions.end``: more interventions of the same feature (``ctx.feature``, ``ctx.rank``);
- ``compare_seeds.summary``: sections after the verdicts (Compare seeds);
- ``probe.kinds``: other things than an image to probe; the section's ``label`` names it in the
  page's choice, its ``doc`` is the page's header, its ``draw`` is the probe;
- ``runs.table``: a :class:`Columns` the Runs table adds (``ctx.runs``, ``ctx.numbers``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The modules that register sections: every ``app/*_sections.py``, imported the first time a page
# asks for its sections (a new kind of run adds its file, nothing here).
PLUGINS = tuple(sorted(p.stem for p in Path(__file__).parent.glob("*_sections.py")))


@dataclass
class Context:
    """What a page hands its sections; fields a page does not have stay None.

    Attributes:
        run: the page's run (a :class:`tricl.runs.Run`).
        runs: the runs the page shows (Runs, Compare seeds).
        basis: the sidebar's :class:`tricl.bases.Basis`.
        analysis: the run's analysis in that basis.
        order: raw feature indices in the page's importance order. Shape: (k,).
        feature: the raw index of the feature shown (Feature detail).
        rank: its 1-based rank in the page's order.
        numbers: what the page read already (the Runs page's :class:`runs_brief.RunsPage`).
        memo: what the sections of one plugin share during one run of the page.
    """

    run: Any = None
    runs: Sequence[Any] = ()
    basis: Any = None
    analysis: Any = None
    order: Any = None
    feature: int | None = None
    rank: int | None = None
    numbers: Any = None
    memo: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Section:
    """One section a page draws at one of its extension points when ``applies(ctx)`` holds."""

    point: str
    name: str
    applies: Callable[[Context], bool]
    draw: Callable[[Context], Any]
    label: str = ""
    doc: str = ""


@dataclass(frozen=True)
class Columns:
    """Columns a section adds to a page's table (rows: features on Features, runs on Runs).

    Attributes:
        values: the table's rows (raw feature indices in order; the runs) -> column -> values.
        config: Streamlit column configuration of those columns.
        words: a raw feature index -> the words that describe it (Features' descriptions).
        row_height: pixels a row needs for these columns (0: the table's own).
        note: a caption under the table's count.
    """

    values: Callable[[Any], dict[str, list]]
    config: dict[str, Any] = field(default_factory=dict)
    words: Callable[[int], Sequence[str]] | None = None
    row_height: int = 0
    note: str = ""


SECTIONS: dict[str, dict[str, Section]] = {}
_loaded: list[str] = []


def register_section(
    point: str,
    name: str,
    applies: Callable[[Context], bool],
    draw: Callable[[Context], Any],
    *,
    label: str = "",
    doc: str = "",
) -> Section:
    """Registers a section at a page's extension point (a second one of that name replaces it,
    so a module may be loaded again)."""
    section = Section(point, name, applies, draw, label, doc)
    SECTIONS.setdefault(point, {})[name] = section
    return section


def _load_plugins() -> None:
    for module in PLUGINS:
        if module not in _loaded:
            importlib.import_module(module)
            _loaded.append(module)


def applicable(point: str, ctx: Context) -> list[Section]:
    """The sections registered at ``point`` that apply to ``ctx``, in registration order."""
    _load_plugins()
    return [s for s in SECTIONS.get(point, {}).values() if s.applies(ctx)]


def draw(point: str, ctx: Context) -> dict[str, Any]:
    """Draws every section at ``point`` that applies to ``ctx``; returns their values by name."""
    return {s.name: s.draw(ctx) for s in applicable(point, ctx)}


def columns(point: str, ctx: Context) -> list[Columns]:
    """The :class:`Columns` the sections at ``point`` add (drawn first, e.g. a job panel)."""
    return [c for c in draw(point, ctx).values() if isinstance(c, Columns)]
