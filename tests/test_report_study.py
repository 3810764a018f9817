"""The Study page's verdicts: the study's tables read with the Compare page's rule."""

from __future__ import annotations

from pathlib import Path

from tricl.report.study import spectral_exceptions, study_verdicts
from tricl.report.verdicts import BORDERLINE, DIFFERENT, IDENTIFIABLE, SUBSPACE

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "RESULTS.md"
TABLE = """\
## mnist5k (small CNN, 64 features)

### Identifiability across seeds

| method | ordered corr (top-8) | MCC | CKA | ordered corr (top-8), spectral basis | seed pairs |
|:--|:--|:--|:--|:--|--:|
| simclr | 0.305 ± 0.049 | 0.632 ± 0.008 | 0.914 ± 0.005 | 0.774 ± 0.037 | 3 |
| tricl | 0.337 ± 0.074 | 0.625 ± 0.007 | 0.937 ± 0.001 | 0.864 ± 0.045 | 3 |
| tricl-whiten | 0.253 ± 0.029 | 0.568 ± 0.007 | 0.871 ± 0.015 | 0.513 ± 0.058 | 3 |

### Accuracy

| method | linear |
|:--|:--|
| simclr | 0.950 |
"""


def _verdict(table, method, basis):
    row = table[(table["method"] == method) & (table["basis"] == basis)]
    return row["verdict"].item()


def test_the_study_rows_get_the_compare_page_verdicts():
    table = study_verdicts(TABLE)
    assert len(table) == 6  # three methods, two bases; the accuracy table is not read
    assert _verdict(table, "tricl", "spectral basis") == IDENTIFIABLE.word
    assert _verdict(table, "simclr", "spectral basis") == BORDERLINE.word
    assert _verdict(table, "tricl-whiten", "spectral basis") == DIFFERENT.word
    assert _verdict(table, "simclr", "trained basis") == SUBSPACE.word
    assert table["top-8 ordered corr"].iloc[1] == "0.774 ± 0.037"  # the study's own cell


def test_the_committed_results_are_read_in_every_section():
    table = study_verdicts(RESULTS.read_text())
    assert table["study"].nunique() >= 4
    assert set(table["basis"]) == {"trained basis", "spectral basis"}
    assert {"image", "text"} <= set(table["side"])


def test_the_spectral_rows_short_of_identifiable_are_named():
    note = spectral_exceptions(study_verdicts(TABLE))
    assert "simclr 0.774 ± 0.037 (**Borderline**)" in note
    assert "tricl-whiten 0.513 ± 0.058 (**Not identifiable**)" in note
    assert "tricl " not in note  # identifiable at 0.864


def test_the_study_leads_with_one_sentence_that_the_readme_repeats():
    from tricl.report.study import lead_sentence

    lead = lead_sentence(RESULTS.read_text())
    assert lead is not None and lead.startswith("**In one sentence:**")
    assert "tri-eigen" in lead and "Not yet measured" in lead
    readme = (RESULTS.parent.parent / "README.md").read_text()
    short = readme[readme.index("In short (numbers in RESULTS.md):") :]
    assert lead_sentence(short) == lead  # the README's "In short" opens with the same sentence
    assert lead_sentence("## A\nno lead here\n") is None
