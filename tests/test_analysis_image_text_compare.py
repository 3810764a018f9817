"""Identifiability of image-text runs: the pair basis (CCA) on known answers, and the comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from test_image_text_train import tiny, write_caption_csv

from tricl.analysis.comparison import compare
from tricl.analysis.image_text import load_text_features
from tricl.analysis.image_text_compare import (
    IMAGE_TEXT_BASES,
    PAIR_COLUMNS,
    SIDES,
    ImageTextComparison,
    _compute_pairs,
    _Job,
    compare_image_text,
    load_image_text_comparison,
    summarize,
    summary_columns,
)
from tricl.analysis.metrics import METRICS
from tricl.analysis.pair_basis import (
    PAIR_BASIS_FILE,
    estimate_pair_basis,
    load_pair_basis,
    pair_basis,
)
from tricl.analysis.spectral import spectral_basis
from tricl.analysis.store import AnalysisError
from tricl.cli import main
from tricl.runs import Run
from tricl.train import train

RHO = np.array([0.95, 0.8, 0.6, 0.4, 0.2])


def _paired_factors(n: int, rho: np.ndarray = RHO, seed: int = 0):
    """Image and text features of n pairs with known canonical pairs.

    Latent s (n, r); image factor x_i and text factor y_i each share sqrt(rho_i) of s_i, so
    corr(x_i, y_i) = rho_i and every other pair is uncorrelated. The image side is mixed into 6
    features (one redundant, so its span has rank 5) and the text side into 7, both shifted.

    Returns:
        ``(image_z (n, 6), text_z (n, 7), x (n, r), y (n, r))``.
    """
    rng = np.random.default_rng(seed)
    r = len(rho)
    s = rng.standard_normal((n, r))
    x = np.sqrt(rho) * s + np.sqrt(1 - rho) * rng.standard_normal((n, r))
    y = np.sqrt(rho) * s + np.sqrt(1 - rho) * rng.standard_normal((n, r))
    image = np.hstack([x, x[:, :1] + x[:, 1:2]]) @ rng.standard_normal((r + 1, 6)) + 2.0
    text = y @ rng.standard_normal((r, 7)) - 1.0
    return image, text, x, y


def _abs_diag_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = a.shape[1]
    return np.abs(np.diagonal(np.corrcoef(a.T, b.T)[:k, k:]))


# --------------------------------------------------------------------------- pair basis (CCA)


def test_pair_basis_recovers_the_canonical_pairs_in_order():
    image, text, x, y = _paired_factors(20000)
    basis = estimate_pair_basis(image, text)
    # 6 image features of rank 5 and 7 text features of rank 5: the null directions are dropped
    assert basis.image_rotation.shape == (6, 5) and basis.text_rotation.shape == (7, 5)
    np.testing.assert_allclose(basis.correlations, RHO, atol=0.015)
    assert (np.diff(basis.correlations) < 0).all()
    u, v = basis.project_image(image), basis.project_text(text)
    assert (_abs_diag_corr(u, x) > 0.99).all(), _abs_diag_corr(u, x)
    assert (_abs_diag_corr(v, y) > 0.99).all(), _abs_diag_corr(v, y)
    # the variates are the canonical pairs: corr(u_r, v_r) = rho_r (to the ridge's shrinkage), and
    # each side is white
    pair_corr = np.diagonal(np.corrcoef(u.T, v.T)[:5, 5:])
    np.testing.assert_allclose(pair_corr, basis.correlations, atol=1e-4)
    np.testing.assert_allclose(np.cov(u.T, bias=True), np.eye(5), atol=1e-4)
    np.testing.assert_allclose(np.cov(v.T, bias=True), np.eye(5), atol=1e-4)
    # split-half noise: small, and the well-separated correlations form no group
    assert (basis.split_half_diff < 0.03).all() and basis.groups == []
    assert basis.pairs == 20000


def test_pair_basis_flags_tied_correlations_as_one_group():
    rho = np.array([0.9, 0.6, 0.6, 0.3])  # ranks 2 and 3 cannot be ordered
    image, text, _, _ = _paired_factors(4000, rho=rho, seed=2)
    basis = estimate_pair_basis(image, text)
    assert basis.groups == [(1, 2)]


@pytest.mark.parametrize("ridge", [0.0, None])
def test_pair_basis_is_invariant_to_an_invertible_map_of_either_side(ridge):
    image, text, _, _ = _paired_factors(5000, seed=1)
    rng = np.random.default_rng(7)
    # maps of moderate condition (orthogonal x diag in [0.5, 2] x orthogonal), plus a shift
    mi = np.linalg.qr(rng.standard_normal((6, 6)))[0] @ np.diag(np.linspace(0.5, 2, 6))
    mt = np.diag(np.linspace(2, 0.5, 7)) @ np.linalg.qr(rng.standard_normal((7, 7)))[0]
    kw = {} if ridge is None else {"ridge": ridge}
    a = estimate_pair_basis(image, text, **kw)
    b = estimate_pair_basis(image @ mi + 5.0, text @ mt, **kw)
    # exact without a ridge; the default ridge moves the variates by far less than the noise
    tol = 1e-8 if ridge == 0.0 else 1e-3
    np.testing.assert_allclose(b.correlations, a.correlations, atol=tol)
    # the sign rule (image variate's third moment >= 0) is coordinate-free: signed agreement
    np.testing.assert_allclose(b.project_image(image @ mi + 5.0), a.project_image(image), atol=tol)
    np.testing.assert_allclose(b.project_text(text @ mt), a.project_text(text), atol=tol)


def test_pair_basis_is_deterministic():
    image, text, _, _ = _paired_factors(3000, seed=3)
    a, b = estimate_pair_basis(image, text), estimate_pair_basis(image.copy(), text.copy())
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.correlations, b.correlations)
    np.testing.assert_array_equal(a.split_half_diff, b.split_half_diff)


def test_pair_basis_refuses_unpaired_or_constant_features():
    image, text, _, _ = _paired_factors(100)
    with pytest.raises(AnalysisError, match="one row per pair"):
        estimate_pair_basis(image, text[:-1])
    with pytest.raises(AnalysisError, match="constant"):
        estimate_pair_basis(np.ones((50, 4)), text[:50])


# --------------------------------------------------------------------------- tiny trained runs


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, runs_root) -> dict[str, Run]:
    """clip and triclip, seeds 0 and 1, one epoch each on a CSV of 40 captioned images."""
    csv = write_caption_csv(tmp_path_factory.mktemp("captions"))
    runs = {}
    for method in ("clip", "triclip"):
        for seed in (0, 1):
            cfg = tiny(csv, method=method, seed=seed, name=f"{method}{seed}")
            runs[cfg.name] = train(cfg, runs_root=runs_root, progress=False)
    return runs


@pytest.fixture(scope="module")
def image_only(runs, tmp_path_factory) -> Run:
    """An aligned copy of clip1 as ``tricl align`` wrote them before it refused image-text runs:
    a run of the same dataset with an image encoder only."""
    from tricl.align import _write_aligned

    parent = runs["clip1"]
    return _write_aligned(parent, spectral_basis(parent), tmp_path_factory.mktemp("aligned"))


def _all(runs: dict[str, Run]) -> list[Run]:
    return [runs["clip0"], runs["clip1"], runs["triclip0"], runs["triclip1"]]


@pytest.fixture(scope="module")
def comparisons(runs) -> dict[str, ImageTextComparison]:
    return {b: compare_image_text(_all(runs), basis=b, progress=False) for b in IMAGE_TEXT_BASES}


def _ordered(feats, side: str) -> np.ndarray:
    z = feats.image_z if side == "image" else feats.text_z
    return np.asarray(z, dtype=np.float64)[:, feats.order]


def _numpy_scores(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """ordered corr (all, top 8), MCC and linear CKA straight from their definitions."""
    k = a.shape[1]
    corr = np.nan_to_num(np.corrcoef(a.T, b.T)[:k, k:])  # a constant feature correlates 0
    diag = np.abs(np.diagonal(corr))
    rows, cols = linear_sum_assignment(-np.abs(corr))
    ac, bc = a - a.mean(0), b - b.mean(0)
    cka = np.linalg.norm(ac.T @ bc) ** 2 / (np.linalg.norm(ac.T @ ac) * np.linalg.norm(bc.T @ bc))
    return {
        "ordered_corr": diag.mean(),
        "ordered_corr_top8": diag[:8].mean(),
        "mcc": np.abs(corr[rows, cols]).mean(),
        "cka": cka,
    }


def test_both_bases_score_every_pair_on_both_sides(runs, runs_root, comparisons):
    for basis, comp in comparisons.items():
        assert comp.basis == basis and comp.recomputed == ("it_corr", "it_pairs")
        assert comp.path.parent == runs_root / "_compare"
        assert list(comp.pairs.columns) == PAIR_COLUMNS
        assert len(comp.pairs) == 2 * 6 and set(comp.pairs["side"]) == set(SIDES)
        # the held-out linear scores are not measured (NaN) on so few images for the features
        scores = comp.pairs[list(METRICS)]
        assert scores.drop(columns=["linear_r2", "cca_top8"]).notna().all().all()
        assert scores.stack().dropna().between(0, 1 + 1e-6).all()
        assert comp.methods == ["clip", "clip", "triclip", "triclip"]
        assert comp.configs[0] == comp.configs[1] != comp.configs[2] == comp.configs[3]
        for side in SIDES:
            c = comp.abs_corr(side, 1, 0)
            assert c.shape == (len(comp.orders[1]), len(comp.orders[0]))
    assert comparisons["trained"].path != comparisons["spectral"].path
    # the spectral basis: rank order, as many ranks as the pair basis has
    basis = load_pair_basis(runs["clip0"])
    assert basis is not None and (runs["clip0"].path / "analysis" / PAIR_BASIS_FILE).is_file()
    np.testing.assert_array_equal(comparisons["spectral"].orders[0], np.arange(basis.rank))
    assert comparisons["spectral"].unresolved[0] == basis.groups
    assert comparisons["trained"].unresolved == [[], [], [], []]


def test_trained_scores_match_numpy(runs, comparisons):
    comp = comparisons["trained"]
    feats = [load_text_features(r) for r in _all(runs)]
    for f, order in zip(feats, comp.orders):
        np.testing.assert_array_equal(f.order, order)
    for _, row in comp.pairs.iterrows():
        i, j = comp.runs.index(row.run_a), comp.runs.index(row.run_b)
        a, b = _ordered(feats[i], row.side), _ordered(feats[j], row.side)
        for name, expected in _numpy_scores(a, b).items():
            assert row[name] == pytest.approx(expected, abs=1e-6), (row.side, name)
        c = np.nan_to_num(np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1] :])
        np.testing.assert_allclose(comp.corr[(row.side, i, j)], c, atol=1e-6)
    # the image side is what the image comparison (tricl compare) scores on the same runs
    image = compare(_all(runs)[:2], spectral=False, progress=False).pairs.iloc[0]
    ours = comp.pairs[comp.pairs.side == "image"].iloc[0]
    assert (ours.run_a, ours.run_b) == (image.run_a, image.run_b)
    for name in METRICS:
        assert ours[name] == pytest.approx(image[name], abs=1e-6, nan_ok=True), name


def test_spectral_scores_are_those_of_the_pair_basis_variates(runs, comparisons):
    comp = comparisons["spectral"]
    rows = comp.pairs[(comp.pairs.run_a == runs["triclip0"].name)]
    row = rows[(rows.run_b == runs["triclip1"].name) & (rows.side == "text")].iloc[0]
    (a, fa), (b, fb) = [(load_pair_basis(r), load_text_features(r)) for r in _all(runs)[2:]]
    expected = _numpy_scores(a.project_text(fa.text_z), b.project_text(fb.text_z))
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, abs=1e-6), name


def test_handmade_pair_known_answers_in_both_bases(runs, comparisons):
    """Run b's features are run a's permuted and sign-flipped (image) or mixed (both sides)."""
    base = load_text_features(runs["clip0"])
    rng = np.random.default_rng(0)
    n, k = base.image_z.shape
    img, txt = rng.standard_normal((n, k)), rng.standard_normal((n, k))
    perm, sign = rng.permutation(k), rng.choice([-1.0, 1.0], k)
    fa = replace(base, image_z=img, text_z=txt, order=np.arange(k))
    # b's image feature j is a's feature perm[j] (signed); b's text features are a's unpermuted
    fb = replace(base, image_z=img[:, perm] * sign, text_z=txt, order=np.argsort(perm))
    job = _Job([runs["clip0"], runs["clip1"]], [fa, fb], None)
    pairs = _compute_pairs(job, {}).payload.set_index("side")
    for name in ("ordered_corr", "mcc", "cka"):  # image: same features in the same order
        assert pairs.loc["image", name] == pytest.approx(1.0, abs=1e-9), name
    # text: the same features, in b's order (a permutation), so only MCC and CKA see it
    assert pairs.loc["text", "mcc"] == pytest.approx(1.0, abs=1e-9)
    assert pairs.loc["text", "cka"] == pytest.approx(1.0, abs=1e-9)
    expected = _numpy_scores(txt, txt[:, np.argsort(perm)])["ordered_corr"]
    assert pairs.loc["text", "ordered_corr"] == pytest.approx(expected, abs=1e-9)
    assert expected < 0.5

    # in the pair basis the order comes from the data: an invertible mix of either side of a run
    # gives the same variates, so even the ordered scores are 1
    lat = rng.standard_normal((4 * n, k))
    tr_img = lat + 0.5 * rng.standard_normal((4 * n, k))
    tr_txt = lat * np.linspace(1, 0.1, k) + 0.5 * rng.standard_normal((4 * n, k))
    mi, mt = rng.standard_normal((k, k)), rng.standard_normal((k, k))
    ev_img, ev_txt = img, img * np.linspace(1, 0.1, k) + 0.5 * txt
    fa = replace(fa, image_z=ev_img, text_z=ev_txt, train_image_z=tr_img, train_text_z=tr_txt)
    fb = replace(fa, image_z=ev_img @ mi, text_z=ev_txt @ mt, order=np.argsort(perm))
    bases = [
        estimate_pair_basis(tr_img, tr_txt),
        estimate_pair_basis(tr_img @ mi, tr_txt @ mt),
    ]
    job = _Job([runs["clip0"], runs["clip1"]], [fa, fb], bases)
    pairs = _compute_pairs(job, {}).payload
    assert (pairs[["ordered_corr", "mcc", "cka"]] > 1 - 1e-3).all().all(), pairs


def test_summary_is_mean_and_std_over_seed_pairs_of_one_method(runs, comparisons):
    table = summarize(comparisons.values())
    assert list(table.columns) == summary_columns()
    # two configurations x two sides x two bases; the clip-triclip pairs are no seed pairs
    assert len(table) == 8 and (table["n_pairs"] == 1).all()
    assert set(table["method"]) == {"clip", "triclip"}
    row = table[(table.method == "triclip") & (table.side == "text") & (table.basis == "trained")]
    pair = comparisons["trained"].pairs
    pair = pair[(pair.run_a == runs["triclip0"].name) & (pair.side == "text")]
    pair = pair[pair.run_b == runs["triclip1"].name].iloc[0]
    for m in METRICS:  # a held-out score not measured on so few images stays NaN
        assert row[f"{m}_mean"].item() == pytest.approx(pair[m], nan_ok=True)
        assert row[f"{m}_std"].item() == 0 or np.isnan(pair[m])
    assert row["runs"].item() == f"{runs['triclip0'].name}, {runs['triclip1'].name}"


def test_second_call_reads_the_cache_and_a_torn_file_is_recomputed(runs, comparisons, tmp_path):
    pair = [runs["clip0"], runs["triclip0"]]
    out = tmp_path / "cmp"
    assert load_image_text_comparison(pair, basis="spectral", out_root=out) is None
    first = compare_image_text(pair, basis="spectral", out_root=out, progress=False)
    again = compare_image_text(pair, basis="spectral", out_root=out, progress=False)
    assert first.recomputed and not again.recomputed and again.pairs.equals(first.pairs)
    read = load_image_text_comparison(pair, basis="spectral", out_root=out)
    assert read is not None and not read.recomputed and read.pairs.equals(first.pairs)
    corr = first.path / "image_text_corr.npz"
    corr.write_bytes(corr.read_bytes()[:100])  # torn by a kill mid-write (no atomic rename)
    assert load_image_text_comparison(pair, basis="spectral", out_root=out) is None
    healed = compare_image_text(pair, basis="spectral", out_root=out, progress=False)
    assert healed.recomputed == ("it_corr",)
    np.testing.assert_array_equal(healed.corr[("text", 0, 1)], first.corr[("text", 0, 1)])


def test_reader_never_imports_torch(runs, comparisons):
    paths = [str(r.path) for r in _all(runs)]
    code = (
        "import sys\n"
        "from tricl.analysis.image_text_compare import load_image_text_comparison, summarize\n"
        "comps = [load_image_text_comparison(sys.argv[1:], basis=b) for b in ('trained', "
        "'spectral')]\n"
        "assert all(c is not None for c in comps), comps\n"
        "print(len(summarize(comps)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "8"


def test_bad_input_is_one_line(runs, image_only):
    with pytest.raises(AnalysisError, match="no text encoder") as exc:
        compare_image_text([runs["clip0"], image_only], progress=False)
    assert "\n" not in str(exc.value)
    with pytest.raises(AnalysisError, match="unknown basis"):
        compare_image_text([runs["clip0"], runs["clip1"]], basis="raw", progress=False)
    with pytest.raises(AnalysisError, match="at least two runs"):
        compare_image_text([runs["clip0"]], progress=False)
    with pytest.raises(AnalysisError, match="not an image-text run"):
        pair_basis(image_only)


def test_cli_prints_the_image_text_table(runs, comparisons, capsys):
    args = ["compare", *(str(r.path) for r in _all(runs)), "--no-spectral", "--no-progress"]
    assert main([*args, "--basis", "spectral"]) == 0
    out = capsys.readouterr().out
    assert "image and text features, spectral basis:" in out
    assert "seed pairs of one configuration, mean ± std:" in out
    lines = out.splitlines()
    headers = [line.split() for line in lines if line.split()[:3] == PAIR_COLUMNS[:3]]
    assert headers == [PAIR_COLUMNS]
    # the pairs whose first run is a clip run: 5 per side (the image table's rows have no side)
    first_clip = [line.split() for line in lines if line.split()[:1] in (["clip0"], ["clip1"])]
    sides = sorted(r[2] for r in first_clip if r[2] in SIDES)
    assert sides == ["image"] * 5 + ["text"] * 5
    assert main([*args, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum("side" in r for r in rows) == 12 and sum("side" not in r for r in rows) == 6


def test_cli_mixed_runs_compare_the_image_side_only(runs, image_only, capsys):
    argv = [
        "compare",
        str(runs["clip0"].path),
        str(image_only.path),
        "--no-spectral",
        "--no-progress",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "image and text features" not in captured.out and "ordered_corr" in captured.out
    # stderr also carries compare's progress lines ("comparing ...", "comparison stored in ...")
    (note,) = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert note.startswith("note: text features not compared") and image_only.name in note
