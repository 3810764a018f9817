"""Saliency maps (captum) on a tiny conv net built here and on the real small_cnn encoder."""

import numpy as np
import pytest
import torch
from torch import nn

from tricl.analysis.saliency import SALIENCY_METHODS, attribute, saliency_maps, to_display
from tricl.models import Encoder


class TinyEncoder(nn.Module):
    """Conv -> ReLU -> Conv -> ReLU -> pool -> Linear: (B, 2, 12, 12) -> (B, 5)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))  # (B, 8, 12, 12)
        return self.head(h.mean(dim=(2, 3)))  # (B, 5)

    def last_conv_layer(self) -> nn.Module:
        return self.conv2


@pytest.fixture(scope="module")
def tiny() -> TinyEncoder:
    return TinyEncoder().eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(2, 12, 12, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("feature", [0, 3])
def test_integrated_gradients_completeness(tiny, image, feature):
    attr = attribute(tiny, image, feature, "integrated_gradients", n_steps=128)
    with torch.no_grad():
        delta = tiny(image[None])[0, feature] - tiny(torch.zeros(1, 2, 12, 12))[0, feature]
    assert attr.shape == (1, 2, 12, 12)
    assert attr.sum().item() == pytest.approx(delta.item(), rel=0.01, abs=1e-4)


def test_integrated_gradients_with_custom_baseline(tiny, image):
    baseline = torch.full((1, 2, 12, 12), 0.5)
    attr = attribute(tiny, image, 1, "integrated_gradients", n_steps=128, baseline=baseline)
    with torch.no_grad():
        delta = tiny(image[None])[0, 1] - tiny(baseline)[0, 1]
    assert attr.sum().item() == pytest.approx(delta.item(), rel=0.01, abs=1e-4)


def test_saliency_is_the_absolute_gradient(tiny, image):
    x = image[None].clone().requires_grad_(True)
    tiny(x)[0, 2].backward()
    got = attribute(tiny, image, 2, "saliency")
    torch.testing.assert_close(got, x.grad.abs())


@pytest.mark.parametrize("method", sorted(SALIENCY_METHODS))
def test_every_method_gives_a_display_map(tiny, image, method):
    maps = saliency_maps(tiny, image, 4, methods=[method])
    m = maps.maps[method]
    assert m.shape == (12, 12) and m.dtype == np.float32
    assert m.min() >= 0 and m.max() == pytest.approx(1.0)
    with torch.no_grad():
        assert maps.activation == pytest.approx(tiny(image[None])[0, 4].item(), abs=1e-6)


def test_smoothgrad_differs_from_plain_gradient(tiny, image):
    torch.manual_seed(0)
    plain = attribute(tiny, image, 0, "saliency")
    smooth = attribute(tiny, image, 0, "saliency", smoothgrad=True)
    assert smooth.shape == plain.shape
    assert not torch.allclose(smooth, plain)


def test_to_display_scales_by_percentile():
    a = torch.zeros(1, 1, 40, 40)
    a[0, 0, 0, 0] = 100.0  # one outlier pixel in 1600
    a[0, 0, 1:, :] = -1.0  # magnitude 1 elsewhere (sign ignored)
    m = to_display(a)
    assert m[0, 0] == 1.0 and m[5, 5] == pytest.approx(1.0)
    assert to_display(a, positive_only=True).max() == 1.0
    assert to_display(a, positive_only=True)[5, 5] == 0.0


def test_bad_arguments(tiny, image):
    with pytest.raises(ValueError, match="unknown saliency method"):
        attribute(tiny, image, 0, "lime")
    with pytest.raises(ValueError, match="out of range"):
        attribute(tiny, image, 5, "saliency")
    with pytest.raises(ValueError, match="float normalised"):
        attribute(tiny, image.to(torch.uint8), 0, "saliency")


def test_small_cnn_saliency_gives_every_map_and_keeps_train_mode():
    # its speed (three maps well under a second) is benchmarks/bench_analysis.py --only saliency
    enc = Encoder("small_cnn", 1, proj_hidden_dim=64, proj_dim=16)
    enc.learn_importance(0.1 * torch.randn(16))
    enc.train()
    maps = saliency_maps(enc, torch.randn(1, 28, 28), 3)
    assert set(maps.maps) == {"integrated_gradients", "saliency", "grad_cam"}
    assert all(np.isfinite(m).all() for m in maps.maps.values())
    assert enc.training  # the caller's mode is restored


def test_attribution_in_a_basis_is_that_of_the_rotated_feature(tiny, image):
    from tricl.analysis.saliency import in_basis

    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(3, 5)), rng.normal(size=3)
    rotated = in_basis(tiny, (weight, bias)).eval()
    with torch.no_grad():
        z = tiny(image[None]).numpy()
        np.testing.assert_allclose(rotated(image[None]).numpy(), z @ weight.T + bias, rtol=1e-5)
    # gradients are linear: the rotated feature's saliency is the weighted sum of the raw ones
    ig = attribute(rotated, image, 2, "integrated_gradients", n_steps=64)
    raw = [attribute(tiny, image, i, "integrated_gradients", n_steps=64) for i in range(5)]
    expected = sum(float(weight[2, i]) * raw[i] for i in range(5))
    np.testing.assert_allclose(ig.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)
    maps = saliency_maps(rotated, image, 2)
    assert set(maps.maps) == {"integrated_gradients", "saliency", "grad_cam"}
    assert maps.activation == pytest.approx(float(z[0] @ weight[2] + bias[2]), rel=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        attribute(rotated, image, 3)
