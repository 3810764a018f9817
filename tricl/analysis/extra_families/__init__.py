"""Stage families a kind of run adds to ``tricl analyze`` and ``tricl compare``: the backend's
extension point for runs with more than an image encoder.

An :class:`ExtraFamily` names the stage families it runs and says when it applies
(``applies(runs)``: every run given is of its kind); ``tricl analyze`` runs :attr:`analyze` for a
run it applies to (on the run's own dataset), ``tricl compare`` runs :attr:`compare` when it
applies to every run compared and prints what it found after the image comparison. Each module of
this package registers one with :func:`register_extra_family`, and this package imports them all
(as :mod:`tricl.analysis.split_stages` does), so the CLI never asks what kind a run is. Image-text
runs (clip, triclip, open_clip on captions): :mod:`.image_text` (``TEXT``, ``PAIR``,
``IMAGE_TEXT``). Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tricl.analysis.stages import Family
from tricl.runs import Run


@dataclass(frozen=True)
class ExtraFamily:
    """The stage families one kind of run adds, and how the CLI runs, reads and prints them.

    Attributes:
        name: what the families are about (e.g. ``image-text``).
        families: the stage families it adds (a run's, a run's on a split, a set of runs').
        applies: whether every run given is of this kind (a run alone: ``applies([run])``).
        analyze: ``(run, split, *, force, progress, device) -> result`` for ``tricl analyze``;
            the result's ``summary()`` is one line.
        words: ``(result, basis) -> table`` of the words that raise each feature (columns
            ``feature, token, lift``, read by :func:`tricl.report.describe.top_words`) for the
            descriptions of ``tricl analyze`` in that :class:`tricl.bases.Basis`; None: none.
        compare: ``(runs, split, *, basis, force, progress, out_root) -> result`` for
            ``tricl compare``.
        load: the same arguments but ``force`` and ``progress``: the stored result or None
            (never computes).
        rows: the result's table for ``tricl compare --json`` (one JSON object per row).
        report: the result as ``tricl compare`` prints it after the image comparison.
        not_compared: the note when only some runs are of this kind (``{names}``: the others).
    """

    name: str
    families: tuple[Family, ...]
    applies: Callable[[Sequence[Run]], bool]
    analyze: Callable[..., Any]
    words: Callable[[Any, Any], Any]
    compare: Callable[..., Any]
    load: Callable[..., Any]
    rows: Callable[[Any], Any]
    report: Callable[[Any], str]
    not_compared: str


EXTRA_FAMILIES: dict[str, ExtraFamily] = {}


def register_extra_family(extra: ExtraFamily) -> ExtraFamily:
    """Adds ``extra`` to :data:`EXTRA_FAMILIES` (a name registered twice is a bug)."""
    if EXTRA_FAMILIES.setdefault(extra.name, extra) is not extra:
        raise ValueError(f"extra stage families {extra.name!r} registered twice")
    return extra


def applicable(runs: Sequence[Run]) -> list[ExtraFamily]:
    """The extra families that apply to every run of ``runs``, in registration order."""
    return [e for e in EXTRA_FAMILIES.values() if e.applies(runs)]


def partly(extra: ExtraFamily, runs: Sequence[Run]) -> list[str]:
    """The names of the runs ``extra`` does not apply to when it applies to some of ``runs``
    (then it is not compared; the CLI says why), else []."""
    others = [r.name for r in runs if not extra.applies([r])]
    return others if 0 < len(others) < len(runs) else []


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
