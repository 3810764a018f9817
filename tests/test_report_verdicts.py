"""The verdict vocabulary: one rule, the same words for the pages, the CLI and the study."""

from __future__ import annotations

import pandas as pd
import pytest

from tricl.report import verdicts
from tricl.report.verdicts import (
    BORDERLINE,
    DIFFERENT,
    IDENTIFIABLE,
    PERMUTED,
    SUBSPACE,
    THRESHOLD,
    judge,
    verdict_lines,
)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ((0.86, 0.05, 0.6, 0.94), IDENTIFIABLE),
        ((THRESHOLD, None, None, None), IDENTIFIABLE),  # the threshold itself is enough
        ((0.77, 0.04, 0.6, None), BORDERLINE),  # SimCLR's spectral 0.77 ± 0.04 on mnist5k
        ((0.77, 0.02, 0.6, None), DIFFERENT),  # further below 0.8 than its spread
        ((0.30, 0.05, 0.85, 0.94), PERMUTED),
        ((0.30, 0.05, 0.63, 0.94), SUBSPACE),
        ((0.30, 0.05, 0.63, None), DIFFERENT),  # no CKA read (a whitened basis)
        ((float("nan"), None, None, None), DIFFERENT),
    ],
)
def test_rule(scores, expected):
    assert judge(*scores) is expected


def test_every_verdict_is_named_once_and_the_rule_lists_them_in_order():
    words = [v.word for v in verdicts.VERDICTS]
    assert len(set(words)) == len(words)
    rule = verdicts.rule_markdown()
    assert [rule.index(f"**{w}**") for w in words] == sorted(rule.index(f"**{w}**") for w in words)
    assert f"{THRESHOLD:.1f}" in rule


def _pairs(top8: list[float], spectral: list[float], cka: float = 0.94) -> pd.DataFrame:
    n = len(top8)
    return pd.DataFrame(
        {
            "run_a": ["a"] * n,
            "run_b": ["b"] * n,
            "ordered_corr_top8": top8,
            "mcc": [0.6] * n,
            "cka": [cka] * n,
            "spectral_corr_top8": spectral,  # the spelling stored comparisons use
            "spectral_mcc": [0.3] * n,
        }
    )


def test_verdict_lines_one_per_basis_from_the_pair_table():
    lines = verdict_lines(_pairs([0.3, 0.35], [0.86, 0.84]))
    assert lines[0].startswith("verdict, trained basis (mean over 2 pair(s)): " + SUBSPACE.word)
    assert lines[1].startswith(
        "verdict, spectral basis (mean over 2 pair(s)): " + IDENTIFIABLE.word
    )
    assert "CKA 0.94" in lines[0] and "CKA" not in lines[1]


def test_a_spectral_comparison_gives_one_line_and_does_not_read_its_cka():
    pairs = _pairs([0.5], [0.5], cka=0.95).drop(columns=["spectral_corr_top8", "spectral_mcc"])
    (line,) = verdict_lines(pairs, "spectral")
    assert line.startswith("verdict, spectral basis") and DIFFERENT.word in line
    (aligned,) = verdict_lines(pairs, "trained", whitened=True)  # an aligned run's own axes
    assert f"): {DIFFERENT.word}:" in aligned and "CKA" not in aligned


def test_the_report_layer_never_imports_torch():
    """The pages read it in the web server, which stays torch-free."""
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, tricl.report as r; "
        "names = [m.name for m in pkgutil.iter_modules(r.__path__)]; "
        "[importlib.import_module(f'tricl.report.{n}') for n in names]; "
        "print([m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
