"""The basis descriptors: every basis the analysis computes in is declared, and names resolve."""

import numpy as np
import pytest

from tricl.bases import BASES, SPECTRAL, TRAINED, BasisError, Rotation, get_basis


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


def test_only_the_spectral_basis_rotates_the_features():
    assert [b.name for b in BASES.values() if b.rotated] == ["spectral"]


def test_the_rotation_as_a_layer_is_the_projection():
    rng = np.random.default_rng(0)
    rot = Rotation(mean=rng.normal(size=5), rotation=rng.normal(size=(5, 3)))
    z = rng.normal(size=(7, 5))
    weight, bias = rot.as_linear()  # (r, k), (r,)
    np.testing.assert_allclose(z @ weight.T + bias, rot.project(z), atol=1e-12)
    assert rot.rank == 3 and rot.project(z).shape == (7, 3)
    moved = Rotation(mean=rot.mean + 1e-9, rotation=rot.rotation)
    assert len(rot.fingerprint) == 16 and moved.fingerprint != rot.fingerprint
