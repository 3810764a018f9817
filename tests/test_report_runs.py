"""The Runs page's identifiable-groups line, from stored pair tables (no Streamlit, no torch)."""

import pandas as pd

from tricl.report.compare import identifiable_groups_markdown


def _pairs(top8: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"ordered_corr_top8": top8, "mcc": [0.4] * len(top8)})


def test_only_groups_identifiable_as_trained_are_named():
    text = identifiable_groups_markdown(
        [
            ("tri-eigen · mnist5k", _pairs([0.806567, 0.778529, 0.814633])),
            ("triCL", _pairs([0.23, 0.40])),
        ]
    )
    assert "**tri-eigen · mnist5k**: Borderline (0.800 ± 0.015 over 3 seed pairs)" in text
    assert "triCL" not in text and "feature #1 first" in text
    text = identifiable_groups_markdown([("x", _pairs([0.9, 0.85]))])
    assert "**x**: Identifiable (0.875" in text


def test_no_identifiable_group_says_nothing():
    assert identifiable_groups_markdown([("SimCLR", _pairs([0.3, 0.31, 0.29]))]) == ""
    assert identifiable_groups_markdown([]) == ""


def test_the_shipped_tri_eigen_seeds_are_the_identifiable_group():
    from pathlib import Path

    from tricl.analysis import load_comparison

    runs = sorted(Path(__file__).parents[1].glob("checkpoints/tri-eigen_mnist5k_*"))
    comp = load_comparison(runs)
    assert comp is not None  # shipped with its comparison: read, never computed
    # measured: 0.807, 0.779, 0.815 over the three seed pairs, a mean just under 0.8
    assert "Borderline (0.800" in identifiable_groups_markdown([("tri-eigen", comp.pairs)])
