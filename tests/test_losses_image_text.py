"""Tests for the image-text losses of tricl.losses (clip, triclip): a float64 loop reference,
closed forms, symmetry, gradients, autocast and build-time validation.

Parametrized over ``IMAGE_TEXT_LOSSES`` so a new image-text loss is tested by default.
"""

from __future__ import annotations

import math

import pytest
import torch

from tricl.losses import (
    CLIP_INIT_LOGIT_SCALE,
    CLIP_MAX_LOGIT_SCALE,
    DECORRELATIONS,
    IMAGE_TEXT_LOSSES,
    S_PLACEMENTS,
    ImageTextLossFn,
    LossError,
    build_image_text_loss,
)

ALL = sorted(IMAGE_TEXT_LOSSES)


# ---------------------------------------------------------------- slow loop reference
# Element by element in float64 Python, independently of the vectorised code.


def _unit_rows(z: torch.Tensor) -> list[list[float]]:
    rows = z.double().tolist()
    return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in rows]


def _cross_entropy_rows(logits: list[list[float]]) -> float:
    total = 0.0
    for i, row in enumerate(logits):
        top = max(row)
        total += -(row[i] - top - math.log(sum(math.exp(v - top) for v in row)))
    return total / len(logits)


def _decorrelation_ref(zn: list[list[float]], kind: str) -> float:
    n, k = len(zn), len(zn[0])
    out = 0.0
    for a in range(k):
        for b in range(k):
            second = sum(zn[i][a] * zn[i][b] for i in range(n)) / n
            if kind == "whiten":
                out += (k * second - (a == b)) ** 2
            else:
                out += (second - (a == b)) ** 2
    return out / (k if kind == "whiten" else k * k)


def _reference(method, img, txt, s, logit_scale, tau=1.0, placement="both", decorrelation="mean"):
    """(total, contrastive, decorrelation) of clip/triclip in float64 loops."""
    f, g = _unit_rows(img), _unit_rows(txt)
    n, k = len(f), len(f[0])
    scale = math.exp(min(logit_scale, CLIP_MAX_LOGIT_SCALE))
    w = s.double().tolist() if s is not None else [1.0] * k
    w_txt = w if placement == "both" else [1.0] * k
    img_to_txt = [
        [scale * sum(f[i][a] * w[a] * g[j][a] for a in range(k)) for j in range(n)]
        for i in range(n)
    ]
    txt_to_img = [
        [scale * sum(g[i][a] * w_txt[a] * f[j][a] for a in range(k)) for j in range(n)]
        for i in range(n)
    ]
    contrastive = (_cross_entropy_rows(img_to_txt) + _cross_entropy_rows(txt_to_img)) / 2
    if not IMAGE_TEXT_LOSSES[method].has_s:
        return contrastive, contrastive, 0.0
    penalty = (_decorrelation_ref(f, decorrelation) + _decorrelation_ref(g, decorrelation)) / 2
    return contrastive + tau * penalty, contrastive, penalty


def _inputs(method: str, n: int = 6, k: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(n, k, generator=gen)
    txt = img + 0.8 * torch.randn(n, k, generator=gen)
    s = torch.rand(k, generator=gen) * 2 + 0.1 if IMAGE_TEXT_LOSSES[method].has_s else None
    return img, txt, s


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("placement", S_PLACEMENTS)
@pytest.mark.parametrize("decorrelation", DECORRELATIONS)
@pytest.mark.parametrize("logit_scale", [0.3, CLIP_INIT_LOGIT_SCALE, 7.0])
def test_matches_loop_reference(method, placement, decorrelation, logit_scale):
    img, txt, s = _inputs(method)
    loss = build_image_text_loss(
        method, tau=0.7, s_placement=placement, decorrelation=decorrelation
    )
    terms = loss(img, txt, s, torch.tensor(logit_scale))
    ref = _reference(method, img, txt, s, logit_scale, 0.7, placement, decorrelation)
    for got, want in zip((terms.total, terms.contrastive, terms.decorrelation), ref, strict=True):
        assert got.dtype == torch.float32 and got.shape == ()
        assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_logit_scale_is_clamped_at_log_100():
    img, txt, _ = _inputs("clip")
    loss = build_image_text_loss("clip")
    at_max = loss(img, txt, None, torch.tensor(CLIP_MAX_LOGIT_SCALE))
    past = torch.tensor(CLIP_MAX_LOGIT_SCALE + 3.0, requires_grad=True)
    beyond = loss(img, txt, None, past)
    beyond.total.backward()
    assert float(beyond.total.detach()) == pytest.approx(float(at_max.total), rel=1e-6)
    assert float(past.grad) == 0.0  # clamped: no push further up, as in CLIP
    unclamped = build_image_text_loss("clip", max_logit_scale=20.0)
    assert float(unclamped(img, txt, None, torch.tensor(CLIP_MAX_LOGIT_SCALE + 3.0)).total) != (
        pytest.approx(float(at_max.total), rel=1e-3)
    )


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("method", ALL)
def test_aligned_pairs_with_huge_scale_give_zero(method):
    k = 8
    img = torch.eye(k)  # orthogonal pairs: every negative similarity is 0, every positive 1
    s = torch.ones(k) if IMAGE_TEXT_LOSSES[method].has_s else None
    terms = build_image_text_loss(method, max_logit_scale=50.0)(
        img, img * 3.0, s, torch.tensor(50.0)
    )
    assert float(terms.contrastive) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("n", [2, 7, 16])
def test_equal_similarities_give_log_n(method, n):
    img = torch.ones(n, 4)  # every pair has the same similarity
    s = torch.full((4,), 0.5) if IMAGE_TEXT_LOSSES[method].has_s else None
    terms = build_image_text_loss(method)(img, img.clone(), s, torch.tensor(2.0))
    assert float(terms.contrastive) == pytest.approx(math.log(n), rel=1e-6)


def test_triclip_with_identity_s_equals_clip():
    img, txt, _ = _inputs("triclip")
    ls = torch.tensor(1.5)
    clip = build_image_text_loss("clip")(img, txt, None, ls)
    for placement in S_PLACEMENTS:
        tri = build_image_text_loss("triclip", s_placement=placement)(img, txt, torch.ones(5), ls)
        assert float(tri.contrastive) == pytest.approx(float(clip.contrastive), rel=1e-6)


@pytest.mark.parametrize("method", ALL)
def test_symmetric_in_image_and_text_when_s_is_everywhere(method):
    img, txt, s = _inputs(method)
    loss = build_image_text_loss(method, s_placement="both")
    ls = torch.tensor(2.0)
    forward, swapped = loss(img, txt, s, ls), loss(txt, img, s, ls)
    assert float(forward.total) == pytest.approx(float(swapped.total), rel=1e-6)


def test_first_view_is_not_symmetric():
    img, txt, s = _inputs("triclip")
    loss = build_image_text_loss("triclip", s_placement="first_view")
    ls = torch.tensor(2.0)
    assert float(loss(img, txt, s, ls).contrastive) != pytest.approx(
        float(loss(txt, img, s, ls).contrastive), rel=1e-4
    )


@pytest.mark.parametrize("method", ALL)
def test_invariant_to_feature_scale_and_row_order(method):
    img, txt, s = _inputs(method)
    loss = build_image_text_loss(method)
    ls = torch.tensor(2.0)
    base = float(loss(img, txt, s, ls).total)
    perm = torch.randperm(len(img), generator=torch.Generator().manual_seed(3))
    assert float(loss(img * 4.0, txt * 0.3, s, ls).total) == pytest.approx(base, rel=1e-5)
    assert float(loss(img[perm], txt[perm], s, ls).total) == pytest.approx(base, rel=1e-5)


# ---------------------------------------------------------------- training behaviour


@pytest.mark.parametrize("method", ALL)
def test_gradient_steps_lower_the_loss(method):
    img, txt, s = _inputs(method, n=16, k=6, seed=1)
    img, txt = img.requires_grad_(), txt.requires_grad_()
    params = [img, txt]
    logits = None
    if s is not None:
        logits = torch.zeros(6, requires_grad=True)
        params.append(logits)
    logit_scale = torch.tensor(CLIP_INIT_LOGIT_SCALE, requires_grad=True)
    params.append(logit_scale)
    loss = build_image_text_loss(method, tau=0.5)
    opt = torch.optim.SGD(params, lr=0.05)

    def value() -> torch.Tensor:
        importance = torch.nn.functional.softplus(logits) if logits is not None else None
        return loss(img, txt, importance, logit_scale).total

    first = float(value().detach())
    for _ in range(20):
        opt.zero_grad()
        value().backward()
        opt.step()
    assert float(value().detach()) < first - 0.05
    assert logit_scale.grad is not None and float(logit_scale.grad) != 0.0


@pytest.mark.parametrize("method", ALL)
def test_float32_inside_autocast(method):
    img, txt, s = _inputs(method)
    loss = build_image_text_loss(method)
    ls = torch.tensor(2.0)
    plain = loss(img, txt, s, ls)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss(img.bfloat16(), txt.bfloat16(), s, ls)
    assert auto.total.dtype == torch.float32
    assert float(auto.total) == pytest.approx(float(plain.total), rel=0.05)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "simclr"}, "unknown image-text loss"),
        ({"method": "clip", "tau": -1.0}, "tau must be"),
        ({"method": "triclip", "s_placement": "text"}, "unknown s_placement"),
        ({"method": "triclip", "decorrelation": "none"}, "unknown decorrelation"),
        ({"method": "clip", "max_logit_scale": float("inf")}, "max_logit_scale"),
    ],
)
def test_invalid_hyperparameters_fail_at_build_time(kwargs, message):
    method = kwargs.pop("method")
    with pytest.raises(LossError, match=message):
        build_image_text_loss(method, **kwargs)


def test_unknown_hyperparameter_and_config_object():
    with pytest.raises(LossError, match="unknown image-text loss hyperparameters"):
        build_image_text_loss("clip", temperature=0.1)

    class Cfg:
        method = "triclip"
        tau = 0.25
        s_placement = "first_view"

    built = build_image_text_loss(Cfg(), decorrelation="whiten")
    assert built == ImageTextLossFn("triclip", 0.25, "first_view", "whiten")


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("clip", (torch.randn(4, 3), torch.randn(4, 2), None, torch.tensor(1.0)), "must both be"),
        ("clip", (torch.randn(1, 3), torch.randn(1, 3), None, torch.tensor(1.0)), "at least 2"),
        ("clip", (torch.randn(4, 3), torch.randn(4, 3), torch.ones(3), torch.tensor(1.0)), "no "),
        ("triclip", (torch.randn(4, 3), torch.randn(4, 3), None, torch.tensor(1.0)), "needs"),
        (
            "triclip",
            (torch.randn(4, 3), torch.randn(4, 3), torch.zeros(3), torch.tensor(1.0)),
            "> 0",
        ),
        ("clip", (torch.randn(4, 3), torch.randn(4, 3), None, None), "needs logit_scale"),
        ("clip", (torch.randn(4, 3), torch.randn(4, 3), None, torch.ones(2)), "one-element"),
        ("clip", (torch.randn(4, 3), torch.randn(4, 3), None, torch.tensor(math.nan)), "finite"),
    ],
)
def test_invalid_inputs_fail_with_one_line(method, args, message):
    with pytest.raises(LossError, match=message) as info:
        build_image_text_loss(method)(*args)
    assert "\n" not in str(info.value)
