"""The imported encoder: a model made elsewhere behind the :class:`~tricl.models.Encoder` contract.

It reads images scaled to [0, 1] at any size and channel count and applies the model's own
preprocessing per batch (:class:`InputTransform`: grey to RGB, resize, centre crop, the model's
mean/std), so a 28-px dataset never becomes a 224-px copy in memory and saliency maps come back at
the dataset's resolution. ``forward_features`` reads the chosen layer (the source's pooled output,
or any named module through a forward hook, pooled); ``project`` is the checkpoint's projector when
that is the layer, else the identity. S's logits, a head and the aligner work as for every encoder.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricl.models import Encoder
from tricl.sources.base import Preprocess, Source, SourceError
from tricl.sources.files import build_mlp

BACKBONE_LAYER = "backbone"  # the source's pooled output (the default)
PROJECTOR_LAYER = "projector"  # the checkpoint's projection MLP after it


class InputTransform(nn.Module):
    """[0, 1] images of any size -> the model's input (no weights: nothing to save)."""

    def __init__(self, pre: Preprocess, channels: int = 3) -> None:
        super().__init__()
        self.pre = pre
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C, H, W) in [0, 1], C = 1 or the model's -> (B, channels, size, size)."""
        pre = self.pre
        if x.shape[1] == 1 and self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)  # grey -> RGB, as PIL's convert("RGB")
        h, w = x.shape[-2:]
        if pre.mode == "squash":
            out_hw = (pre.size, pre.size)
        else:  # torchvision's Resize(int): the shorter side to resize, the longer truncated
            short, long = min(h, w), max(h, w)
            long = max(pre.resize, int(pre.resize * long / short))
            out_hw = (pre.resize, long) if h <= w else (long, pre.resize)
        if (h, w) != out_hw:
            x = F.interpolate(x, size=out_hw, mode=pre.interpolation, antialias=True)
        # torchvision's CenterCrop: offsets rounded half to even
        top, left = (round((side - pre.size) / 2) for side in out_hw)
        x = x[..., top : top + pre.size, left : left + pre.size]  # (B, C, size, size)
        mean = torch.tensor(pre.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(pre.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"{self.pre}"


def first_tensor(out: Any) -> Tensor:
    """The tensor of a module's output: itself, a model output's first field, a tuple's first."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, dict):
        tensors = [v for v in out.values() if isinstance(v, Tensor)]
        if tensors:
            return tensors[0]
    raise SourceError(f"the layer's output is a {type(out).__name__}, not a tensor; pick another")


def pool(out: Any, layer: str) -> Tensor:
    """One vector per image from a layer's output.

    Shape: (B, D) as is; (B, C, H, W) -> mean over H, W; (B, T, D) tokens -> mean over T.

    Raises:
        SourceError: any other shape (one line: pick another layer).
    """
    t = first_tensor(out)
    if t.ndim == 2:
        return t
    if t.ndim == 4:
        return t.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)
    if t.ndim == 3:
        return t.mean(dim=1)  # (B, T, D) -> (B, D)
    raise SourceError(
        f"layer {layer!r} gives {tuple(t.shape)}, not a vector per image nor a feature map or"
        " token sequence to pool; pick a block whose output is (B, D), (B, C, H, W) or (B, T, D)"
    )


class _Reached(Exception):
    """Raised by the forward hook once the layer has run: the rest of the model is not needed."""


class ImportedEncoder(Encoder):
    """A model made elsewhere, read at one layer, as an :class:`~tricl.models.Encoder`.

    Attributes:
        backbone: the source's model (its weights are ``backbone.*`` in ``model.safetensors``).
        projector: the checkpoint's projection MLP (layer ``"projector"``), else the identity.
        input: the model's preprocessing, applied per batch.
    """

    def __init__(
        self,
        source: Source,
        model: nn.Module,
        pre: Preprocess,
        layer: str,
        feat_dim: int,
        projector: list[list[Any]] | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self.source = source
        self.backbone = model
        self.input = InputTransform(pre)
        self.layer = layer
        self.feat_dim = feat_dim
        if layer == PROJECTOR_LAYER:
            if not projector:
                raise SourceError("layer 'projector' needs the checkpoint's projector")
            self.projector = build_mlp(projector)
            self.proj_dim = int(next(lay[2] for lay in reversed(projector) if lay[0] == "linear"))
        else:
            self.projector = nn.Sequential()  # the identity, with no weights
            self.proj_dim = feat_dim
        hooked = None if layer in (BACKBONE_LAYER, PROJECTOR_LAYER) else module_at(model, layer)
        self.__dict__["_hooked"] = hooked  # not registered: its weights are the backbone's
        self.s_param = "softplus"
        self.importance_logits = None
        self.head = None
        self.aligner = None
        self.register_buffer("fixed_importance", None)

    def forward_features(self, x: Tensor) -> Tensor:
        """The layer's pooled output. Shape: (B, C, H, W) in [0, 1] -> (B, feat_dim)."""
        return self.read(self.input(x))  # (B, 3, S, S), the model's normalisation

    def read(self, x: Tensor) -> Tensor:
        """The layer's pooled output of the model's own input (views an augmentation already made
        at the model's size and normalised, e.g. :func:`tricl.data.imagenet_augmentation`).

        Shape: (B, 3, size, size) -> (B, feat_dim).
        """
        if self._hooked is None:
            return pool(self.source.features(self.backbone, x), self.layer)
        seen: list[Any] = []

        def grab(module: nn.Module, args: Any, out: Any) -> None:
            seen.append(out)
            raise _Reached

        handle = self._hooked.register_forward_hook(grab)
        try:
            self.source.features(self.backbone, x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not seen:
            raise SourceError(f"layer {self.layer!r} is not used by the model's forward pass")
        return pool(seen[0], self.layer)

    def last_conv_layer(self) -> nn.Module:
        """The last convolution before the layer read (Grad-CAM; a ViT: its patch embedding)."""
        scope = self._hooked if self._hooked is not None else self.backbone
        convs = [m for m in scope.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            convs = [m for m in self.backbone.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise SourceError("this encoder has no convolution for Grad-CAM; use another saliency")
        return convs[-1]


def module_at(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as ``model.named_modules()`` spells it).

    Raises:
        SourceError: no such module (one line with a few of the names there are).
    """
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    tops = [n for n in modules if n and "." not in n]
    raise SourceError(
        f"the model has no module {name!r}; pick 'backbone' (default), 'projector', or a module"
        f" name such as {', '.join(tops[-4:])} (print(model) lists them all)"
    )
