"""The Study results page's verdict table: the study's identifiability tables (``docs/RESULTS.md``)
read with the verdicts of :mod:`tricl.report.verdicts`, so the study and the Compare seeds page
name the same scores with the same words.

Shaped from the results file's Markdown tables (mean ± std over seed pairs); nothing is recomputed.
"""

from __future__ import annotations

import re

import pandas as pd

from tricl.bases import get_basis
from tricl.report import verdicts
from tricl.report.verdicts import CKA, MCC, TOP8

HEADING = "### Identifiability across seeds"
_VALUE = re.compile(r"^\s*(?P<mean>-?\d+(?:\.\d+)?)\s*(?:±\s*(?P<std>\d+(?:\.\d+)?))?\s*$")
# the study's column names (two spellings over its sections) -> the rule's input
_COLUMNS = {
    "top-8 ordered corr": TOP8,
    "ordered corr (top-8)": TOP8,
    "mcc": MCC,
    "cka": CKA,
}
SPECTRAL_SUFFIX = ", spectral basis"


def _value(cell: str) -> tuple[float, float | None] | None:
    m = _VALUE.match(cell)
    if m is None:
        return None
    return float(m["mean"]), float(m["std"]) if m["std"] else None


def _tables(text: str) -> list[tuple[str, list[dict[str, str]]]]:
    """(section heading, rows) of every identifiability table in ``text``."""
    out, section, lines = [], "", text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith(HEADING):
            continue
        block = []
        for row in lines[i + 1 :]:
            if row.startswith("#"):
                break
            if row.startswith("|"):
                block.append([c.strip() for c in row.strip().strip("|").split("|")])
            elif block:
                break
        if len(block) >= 3:  # header, rule, at least one row
            out.append((section, [dict(zip(block[0], r)) for r in block[2:]]))
    return out


def _inputs(row: dict[str, str], spectral: bool) -> dict[str, tuple[float, float | None]]:
    """The rule's inputs found in one study row, for one basis."""
    found = {}
    for col, cell in row.items():
        name = col.lower()
        if spectral != name.endswith(SPECTRAL_SUFFIX):
            continue
        key = _COLUMNS.get(name.removesuffix(SPECTRAL_SUFFIX))
        if key and (value := _value(cell)) is not None:
            found[key] = value
    return found


def _verdict_row(section: str, row: dict[str, str], basis: str, spectral_cols: bool) -> dict | None:
    got = _inputs(row, spectral_cols)
    if TOP8 not in got:
        return None
    b = get_basis(basis)
    v = verdicts.judge(
        got[TOP8][0],
        got[TOP8][1],
        got.get(MCC, (None,))[0],
        None if b.whitened else got.get(CKA, (None,))[0],
    )
    cell = next(c for k, c in row.items() if _inputs({k: c}, spectral_cols).get(TOP8))
    return {
        "study": section,
        "method": row.get("method", ""),
        "side": row.get("side", "image"),
        "basis": b.label,
        "top-8 ordered corr": cell,
        "verdict": v.word,
    }


def study_verdicts(text: str) -> pd.DataFrame:
    """One row per study section, method, side and basis: top-8 agreement and its verdict.

    Args:
        text: the results file's Markdown.

    Returns:
        Columns ``study, method, side, basis, top-8 ordered corr, verdict`` (empty if the file
        has no identifiability table).
    """
    rows = []
    for section, table in _tables(text):
        for row in table:
            if "basis" in row:  # image-text: one row per basis, plain column names
                found = _verdict_row(section, row, row["basis"], spectral_cols=False)
                rows.append(found)
                continue
            rows.append(_verdict_row(section, row, "trained", spectral_cols=False))
            rows.append(_verdict_row(section, row, "spectral", spectral_cols=True))
    columns = ["study", "method", "side", "basis", "top-8 ordered corr", "verdict"]
    return pd.DataFrame([r for r in rows if r is not None], columns=columns)


def spectral_exceptions(table: pd.DataFrame) -> str:
    """The study's image rows whose spectral-basis verdict is not Identifiable, per section, as
    one Markdown sentence (empty if there are none), so no finding reads as more than its
    verdict.

    Args:
        table: :func:`study_verdicts`'s table.
    """
    spectral = get_basis("spectral").label
    rows = table[(table["basis"] == spectral) & (table["verdict"] != verdicts.IDENTIFIABLE.word)]
    if rows.empty:
        return ""
    parts = [
        f"{section}: "
        + ", ".join(
            f"{m} {c} (**{v}**)"
            for m, c, v in zip(g["method"], g["top-8 ordered corr"], g["verdict"])
        )
        for section, g in rows.groupby("study", sort=False)
    ]
    return "In the spectral basis these study rows are not Identifiable: " + "; ".join(parts) + "."


LEAD = "**In one sentence:**"


def lead_sentence(text: str) -> str | None:
    """The study's one-sentence answer (the paragraph that opens with ``LEAD`` in RESULTS.md:
    which recipe gives identifiable features, at what accuracy, at which scale, and what is not
    yet measured), which the Study page and the README's "In short" put first; None without one."""
    start = text.find(LEAD)
    if start < 0:
        return None
    end = text.find("\n\n", start)
    return " ".join(text[start : None if end < 0 else end].split())
