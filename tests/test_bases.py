"""The basis descriptors: every basis the analysis computes in is declared, and names resolve."""

import pytest

from tricl.bases import BASES, SPECTRAL, TRAINED, BasisError, get_basis


def test_the_analysis_bases_are_the_declared_ones():
    from tricl.analysis.pipeline import BASIS_VIEWS

    assert tuple(BASIS_VIEWS) == tuple(BASES)


def test_only_the_trained_basis_keeps_the_legacy_keys():
    assert [b.name for b in BASES.values() if b.legacy_keys] == ["trained"]
    assert TRAINED.cli_args() == [] and TRAINED.key_fields() == {} and TRAINED.where() == ""
    assert SPECTRAL.cli_args() == ["--basis", "spectral"]
    assert SPECTRAL.key_fields() == {"basis": "spectral"}
    assert TRAINED.feature_ref("S") == "trained axes, S order"


def test_an_unknown_basis_is_one_line_naming_the_choices():
    assert get_basis("spectral") is SPECTRAL and get_basis(SPECTRAL) is SPECTRAL
    with pytest.raises(BasisError, match="use one of trained, spectral") as err:
        get_basis("pair-ish")
    assert "\n" not in str(err.value)
