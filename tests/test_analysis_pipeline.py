"""analyze, load_analysis, compare on real tiny runs: artifacts, caching, concurrency, bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tricl.analysis import (
    STAGES,
    AnalysisError,
    analyze,
    compare,
    feature_order,
    load_analysis,
)
from tricl.analysis.comparison import pair_columns
from tricl.analysis.metrics import METRICS, metric_columns
from tricl.config import RunConfig
from tricl.runs import Run, atomic_write_bytes, read_weights, weights_to_bytes
from tricl.train import train

TINY = {"dataset": "digits", "proj_dim": 16, "proj_hidden_dim": 32, "epochs": 1, "batch_size": 128}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def tricl_run(runs_root) -> Run:
    return train(RunConfig(method="tricl", **TINY), runs_root=runs_root, progress=False)


@pytest.fixture(scope="module")
def simclr_run(runs_root) -> Run:
    return train(RunConfig(method="simclr", **TINY), runs_root=runs_root, progress=False)


@pytest.fixture(scope="module")
def analysis(tricl_run):
    return analyze(tricl_run, progress=False)


def _copy(run: Run, dest: Path, *, with_analysis: bool = True) -> Path:
    ignore = None if with_analysis else shutil.ignore_patterns("analysis")
    shutil.copytree(run.path, dest, ignore=ignore)
    return dest


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _set_dataset(run_dir: Path, spec: str) -> None:
    info = json.loads((run_dir / "config.json").read_text())
    info["config"]["dataset"] = spec
    (run_dir / "config.json").write_text(json.dumps(info))


# --------------------------------------------------------------------------- artifacts


def test_features_are_the_encoders_outputs(tricl_run, analysis):
    data = tricl_run.load_data()
    f = analysis.features
    assert f.z.shape == (len(data.test_y), 16) and f.h.shape == (len(data.test_y), 128)
    assert f.train_z.shape == (len(data.train_y), 16)
    np.testing.assert_array_equal(f.labels, data.test_y.numpy())
    np.testing.assert_array_equal(f.indices, np.arange(len(data.test_y)))
    enc = tricl_run.encoder()
    with torch.no_grad():
        z = enc(data.preprocess(data.test_x[:5])).numpy()
    # stored as float16 (about 3 significant digits)
    np.testing.assert_allclose(f.z[:5], z, rtol=2e-3, atol=1e-4)
    assert f.classes == data.classes and analysis.weights_hash == tricl_run.weights_hash


def test_importance_default_is_learned_s(tricl_run, analysis):
    s = tricl_run.encoder().importance().detach().numpy()
    imp = analysis.importance
    assert imp.default == "S" and set(imp.orders) == {"S", "variance", "ablation"}
    np.testing.assert_allclose(imp.scores["S"], s, rtol=1e-6)
    np.testing.assert_array_equal(feature_order(analysis), np.argsort(-s, kind="stable"))
    for order in imp.orders.values():
        assert sorted(order) == list(range(16))


def test_stats_and_top_images_agree_with_features(analysis):
    z, labels = analysis.features.z, analysis.features.labels
    st = analysis.stats
    assert st.class_means.shape == (16, 10)
    np.testing.assert_allclose(st.class_means[:, 3], z[labels == 3].mean(axis=0), rtol=1e-4)
    assert st.selectivity_n == 100
    assert ((st.dominant_share >= 0.1) & (st.dominant_share <= 1)).all()
    assert (st.class_entropy <= np.log2(10) + 1e-6).all()
    np.testing.assert_array_equal(st.hist_counts.sum(axis=1), len(z))
    top = analysis.top_images
    assert top.top_indices.shape == (16, 32)
    np.testing.assert_allclose(top.top_values, -np.sort(-z, axis=0)[:32].T)
    np.testing.assert_allclose(top.bottom_values, np.sort(z, axis=0)[:32].T)
    np.testing.assert_array_equal(z[top.top_indices[5], 5], top.top_values[5])


def test_embedding_and_downstream(analysis):
    emb = analysis.embedding
    assert emb.coords.shape == (len(analysis.features.z), 2) and np.isfinite(emb.coords).all()
    assert emb.params["n_neighbors"] == 15 and emb.params["random_state"] == 0
    curves = analysis.curves()
    assert list(curves.columns[:4]) == ["selection", "k", "linear_acc", "retrieval_map"]
    assert sorted(set(curves["k"])) == [1, 2, 4, 8, 16]
    assert set(analysis.downstream["order"]) == {"S", "variance", "ablation", "none"}
    # the top-16 probe uses all 16 features: the full linear probe
    full_row = curves.query("selection == 'top' and k == 16").iloc[0]
    assert full_row.linear_acc == pytest.approx(analysis.linear_acc)
    assert full_row.retrieval_map == pytest.approx(analysis.full["retrieval_map"])
    for key in ("linear_acc", "knn_acc", "backbone_linear_acc", "backbone_knn_acc"):
        assert 0.1 < analysis.full[key] <= 1.0, key  # digits, 10 classes: above chance


# --------------------------------------------------------------------------- caching


def test_second_analyze_reads_without_recomputing(tricl_run, analysis):
    folder = tricl_run.path / "analysis" / "test"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = analyze(tricl_run, progress=False)
    assert again.recomputed == ()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    np.testing.assert_array_equal(again.features.z, analysis.features.z)
    np.testing.assert_array_equal(again.embedding.coords, analysis.embedding.coords)
    assert again.downstream.equals(analysis.downstream)
    cached = load_analysis(tricl_run.path)
    assert cached is not None and cached.weights_hash == analysis.weights_hash


def test_top_n_change_recomputes_only_top_images(tricl_run, analysis, tmp_path):
    run_dir = _copy(tricl_run, tmp_path / "copy")
    out = analyze(run_dir, top_n=5, progress=False)
    assert out.recomputed == ("top_images",)
    assert out.top_images.top_indices.shape == (16, 5)
    assert analyze(run_dir, top_n=5, progress=False).recomputed == ()
    assert analyze(run_dir, top_n=5, force=True, progress=False).recomputed == STAGES


def test_changed_weights_recompute_everything(tricl_run, analysis, tmp_path):
    run_dir = _copy(tricl_run, tmp_path / "copy")
    tensors, meta = read_weights(run_dir / "model.safetensors")
    tensors["importance_logits"] = torch.linspace(2.0, -2.0, 16)  # S order is now 0, 1, 2, ...
    tensors["projector.2.bias"] = tensors["projector.2.bias"] + 1.0
    atomic_write_bytes(run_dir / "model.safetensors", weights_to_bytes(tensors, meta))
    assert load_analysis(run_dir) is None  # stale artifacts are never served
    out = analyze(run_dir, progress=False)
    assert out.recomputed == STAGES
    assert out.weights_hash != analysis.weights_hash
    np.testing.assert_array_equal(feature_order(out), np.arange(16))
    np.testing.assert_allclose(out.features.z, analysis.features.z + 1.0, rtol=2e-3, atol=2e-3)


def test_load_analysis_never_computes(tricl_run, tmp_path):
    run_dir = _copy(tricl_run, tmp_path / "fresh", with_analysis=False)
    assert load_analysis(run_dir) is None
    assert not (run_dir / "analysis").exists()


def test_two_concurrent_analyze_processes(tricl_run, analysis, tmp_path):
    run_dir = _copy(tricl_run, tmp_path / "fresh")
    # keep only the UMAP map: every other stage is computed again, without paying numba's
    # compilation of UMAP (~10-20 s) in a fresh process
    for p in (run_dir / "analysis" / "test").iterdir():
        if p.is_dir():  # the feature store
            shutil.rmtree(p)
        elif p.name != "embedding.npz":
            p.unlink()
    code = (
        "import sys; from tricl.analysis import analyze;"
        " print('computed:' + ','.join(analyze(sys.argv[1], progress=False).recomputed))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(run_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    computed = sorted(out.strip().splitlines()[-1] for out, _ in outs)
    stages = ",".join(s for s in STAGES if s != "embedding")
    assert computed == ["computed:", "computed:" + stages]  # one computed; the other waited, read
    result = load_analysis(run_dir)
    assert result is not None
    np.testing.assert_allclose(result.features.z, analysis.features.z, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.embedding.coords, analysis.embedding.coords)
    leftovers = [p.name for p in (run_dir / "analysis" / "test").iterdir() if ".tmp" in p.name]
    assert leftovers == []


# --------------------------------------------------------------------------- bad input


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_unavailable_dataset_is_refused_without_touching_artifacts(tricl_run, analysis, tmp_path):
    run_dir = _copy(tricl_run, tmp_path / "copy")
    before = _snapshot(run_dir / "analysis")
    _set_dataset(run_dir, f"folder:{tmp_path / 'no-such-folder'}")
    with pytest.raises(AnalysisError) as exc:
        analyze(run_dir, progress=False)
    assert "no-such-folder" in _one_line(exc)
    with pytest.raises(AnalysisError):
        analyze(tricl_run, dataset="folder:/no/such/folder", progress=False)
    after = _snapshot(run_dir / "analysis")
    assert {k: v for k, v in after.items() if k != "test/.lock"} == {
        k: v for k, v in before.items() if k != "test/.lock"
    }


def test_run_without_weights_is_refused(tricl_run, analysis, tmp_path):
    run_dir = _copy(tricl_run, tmp_path / "copy")
    (run_dir / "model.safetensors").unlink()
    before = _snapshot(run_dir / "analysis")
    with pytest.raises(AnalysisError) as exc:
        analyze(run_dir, progress=False)
    assert "model.safetensors" in _one_line(exc)
    assert _snapshot(run_dir / "analysis") == before
    with pytest.raises(AnalysisError):
        load_analysis(run_dir)


def test_bad_arguments_are_refused(tricl_run):
    with pytest.raises(AnalysisError, match="unknown split"):
        analyze(tricl_run, split="val", progress=False)
    with pytest.raises(AnalysisError, match="top_n"):
        analyze(tricl_run, top_n=0, progress=False)
    with pytest.raises(AnalysisError, match="at least two runs"):
        compare([tricl_run], progress=False)
    with pytest.raises(AnalysisError, match="given twice"):
        compare([tricl_run, tricl_run.path], progress=False)


def _image_folder(root: Path, mode: str, n_per_class: int = 25) -> Path:
    rng = np.random.default_rng(0)
    shape = (28, 28) if mode == "L" else (28, 28, 3)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / c / f"{i}.png")
    return root


def test_dataset_of_another_format_is_refused(tricl_run, tmp_path):
    rgb = _image_folder(tmp_path / "rgb", "RGB")
    with pytest.raises(AnalysisError) as exc:
        analyze(tricl_run, dataset=f"folder:{rgb}", progress=False)
    assert "same format" in _one_line(exc)


# --------------------------------------------------------------------------- compare


def test_compare_run_with_its_copy_scores_one(tricl_run, analysis, tmp_path):
    twin = Run.load(_copy(tricl_run, tmp_path / "twin"))
    analyze(twin, top_n=5, progress=False)
    comp = compare([tricl_run, twin], out_root=tmp_path / "cmp", progress=False)
    assert load_analysis(twin).top_images.top_indices.shape == (16, 5)  # compare kept top_n
    row = comp.pairs.iloc[0]
    for col in metric_columns(spectral=True):
        assert row[col] == pytest.approx(1.0, abs=1e-3), col
    assert (comp.matches["rank_a"] == comp.matches["rank_b"]).all()
    assert (comp.matches["sign"] == 1).all()


def test_compare_tricl_with_simclr(tricl_run, simclr_run, runs_root):
    comp = compare([tricl_run, simclr_run], progress=False)
    assert comp.recomputed and comp.path.parent == runs_root / "_compare"
    assert list(comp.pairs.columns) == pair_columns(spectral=True)
    spectral = [m.spectral_name for m in METRICS.values() if m.spectral]
    assert comp.pairs[spectral].stack().between(0, 1).all()
    row = comp.pairs.iloc[0]
    assert (row.run_a, row.run_b) == (tricl_run.name, simclr_run.name)
    assert 0 <= row.ordered_corr <= row.mcc <= 1  # matching can only raise the mean |corr|
    a = load_analysis(tricl_run)
    b = load_analysis(simclr_run)
    assert b.importance.default == "variance"
    za = a.features.z[:, feature_order(a)]
    zb = b.features.z[:, feature_order(b)]
    expected = abs(np.corrcoef(za[:, 2], zb[:, 5])[0, 1])
    np.testing.assert_allclose(comp.abs_corr(0, 1)[2, 5], expected, rtol=1e-5)
    assert len(comp.matches) == 16 and sorted(comp.matches["rank_b"]) == list(range(16))
    m = comp.matches.iloc[0]
    assert m.feature_a == feature_order(a)[m.rank_a]
    assert m.feature_b == feature_order(b)[m.rank_b]
    again = compare([tricl_run, simclr_run], progress=False)
    assert not again.recomputed and again.pairs.equals(comp.pairs)
    np.testing.assert_array_equal(again.corr[(0, 1)], comp.corr[(0, 1)])


def test_compare_refuses_runs_on_different_images(tricl_run, simclr_run, runs_root, tmp_path):
    compare([tricl_run, simclr_run], progress=False)
    before = _snapshot(runs_root / "_compare")
    other = _copy(tricl_run, tmp_path / "on_folder", with_analysis=False)
    _set_dataset(other, f"folder:{_image_folder(tmp_path / 'gray', 'L')}")
    with pytest.raises(AnalysisError) as exc:
        compare([tricl_run, other], progress=False)
    assert "different images" in _one_line(exc)
    assert _snapshot(runs_root / "_compare") == before
