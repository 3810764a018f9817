"""The identifiability metric registry: every metric's known answers, and Procrustes correlation."""

import numpy as np
import pytest

from tricl.analysis.metrics import METRICS, column_info, metric_columns, procrustes_correlation

RNG = np.random.default_rng(0)


def _features(n: int = 3000, k: int = 8) -> np.ndarray:
    return RNG.standard_normal((n, k)) * np.linspace(3, 1, k)  # (n, k), distinct variances


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_scores_a_run_against_itself_one(name):
    a = _features()
    metric = METRICS[name]
    from tricl.analysis.identifiability import corr_matrix

    assert metric.fn(a, a.copy(), corr_matrix(a, a)) == pytest.approx(1.0, abs=1e-9)
    assert metric.label and metric.help and metric.higher_is_better in (True, False)


@pytest.mark.parametrize("column", metric_columns(spectral=True))
def test_every_column_names_its_metric(column):
    metric, spectral = column_info(column)
    assert (metric.spectral_name if spectral else metric.name) == column


def test_procrustes_scores_a_rotation_one_where_ordered_corr_does_not():
    a = _features()
    q, _ = np.linalg.qr(RNG.standard_normal((8, 8)))  # a random rotation
    b = a @ q
    assert procrustes_correlation(a, b) == pytest.approx(1.0, abs=1e-9)
    from tricl.analysis.identifiability import corr_matrix, ordered_correlation

    assert ordered_correlation(corr_matrix(a, b)) < 0.9  # the rotation scrambles the axes


def test_procrustes_of_independent_noise_is_near_zero():
    a, b = _features(20000), _features(20000)
    assert procrustes_correlation(a, b) < 0.05


def test_procrustes_handles_runs_of_different_width():
    a = _features(k=4)
    q, _ = np.linalg.qr(RNG.standard_normal((8, 8)))
    b = np.hstack([a, _features(k=4)]) @ q  # (N, 8): a's 4 features and 4 others, rotated
    # the others correlate with a only by chance (~1/sqrt(N)), which tilts the fit a little
    assert 0.98 < procrustes_correlation(a, b) <= 1.0


# ------------------------------------------------ the held-out scores papers report (known answers)

HELD_OUT = ("heldout_mcc", "linear_r2", "cca_top8")


def _score(name: str, a: np.ndarray, b: np.ndarray) -> float:
    from tricl.analysis.identifiability import corr_matrix

    return METRICS[name].fn(a, b, corr_matrix(a, b))


def test_a_permuted_sign_flipped_copy_scores_one_on_every_held_out_metric():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3000, 8)) * np.linspace(3, 1, 8)
    perm = rng.permutation(8)
    b = a[:, perm] * np.array([1, -1] * 4) * 3.0 + 5.0  # reordered, signs flipped, rescaled
    for name in HELD_OUT:
        assert _score(name, a, b) == pytest.approx(1.0, abs=1e-9), name


def test_a_random_rotation_keeps_linear_scores_one_and_lowers_held_out_mcc():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3000, 8))  # isotropic: a rotation scrambles every axis
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    b = a @ q
    assert _score("heldout_mcc", a, b) < 0.8  # the axes are not identifiable
    assert _score("linear_r2", a, b) == pytest.approx(1.0, abs=1e-9)
    assert _score("cca_top8", a, b) == pytest.approx(1.0, abs=1e-9)


def test_independent_noise_scores_near_zero_out_of_sample():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4000, 8)), rng.standard_normal((4000, 8))
    # in sample, matching 8 features to noise finds |corr| of a few 1/sqrt(N); out of sample the
    # matched pairs are uncorrelated: only |corr| of fresh noise (~0.8/sqrt(N/2)) remains
    assert _score("heldout_mcc", a, b) < 0.04
    assert abs(_score("linear_r2", a, b)) < 0.02
    assert abs(_score("cca_top8", a, b)) < 0.04


def test_held_out_scores_use_a_fixed_split_and_do_not_reward_overfitting():
    from tricl.analysis.heldout import split_halves

    fit, score = split_halves(11)
    assert len(fit) == 5 and len(score) == 6 and not set(fit) & set(score)
    np.testing.assert_array_equal(split_halves(11)[0], fit)  # deterministic
    # a few more fit images than features: in sample a linear map fits noise well; held out not
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((60, 20)), rng.standard_normal((60, 20))
    assert _score("linear_r2", a, b) < 0
    # too few images to fit anything: not measured, rather than a number fitted to nothing
    assert np.isnan(_score("heldout_mcc", a[:7], b[:7]))
    assert np.isnan(_score("linear_r2", a[:40], b[:40]))  # 20 fit images for 20 features
    assert np.isnan(_score("cca_top8", a[:40], b[:40]))


def test_every_metric_says_which_correlation_and_split_it_uses():
    for m in METRICS.values():
        where = "other half" if m.name in HELD_OUT else "all evaluation images"
        assert where in m.scored_on and m.scored_on in m.legend, m.name
        assert "Pearson" in m.scored_on or m.name in ("cka", "linear_r2"), m.name
