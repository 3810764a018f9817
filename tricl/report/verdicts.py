"""The identifiability verdicts: their words, thresholds and rule, defined once.

The Compare seeds cards, the Study results page, ``tricl compare``'s printed verdict and the README
use these words. A verdict reads one basis at a time from the seed-pair mean (and spread) of three
metrics of :data:`tricl.analysis.metrics.METRICS`:

1. **Identifiable**: top-8 ordered |corr| at least :data:`THRESHOLD` (0.8): the seeds learn the
   same top features in the same order, up to sign (the paper's claim).
2. **Borderline**: below 0.8 by less than its spread over seed pairs: the seeds cannot tell it
   from identifiable.
3. **Same features, order differs**: MCC at least 0.8: identifiable up to a permutation only.
4. **Not identifiable (same subspace)**: CKA at least 0.8: the same information, rotated
   differently in every seed. Read in the trained axes only: a whitened basis (spectral, or an
   aligned run) gives every feature equal weight, the noisy tail included, so CKA there drops
   (e.g. 0.94 to 0.7) though the information is the same.
5. **Not identifiable**: the seeds learn different features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from tricl.analysis.metrics import METRICS
from tricl.bases import get_basis

THRESHOLD = 0.8  # top-8 ordered |corr|, MCC and CKA: the level the paper's claim is read at
TOP8, MCC, CKA = "ordered_corr_top8", "mcc", "cka"  # registry names the rule reads

CKA_WHITENED_NOTE = (
    "CKA in a whitened basis (spectral, or an aligned run's axes) gives every feature equal "
    "weight, the noisy tail included, so it is lower than in the trained axes (e.g. 0.94 -> 0.7) "
    "though the information is the same; the verdicts read CKA in the trained axes only."
)


@dataclass(frozen=True)
class Verdict:
    """One verdict word.

    Attributes:
        key: stable name (tests, CSV).
        word: the verdict as every page and the CLI print it.
        meaning: what it says about the seeds, one clause.
        color: Streamlit markdown colour of the word.
        icon: Streamlit material icon.
    """

    key: str
    word: str
    meaning: str
    color: str
    icon: str

    def markdown(self, basis: str = "") -> str:
        """The verdict as Streamlit markdown (coloured icon and word), optionally per basis."""
        where = f"{basis}: " if basis else ""
        return f"{where}:{self.color}[{self.icon} **{self.word}**]: {self.meaning}"


IDENTIFIABLE = Verdict(
    "identifiable",
    "Identifiable",
    "the seeds learn the same top-8 features in the same order (up to sign)",
    "green",
    ":material/check_circle:",
)
BORDERLINE = Verdict(
    "borderline",
    "Borderline",
    "the seeds cannot tell it from identifiable",
    "orange",
    ":material/help:",
)
PERMUTED = Verdict(
    "permuted",
    "Same features, order differs",
    "identifiable up to a permutation only",
    "orange",
    ":material/swap_vert:",
)
SUBSPACE = Verdict(
    "subspace",
    "Not identifiable (same subspace)",
    "the same information, rotated differently in every seed",
    "red",
    ":material/cancel:",
)
DIFFERENT = Verdict(
    "different",
    "Not identifiable",
    "the seeds learn different features",
    "red",
    ":material/cancel:",
)
VERDICTS: tuple[Verdict, ...] = (IDENTIFIABLE, BORDERLINE, PERMUTED, SUBSPACE, DIFFERENT)


def _at_least(value: float | None, level: float = THRESHOLD) -> bool:
    return value is not None and not math.isnan(value) and value >= level


def judge(
    top8: float | None,
    top8_std: float | None = None,
    mcc: float | None = None,
    cka: float | None = None,
) -> Verdict:
    """The verdict of one basis from seed-pair means (the rule in the module docstring).

    Args:
        top8: mean top-8 ordered |corr| over the seed pairs.
        top8_std: its spread over the seed pairs (None or NaN: no borderline verdict).
        mcc: mean MCC (None when not scored in this basis).
        cka: mean CKA in the trained axes (None in a whitened basis: see the module docstring).
    """
    if _at_least(top8):
        return IDENTIFIABLE
    if top8_std is not None and _at_least(top8, THRESHOLD - top8_std) and top8_std > 0:
        return BORDERLINE
    if _at_least(mcc):
        return PERMUTED
    if _at_least(cka):
        return SUBSPACE
    return DIFFERENT


def basis_columns(frame: pd.DataFrame, spectral: bool) -> dict[str, str]:
    """Rule input -> column of ``frame`` (a comparison's pair table) for one basis.

    ``spectral``: the ``spectral_*`` columns a trained-basis comparison adds. Comparisons stored
    before the columns were named after the registry call the top-8 one ``spectral_corr_top8``.
    """
    out = {}
    for name in (TOP8, MCC, CKA):
        m = METRICS[name]
        if not spectral:
            names = [m.name]
        elif m.spectral:
            names = [m.spectral_name, m.spectral_name.replace("ordered_", "")]
        else:
            names = []  # CKA has no spectral column
        if found := next((n for n in names if n in frame), None):
            out[name] = found
    return out


def judge_pairs(pairs: pd.DataFrame, columns: Mapping[str, str], whitened: bool) -> Verdict:
    """The verdict from a pair table's columns (``columns`` as :func:`basis_columns` gives)."""

    def mean(name: str) -> float | None:
        return float(pairs[columns[name]].mean()) if name in columns else None

    std = float(pairs[columns[TOP8]].std(ddof=0)) if TOP8 in columns and len(pairs) > 1 else None
    return judge(mean(TOP8), std, mean(MCC), None if whitened else mean(CKA))


def verdict_lines(pairs: pd.DataFrame, basis: str = "trained", whitened: bool = False) -> list[str]:
    """One plain-text verdict line per basis a comparison's pair table holds (``tricl compare``).

    Args:
        pairs: one row per pair of runs, a column per metric (the comparison's ``pairs``).
        basis: the basis the plain columns are in (``--basis``); a trained-basis table's
            ``spectral_*`` columns give a second line.
        whitened: the plain columns are whitened features (an aligned run's own axes), so CKA
            is not read.
    """
    b = get_basis(basis)
    parts = [(b, basis_columns(pairs, spectral=False), whitened or b.whitened)]
    if b.legacy_keys and (spectral := basis_columns(pairs, spectral=True)):
        parts.append((get_basis("spectral"), spectral, get_basis("spectral").whitened))
    lines = []
    for shown, columns, flat in parts:
        if TOP8 not in columns:
            continue
        v = judge_pairs(pairs, columns, flat)
        scores = ", ".join(
            f"{METRICS[n].label} {pairs[c].mean():.2f}"
            for n, c in columns.items()
            if not (flat and n == CKA)
        )
        lines.append(
            f"verdict, {shown.label} (mean over {len(pairs)} pair(s)): {v.word}: {v.meaning}"
            f" ({scores})"
        )
    return lines


def rule_markdown() -> str:
    """The rule as a Markdown list (the legend of the Compare and Study pages)."""
    top8, mcc, cka = (METRICS[n].label for n in (TOP8, MCC, CKA))
    t = f"{THRESHOLD:.1f}"
    rules = (
        f"{top8} at least {t}",
        f"{top8} below {t} by less than its spread over seed pairs",
        f"otherwise {mcc} at least {t}",
        f"otherwise {cka} at least {t}, read in the trained axes only",
        "otherwise",
    )
    return "\n".join(f"- **{v.word}** ({r}): {v.meaning}" for v, r in zip(VERDICTS, rules))
