"""VICReg (tricl/methods/vicreg.py): a float64 loop reference, closed forms, a few gradient steps
lower the loss, and a tiny ``tricl train --method vicreg`` run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tricl.cli import main
from tricl.config import ConfigError, RunConfig
from tricl.losses import LossError
from tricl.methods import METHODS, build_loss
from tricl.methods.vicreg import VICRegLoss, vicreg_loss


def _loop_reference(z1, z2, lam, mu, nu) -> tuple[float, float, float]:
    """(lambda * invariance, mu * variance + nu * covariance, total) element by element."""
    a, b = z1.double().tolist(), z2.double().tolist()
    n, k = len(a), len(a[0])
    inv = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(k)) / (n * k)

    def var_cov(z):
        means = [sum(z[i][j] for i in range(n)) / n for j in range(k)]
        cov = [
            [sum((z[i][p] - means[p]) * (z[i][q] - means[q]) for i in range(n)) / (n - 1)
             for q in range(k)]
            for p in range(k)
        ]  # fmt: skip
        v = sum(max(0.0, 1.0 - math.sqrt(cov[j][j] + 1e-4)) for j in range(k)) / k
        c = sum(cov[p][q] ** 2 for p in range(k) for q in range(k) if p != q) / k
        return v, c

    (v1, c1), (v2, c2) = var_cov(a), var_cov(b)
    reg = mu * (v1 + v2) / 2 + nu * (c1 + c2)
    return lam * inv, reg, lam * inv + reg


@pytest.mark.parametrize(("n", "k", "scale"), [(2, 1, 1.0), (5, 3, 0.3), (9, 6, 2.0)])
@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (1.0, 0.5, 3.0)])
def test_matches_a_loop_reference(n, k, scale, coeffs) -> None:
    g = torch.Generator().manual_seed(n * 10 + k)
    z1 = scale * torch.randn(n, k, generator=g)
    z2 = z1 + 0.3 * torch.randn(n, k, generator=g)
    lam, mu, nu = coeffs
    terms = VICRegLoss(lam, mu, nu)(z1, z2)
    want = _loop_reference(z1, z2, lam, mu, nu)
    got = (terms.contrastive.item(), terms.decorrelation.item(), terms.total.item())
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_closed_forms() -> None:
    # identical, white views of std 2: no invariance, no hinge, no covariance
    z = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]]) * math.sqrt(3 / 4)
    terms = vicreg_loss(z, z.clone())
    assert terms.total.item() == pytest.approx(0.0, abs=1e-6)
    # collapsed views: the hinge is 1 - sqrt(eps) per feature, each view, times mu
    c = torch.ones(4, 3)
    terms = vicreg_loss(c, c.clone(), sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    assert terms.total.item() == pytest.approx(25.0 * (1 - math.sqrt(1e-4)), rel=1e-6)


def test_symmetric_in_the_views_and_float32_under_autocast() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    loss_fn = VICRegLoss()
    torch.testing.assert_close(loss_fn(z1, z2).total, loss_fn(z2, z1).total)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_fn(z1.bfloat16(), z2.bfloat16())
    assert got.total.dtype == torch.float32


def test_a_few_adam_steps_lower_the_loss() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    net = torch.nn.Linear(6, 4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = build_loss(RunConfig(method="vicreg"))
    losses = []
    for _ in range(30):
        noise = 0.1 * torch.randn(2, 32, 6, generator=g)
        terms = loss_fn(net(x + noise[0]), net(x + noise[1]))
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        losses.append(terms.total.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="vicreg_std_coeff") as info:
        RunConfig(method="vicreg", vicreg_std_coeff=-1.0)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="vicreg_cov_coeff"):
        VICRegLoss(cov_coeff=float("nan"))
    with pytest.raises(LossError, match="no importance"):
        VICRegLoss()(torch.randn(4, 2), torch.randn(4, 2), torch.ones(2))


def test_vicreg_is_a_method_without_s_ordered_by_variance() -> None:
    method = METHODS["vicreg"]
    assert not method.has_s and method.order == "variance" and method.pair == "views"


def test_tricl_train_method_vicreg(tmp_path, capsys) -> None:
    args = ["train", "--method", "vicreg", "--dataset", "digits", "--proj-hidden-dim", "16",
            "--proj-dim", "8", "--batch-size", "512", "--epochs", "1", "--warmup-epochs", "0",
            "--vicreg-cov-coeff", "2", "--device", "cpu", "--runs-root", str(tmp_path),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    run_dir = tmp_path / "vicreg_digits_small_cnn_k8_seed0"
    info = json.loads((run_dir / "config.json").read_text())
    assert info["config"]["method"] == "vicreg" and info["config"]["vicreg_cov_coeff"] == 2.0
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["loss"]) and row["loss"] == pytest.approx(
        row["contrastive"] + row["decorrelation"], rel=1e-5
    )
    assert "vicreg_digits_small_cnn_k8_seed0" in capsys.readouterr().out
