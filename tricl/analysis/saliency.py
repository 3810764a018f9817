"""Which pixels drive one feature: attribution maps with captum.

The scalar explained is the chosen feature's projector output ``z_i(x)`` for one image, with the
encoder in eval mode (BatchNorm uses its running statistics, so the image's attribution does not
depend on other images). Methods are looked up by name in :data:`SALIENCY_METHODS`:

- ``integrated_gradients``: Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML
  2017. Baseline: the all-zeros normalised image, i.e. the dataset's mean colour. Satisfies
  completeness: the attributions sum to ``z_i(x) - z_i(baseline)`` up to the integral's error.
- ``saliency``: the absolute input gradient (Simonyan et al., 2014).
- ``grad_cam``: Selvaraju et al., "Grad-CAM", ICCV 2017, on the backbone's last convolution,
  upsampled to the input size.

``smoothgrad=True`` averages a method over noisy copies of the image (Smilkov et al., 2017) with
captum's ``NoiseTunnel``; Grad-CAM is already smooth and ignores it.

In the spectral basis the scalar is the rotated feature ``(z(x) @ weight.T + bias)_r``: wrap the
encoder with :func:`in_basis` (``in_basis(encoder, basis.as_linear())``) and pass the rank r as
the feature.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

IG_STEPS = 32
SMOOTHGRAD_SAMPLES = 8
SMOOTHGRAD_STDEV = 0.15  # in normalised units, i.e. about 15% of a channel's spread


@dataclass(frozen=True)
class SaliencyMethod:
    """One registered attribution method.

    Attributes:
        fn: ``fn(encoder, x, feature, smoothgrad, **kw) -> attribution``; ``x`` has shape
            (1, C, H, W) and the attribution (1, C, H, W), or (1, 1, H, W) for layer methods.
        description: one line for the dashboard.
        positive_only: display only positive evidence (Grad-CAM's ReLU) instead of magnitude.
    """

    fn: Callable[..., Tensor]
    description: str
    positive_only: bool = False


def _noise_tunnel(method: Any, x: Tensor, feature: int, smoothgrad: bool, **kw: Any) -> Tensor:
    if not smoothgrad:
        return method.attribute(x, target=feature, **kw)
    from captum.attr import NoiseTunnel

    return NoiseTunnel(method).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=SMOOTHGRAD_SAMPLES,
        stdevs=SMOOTHGRAD_STDEV,
        target=feature,
        **kw,
    )


def _integrated_gradients(
    encoder: nn.Module,
    x: Tensor,
    feature: int,
    smoothgrad: bool,
    *,
    n_steps: int = IG_STEPS,
    baseline: Tensor | None = None,
) -> Tensor:
    from captum.attr import IntegratedGradients

    base = torch.zeros_like(x) if baseline is None else baseline
    return _noise_tunnel(
        IntegratedGradients(encoder), x, feature, smoothgrad, baselines=base, n_steps=n_steps
    )


def _saliency(encoder: nn.Module, x: Tensor, feature: int, smoothgrad: bool) -> Tensor:
    from captum.attr import Saliency

    return _noise_tunnel(Saliency(encoder), x, feature, smoothgrad, abs=True)


def _grad_cam(encoder: nn.Module, x: Tensor, feature: int, smoothgrad: bool) -> Tensor:
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(encoder, encoder.last_conv_layer()).attribute(x, target=feature)  # (1,1,h,w)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")


SALIENCY_METHODS: dict[str, SaliencyMethod] = {
    "integrated_gradients": SaliencyMethod(
        _integrated_gradients, "Integrated Gradients from the mean image (sums to z_i's change)"
    ),
    "saliency": SaliencyMethod(_saliency, "absolute input gradient of z_i"),
    "grad_cam": SaliencyMethod(
        _grad_cam, "Grad-CAM on the last convolution, upsampled", positive_only=True
    ),
}


class AffineFeatures(nn.Module):
    """An encoder followed by a fixed affine map of its features (e.g. the spectral rotation).

    Attributes:
        encoder: the run's encoder, images (B, C, H, W) -> z (B, k).
        weight: the map. Shape: (r, k).
        bias: its offset. Shape: (r,).
    """

    def __init__(self, encoder: nn.Module, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C, H, W) -> (B, r)."""
        return self.encoder(x) @ self.weight.T + self.bias  # (B, k) @ (k, r) -> (B, r)

    def last_conv_layer(self) -> nn.Module:
        """The encoder's last convolution (Grad-CAM's layer)."""
        return self.encoder.last_conv_layer()


def in_basis(encoder: nn.Module, linear: tuple[np.ndarray, np.ndarray]) -> AffineFeatures:
    """The encoder with its features mapped by ``(weight, bias)``, for attributions in a basis.

    Args:
        encoder: the run's encoder (see :func:`attribute`).
        linear: ``(weight (r, k), bias (r,))``, e.g. ``SpectralBasis.as_linear()``.

    Returns:
        The wrapped encoder; feature r of it is the basis's rank r.
    """
    ref = next(encoder.parameters())
    weight, bias = (torch.as_tensor(a, dtype=ref.dtype, device=ref.device) for a in linear)
    return AffineFeatures(encoder, weight, bias)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _as_batch(image: Tensor) -> Tensor:
    if image.dim() == 3:
        image = image.unsqueeze(0)  # (C, H, W) -> (1, C, H, W)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image of shape (C, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError("image must be the float normalised tensor; apply data.preprocess first")
    return image


def attribute(
    encoder: nn.Module,
    image: Tensor,
    feature: int,
    method: str = "integrated_gradients",
    *,
    smoothgrad: bool = False,
    **kwargs: Any,
) -> Tensor:
    """Raw attribution of feature ``feature`` of one image.

    Args:
        encoder: maps images (B, C, H, W) to features (B, k); needs ``last_conv_layer()`` for
            Grad-CAM. Run in eval mode (restored afterwards).
        image: one preprocessed (normalised float) image. Shape: (C, H, W) or (1, C, H, W).
        feature: index of the feature in z (raw index, not importance rank).
        method: a key of :data:`SALIENCY_METHODS`.
        smoothgrad: average over noisy copies (ignored by Grad-CAM).
        **kwargs: method options (Integrated Gradients: ``n_steps``, ``baseline``).

    Returns:
        The attribution. Shape: (1, C, H, W), or (1, 1, H, W) for Grad-CAM.
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(
            f"unknown saliency method {method!r}; choose one of {sorted(SALIENCY_METHODS)}"
        )
    x = _as_batch(image)
    with _eval_mode(encoder):
        k = encoder(x).shape[1]
        if not 0 <= feature < k:
            raise ValueError(f"feature {feature} is out of range; the encoder has {k} features")
        x = x.detach().requires_grad_(True)
        attr = SALIENCY_METHODS[method].fn(encoder, x, feature, smoothgrad, **kwargs)
    return attr.detach()


def to_display(
    attribution: Tensor, *, positive_only: bool = False, percentile: float = 99.0
) -> np.ndarray:
    """An attribution as a heat map in [0, 1] for drawing.

    Channels are summed in absolute value (or, with ``positive_only``, only positive values count,
    as Grad-CAM's ReLU); the map is divided by its ``percentile``-th value, so that a few extreme
    pixels do not wash out the rest, and clipped.

    Args:
        attribution: raw attribution. Shape: (1, C, H, W), (C, H, W) or (H, W).
        positive_only: keep positive evidence only instead of magnitude.
        percentile: the value mapped to 1.

    Returns:
        The map. Shape: (H, W).
    """
    a = attribution.detach().float().cpu()
    if a.dim() == 4:
        a = a[0]
    if a.dim() == 2:
        a = a.unsqueeze(0)  # (H, W) -> (1, H, W)
    a = a.clamp(min=0) if positive_only else a.abs()
    m = a.sum(dim=0).numpy()  # (C, H, W) -> (H, W)
    scale = float(np.percentile(m, percentile))
    if not scale > 0:
        scale = float(m.max()) if m.max() > 0 else 1.0
    return np.clip(m / scale, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True, eq=False)
class SaliencyMaps:
    """Display-ready maps of one image and one feature.

    Attributes:
        feature: raw feature index.
        activation: ``z_feature`` of the image.
        maps: method name -> heat map in [0, 1]. Shape: (H, W) each.
    """

    feature: int
    activation: float
    maps: dict[str, np.ndarray]


def saliency_maps(
    encoder: nn.Module,
    image: Tensor,
    feature: int,
    methods: Sequence[str] = ("integrated_gradients", "saliency", "grad_cam"),
    *,
    smoothgrad: bool = False,
) -> SaliencyMaps:
    """Attribution maps of one feature of one image, normalised for display.

    Args:
        encoder: the run's encoder (see :func:`attribute`).
        image: one preprocessed image. Shape: (C, H, W) or (1, C, H, W).
        feature: raw feature index.
        methods: keys of :data:`SALIENCY_METHODS`.
        smoothgrad: SmoothGrad via NoiseTunnel for the gradient methods.

    Returns:
        The :class:`SaliencyMaps`.
    """
    x = _as_batch(image)
    with _eval_mode(encoder), torch.no_grad():
        activation = float(encoder(x)[0, feature])
    maps = {
        m: to_display(
            attribute(encoder, x, feature, m, smoothgrad=smoothgrad),
            positive_only=SALIENCY_METHODS[m].positive_only,
        )
        for m in methods
    }
    return SaliencyMaps(feature=feature, activation=activation, maps=maps)
