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


class _Block(nn.Module):
    """A basic residual block: two 3x3 convs, the input added back (a 1x1 conv when the shape
    changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    """A 3x3 stem and two residual blocks (stride 2 each, where the small CNN max-pools), global
    average pooling: another architecture of the small CNN's width at about twice its cost, for
    28x28 and 32x32 inputs."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(_Block(c1, c2, 2), _Block(c2, c3, 2))
        self.out_dim = c3

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C, H, W) -> (B, out_dim)."""
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


@register_backbone("small_resnet")
def small_resnet(in_channels: int) -> tuple[nn.Module, int]:
    net = SmallResNet(in_channels)
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
    """Backbone and projector, plus what a method adds: S's logits, a head, or an aligner.

    ``z = projector(backbone(x))`` are the k features of the paper. A method (:mod:`tricl.methods`)
    builds the plain encoder and adds its own parts, under fixed attribute names (they are the
    weights' key names in ``model.safetensors``):

    - :meth:`learn_importance`: the learnable logits ``importance_logits`` of S (tri-factor
      methods); ``importance()`` is then ``importance_from_logits(s, s_param)``;
    - :meth:`attach_head`: a ``head`` after the projector whose weights are solved from
      statistics (:mod:`tricl.heads`); it then gives S;
    - :meth:`align`: the fixed affine ``aligner`` of an *aligned* encoder (written by
      ``tricl align``) onto its parent's spectral basis, ``z = aligner(head(projector(...)))``
      with ``aligned_dim`` features, and its importance a fixed buffer (the basis's eigenvalues)
      in place of S's logits, for every method: softplus cannot hold an eigenvalue <= 0 and
      ``softplus_mean1`` only vectors of mean 1, while a buffer holds them exactly and cannot be
      mistaken for a parameter an optimizer should train.

    ``importance()`` asks them in that order of precedence: aligner, head, logits.
    """

    def __init__(
        self,
        backbone: str,
        in_channels: int,
        proj_hidden_dim: int,
        proj_dim: int,
        proj_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
        self.backbone, self.feat_dim = BACKBONES[backbone].factory(in_channels)
        self.proj_dim = proj_dim
        layers: list[nn.Module] = [nn.Linear(self.feat_dim, proj_hidden_dim)]
        if proj_batchnorm:
            layers.append(nn.BatchNorm1d(proj_hidden_dim))
        layers += [nn.ReLU(), nn.Linear(proj_hidden_dim, proj_dim)]
        self.projector = nn.Sequential(*layers)
        self.s_param = "softplus"
        self.importance_logits: nn.Parameter | None = None
        self.head: nn.Module | None = None
        self.aligner: FixedAffine | None = None
        self.fixed_importance: Tensor | None
        self.register_buffer("fixed_importance", None)

    def learn_importance(self, logits: Tensor, s_param: str = "softplus") -> None:
        """Adds S's learnable logits (registered as ``importance_logits``).

        Args:
            logits: their initial values. Shape: (proj_dim,).
            s_param: a key of :data:`S_PARAMETRIZATIONS`.
        """
        if s_param not in S_PARAMETRIZATIONS:
            raise ValueError(
                f"unknown s_param {s_param!r}; choose one of {sorted(S_PARAMETRIZATIONS)}"
            )
        if logits.shape != (self.proj_dim,):
            raise ValueError(f"S's logits must have shape ({self.proj_dim},), got {logits.shape}")
        self.s_param = s_param
        self.importance_logits = nn.Parameter(logits)

    def attach_head(self, head: nn.Module) -> None:
        """Adds a head after the projector (registered as ``head``); it gives S."""
        self.head = head

    def align(self, aligned_dim: int) -> None:
        """Ends the encoder with a fixed affine layer to ``aligned_dim`` features (its weights and
        eigenvalues are loaded from the aligned run's weights); S's logits, if any, go."""
        self.aligner = FixedAffine(self.proj_dim, aligned_dim)
        self.fixed_importance = torch.ones(aligned_dim, dtype=torch.float64)
        self.importance_logits = None

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
