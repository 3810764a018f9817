"""An analysis' summary and a comparison's pair table, read without the feature arrays
(``tricl.analysis.summary``, ``comparison.load_pairs``): the same numbers and the same freshness
as the full reads, on copies of shipped runs (nothing is computed, no torch)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tricl.analysis import load_analysis, load_comparison
from tricl.analysis.comparison import load_pairs
from tricl.analysis.summary import AnalysisSummary, load_summary
from tricl.report.runs import sorted_importance, spectrum_summary
from tricl.runs import Run

SHIPPED = Path(__file__).parents[1] / "checkpoints"
SEEDS = [f"tri-eigen_mnist5k_small_cnn_k64_seed{i}" for i in range(3)]


@pytest.fixture
def copies(tmp_path) -> list[Path]:
    """The three shipped tri-eigen runs and the comparisons beside them, copied."""
    for name in SEEDS:
        shutil.copytree(SHIPPED / name, tmp_path / name)
    shutil.copytree(SHIPPED / "_compare", tmp_path / "_compare")
    return [tmp_path / name for name in SEEDS]


def _same(summary: AnalysisSummary, whole) -> None:
    assert summary.weights_hash == whole.weights_hash and summary.k == whole.k
    assert summary.full == whole.full and summary.images_hash == whole.features.images_hash
    assert summary.importance.default == whole.importance.default
    for name, scores in whole.importance.scores.items():
        np.testing.assert_array_equal(summary.importance.scores[name], scores)
    pd.testing.assert_frame_equal(summary.curves(), whole.curves())


def test_a_summary_holds_the_numbers_of_the_whole_analysis():
    for name in (
        SEEDS[0],
        "simclr_mnist5k_small_cnn_k64_seed0",
        "clip_mnist5k-captions_small_cnn_k64_seed0",
    ):
        whole = load_analysis(SHIPPED / name)
        _same(load_summary(SHIPPED / name), whole)
        _same(AnalysisSummary.of(whole), whole)
    # the spectral basis builds on the whole trained analysis: summarised from it
    spectral = load_analysis(SHIPPED / SEEDS[0], basis="spectral")
    _same(load_summary(SHIPPED / SEEDS[0], basis="spectral"), spectral)


def test_the_pairs_read_alone_are_the_comparison_s(copies):
    whole = load_comparison(copies)
    assert whole is not None  # shipped: read, never computed
    pd.testing.assert_frame_equal(load_pairs(copies), whole.pairs)
    summaries = [load_summary(p) for p in copies]
    pd.testing.assert_frame_equal(load_pairs(copies, summaries=summaries), whole.pairs)


def test_retrained_weights_make_the_summary_and_the_pairs_stale(copies):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    weights = str(copies[1] / "model.safetensors")
    with safe_open(weights, framework="numpy") as fh:
        tensors, meta = {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()  # noqa: SIM118
    name = next(k for k, v in tensors.items() if v.dtype == np.float32)
    tensors[name] = tensors[name] + np.float32(1e-3)  # retrained: another weights hash
    save_file(tensors, weights, metadata=meta)
    assert load_analysis(copies[1]) is None and load_summary(copies[1]) is None
    assert load_comparison(copies) is None and load_pairs(copies) is None
    assert load_summary(copies[0]) is not None  # the other runs keep theirs


def test_a_stale_stage_makes_the_summary_stale_even_unread(copies):
    """The features are checked by their meta alone: a features file of another stage version
    makes the summary missing although its arrays are never read."""
    from tricl.analysis.store import load_npz, save_npz

    path = copies[0] / "analysis" / "test" / "features.npz"
    arrays, meta = load_npz(path)
    save_npz(path, arrays, {**meta, "version": meta["version"] + 1})
    assert load_analysis(copies[0]) is None and load_summary(copies[0]) is None
    assert load_pairs(copies) is None


def test_the_runs_page_spectrum_sorts_the_default_order_once():
    runs = [Run.load(SHIPPED / name) for name in SEEDS]
    found = {r.name: load_summary(r) for r in runs}
    order, scores = sorted_importance(found[SEEDS[0]])
    assert order == found[SEEDS[0]].importance.default and len(scores) == 64
    assert (np.diff(scores) <= 0).all()
    table = spectrum_summary(runs, found)
    assert len(table) == 1 and table[0]["k"] == 64  # one method, mean over its seeds
    assert 0.125 < table[0]["top8_share"] < 1 and table[0]["max_over_min"] > 1
