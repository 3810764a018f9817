"""Damage to what a run derives: the pair basis of an image-text run, an aligned run's layer.

Copies of shipped runs keep this fast (their caches come along; nothing is trained):
- ``RUN/analysis/pair_basis.npz`` damaged (truncated, valid npz with a list for metadata, arrays
  of the wrong shape): ``tricl compare --basis spectral`` reads it as missing and recomputes the
  same basis, exit 0;
- an aligned run's fixed layer (``aligner.weight``) of the wrong shape, missing, or NaN: loading
  the run's encoder is refused with one line, and ``tricl analyze`` exits 2 writing nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from faults.test_artifacts import NPZ
from tricl.analysis.pair_basis import PAIR_BASIS_FILE
from tricl.cli import main
from tricl.runs import SHIPPED_RUNS_ROOT, WEIGHTS_FILE, Run, RunError

CLIP = [f"clip_mnist5k-captions_small_cnn_k64_seed{s}" for s in (0, 1)]
TRICL = "tricl_mnist5k_small_cnn_k64_seed0"
PAIR_FAULTS = ["truncated", "meta_is_a_list", "wrong_shape"]


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory) -> Path:
    """Two shipped CLIP seeds and their spectral-basis comparison (cached in ``_compare``)."""
    root = tmp_path_factory.mktemp("clip")
    for name in CLIP:
        shutil.copytree(SHIPPED_RUNS_ROOT / name, root / name)
    assert (
        main(["compare", *(str(root / n) for n in CLIP), "--basis", "spectral", "--no-progress"])
        == 0
    )
    return root


@pytest.mark.parametrize("fault", PAIR_FAULTS)
def test_a_damaged_pair_basis_is_recomputed_by_compare(clip_root, tmp_path, capsys, fault):
    root = shutil.copytree(clip_root, tmp_path / "runs")
    path = root / CLIP[0] / "analysis" / PAIR_BASIS_FILE
    pristine = _npz(path)
    NPZ[fault](path)
    capsys.readouterr()
    argv = ["compare", *(str(root / n) for n in CLIP), "--basis", "spectral", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "image and text features, spectral basis" in capsys.readouterr().out
    again = _npz(path)
    assert again.keys() == pristine.keys()
    assert str(again.pop("__meta__")) == str(pristine.pop("__meta__"))
    for key, value in pristine.items():  # the same basis again (float64 sums, another order)
        np.testing.assert_allclose(again[key], value, rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def aligned_run(tmp_path_factory) -> Path:
    """``tricl align`` of a copy of a shipped triCL run (its spectral basis comes cached)."""
    root = tmp_path_factory.mktemp("parent")
    parent = root / TRICL
    (parent / "analysis").mkdir(parents=True)
    for name in ("config.json", WEIGHTS_FILE, "metrics.jsonl"):
        shutil.copy2(SHIPPED_RUNS_ROOT / TRICL / name, parent / name)
    shutil.copy2(SHIPPED_RUNS_ROOT / TRICL / "analysis" / "spectral.npz", parent / "analysis")
    out = tmp_path_factory.mktemp("aligned")
    assert main(["align", str(parent), "--runs-root", str(out)]) == 0
    return out / f"{TRICL}-aligned"


def _tamper(tensors: dict, fault: str) -> dict:
    weight = tensors["aligner.weight"]  # (r, k)
    if fault == "wrong_shape":
        return {**tensors, "aligner.weight": weight[:-1]}  # (r - 1, k)
    if fault == "missing":
        return {k: v for k, v in tensors.items() if k != "aligner.weight"}
    return {**tensors, "aligner.weight": weight.clone().fill_(float("nan"))}


LAYER_FAULTS = [
    "wrong_shape",
    "missing",
    "nan",
]


@pytest.mark.parametrize("fault", LAYER_FAULTS)
def test_a_tampered_aligned_layer_is_refused_in_one_line(aligned_run, tmp_path, capsys, fault):
    run = shutil.copytree(aligned_run, tmp_path / aligned_run.name)
    with safe_open(str(run / WEIGHTS_FILE), "pt") as fh:
        meta = fh.metadata()
    save_file(_tamper(load_file(str(run / WEIGHTS_FILE)), fault), str(run / WEIGHTS_FILE), meta)
    with pytest.raises(RunError) as exc:
        Run.load(run).encoder()
    assert "\n" not in str(exc.value) and WEIGHTS_FILE in str(exc.value)
    capsys.readouterr()
    assert main(["analyze", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    written = [p for p in (run / "analysis").rglob("*") if p.is_file() and p.name != ".lock"]
    assert not written, f"an analysis was written: {written}"
