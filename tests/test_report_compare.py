"""The Compare seeds page's view-models, without Streamlit."""

from __future__ import annotations

import pandas as pd

from tricl.report import compare
from tricl.report.verdicts import BORDERLINE, IDENTIFIABLE, SUBSPACE


def _pairs(top8, spectral, cka=0.94, mcc=0.63) -> pd.DataFrame:
    n = len(top8)
    return pd.DataFrame(
        {
            "run_a": ["a"] * n,
            "run_b": ["b"] * n,
            "ordered_corr_top8": top8,
            "mcc": [mcc] * n,
            "cka": [cka] * n,
            "spectral_corr_top8": spectral,
            "spectral_mcc": [0.3] * n,
        }
    )


def test_a_card_has_one_line_per_basis_with_its_own_verdict():
    """SimCLR's spectral 0.77 ± 0.04 is borderline, triCL's 0.86 identifiable; both trained
    bases share the subspace only (the Study page reads the same scores the same way)."""
    simclr = compare.group_row("SimCLR", "g", "simclr", 3, _pairs([0.3] * 3, [0.73, 0.77, 0.81]))
    tricl = compare.group_row("triCL", "h", "tricl", 3, _pairs([0.34] * 3, [0.81, 0.86, 0.91]))
    (trained, spectral) = compare.card_lines(simclr)
    assert trained.basis == "trained basis" and trained.verdict is SUBSPACE
    assert spectral.basis == "spectral basis" and spectral.verdict is BORDERLINE
    assert compare.card_lines(tricl)[1].verdict is IDENTIFIABLE
    assert spectral.scores[2] == "–"  # CKA is not scored in the whitened spectral basis
    assert trained.scores[0] == "0.30 ± 0.00"
    md = compare.card_markdown(simclr)
    assert md.splitlines()[0] == "| basis | top-8 ordered corr | MCC | CKA | verdict |"
    assert BORDERLINE.word in md and SUBSPACE.word in md


def test_score_columns_follow_the_metric_registry():
    from tricl.analysis.metrics import METRICS

    columns = compare.score_columns(_pairs([0.3], [0.8]))
    top8 = METRICS["ordered_corr_top8"]
    assert columns[top8.spectral_name] == (
        "spectral_corr_top8",
        "top-8 ordered corr, spectral basis",
        f"{top8.legend}; {compare.SPECTRAL_HELP}",
    )
    # each legend says which correlation and which images it is scored on
    assert "Pearson correlation on all evaluation images" in columns["mcc"][2]
    held_out = compare.score_columns(_pairs([0.3], [0.8]).assign(heldout_mcc=0.5))["heldout_mcc"]
    assert held_out[1] == "held-out MCC" and "scored on the other half" in held_out[2]
    assert list(columns)[:3] == ["ordered_corr_top8", "mcc", "cka"]


def test_summary_table_carries_a_verdict_per_basis():
    pairs = _pairs([0.3, 0.3], [0.9, 0.9])
    table = pd.DataFrame([compare.group_row("triCL", "g", "tricl", 2, pairs)])
    shown = compare.summary_table(table, compare.score_columns(pairs))
    assert shown["verdict, trained basis"].item() == SUBSPACE.word
    assert shown["verdict, spectral basis"].item() == IDENTIFIABLE.word
    assert shown["method"].item() == "triCL" and "group" not in shown


def test_the_first_heatmap_pair_prefers_a_method_with_s():
    assert compare.default_pair(["clip", "clip", "triclip", "triclip"]) == (2, 3)
    assert compare.default_pair(["clip", "triclip", "clip"]) == (0, 2)


def test_unresolved_ranks_of_every_seed_are_joined():
    note = compare.unresolved_note([8, 8], [[(2, 3)], [(5, 6)]])
    assert "#3-#4, #6-#7" in note and "Safe to compare across seeds: #1-#2, #5, #8" in note
    assert "all 8 ranks are resolved" in compare.unresolved_note([8, 10], [[], [(8, 9)]])
