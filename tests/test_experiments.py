"""The reproduction script (smoke version, as CI runs it) and the walkthrough notebook."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_reproduce_smoke_writes_results_with_tables_and_figures(tmp_path):
    from tricl.experiments.reproduce import main

    out = tmp_path / "docs"
    assert (
        main(["--smoke", "--runs-root", str(tmp_path / "runs"), "--out", str(out), "--no-progress"])
        == 0
    )
    text = (out / "RESULTS.md").read_text()
    from tricl.analysis.metrics import METRICS

    for needle in (
        "Identifiability across seeds",
        *(m.label for m in METRICS.values()),  # the study's table lists every registered metric
        "linear top-8",
        "| tricl",
        "| simclr",
    ):
        assert needle in text, needle
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == [
        "digits_few_features.png",
        "digits_identifiability.png",
        "digits_spectra.png",
    ]
    assert all((out / "figures" / f).stat().st_size > 5000 for f in figures)
    # a second call reuses the runs and the cached analyses
    assert (
        main(["--smoke", "--runs-root", str(tmp_path / "runs"), "--out", str(out), "--no-progress"])
        == 0
    )


@pytest.mark.slow
def test_synthetic_known_answer_tricl_recovers_the_factors_in_order():
    """Claim 1 in its cleanest form: 4 latent factors of known, distinct strengths.

    With the whitening recipe a learned S must put factor r at rank r (|corr| >= 0.9 for every
    rank) on each seed, so both seeds agree feature by feature. Fails if the loss, the S
    parametrisation or its learning rate loses the property (the paper's decorrelation term
    does: docs/INVESTIGATION.md).
    """
    import numpy as np

    from tricl.experiments.synthetic import DEFAULT_EIGENVALUES, RECIPES, train_and_score

    for seed in (0, 1):
        r = train_and_score("tricl", seed, **RECIPES["whiten"])
        assert (r.rank_corr >= 0.9).all(), (seed, r.rank_corr, r.importance)
        assert (np.diff(r.importance) < 0).all()
        # S ends ordered like the eigenvalues it stands for.
        assert np.corrcoef(r.importance, DEFAULT_EIGENVALUES)[0, 1] > 0.95


@pytest.mark.slow
def test_walkthrough_notebook_executes_on_the_shipped_runs(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if not any((REPO / "checkpoints").glob("tricl_mnist5k_*")):
        pytest.skip("no shipped runs in checkpoints/")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must draw inline PNGs
    nb = nbformat.read(REPO / "notebooks" / "walkthrough.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    )
    client.execute()
    outputs = "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "feature #1" in outputs and "ordered_corr_top8" in outputs
    assert "spectral_corr_top8" in outputs
    assert (
        sum(
            "image/png" in o.get("data", {})
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
        )
        >= 4
    )
