"""A run on images without labels (a folder of images, no class subfolders): trained, analysed in
both bases, compared across two seeds, and its pages render with "no labels" where classes were.

Two 1-epoch triCL runs (seeds 0 and 1) on 60 digit images written as PNG files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from test_app_pages import app_at, open_page, texts

from tricl.analysis import analyze, compare
from tricl.config import RunConfig
from tricl.report.features import NO_LABELS
from tricl.train import train

N_IMAGES = 60
TINY = {"proj_dim": 8, "proj_hidden_dim": 16, "epochs": 1, "batch_size": 16}


def write_digit_pngs(folder: Path, n: int) -> None:
    """n sklearn digits, 28x28 greyscale PNGs directly in folder (no class subfolders)."""
    folder.mkdir(parents=True)
    x8 = torch.from_numpy(load_digits().images[:n]).float().mul(255 / 16).unsqueeze(1)
    x = F.interpolate(x8, size=(28, 28), mode="bilinear").round().clamp(0, 255)  # (n, 1, 28, 28)
    for i, img in enumerate(x.to(torch.uint8).numpy()):
        Image.fromarray(img[0]).save(folder / f"digit{i:03d}.png")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("nolabels")
    write_digit_pngs(base / "photos", N_IMAGES)
    runs = [
        train(
            RunConfig(method="tricl", dataset=f"folder:{base / 'photos'}", seed=seed, **TINY),
            runs_root=base / "runs",
            progress=False,
        )
        for seed in (0, 1)
    ]
    for r in runs:
        analyze(r, progress=False)
    analyze(runs[0], progress=False, basis="spectral")
    return base


@pytest.fixture(scope="module")
def run(root):
    from tricl.runs import list_runs

    return next(
        r for r in list_runs(root / "runs") if r.name.startswith("tricl_") and "seed0" in r.name
    )


def test_label_free_stages_work_and_class_stages_say_not_measured(root, run):
    from tricl.analysis import load_analysis

    a = load_analysis(run)
    assert not a.has_labels and a.classes == []
    n_test = len(a.features.labels)
    assert (a.features.labels == -1).all() and n_test == round(0.2 * N_IMAGES)
    assert a.features.z.shape == (n_test, 8) and np.isfinite(a.features.z).all()
    assert "ablation" not in a.importance.orders and "S" in a.importance.orders
    assert a.stats.class_means.shape == (8, 0) and (a.stats.dominant_class == -1).all()
    assert np.isfinite(a.stats.mean).all() and a.top_images.top_indices.shape[0] == 8
    assert a.embedding.coords.shape == (n_test, 2)
    assert np.isnan(a.linear_acc) and np.isnan(a.knn_acc)
    assert a.downstream["linear_acc"].isna().all()
    spectral = load_analysis(run, basis="spectral")
    assert spectral is not None and not spectral.has_labels
    assert np.all(np.diff(spectral.importance.scores["eigenvalue"]) <= 0)


def test_two_seeds_compare_without_labels(root):
    from tricl.runs import list_runs

    runs = sorted(
        (r for r in list_runs(root / "runs") if r.name.startswith("tricl_")), key=lambda r: r.name
    )
    comp = compare(runs, out_root=root / "cmp", progress=False)
    row = comp.pairs.iloc[0]
    assert 0 <= row["cka"] <= 1 + 1e-6 and 0 <= row["ordered_corr_top8"] <= 1 + 1e-6


def _no_labels_shown(at) -> bool:
    shown = texts(at)
    return NO_LABELS in shown or any(m.value == "no labels" for m in at.metric)


@pytest.mark.parametrize(
    "page", ["features.py", "feature_detail.py", "embedding.py", "few_features.py", "probe.py"]
)
def test_pages_say_no_labels(root, run, page, monkeypatch):
    at = open_page(app_at(root / "runs", monkeypatch, run=run.name), page)
    assert not at.error, [e.value for e in at.error]
    if page != "probe.py":
        assert _no_labels_shown(at), page
    if page == "features.py":
        table = at.dataframe[0].value
        assert "selectivity" not in table and len(table) == 8
    if page == "feature_detail.py":
        assert [m.value for m in at.metric if m.label == "Classes"] == ["no labels"]


def test_feature_detail_in_the_spectral_basis_says_no_labels(root, run, monkeypatch):
    app = app_at(root / "runs", monkeypatch, run=run.name, basis="spectral")
    at = open_page(app, "feature_detail.py")
    assert not at.error, [e.value for e in at.error]
    assert _no_labels_shown(at)
