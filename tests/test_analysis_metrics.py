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
