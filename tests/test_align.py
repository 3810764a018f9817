"""``tricl align``: aligned runs hold their parent's spectral basis as their own axes.

Copies of shipped runs (weights + cached spectral basis, + cached test analysis for the parents'
comparison) keep this fast: nothing is trained and no basis is estimated.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tricl.analysis import compare, load_analysis, load_spectral_basis
from tricl.analysis.features import extract
from tricl.analysis.importance import order_from_scores
from tricl.analysis.metrics import METRICS
from tricl.cli import main
from tricl.runs import SHIPPED_RUNS_ROOT, STATE_FILE, Run, RunError, read_weights_header

TRICL = ["tricl_mnist5k_small_cnn_k64_seed0", "tricl_mnist5k_small_cnn_k64_seed1"]
SIMCLR = "simclr_mnist5k_small_cnn_k64_seed0"


def _copy_run(name: str, root: Path, *, with_analysis: bool = False) -> Path:
    src, dst = SHIPPED_RUNS_ROOT / name, root / name
    (dst / "analysis").mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "metrics.jsonl"):
        shutil.copy2(src / f, dst / f)
    shutil.copy2(src / "analysis" / "spectral.npz", dst / "analysis" / "spectral.npz")
    if with_analysis:
        shutil.copytree(src / "analysis" / "test", dst / "analysis" / "test")
    return dst


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parents")
    for name in [*TRICL, SIMCLR]:
        _copy_run(name, root, with_analysis=name in TRICL)
    return root


@pytest.fixture(scope="module")
def aligned(parents: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aligned")
    argv = ["align", *(str(parents / n) for n in [*TRICL, SIMCLR]), "--runs-root", str(out)]
    assert main(argv) == 0
    return out


def _snapshot(*roots: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in root.rglob("*")
    )


@pytest.mark.parametrize("name", [TRICL[0], SIMCLR])
def test_aligned_features_are_the_parents_spectral_projection(parents, aligned, name):
    parent, child = Run.load(parents / name), Run.load(aligned / f"{name}-aligned")
    basis = load_spectral_basis(parent)
    data = parent.load_data()
    x = data.test_x[:200]
    z_parent, _ = extract(parent.encoder(), x, data.preprocess)
    enc = child.encoder()
    z_child, _ = extract(enc, x, data.preprocess)
    assert z_child.shape == (200, basis.rank)
    np.testing.assert_allclose(z_child, basis.project(z_parent), rtol=1e-5, atol=1e-5)
    # importance = the eigenvalues exactly, so the analysis's default order is the spectral one
    np.testing.assert_array_equal(enc.importance().numpy(), basis.eigenvalues)
    s = enc.importance().float().numpy()  # what the features stage stores
    np.testing.assert_array_equal(order_from_scores(s), np.arange(basis.rank))
    # the aligner is fixed: nothing of it, and no S logits, reaches an optimizer
    assert enc.importance_logits is None
    assert not [n for n, _ in enc.named_parameters() if not n.startswith(("backbone", "projector"))]


def test_aligned_run_loads_records_its_parent_and_has_no_pickle(parents, aligned, capsys):
    parent = Run.load(parents / TRICL[0])
    child = Run.load(aligned / f"{TRICL[0]}-aligned")
    assert child.aligned and not parent.aligned and child.aligned_dim == 64
    assert child.parent == {
        "name": parent.name,
        "path": str(parent.path.resolve()),
        "weights_hash": parent.weights_hash,
    }
    basis = load_spectral_basis(parent)
    assert child.info["aligned"]["basis"] == {
        "weights_hash": parent.weights_hash,
        "fingerprint": basis.fingerprint,
        "params": {"reps": 4, "seed": 0, "split": "train"},
        "pairs": basis.pairs,
    }  # the shipped basis predates the augmentation record (see test_sources: recorded there)
    assert child.config.name == child.name and child.epochs_done == parent.epochs_done
    # safetensors: a JSON header and raw tensors that fill the file; no pickle, no zip archive
    read_weights_header(child.weights_path)
    raw = child.weights_path.read_bytes()
    assert not zipfile.is_zipfile(child.weights_path) and raw[:1] != b"\x80"
    assert not (child.path / STATE_FILE).exists()
    assert child.summary()["aligned"] is True
    assert main(["runs", "--runs-root", str(aligned)]) == 0
    assert f"aligned from {parent.name}" in capsys.readouterr().out


def test_compare_of_aligned_runs_gives_the_parents_spectral_score(parents, aligned, capsys):
    runs = [aligned / f"{n}-aligned" for n in TRICL]
    assert main(["compare", *map(str, runs), "--no-spectral", "--json", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1
    for run in runs:
        a = load_analysis(run)
        np.testing.assert_array_equal(a.importance.order(), np.arange(a.features.z.shape[1]))
    ref = compare([parents / n for n in TRICL], progress=False).pairs.iloc[0]
    spectral = METRICS["ordered_corr_top8"].spectral_name
    assert abs(rows[0]["ordered_corr_top8"] - ref[spectral]) < 0.02
    # trained axes do not agree across seeds, so this is not passing by accident
    assert ref["ordered_corr_top8"] < ref[spectral] - 0.2


def _refused(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_aligning_an_aligned_run_is_refused(aligned, tmp_path, capsys):
    before = _snapshot(aligned, tmp_path)
    err = _refused(
        capsys, "align", str(aligned / f"{TRICL[0]}-aligned"), "--runs-root", str(tmp_path)
    )
    assert "already aligned" in err
    assert _snapshot(aligned, tmp_path) == before


def test_resuming_an_aligned_run_is_refused(aligned, capsys):
    before = _snapshot(aligned)
    err = _refused(
        capsys, "train", "--resume", str(aligned / f"{TRICL[0]}-aligned"), "--no-progress"
    )
    assert "aligned" in err and "resume or retrain the parent" in err
    assert _snapshot(aligned) == before


def _with_dataset(src: Path, root: Path, dataset: str) -> Path:
    """A copy of run ``src`` under ``root`` whose config names another dataset."""
    dst = root / f"{src.name}-other"
    shutil.copytree(src, dst)
    record = json.loads((dst / "config.json").read_text())
    record["config"]["dataset"] = dataset
    (dst / "config.json").write_text(json.dumps(record))
    return dst


def test_bad_inputs_are_refused_and_nothing_is_written(parents, tmp_path, capsys):
    out, src = tmp_path / "out", tmp_path / "src"
    src.mkdir()
    missing = _with_dataset(parents / TRICL[0], src, f"folder:{tmp_path / 'no-such-folder'}")
    good = str(parents / TRICL[1])
    cases = {
        "cannot be loaded": [str(missing)],
        "different datasets": [good, str(missing)],
        "given twice": [good, good],
    }
    before = _snapshot(parents, tmp_path)
    for message, runs in cases.items():
        assert message in _refused(capsys, "align", *runs, "--runs-root", str(out))
    assert _snapshot(parents, tmp_path) == before
    (out / f"{TRICL[0]}-aligned").mkdir(parents=True)
    before = _snapshot(parents, tmp_path)
    # the first target is free, the second exists: neither is written
    err = _refused(capsys, "align", good, str(parents / TRICL[0]), "--runs-root", str(out))
    assert "already exists" in err
    assert _snapshot(parents, tmp_path) == before
    assert sorted(p.name for p in out.iterdir()) == [f"{TRICL[0]}-aligned"]


@pytest.mark.parametrize("record", [{"dim": 0}, {"dim": "64"}, [64]])
def test_a_damaged_aligned_record_is_a_broken_run(aligned, tmp_path, record):
    run = tmp_path / "damaged"
    shutil.copytree(aligned / f"{TRICL[0]}-aligned", run)
    info = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**info, "aligned": record}))
    with pytest.raises(RunError, match="'aligned' record"):
        Run.load(run)
