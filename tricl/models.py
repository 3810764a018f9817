"""Backbones (a registry of small typed factories) and the Encoder: backbone -> projector -> z.

Every backbone factory takes the number of input channels and returns ``(module, feat_dim)``; the
module maps images ``(B, C, H, W)`` to features ``(B, feat_dim)``.

:func:`importance_from_logits` is the one definition of S from its logits, for every model that
learns S (the Encoder here, the synthetic experiment's MLP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricl.catalog import BACKBONE_INFO
from tricl.heads import HEADS
from tricl.methods import get_method


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its factory, and what it is for."""

    factory: Callable[[int], tuple[nn.Module, int]]
    description: str


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str):
    """Decorator that adds a backbone factory to :data:`BACKBONES`.

    The name and its description are declared in :data:`tricl.catalog.BACKBONE_INFO`.
    """
    if name not in BACKBONE_INFO:
        raise ValueError(f"backbone {name!r} is not declared in tricl.catalog.BACKBONE_INFO")

    def wrap(factory: Callable[[int], tuple[nn.Module, int]]):
        BACKBONES[name] = BackboneSpec(factory, BACKBONE_INFO[name])
        return factory

    return wrap


class SmallCNN(nn.Module):
    """Three conv blocks and global average pooling: fast on a CPU, for 28x28 and 32x32 inputs."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
        )
        self.out_dim = c3

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C, H, W) -> (B, out_dim)."""
        return self.features(x).mean(dim=(2, 3))  # (B, c3, h, w) -> (B, c3)


@register_backbone("small_cnn")
def small_cnn(in_channels: int) -> tuple[nn.Module, int]:
    net = SmallCNN(in_channels)
    return net, net.out_dim


def _torchvision_resnet(name: str, in_channels: int, cifar_stem: bool) -> tuple[nn.Module, int]:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    feat_dim = net.fc.in_features
    if cifar_stem:
        # 3x3 stride-1 stem and no max-pool keep 32x32 inputs at a useful resolution (paper setup).
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net, feat_dim


@register_backbone("resnet18_cifar")
def resnet18_cifar(in_channels: int) -> tuple[nn.Module, int]:
    return _torchvision_resnet("resnet18", in_channels, cifar_stem=True)


@register_backbone("resnet18")
def resnet18(in_channels: int) -> tuple[nn.Module, int]:
    return _torchvision_resnet("resnet18", in_channels, cifar_stem=False)


@register_backbone("resnet50")
def resnet50(in_channels: int) -> tuple[nn.Module, int]:
    return _torchvision_resnet("resnet50", in_channels, cifar_stem=False)


def _softplus_mean1(logits: Tensor) -> Tensor:
    s = F.softplus(logits)
    return s / s.mean()


# S from its logits, by the name ``RunConfig.s_param`` gives: (k,) -> (k,), every entry > 0.
S_PARAMETRIZATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "softplus": F.softplus,  # the paper and the official code
    # divided by its mean: S's spread no longer moves its overall scale, i.e. the temperature
    "softplus_mean1": _softplus_mean1,
}


def importance_from_logits(logits: Tensor, s_param: str = "softplus") -> Tensor:
    """The diagonal of S from its learnable logits.

    Args:
        logits: the importance logits ``s``. Shape: (k,).
        s_param: a key of :data:`S_PARAMETRIZATIONS`.

    Returns:
        ``softplus(s)``, or ``softplus(s) / mean(softplus(s))`` for ``"softplus_mean1"``.
        Shape: (k,).
    """
    return S_PARAMETRIZATIONS[s_param](logits)


class FixedAffine(nn.Module):
    """``z @ weight.T + bias``, weight and bias being buffers: saved with the weights, not trained.

    The buffers are float64 and the product is taken in their dtype, so a whitening rotation with
    large entries (cancelling against its bias) adds no float32 rounding of its own.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(out_dim, in_dim, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(out_dim, dtype=torch.float64))

    def forward(self, z: Tensor) -> Tensor:
        """Shape: (B, in_dim) -> (B, out_dim), in the dtype of ``z``."""
        return F.linear(z.to(self.weight.dtype), self.weight, self.bias).to(z.dtype)


class Encoder(nn.Module):
    """Backbone, projector and (for triCL-type methods) the importance logits ``s``.

    ``z = projector(backbone(x))`` are the k features of the paper; ``importance()`` is the diagonal
    of S, ``importance_from_logits(s, s_param)``.

    An *aligned* encoder (``aligned_dim > 0``, written by ``tricl align``) ends with a fixed affine
    layer ``aligner`` onto its parent's spectral basis, ``z = aligner(projector(backbone(x)))``
    with ``aligned_dim`` features, and its importance is a fixed buffer (the basis's eigenvalues)
    in place of S's logits, for every method: softplus cannot hold an eigenvalue <= 0 and
    ``softplus_mean1`` only vectors of mean 1, while a buffer holds them exactly and cannot be
    mistaken for a parameter an optimizer should train.
    """

    def __init__(
        self,
        backbone: str,
        in_channels: int,
        proj_hidden_dim: int,
        proj_dim: int,
        uses_importance: bool,
        s_init_std: float = 0.1,
        s_param: str = "softplus",
        proj_batchnorm: bool = False,
        s_init: str = "random",
        s_init_spread: float = 1.0,
        aligned_dim: int = 0,
        head: str = "",
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
        if s_param not in S_PARAMETRIZATIONS:
            raise ValueError(
                f"unknown s_param {s_param!r}; choose one of {sorted(S_PARAMETRIZATIONS)}"
            )
        self.backbone, self.feat_dim = BACKBONES[backbone].factory(in_channels)
        self.proj_dim = proj_dim
        self.s_param = s_param
        layers: list[nn.Module] = [nn.Linear(self.feat_dim, proj_hidden_dim)]
        if proj_batchnorm:
            layers.append(nn.BatchNorm1d(proj_hidden_dim))
        layers += [nn.ReLU(), nn.Linear(proj_hidden_dim, proj_dim)]
        self.projector = nn.Sequential(*layers)
        self.importance_logits: nn.Parameter | None = None
        self.aligner: FixedAffine | None = None
        # a head solved from statistics (tricl.heads), e.g. tri-eigen's; it then gives S
        self.head: nn.Module | None = HEADS[head](proj_dim) if head else None
        self.fixed_importance: Tensor | None
        self.register_buffer("fixed_importance", None)
        if aligned_dim > 0:
            self.aligner = FixedAffine(proj_dim, aligned_dim)
            self.fixed_importance = torch.ones(aligned_dim, dtype=torch.float64)
        elif uses_importance and self.head is None:
            if s_init == "geometric":
                # S from 1 down to 10^-spread: distinct values break the rotation symmetry from
                # the first step, instead of waiting for a near-flat random S to spread
                target = torch.logspace(0, -s_init_spread, proj_dim)  # (k,)
                logits = torch.log(torch.expm1(target))  # softplus^-1
            else:
                logits = torch.randn(proj_dim) * s_init_std  # official code: 0.1 * randn
            self.importance_logits = nn.Parameter(logits)

    @classmethod
    def from_config(cls, cfg, in_channels: int, aligned_dim: int = 0) -> Encoder:
        """The encoder a :class:`~tricl.config.RunConfig` describes; S if its method has S.

        ``aligned_dim`` > 0 adds the fixed aligner of an aligned run (``Run.aligned_dim``).
        """
        return cls(
            backbone=cfg.backbone,
            in_channels=in_channels,
            proj_hidden_dim=cfg.proj_hidden_dim,
            proj_dim=cfg.proj_dim,
            uses_importance=get_method(cfg.method).has_s,
            s_init_std=cfg.s_init_std,
            s_param=cfg.s_param,
            proj_batchnorm=cfg.proj_batchnorm,
            s_init=cfg.s_init,
            s_init_spread=cfg.s_init_spread,
            aligned_dim=aligned_dim,
            head=get_method(cfg.method).head,
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone features. Shape: (B, C, H, W) -> (B, feat_dim)."""
        return self.backbone(x)

    @property
    def out_dim(self) -> int:
        """Number of features z: ``proj_dim``, or ``aligned_dim`` for an aligned encoder."""
        return self.proj_dim if self.aligner is None else int(self.aligner.weight.shape[0])

    def project(self, h: Tensor, raw: bool = False) -> Tensor:
        """Projector, then the head and the aligner, if any. Shape: (B, feat_dim) -> (B, out_dim).

        ``raw=True`` stops after the projector (what a head observes). Shape: (B, proj_dim).
        """
        z = self.projector(h)  # (B, k)
        if raw:
            return z
        if self.head is not None:
            z = self.head(z)  # (B, k)
        return z if self.aligner is None else self.aligner(z)

    def forward(self, x: Tensor, raw: bool = False) -> Tensor:
        """The features z. Shape: (B, C, H, W) -> (B, out_dim) (``raw``: (B, proj_dim), see
        :meth:`project`)."""
        return self.project(self.forward_features(x), raw=raw)

    def importance(self) -> Tensor | None:
        """Diagonal of S (an aligned encoder: its fixed eigenvalues).

        Shape: (out_dim,), or None for methods without S.
        """
        if self.fixed_importance is not None:
            return self.fixed_importance
        if self.head is not None:
            return self.head.importance()
        if self.importance_logits is None:
            return None
        return importance_from_logits(self.importance_logits, self.s_param)

    def last_conv_layer(self) -> nn.Module:
        """The last convolution of the backbone (the layer Grad-CAM attributes to)."""
        convs = [m for m in self.backbone.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1]
