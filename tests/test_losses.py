"""Tests for tricl.losses: loop references, closed forms, gradients, autocast, input errors.

Every test that concerns a method is parametrized over ``tricl.methods.METHODS``, so a new method
is tested by default; its kernel's loop reference and closed form are looked up by kernel name.
A method's loss is built the way training builds it: a RunConfig, then
``tricl.methods.build_loss``.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from tricl import methods
from tricl.config import ConfigError, RunConfig
from tricl.losses import KERNELS, S_PLACEMENTS, LossError, LossFn, LossTerms
from tricl.methods import METHODS, MethodError, methods_with_pair


def build_loss(method: str, **hyperparameters):
    """``method``'s loss with these run settings, built as training builds it."""
    return methods.build_loss(RunConfig(method=method, **hyperparameters))


def compute_loss(method: str, z1, z2, importance=None, **hyperparameters) -> LossTerms:
    return build_loss(method, **hyperparameters)(z1, z2, importance)


def kernel_of(method: str) -> str | None:
    """The similarity kernel of a kernel method (None for the others)."""
    return getattr(METHODS[method], "kernel", None)


# the two-view methods (image-caption methods: tests/test_losses_image_text.py)
ALL_METHODS = sorted(methods_with_pair("views"))
# those of a similarity kernel (L2-normalised rows, a temperature); the feature kernels
# (NeuralEF-CLR) have their own references in tests/test_losses_neuralef.py
SIM_METHODS = [m for m in ALL_METHODS if kernel_of(m) in KERNELS]
# Each method with S and the method without S of the same kernel it reduces to when S = I.
TRI_TO_PLAIN = {
    tri.name: plain.name
    for tri in METHODS.values()
    for plain in METHODS.values()
    if tri.pair == plain.pair == "views"
    and tri.has_s
    and not plain.has_s
    and kernel_of(tri.name) is not None
    and kernel_of(tri.name) == kernel_of(plain.name)
}


# ---------------------------------------------------------------- slow loop references
# Written element by element in float64 Python, independently of the vectorised code.


def _normalise_rows(z: torch.Tensor) -> list[list[float]]:
    rows = []
    for row in z.double().tolist():
        norm = math.sqrt(sum(v * v for v in row))
        rows.append([v / norm for v in row])
    return rows


def _loop_setup(z1, z2, importance, temperature, s_placement):
    """Returns (2N, sim(i, j), pos(i)) with sim built from explicit sums over features."""
    n = z1.shape[0]
    samples = _normalise_rows(z1) + _normalise_rows(z2)
    k = len(samples[0])
    weights = [1.0] * k if importance is None else importance.double().tolist()

    def sim(i: int, j: int) -> float:
        # Official first_view: only view-1 anchors (i < N) are weighted by S.
        weighted = importance is not None and (s_placement == "both" or i < n)
        total = 0.0
        for f in range(k):
            w = weights[f] if weighted else 1.0
            total += samples[i][f] * w * samples[j][f]
        return total / temperature

    def pos(i: int) -> int:
        return i + n if i < n else i - n

    return 2 * n, sim, pos


def _loop_nt_xent(z1, z2, importance, temperature, s_placement) -> float:
    two_n, sim, pos = _loop_setup(z1, z2, importance, temperature, s_placement)
    losses = []
    for i in range(two_n):
        numerator = math.exp(sim(i, pos(i)))
        denominator = sum(math.exp(sim(i, j)) for j in range(two_n) if j != i)
        losses.append(-math.log(numerator / denominator))
    return sum(losses) / two_n


def _loop_spectral(z1, z2, importance, temperature, s_placement) -> float:
    two_n, sim, pos = _loop_setup(z1, z2, importance, temperature, s_placement)
    losses = []
    for i in range(two_n):
        negatives = [sim(i, j) ** 2 for j in range(two_n) if j not in (i, pos(i))]
        losses.append(-sim(i, pos(i)) + sum(negatives) / len(negatives))
    return sum(losses) / two_n


def _loop_decorrelation(z1, z2) -> float:
    samples = _normalise_rows(z1) + _normalise_rows(z2)
    two_n, k = len(samples), len(samples[0])
    total = 0.0
    for a in range(k):
        for b in range(k):
            corr = sum(samples[i][a] * samples[i][b] for i in range(two_n)) / two_n
            total += (corr - (1.0 if a == b else 0.0)) ** 2
    return total / (k * k)


# kernel -> loop reference of the contrastive term
REFERENCES = {"nt_xent": _loop_nt_xent, "spectral": _loop_spectral}


def _closed_nt_xent(weights: list[float], n: int, temperature: float) -> float:
    # Each anchor's positive has similarity w_i / T, its 2N - 2 negatives 0.
    per_anchor = [
        -math.log(math.exp(w / temperature) / (math.exp(w / temperature) + 2 * n - 2))
        for w in weights
    ]
    return sum(per_anchor) / len(per_anchor)


def _closed_spectral(weights: list[float], n: int, temperature: float) -> float:
    # Negatives have similarity 0, so only -mean_i w_i / T is left.
    return -sum(weights) / len(weights) / temperature


# kernel -> contrastive term for aligned views of one-hot rows: f(S weights of the N rows, N, T)
CLOSED_FORMS = {"nt_xent": _closed_nt_xent, "spectral": _closed_spectral}


def _views(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, k, generator=g) * 3.0
    z2 = z1 + 0.5 * torch.randn(n, k, generator=g)
    return z1, z2


def _importance(k: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.softplus(2.0 * torch.randn(k, generator=g))  # spread-out positive weights


def _kwargs(method: str, k: int, seed: int = 1) -> dict:
    return {"importance": _importance(k, seed) if METHODS[method].has_s else None}


# ------------------------------------------------------------------------------ tests


def test_registry_has_the_contract_methods() -> None:
    assert {"simclr", "tricl", "spectral", "tri-spectral"} <= set(METHODS)
    assert TRI_TO_PLAIN == {"tricl": "simclr", "tri-spectral": "spectral", "tri-eigen": "simclr"}


@pytest.mark.parametrize("method", SIM_METHODS)
def test_every_method_names_a_kernel_with_a_loop_reference(method) -> None:
    kernel = kernel_of(method)
    assert kernel in KERNELS, f"{method!r} names unknown kernel {kernel!r}"
    assert kernel in REFERENCES, f"add a loop reference for kernel {kernel!r} to REFERENCES"
    assert kernel in CLOSED_FORMS, f"add a closed form for kernel {kernel!r} to CLOSED_FORMS"


def test_s_placements_match_config() -> None:
    from tricl.config import S_PLACEMENTS as CONFIG_PLACEMENTS

    assert set(S_PLACEMENTS) == set(CONFIG_PLACEMENTS)


@pytest.mark.parametrize("method", SIM_METHODS)
@pytest.mark.parametrize(
    ("n", "k", "temperature", "tau", "s_placement"),
    [
        (2, 1, 0.5, 1.0, "both"),
        (3, 4, 0.2, 0.5, "first_view"),
        (5, 3, 1.0, 2.0, "both"),
        (4, 8, 0.1, 1.0, "first_view"),
        (6, 2, 0.07, 0.0, "both"),
    ],
)
def test_matches_loop_reference(method, n, k, temperature, tau, s_placement) -> None:
    reference, has_decorrelation = REFERENCES[kernel_of(method)], METHODS[method].has_s
    z1, z2 = _views(n, k, seed=n * 10 + k)
    importance = _kwargs(method, k, seed=k)["importance"]

    terms = compute_loss(
        method, z1, z2, importance, temperature=temperature, tau=tau, s_placement=s_placement
    )

    assert isinstance(terms, LossTerms)
    for value in (terms.total, terms.contrastive, terms.decorrelation):
        assert value.shape == () and value.dtype == torch.float32
    expected = reference(z1, z2, importance, temperature, s_placement)
    decorrelation = _loop_decorrelation(z1, z2) if has_decorrelation else 0.0
    assert terms.contrastive.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert terms.decorrelation.item() == pytest.approx(decorrelation, rel=1e-5, abs=1e-6)
    assert terms.total.item() == pytest.approx(expected + tau * decorrelation, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("tri_method", sorted(TRI_TO_PLAIN))
@pytest.mark.parametrize("s_placement", S_PLACEMENTS)
def test_unit_importance_reduces_to_plain_method(tri_method, s_placement) -> None:
    z1, z2 = _views(6, 5)
    plain = compute_loss(TRI_TO_PLAIN[tri_method], z1, z2, temperature=0.3)
    tri = compute_loss(
        tri_method, z1, z2, torch.ones(5), temperature=0.3, tau=0.7, s_placement=s_placement
    )
    torch.testing.assert_close(tri.contrastive, plain.contrastive)
    assert tri.decorrelation.item() > 0


@pytest.mark.parametrize("tri_method", sorted(TRI_TO_PLAIN))
def test_placement_changes_the_loss_for_nonuniform_importance(tri_method) -> None:
    z1, z2 = _views(6, 5)
    importance = _importance(5)
    both, first = (
        compute_loss(tri_method, z1, z2, importance, s_placement=p).contrastive
        for p in ("both", "first_view")
    )
    assert abs(both.item() - first.item()) > 1e-3


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_simclr_closed_form_for_aligned_orthogonal_views(n, temperature) -> None:
    # One-hot rows (scaled, to exercise the normalisation): positives have cosine 1, every other
    # pair cosine 0, so each anchor's loss is -log(e^{1/T} / (e^{1/T} + 2N - 2)).
    k = n + 2
    z = torch.eye(k)[:n] * torch.arange(1.0, n + 1.0).unsqueeze(1)
    terms = compute_loss("simclr", z, z.clone(), temperature=temperature)
    e = math.exp(1.0 / temperature)
    # abs: float32 logsumexp near 1/T = 10 resolves ~1e-6, the loss itself is ~1e-4 there.
    assert terms.total.item() == pytest.approx(-math.log(e / (e + 2 * n - 2)), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("method", SIM_METHODS)
def test_closed_form_of_every_method_for_aligned_one_hot_views(method) -> None:
    # Row i is (i + 1) e_i in both views: positives have cosine 1, all other pairs 0; with S the
    # positive similarity of row i is S_i / T. Zn^T Zn / 2N is diag(1/N on the N used features, 0
    # on the others), which gives the paper's decorrelation term in closed form.
    n, k, temperature, tau = 3, 5, 0.4, 0.6
    z = torch.eye(k)[:n] * torch.arange(1.0, n + 1.0).unsqueeze(1)
    spec = METHODS[method]
    importance = torch.tensor([0.5, 2.0, 1.5, 0.3, 0.9]) if spec.has_s else None
    weights = importance[:n].tolist() if spec.has_s else [1.0] * n
    terms = build_loss(method, temperature=temperature, tau=tau)(z, z.clone(), importance)
    contrastive = CLOSED_FORMS[kernel_of(method)](weights, n, temperature)
    decorrelation = ((1 / n - 1) ** 2 * n + (k - n)) / k**2 if spec.has_s else 0.0
    assert terms.contrastive.item() == pytest.approx(contrastive, rel=1e-6)
    assert terms.decorrelation.item() == pytest.approx(decorrelation, rel=1e-6)
    assert terms.total.item() == pytest.approx(contrastive + tau * decorrelation, rel=1e-6)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_swapping_views_gives_the_same_loss(method) -> None:
    z1, z2 = _views(5, 4)
    kwargs = _kwargs(method, 4)
    forward = compute_loss(method, z1, z2, **kwargs, s_placement="both")
    swapped = compute_loss(method, z2, z1, **kwargs, s_placement="both")
    torch.testing.assert_close(forward.total, swapped.total)


@pytest.mark.parametrize("method", SIM_METHODS)
def test_invariant_to_the_scale_of_z(method) -> None:
    # each view's rows are L2-normalised; NeuralEF-CLR normalises features over both views
    # together, so only a common scale leaves it unchanged (tests/test_losses_neuralef.py)
    z1, z2 = _views(5, 4)
    kwargs = _kwargs(method, 4)
    torch.testing.assert_close(
        compute_loss(method, z1, z2, **kwargs).total,
        compute_loss(method, 7.0 * z1, 0.1 * z2, **kwargs).total,
    )


def test_decorrelation_closed_forms() -> None:
    k = 4
    # Balanced one-hot rows: Zn^T Zn / 2N = I / k, so each of the k diagonal entries is off by
    # 1 - 1/k and the off-diagonals are 0.
    balanced = torch.eye(k)
    terms = compute_loss("tricl", balanced, balanced.clone(), torch.ones(k))
    assert terms.decorrelation.item() == pytest.approx((1 - 1 / k) ** 2 / k, rel=1e-6)
    # Every row the same direction e_1: Zn^T Zn / 2N = e_1 e_1^T, k - 1 diagonal entries off by 1.
    collapsed = torch.zeros(6, k)
    collapsed[:, 0] = torch.arange(1.0, 7.0)
    terms = compute_loss("tricl", collapsed, collapsed.clone(), torch.ones(k))
    assert terms.decorrelation.item() == pytest.approx((k - 1) / k**2, rel=1e-6)
    # k = 1: unit-norm rows give Zn^T Zn / 2N = 1 exactly.
    z1, z2 = _views(4, 1)
    assert compute_loss("tricl", z1, z2, torch.ones(1)).decorrelation.item() == pytest.approx(
        0.0, abs=1e-7
    )


def test_whiten_decorrelation_closed_forms() -> None:
    k = 4
    # Balanced one-hot rows are white after the sqrt(k) rescale: k Zn^T Zn / 2N = I exactly,
    # so the whitening term reaches 0 where the paper's term sits at its floor.
    balanced = torch.eye(k)
    terms = compute_loss("tricl", balanced, balanced.clone(), torch.ones(k), decorrelation="whiten")
    assert terms.decorrelation.item() == pytest.approx(0.0, abs=1e-7)
    assert terms.total.item() == pytest.approx(terms.contrastive.item(), abs=1e-7)
    # Collapsed rows: k Zn^T Zn / 2N = k e_1 e_1^T: (k - 1)^2 + (k - 1) over k.
    collapsed = torch.zeros(6, k)
    collapsed[:, 0] = torch.arange(1.0, 7.0)
    terms = compute_loss(
        "tri-spectral", collapsed, collapsed.clone(), torch.ones(k), decorrelation="whiten", tau=2
    )
    assert terms.decorrelation.item() == pytest.approx(((k - 1) ** 2 + (k - 1)) / k, rel=1e-6)
    assert terms.total.item() == pytest.approx(
        terms.contrastive.item() + 2 * terms.decorrelation.item(), rel=1e-6
    )


def test_whiten_matches_a_loop_reference() -> None:
    z1, z2 = _views(7, 5)
    samples = _normalise_rows(z1) + _normalise_rows(z2)
    two_n, k = len(samples), len(samples[0])
    expected = 0.0
    for a in range(k):
        for b in range(k):
            second = k * sum(samples[i][a] * samples[i][b] for i in range(two_n)) / two_n
            expected += (second - (1.0 if a == b else 0.0)) ** 2
    got = compute_loss("tricl", z1, z2, _importance(5), decorrelation="whiten").decorrelation
    assert got.item() == pytest.approx(expected / k, rel=1e-5)


def test_simclr_ignores_the_decorrelation_choice() -> None:
    z1, z2 = _views(6, 3)
    a = compute_loss("simclr", z1, z2, decorrelation="mean").total.item()
    assert compute_loss("simclr", z1, z2, decorrelation="whiten").total.item() == a


@pytest.mark.parametrize("tri_method", sorted(TRI_TO_PLAIN))
def test_decorrelation_ignores_importance_and_placement(tri_method) -> None:
    z1, z2 = _views(6, 5)
    values = [
        compute_loss(tri_method, z1, z2, w, s_placement=p).decorrelation.item()
        for w in (torch.ones(5), _importance(5))
        for p in S_PLACEMENTS
    ]
    assert values == pytest.approx([values[0]] * len(values), rel=1e-6)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_gradients_reach_z_and_importance(method) -> None:
    z1, z2 = (z.requires_grad_() for z in _views(6, 5))
    logits = torch.randn(5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    importance = F.softplus(logits) if METHODS[method].has_s else None
    compute_loss(method, z1, z2, importance, temperature=0.3).total.backward()
    for grad in (z1.grad, z2.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    if METHODS[method].has_s:
        assert logits.grad is not None and torch.isfinite(logits.grad).all()
        assert logits.grad.abs().sum() > 0
    else:
        assert logits.grad is None


@pytest.mark.parametrize("s_placement", S_PLACEMENTS)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_adam_steps_lower_the_loss(method, s_placement) -> None:
    torch.manual_seed(0)
    z1 = torch.randn(8, 4, requires_grad=True)
    z2 = torch.randn(8, 4, requires_grad=True)
    logits = torch.zeros(4, requires_grad=True)
    has_s = METHODS[method].has_s
    params = [z1, z2, logits] if has_s else [z1, z2]
    optimizer = torch.optim.Adam(params, lr=0.05)
    loss_fn = build_loss(method, temperature=0.5, tau=1.0, s_placement=s_placement)

    def loss() -> torch.Tensor:
        return loss_fn(z1, z2, F.softplus(logits) if has_s else None).total

    initial = loss().item()
    for _ in range(25):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < initial - 0.05


@pytest.mark.parametrize("method", ALL_METHODS)
def test_computes_in_float32_under_cpu_autocast(method) -> None:
    # Under autocast the matmuls would otherwise run in bfloat16 (~3 significant digits).
    z1, z2 = _views(16, 8)
    kwargs = _kwargs(method, 8)
    expected = compute_loss(method, z1, z2, **kwargs, temperature=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = compute_loss(method, z1, z2, **kwargs, temperature=0.1)
    assert got.total.dtype == torch.float32
    torch.testing.assert_close(got.total, expected.total, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_accepts_bfloat16_features_and_returns_float32(method) -> None:
    z1, z2 = (z.bfloat16().requires_grad_() for z in _views(6, 4))
    kwargs = _kwargs(method, 4)
    terms = compute_loss(method, z1, z2, **kwargs)
    assert terms.total.dtype == torch.float32
    expected = compute_loss(method, z1.detach().float(), z2.detach().float(), **kwargs)
    torch.testing.assert_close(terms.total, expected.total)
    terms.total.backward()
    assert z1.grad is not None and z1.grad.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ALL_METHODS)
def test_cuda_bf16_autocast_matches_float32(method) -> None:
    z1, z2 = (z.cuda() for z in _views(64, 16))
    importance = _kwargs(method, 16)["importance"]
    importance = None if importance is None else importance.cuda()
    expected = compute_loss(method, z1, z2, importance, temperature=0.1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = compute_loss(method, z1, z2, importance, temperature=0.1)
    assert got.total.dtype == torch.float32
    torch.testing.assert_close(got.total, expected.total, rtol=1e-5, atol=1e-5)


_Z1, _Z2 = _views(4, 3)
_W = torch.ones(3)

BAD_INPUTS = [
    ("unknown method", dict(method="byol"), "unknown method"),
    ("zero temperature", dict(temperature=0.0), "temperature"),
    ("negative temperature", dict(temperature=-0.5), "temperature"),
    ("nan temperature", dict(temperature=float("nan")), "temperature"),
    ("negative tau", dict(tau=-0.1), "tau"),
    ("unknown placement", dict(s_placement="second_view"), "s_placement"),
    ("unknown decorrelation", dict(decorrelation="zca"), "decorrelation"),
    ("1-D z", dict(z1=_Z1[0], z2=_Z2[0]), "2-D"),
    ("shape mismatch", dict(z2=_Z2[:3]), "same shape"),
    ("one sample", dict(z1=_Z1[:1], z2=_Z2[:1]), "at least 2"),
    ("no importance for tricl", dict(importance=None), "needs importance"),
    ("importance wrong shape", dict(importance=torch.ones(4)), "shape"),
    ("importance 2-D", dict(importance=torch.ones(1, 3)), "shape"),
    ("zero importance", dict(importance=torch.tensor([1.0, 0.0, 1.0])), "> 0"),
    ("negative importance", dict(importance=torch.tensor([1.0, -1.0, 1.0])), "> 0"),
    ("nan importance", dict(importance=torch.tensor([1.0, float("nan"), 1.0])), "> 0"),
    ("importance for simclr", dict(method="simclr"), "no importance"),
    ("importance for spectral", dict(method="spectral"), "no importance"),
]


@pytest.mark.parametrize(
    ("overrides", "match"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises_one_line_value_error(overrides, match) -> None:
    args = dict(method="tricl", z1=_Z1, z2=_Z2, importance=_W) | overrides
    with pytest.raises(ValueError, match=match) as info:
        compute_loss(
            args.pop("method"), args.pop("z1"), args.pop("z2"), args.pop("importance"), **args
        )
    # a bad setting is the run config's error (before any loss exists), a bad tensor the loss's
    assert isinstance(info.value, (LossError, ConfigError))
    assert "\n" not in str(info.value)


def test_unknown_method_lists_the_registered_names() -> None:
    with pytest.raises(ValueError) as info:
        compute_loss("byol", _Z1, _Z2)
    for name in METHODS:
        assert repr(name) in str(info.value)


# ------------------------------------------------------------- built once, called many times

BAD_HYPERPARAMETERS = [
    ("zero temperature", dict(temperature=0.0), "temperature"),
    ("inf temperature", dict(temperature=float("inf")), "temperature"),
    ("string temperature", dict(temperature="0.2"), "temperature"),
    ("negative tau", dict(tau=-1.0), "tau"),
    ("nan tau", dict(tau=float("nan")), "tau"),
    ("unknown placement", dict(s_placement="second_view"), "s_placement"),
    ("unknown decorrelation", dict(decorrelation="zca"), "decorrelation"),
]


@pytest.mark.parametrize("method", SIM_METHODS)
@pytest.mark.parametrize(
    ("overrides", "match"),
    [c[1:] for c in BAD_HYPERPARAMETERS],
    ids=[c[0] for c in BAD_HYPERPARAMETERS],
)
def test_bad_hyperparameters_raise_when_the_loss_is_built(method, overrides, match) -> None:
    # No tensor is involved: the check happens at construction, before any batch.
    with pytest.raises(LossError, match=match) as info:
        LossFn(kernel_of(method), METHODS[method].has_s, **overrides)
    assert "\n" not in str(info.value)


def test_unknown_method_raises_when_the_loss_is_built() -> None:
    class Config:
        method = "byol"

    with pytest.raises(MethodError, match="unknown method 'byol'"):
        methods.build_loss(Config())


def test_an_unregistered_kernel_raises_when_built() -> None:
    with pytest.raises(LossError, match="kernel 'vicreg'") as info:
        LossFn("vicreg")
    for kernel in KERNELS:
        assert repr(kernel) in str(info.value)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_built_loss_does_not_validate_its_hyperparameters_again(method, monkeypatch) -> None:
    loss_fn = build_loss(method, temperature=0.3, tau=0.5)
    z1, z2 = _views(5, 4)
    expected = loss_fn(z1, z2, **_kwargs(method, 4)).total

    def fail(*args, **kwargs):
        raise AssertionError("hyperparameters validated on a call")

    module = sys.modules[type(loss_fn).__module__]
    if not hasattr(module, "check_number"):
        pytest.skip(f"{method}'s loss checks its values its own way (see its test file)")
    monkeypatch.setattr(module, "check_number", fail)
    torch.testing.assert_close(loss_fn(z1, z2, **_kwargs(method, 4)).total, expected)
    with pytest.raises(AssertionError, match="validated on a call"):
        build_loss(method)


def test_a_built_loss_is_frozen() -> None:
    import dataclasses

    loss_fn = build_loss("tricl")
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss_fn.temperature = -1.0  # type: ignore[misc]
    assert loss_fn == LossFn("nt_xent", True, 0.2, 1.0, "both", "mean", name="tricl")


@pytest.mark.parametrize("method", SIM_METHODS)
def test_build_loss_reads_a_run_config(method) -> None:
    cfg = RunConfig(
        method=method, temperature=0.3, tau=0.4, s_placement="first_view", decorrelation="whiten"
    )
    loss_fn = methods.build_loss(cfg)
    has_s = METHODS[method].has_s
    tri = (0.4, "first_view", "whiten") if has_s else ()
    assert loss_fn == LossFn(kernel_of(method), has_s, 0.3, *tri, name=method)
    z1, z2 = _views(6, 5)
    kwargs = _kwargs(method, 5)
    expected = LossFn(kernel_of(method), has_s, 0.3, *tri)(z1, z2, **kwargs)
    assert torch.equal(loss_fn(z1, z2, **kwargs).total, expected.total)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_bad_tensors_raise_on_the_call(method) -> None:
    loss_fn = build_loss(method)
    with pytest.raises(LossError, match="same shape"):
        loss_fn(_Z1, _Z2[:3], **_kwargs(method, 3))
    wrong = None if METHODS[method].has_s else _W
    with pytest.raises(LossError, match="importance"):
        loss_fn(_Z1, _Z2, wrong)
