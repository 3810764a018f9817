"""The memory-mapped feature store, and what keeps analysis linear in the number of images: probes
fitted on a bounded subsample, the spectral basis estimated on a bounded subsample."""

import json
import shutil

import numpy as np
import pytest

from tricl.analysis import analyze, load_analysis
from tricl.analysis import spectral as spectral_mod
from tricl.analysis.downstream import knn_accuracy, linear_probe, probe_rows
from tricl.analysis.feature_store import STORE_FILE, read_store, store_dir
from tricl.analysis.features import extract
from tricl.analysis.store import analysis_dir, load_npz, save_npz
from tricl.config import RunConfig
from tricl.runs import Run
from tricl.train import train

TINY = {"dataset": "digits", "proj_dim": 8, "proj_hidden_dim": 16, "epochs": 1, "batch_size": 128}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """A tiny trained run, analysed on the test split (which writes both splits' stores)."""
    run = train(RunConfig(**TINY), runs_root=tmp_path_factory.mktemp("runs"), progress=False)
    analyze(run, progress=False)
    return run


def _store_meta(run: Run, split: str) -> dict:
    return json.loads((store_dir(analysis_dir(run.path, split)) / STORE_FILE).read_text())


def test_the_store_holds_one_pass_of_every_image_memory_mapped(run):
    data = run.input_data(run.load_data())
    z, h = extract(run.encoder(), data.train_x, data.preprocess)
    meta = _store_meta(run, "train")
    store = read_store(analysis_dir(run.path, "train"), meta["key"])
    assert store is not None and isinstance(store.z, np.memmap) and isinstance(store.h, np.memmap)
    np.testing.assert_array_equal(store.z, z.astype(np.float16))  # as features.npz stored it
    np.testing.assert_array_equal(store.h, h)  # full precision: the backbone probe's input
    np.testing.assert_array_equal(store.y, data.train_y.numpy())
    a = load_analysis(run)
    np.testing.assert_array_equal(a.features.train_z, z.astype(np.float16).astype(np.float32))
    assert a.features.z.dtype == np.float32 and isinstance(a.features.h, np.memmap)


def test_the_train_split_reuses_the_train_store_no_second_pass(run):
    before = _store_meta(run, "train")["id"]
    a = analyze(run, split="train", progress=False)
    assert _store_meta(run, "train")["id"] == before
    assert a.features.z.shape == a.features.train_z.shape


def test_a_store_of_other_weights_or_another_pass_reads_as_missing(run):
    folder = analysis_dir(run.path, "test")
    meta = _store_meta(run, "test")
    assert read_store(folder, meta["key"], meta["id"]) is not None
    assert read_store(folder, meta["key"], "another-pass") is None
    assert read_store(folder, {**meta["key"], "weights_hash": "0" * 16}) is None


def test_a_features_file_from_before_the_store_still_loads(run, tmp_path):
    """Shipped runs keep z, h and train z inside features.npz: read as before, nothing moves."""
    copy = Run.load(shutil.copytree(run.path, tmp_path / "copy"))
    now = load_analysis(copy)
    path = analysis_dir(copy.path, "test") / "features.npz"
    arrays, meta = load_npz(path)
    f = now.features
    old = {"z": f.z, "h": np.asarray(f.h), "train_z": f.train_z}
    save_npz(path, {**arrays, **{n: v.astype(np.float16) for n, v in old.items()}}, meta)
    shutil.rmtree(store_dir(analysis_dir(copy.path, "test")))
    shutil.rmtree(store_dir(analysis_dir(copy.path, "train")))
    legacy = load_analysis(copy)
    assert legacy is not None
    np.testing.assert_array_equal(legacy.features.z, f.z)
    assert analyze(copy, progress=False).recomputed == ()


def test_a_probe_fits_on_a_fixed_subsample_above_its_bound():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 4)), rng.integers(0, 3, 300)
    rows = probe_rows(300, 100)
    assert len(rows) == 100 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, probe_rows(300, 100))  # seeded: the same rows
    np.testing.assert_array_equal(probe_rows(80, 100), np.arange(80))  # all rows below it
    capped = linear_probe(x, y, x, y, max_train=100)
    by_hand = linear_probe(x[rows], y[rows], x, y)
    np.testing.assert_array_equal(capped.predictions, by_hand.predictions)
    assert len(capped.predictions) == 300  # evaluated on every row
    # k-NN: at most max_queries queries (the same fixed rows), against every train row
    exclude = np.arange(300)  # the train split against itself: no query finds itself
    got = knn_accuracy(x, y, x, y, exclude=exclude, max_queries=100)
    assert got == knn_accuracy(x, y, x[rows], y[rows], exclude=exclude[rows])


def test_the_spectral_basis_of_a_large_set_uses_a_stated_subsample(run, tmp_path, monkeypatch):
    copy = Run.load(shutil.copytree(run.path, tmp_path / "copy"))
    n = len(copy.load_data().train_x)
    monkeypatch.setattr(spectral_mod, "MAX_IMAGES", 100)
    basis = spectral_mod.spectral_basis(copy, reps=1)
    assert (basis.images, basis.images_total, basis.pairs) == (100, n, 100)
    assert basis.subsampled
    again = spectral_mod.load_spectral_basis(copy, reps=1)
    assert (again.images, again.images_total) == (100, n)  # the artifact says so
    monkeypatch.setitem(spectral_mod.SPECTRAL_PARAMS, "reps", 1)
    a = analyze(copy, basis="spectral", progress=False)
    assert a.estimated_on == (100, n)  # what the Features page states
    assert analyze(copy, progress=False).estimated_on is None
