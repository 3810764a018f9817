"""NeuralEF-CLR (``neuralef``): loss against a float64 loop reference, the stop-gradient, a
known-answer eigenfunction check, the index order, and a tiny CPU training with its analysis.

The generic loss contract (autocast, bf16, bad tensors, symmetry, Adam lowers the loss) is tested
for every method, this one included, in tests/test_losses.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tricl import methods
from tricl.config import RunConfig
from tricl.losses import LossError, NeuralEFLoss, neuralef_loss
from tricl.methods import METHODS


def build_loss(cfg, **options):
    """NeuralEF-CLR's loss built as training builds it (``cfg``: a RunConfig or a method name)."""
    cfg = RunConfig(method=cfg, **options) if isinstance(cfg, str) else cfg
    return methods.build_loss(cfg)


def compute_loss(method: str, z1, z2, **options):
    return build_loss(method, **options)(z1, z2)


# ---------------------------------------------------------------- slow loop reference
# Element by element in float64 Python, from the formula in the official code's terms: every
# feature divided by its norm over the 2N rows of both views, times sqrt(2t).


def _official_psi(z1: torch.Tensor, z2: torch.Tensor, t: float) -> tuple[list, list]:
    a, b = z1.double().tolist(), z2.double().tolist()
    n, k = len(a), len(a[0])
    norms = [math.sqrt(sum(a[r][j] ** 2 + b[r][j] ** 2 for r in range(n))) for j in range(k)]
    psi1 = [[a[r][j] / norms[j] * math.sqrt(2 * t) for j in range(k)] for r in range(n)]
    psi2 = [[b[r][j] / norms[j] * math.sqrt(2 * t) for j in range(k)] for r in range(n)]
    return psi1, psi2


def _loop_neuralef(z1, z2, alpha: float, t: float) -> tuple[float, float, float]:
    """(total, reward, penalty) of the official NeuralEF-CLR objective."""
    psi1, psi2 = _official_psi(z1, z2, t)
    n, k = len(psi1), len(psi1[0])

    def dot(x, i, y, j) -> float:
        return sum(x[r][i] * y[r][j] for r in range(n))

    reward = -2 * sum(dot(psi1, j, psi2, j) for j in range(k)) / k
    penalty = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            penalty += dot(psi2, i, psi1, j) ** 2 + dot(psi1, i, psi2, j) ** 2
    penalty /= k
    return reward + alpha * penalty, reward, penalty


def _views(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, k, generator=g) * 2.0 + 0.5
    z2 = z1 + 0.7 * torch.randn(n, k, generator=g)
    return z1, z2


# ------------------------------------------------------------------------------ values


def test_neuralef_is_a_registered_method_without_s_ordered_by_index() -> None:
    method = METHODS["neuralef"]
    assert not method.has_s and method.pair == "views" and method.order == "index"
    assert isinstance(build_loss("neuralef"), NeuralEFLoss)


@pytest.mark.parametrize(
    ("n", "k", "alpha", "t"),
    [(2, 1, 1.0, 10.0), (4, 3, 1.0, 10.0), (7, 5, 0.3, 2.0), (5, 8, 0.0, 1.0), (9, 4, 2.5, 0.5)],
)
def test_matches_loop_reference(n, k, alpha, t) -> None:
    z1, z2 = _views(n, k, seed=n * 10 + k)
    terms = compute_loss("neuralef", z1, z2, nef_alpha=alpha, nef_scale=t)
    total, reward, penalty = _loop_neuralef(z1, z2, alpha, t)
    for value in (terms.total, terms.contrastive, terms.decorrelation):
        assert value.shape == () and value.dtype == torch.float32
    assert terms.contrastive.item() == pytest.approx(reward, rel=1e-5, abs=1e-5)
    assert terms.decorrelation.item() == pytest.approx(penalty, rel=1e-5, abs=1e-5)
    assert terms.total.item() == pytest.approx(total, rel=1e-5, abs=1e-5)


def test_closed_form_for_aligned_one_hot_views() -> None:
    # Row i is (i + 1) e_i in both views: each used feature has one nonzero entry, so after the
    # normalisation R_jj = 1 for the n used features and 0 for the k - n dead ones (the clamp
    # keeps them at 0, not NaN), and no two features overlap: reward -2 t n / k, penalty 0.
    n, k, t = 3, 5, 10.0
    z = torch.eye(k)[:n] * torch.arange(1.0, n + 1.0).unsqueeze(1)
    terms = build_loss("neuralef", nef_scale=t)(z, z.clone())
    assert terms.contrastive.item() == pytest.approx(-2 * t * n / k, rel=1e-6)
    assert terms.decorrelation.item() == 0.0
    assert torch.isfinite(terms.total)


def test_a_common_scale_and_the_view_order_leave_it_unchanged() -> None:
    z1, z2 = _views(6, 4)
    base = compute_loss("neuralef", z1, z2).total
    torch.testing.assert_close(compute_loss("neuralef", 5.0 * z1, 5.0 * z2).total, base)
    torch.testing.assert_close(compute_loss("neuralef", z2, z1).total, base)
    # each view scaled on its own is not a symmetry: the features are normalised over both views
    assert abs(compute_loss("neuralef", 5.0 * z1, z2).total.item() - base.item()) > 1e-3


def test_alpha_and_scale_are_read_from_a_run_config() -> None:
    loss_fn = build_loss(RunConfig(method="neuralef", nef_alpha=0.25, nef_scale=3.0))
    assert (loss_fn.alpha, loss_fn.scale) == (0.25, 3.0)
    z1, z2 = _views(5, 3)
    expected = neuralef_loss(z1, z2, alpha=0.25, scale=3.0)
    assert torch.equal(loss_fn(z1, z2).total, expected.total)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(nef_alpha=-1.0), "nef_alpha"),
        (dict(nef_alpha=float("nan")), "nef_alpha"),
        (dict(nef_scale=0.0), "nef_scale"),
        (dict(nef_scale=float("inf")), "nef_scale"),
    ],
)
def test_bad_options_raise_when_the_loss_is_built(overrides, match) -> None:
    options = {k.removeprefix("nef_"): v for k, v in overrides.items()}
    with pytest.raises(LossError, match=match) as info:
        NeuralEFLoss(**options)
    assert "\n" not in str(info.value)


def test_run_config_refuses_bad_options() -> None:
    from tricl.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="nef_alpha"):
        RunConfig(method="neuralef", nef_alpha=-0.5)
    with pytest.raises(ConfigError, match="nef_scale"):
        RunConfig(method="neuralef", nef_scale=0.0)


# ------------------------------------------------------------------------------ gradients


def _reference_gradients(z1, z2, alpha: float, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the stop-gradient objective, built feature by feature in float64.

    Feature j's loss is its reward plus its penalty against every earlier feature i < j, whose
    values enter as constants: that is what the stop-gradient means.
    """
    a = z1.double().clone().requires_grad_()
    b = z2.double().clone().requires_grad_()
    k = a.shape[1]
    total = torch.zeros((), dtype=torch.float64)
    psi = []
    for j in range(k):
        norm = torch.sqrt((a[:, j] ** 2).sum() + (b[:, j] ** 2).sum())
        psi.append((a[:, j] / norm * math.sqrt(2 * t), b[:, j] / norm * math.sqrt(2 * t)))
    for j in range(k):
        p1, p2 = psi[j]
        total = total - 2 * (p1 * p2).sum() / k
        for i in range(j):
            c1, c2 = psi[i][0].detach(), psi[i][1].detach()
            total = total + alpha * ((c2 * p1).sum() ** 2 + (c1 * p2).sum() ** 2) / k
    total.backward()
    return a.grad, b.grad


@pytest.mark.parametrize(("n", "k", "alpha"), [(6, 4, 1.0), (5, 3, 0.2), (8, 6, 3.0)])
def test_gradients_match_the_stop_gradient_reference(n, k, alpha) -> None:
    z1, z2 = (z.requires_grad_() for z in _views(n, k, seed=k))
    compute_loss("neuralef", z1, z2, nef_alpha=alpha, nef_scale=2.0).total.backward()
    g1, g2 = _reference_gradients(z1.detach(), z2.detach(), alpha, 2.0)
    torch.testing.assert_close(z1.grad.double(), g1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z2.grad.double(), g2, rtol=1e-4, atol=1e-5)


def test_the_penalty_never_pushes_an_earlier_feature() -> None:
    # Feature 0 is never the later feature of a pair: the penalty gives it no gradient at all.
    # And feature j's penalty gradient depends only on features i < j: changing the last feature
    # leaves the penalty gradients of all earlier features as they were.
    z1, z2 = _views(8, 4)

    def penalty_grads(a, b):
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        neuralef_loss(a, b, alpha=1.0, scale=10.0).decorrelation.backward()
        return a.grad, b.grad

    g1, g2 = penalty_grads(z1, z2)
    assert g1[:, 0].abs().max() == 0 and g2[:, 0].abs().max() == 0
    assert g1[:, 1:].abs().sum() > 0 and g2[:, 1:].abs().sum() > 0
    z1b, z2b = z1.clone(), z2.clone()
    z1b[:, -1] = torch.randn(8, generator=torch.Generator().manual_seed(5))
    h1, h2 = penalty_grads(z1b, z2b)
    torch.testing.assert_close(h1[:, :-1], g1[:, :-1])
    torch.testing.assert_close(h2[:, :-1], g2[:, :-1])
    assert not torch.allclose(h1[:, -1], g1[:, -1])


def test_without_stop_gradient_the_earlier_feature_would_move() -> None:
    # The same penalty value with gradients through both factors does push feature 0, so the
    # zero above is the stop-gradient's doing, not a property of the data.
    z1, z2 = (z.requires_grad_() for z in _views(8, 4))
    psi1, psi2 = z1 / z1.norm(dim=0), z2 / z2.norm(dim=0)
    full = (psi2.T @ psi1).triu(1).pow(2).sum()
    full.backward()
    assert z2.grad[:, 0].abs().sum() > 0  # pair (0, j) reads view 2's feature 0


def test_learns_known_eigenfunctions_in_index_order() -> None:
    # Linear features of x = s + noise, two views sharing s: component m of s has variance v_m
    # and unit noise, so the cross-view correlation of axis m is v_m / (v_m + 1) = 0.8, 0.67, 0.5,
    # 0.33: the kernel's eigenfunctions are the axes, in this order. NeuralEF-CLR must put axis j
    # at feature j (the index order), up to sign.
    torch.manual_seed(0)
    variances = torch.tensor([4.0, 2.0, 1.0, 0.5])
    w = torch.nn.Parameter(torch.randn(4, 3) * 0.5)
    opt = torch.optim.Adam([w], lr=0.02)
    loss_fn = build_loss("neuralef", nef_alpha=1.0, nef_scale=1.0)
    for _ in range(600):
        s = torch.randn(256, 4) * variances.sqrt()
        x1, x2 = s + torch.randn(256, 4), s + torch.randn(256, 4)
        opt.zero_grad()
        loss_fn(x1 @ w, x2 @ w).total.backward()
        opt.step()
    x = torch.randn(4096, 4) * variances.sqrt() + torch.randn(4096, 4)  # (4096, 4)
    f = x @ w.detach()  # (4096, 3)
    corr = np.abs(np.corrcoef(f.T.numpy(), x.T.numpy())[:3, 3:])  # features x axes
    assert np.all(np.diag(corr) > 0.95), corr
    off = corr[~np.eye(3, 4, dtype=bool)]
    assert np.all(off < 0.2), corr


# ------------------------------------------------------------------------------ the order


def test_importance_defaults_to_the_index_order() -> None:
    from tricl.analysis.importance import compute_importance, default_scores

    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 4)) * np.array([0.1, 1.0, 5.0, 2.0])  # variance order: 2, 3, 1, 0
    y = rng.integers(0, 3, size=60)
    imp = compute_importance(z, y, None, method="neuralef")
    assert imp.default == "index"
    assert imp.order().tolist() == [0, 1, 2, 3]
    assert imp.order("variance").tolist() == [2, 3, 1, 0]
    assert np.argsort(-default_scores("neuralef", z, None)).tolist() == [0, 1, 2, 3]
    # the other methods keep their orders (and have no index order)
    plain = compute_importance(z, y, None, method="simclr")
    assert plain.default == "variance" and "index" not in plain.orders


# ------------------------------------------------------------------ training and analysis


def test_cli_trains_and_analyses_a_neuralef_run_in_index_order(tmp_path, capsys) -> None:
    from tricl.analysis import load_analysis
    from tricl.cli import main
    from tricl.runs import Run

    argv = ["train", "--method", "neuralef", "--dataset", "digits", "--epochs", "1"]
    argv += ["--proj-dim", "8", "--proj-hidden-dim", "32", "--batch-size", "128"]
    argv += ["--nef-alpha", "0.5", "--runs-root", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    (path,) = [p for p in tmp_path.iterdir() if not p.name.startswith("_")]
    run = Run.load(path)
    assert run.config.method == "neuralef" and run.config.nef_alpha == 0.5
    (row,) = run.metrics()
    # reward -2t sum R_jj / k lies in [-2t, 2t]; the penalty is a sum of squares
    assert -20.0 <= row["contrastive"] <= 20.0 and row["decorrelation"] >= 0
    assert row["loss"] == pytest.approx(row["contrastive"] + 0.5 * row["decorrelation"], rel=1e-4)
    assert run.encoder().importance() is None
    capsys.readouterr()
    assert main(["analyze", str(path), "--no-progress"]) == 0
    analysis = load_analysis(path)
    assert analysis is not None and analysis.importance.default == "index"
    assert analysis.importance.order().tolist() == list(range(8))
    assert "index" in set(analysis.downstream["order"]) and 0 < analysis.linear_acc <= 1
    top = analysis.curves().query("selection == 'top'")
    assert len(top) and top["linear_acc"].between(0, 1).all()


@pytest.mark.slow
def test_two_gloo_ranks_give_the_one_process_loss_and_gradients(tmp_path) -> None:
    # The loss normalises and correlates the gathered global batch, so two ranks holding half of
    # it each must reproduce one process's loss and gradients (stop-gradient included).
    from gloo_pair import run_two_ranks
    from test_distributed import WORKER, _setup

    cfg, enc, x1, x2 = _setup("neuralef")
    ref = METHODS["neuralef"].loss_terms(enc, (x1, x2), build_loss(cfg))
    ref.total.backward()
    got = run_two_ranks(WORKER, tmp_path, "neuralef")
    torch.testing.assert_close(got["loss"], ref.total.detach(), rtol=1e-5, atol=1e-5)
    ref_grads = {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}
    assert set(got["grads"]) == set(ref_grads)
    for n, g in ref_grads.items():
        torch.testing.assert_close(got["grads"][n], g, rtol=1e-4, atol=1e-5, msg=n)
