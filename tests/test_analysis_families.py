"""The stage families: every shipped artifact reads back fresh through them, and a new stage is one
declaration that reaches ``Analysis`` by name without making the analyses already cached stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tricl.analysis import analyze, load_analysis, load_comparison, load_consensus
from tricl.analysis.image_stages import ANALYSIS_STAGES
from tricl.analysis.image_text import load_text_analysis
from tricl.analysis.image_text_compare import load_image_text_comparison
from tricl.analysis.stages import Output, Stage, need_arrays
from tricl.analysis.store import load_npz
from tricl.bases import BASIS_NAMES

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
RUNS = sorted(p for p in SHIPPED.iterdir() if p.is_dir() and not p.name.startswith("_"))


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_every_shipped_analysis_reads_back_fresh_in_every_basis(run):
    for basis in BASIS_NAMES:
        a = load_analysis(run, basis=basis)
        assert a is not None, f"{run.name} ({basis}) is stale or missing"
        assert a.recomputed == () and set(a.values) >= {"features", "importance", "downstream"}
        assert a.values["features"] is a.features  # the typed fields are the values by name
    if run.name.startswith(("clip", "triclip")):
        assert load_text_analysis(run) is not None


def test_every_shipped_comparison_reads_back_fresh():
    folders = sorted(p for p in (SHIPPED / "_compare").iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        image_text = (folder / "image_text_corr.npz").exists()
        _, meta = load_npz(folder / ("image_text_corr.npz" if image_text else "corr.npz"))
        key = meta.get("key", meta)  # format-2 files keep their key at the top
        runs = [SHIPPED / name for name in key["runs"]]
        basis = key.get("basis", "trained")
        if image_text:
            got = [load_image_text_comparison(runs, basis=basis)]
        else:
            got = [load_consensus(runs)] if (folder / "consensus.csv").exists() else []
            if (folder / "pairs.csv").exists():
                got.append(load_comparison(runs, basis=basis))
        assert got and all(g is not None and g.path == folder for g in got), folder.name


def _compute_means(job, inputs) -> Output:
    return Output({"mean": inputs["features"].z.mean(axis=0)})


def _load_means(arrays, meta, job) -> np.ndarray:
    need_arrays(arrays, {"mean": 1})
    return arrays["mean"]


def test_a_new_stage_is_one_declaration_that_reaches_the_analysis(tmp_path, monkeypatch):
    run = tmp_path / RUNS[0].name
    shutil.copytree(RUNS[0], run)
    stage = Stage("feature_means", "feature_means.npz", _compute_means, _load_means, ("features",))
    monkeypatch.setitem(ANALYSIS_STAGES, stage.name, stage)

    before = load_analysis(run)  # cached analyses stay readable without the new artifact
    assert before is not None and "feature_means" not in before.values
    out = analyze(run, progress=False)
    assert out.recomputed == ("feature_means",)  # the other stages were fresh: only it ran
    after = load_analysis(run)
    np.testing.assert_array_equal(after.feature_means, after.features.z.mean(axis=0))
    assert after.params["feature_means"] == {}
    with pytest.raises(AttributeError, match="no field or stage 'nonexistent'"):
        after.nonexistent  # noqa: B018
