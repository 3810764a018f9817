"""Heads solved from statistics (tricl.heads) and the tri-eigen method that trains through one."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tricl.config import RunConfig
from tricl.heads import IMPORTANCE_FLOOR, EigenHead, pair_statistics, solve_eigen_map
from tricl.methods import build_encoder
from tricl.runs import Run
from tricl.train import train


def _known_pairs(n: int = 20000, seed: int = 0):
    """Pairs whose latent factor i agrees across views with correlation rho_i, mixed linearly.

    Returns ``(z1, z2, latent1, rho, mix)``: the views (N, 4), view 1's latents (N, 4), the
    correlations (descending once sorted) and the mixing matrix.
    """
    g = torch.Generator().manual_seed(seed)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    rho = torch.tensor([0.3, 0.9, 0.6, 0.1], dtype=torch.float64)  # not in order on purpose
    shared = noise(n, 4)
    u1 = rho.sqrt() * shared + (1 - rho).sqrt() * noise(n, 4)
    u2 = rho.sqrt() * shared + (1 - rho).sqrt() * noise(n, 4)
    mix = noise(4, 4) + 2 * torch.eye(4, dtype=torch.float64)
    offset = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    return u1 @ mix.T + offset, u2 @ mix.T + offset, u1, rho, mix


def _abs_corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a.T @ b / (len(a) - 1)).abs()  # (ka, kb)


def test_solve_eigen_map_recovers_known_factors_in_order_of_agreement() -> None:
    z1, z2, u1, rho, _ = _known_pairs()
    mean, cov, cross = pair_statistics(z1, z2)
    weight, lam = solve_eigen_map(cov, cross)
    torch.testing.assert_close(lam, rho.sort(descending=True).values, atol=0.02, rtol=0)
    f = (z1 - mean) @ weight.T  # (N, 4)
    corr = _abs_corr(f, u1)  # feature i against latent j
    for i, j in enumerate(rho.argsort(descending=True).tolist()):
        assert corr[i, j] > 0.99, (i, j, corr)
    # the features are white on the data the statistics came from
    both = torch.cat([z1, z2]) - mean
    torch.testing.assert_close(torch.cov(((both) @ weight.T).T), torch.eye(4, dtype=torch.float64),
                               atol=1e-3, rtol=0)  # fmt: skip


def test_solve_eigen_map_is_invariant_to_a_linear_map_of_the_features() -> None:
    z1, z2, *_ = _known_pairs()
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w1, lam1 = solve_eigen_map(*pair_statistics(z1, z2)[1:])
    w2, lam2 = solve_eigen_map(*pair_statistics(z1 @ a.T, z2 @ a.T)[1:])
    torch.testing.assert_close(lam1, lam2)
    f1, f2 = z1 @ w1.T, (z1 @ a.T) @ w2.T  # the same features up to each one's sign
    signs = torch.sign((f1 * f2).sum(0))
    torch.testing.assert_close(f1, f2 * signs, atol=1e-8, rtol=1e-6)


def test_solve_eigen_map_survives_a_dead_direction() -> None:
    z1, z2, *_ = _known_pairs(2000)
    dead = torch.zeros(len(z1), 1, dtype=torch.float64)
    weight, lam = solve_eigen_map(*pair_statistics(torch.cat([z1, dead], 1),
                                                   torch.cat([z2, dead], 1))[1:])  # fmt: skip
    assert torch.isfinite(weight).all() and torch.isfinite(lam).all()


def test_running_statistics_are_bias_corrected_then_exact_after_refit() -> None:
    z1, z2, *_ = _known_pairs(512)
    head = EigenHead(4, momentum=0.9)
    head.observe(z1[:256], z2[:256])
    # one batch: the corrected running average is that batch's statistics, map and all
    weight, lam = solve_eigen_map(*pair_statistics(z1[:256], z2[:256])[1:])
    torch.testing.assert_close(head.weight, weight)
    torch.testing.assert_close(head.eigenvalues, lam)
    head.observe(z1[256:], z2[256:])
    assert not torch.allclose(head.weight, weight)
    head.refit(*pair_statistics(z1, z2))
    weight, lam = solve_eigen_map(*pair_statistics(z1, z2)[1:])
    torch.testing.assert_close(head.weight, weight)
    assert math.isinf(float(head.steps))


def test_head_passes_gradients_to_its_input_and_gives_a_positive_descending_s() -> None:
    z1, z2, *_ = _known_pairs(512)
    head = EigenHead(4)
    head.observe(z1.float(), z2.float())
    z = z1[:8].float().requires_grad_(True)
    out = head(z)
    assert out.dtype == torch.float32 and out.shape == (8, 4)
    out.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in head.parameters())  # solved, never optimised
    s = head.importance()
    assert (s > 0).all() and (s[:-1] >= s[1:]).all()
    assert abs(float(s.mean()) - 1.0) < 1e-5  # mean 1: S leaves the temperature where it was
    lam = head.eigenvalues.clamp_min(IMPORTANCE_FLOOR)
    torch.testing.assert_close(s.double(), lam / lam.mean(), atol=1e-6, rtol=1e-6)


def test_bad_momentum_is_refused() -> None:
    with pytest.raises(ValueError, match="momentum"):
        EigenHead(4, momentum=1.0)


def _tiny(tmp_path, **changes) -> Run:
    cfg = RunConfig(
        method="tri-eigen", dataset="digits", epochs=2, proj_dim=8, proj_hidden_dim=16,
        batch_size=128, warmup_epochs=0, seed=0, **changes,
    )  # fmt: skip
    return train(cfg, runs_root=tmp_path, progress=False)


def test_tri_eigen_trains_through_the_head_and_saves_its_refit(tmp_path) -> None:
    run = _tiny(tmp_path)
    enc = run.encoder()
    assert isinstance(enc.head, EigenHead) and enc.importance_logits is None
    assert math.isinf(float(enc.head.steps))  # refit at the end of the last epoch
    s = enc.importance()
    assert s.shape == (8,) and (s[:-1] >= s[1:]).all()
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert all("s_max" in r for r in rows)  # S (the eigenvalues) is logged like a learned S
    # the projector learned: it is not at its initial weights
    init = build_encoder(run.config, 1).projector[0].weight
    assert not torch.allclose(enc.projector[0].weight, init)
    # the saved map whitens the refit's covariance and diagonalises its cross-view covariance
    w, head = enc.head.weight, enc.head
    eye = torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(w @ head.cov @ w.T, eye, atol=1e-6, rtol=0)
    lam = torch.diag(head.eigenvalues)
    torch.testing.assert_close(w @ head.cross @ w.T, lam, atol=1e-6, rtol=0)


def test_a_loaded_run_checks_the_head_map_but_not_its_running_statistics(tmp_path) -> None:
    """The finite-weights check of a loaded run skips exactly the buffers the head declares as
    statistics (``steps`` is infinite after the refit), and refuses NaN in the map it applies."""
    from safetensors.torch import save_file

    from tricl.runs import RunError

    run = _tiny(tmp_path)
    assert set(EigenHead.statistics_buffers) == {"steps", "mean", "cov", "cross"}
    tensors, meta = run.state_dict()
    assert math.isinf(float(tensors["head.steps"]))
    run.encoder()  # loads: the infinite step count is a statistic
    for name in ("head.weight", "head.eigenvalues"):
        damaged = {**tensors, name: tensors[name].clone().fill_(float("nan"))}
        save_file(damaged, str(run.weights_path), metadata=meta)
        with pytest.raises(RunError, match=f"NaN or infinite values in {name}"):
            Run.load(run.path).encoder()


def test_tri_eigen_resumes_to_the_same_weights(tmp_path) -> None:
    full = _tiny(tmp_path / "full")
    partial = train(full.config, runs_root=tmp_path / "part", progress=False, stop_after_epoch=1)
    resumed = train(resume=partial.path, progress=False)
    a, b = full.encoder().state_dict(), resumed.encoder().state_dict()
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
