"""Artifact files: round trips, provenance, torn files, no pickle."""

import numpy as np
import pandas as pd
import pytest

from tricl.analysis.store import (
    analysis_dir,
    dataset_slug,
    load_npz,
    load_table,
    save_npz,
    save_table,
)


def test_npz_round_trip_with_meta(tmp_path):
    arrays = {"z": np.arange(6, dtype=np.float32).reshape(2, 3), "names": np.array(["a", "bc"])}
    meta = {"key": {"weights_hash": "abc"}, "params": {"top_n": np.int64(32)}}
    save_npz(tmp_path / "x.npz", arrays, meta)
    got, got_meta = load_npz(tmp_path / "x.npz")
    np.testing.assert_array_equal(got["z"], arrays["z"])
    np.testing.assert_array_equal(got["names"], arrays["names"])
    assert got_meta == {"key": {"weights_hash": "abc"}, "params": {"top_n": 32}}
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]  # no temporary left behind


def test_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="dtype object"):
        save_npz(tmp_path / "x.npz", {"bad": np.array([{"a": 1}], dtype=object)}, {})
    assert not (tmp_path / "x.npz").exists()


def test_missing_or_torn_npz_reads_as_none(tmp_path):
    assert load_npz(tmp_path / "missing.npz") is None
    save_npz(tmp_path / "x.npz", {"a": np.ones(1000)}, {"k": 1})
    data = (tmp_path / "x.npz").read_bytes()
    (tmp_path / "x.npz").write_bytes(data[: len(data) // 2])
    assert load_npz(tmp_path / "x.npz") is None


def test_table_round_trip_keeps_dtypes(tmp_path):
    table = pd.DataFrame(
        {
            "run": ["123", "NA", "seed0"],
            "k": [1, 2, 4],
            "acc": [0.5, float("nan"), 1 / 3],
            "flag": [True, False, True],
        }
    )
    save_table(tmp_path / "t.csv", table, {"key": 1})
    got, meta = load_table(tmp_path / "t.csv")
    assert meta == {"key": 1}
    assert list(got["run"]) == ["123", "NA", "seed0"]
    assert got["k"].dtype == np.int64 and got["flag"].dtype == bool
    np.testing.assert_array_equal(got["acc"].to_numpy(), table["acc"].to_numpy())


def test_table_with_mismatched_sidecar_reads_as_none(tmp_path):
    save_table(tmp_path / "t.csv", pd.DataFrame({"a": [1]}), {"v": 1})
    (tmp_path / "t.csv").write_text("a\n2\n")  # a newer table without its sidecar
    assert load_table(tmp_path / "t.csv") is None


def test_analysis_dir_keeps_other_datasets_apart(tmp_path):
    assert analysis_dir(tmp_path, "test") == tmp_path / "analysis" / "test"
    other = analysis_dir(tmp_path, "test", "folder:/data/my digits")
    assert other.parent == tmp_path / "analysis" and other.name == "test@folder-data-my-digits"
    assert len(dataset_slug("folder:/" + "x" * 200)) <= 60
