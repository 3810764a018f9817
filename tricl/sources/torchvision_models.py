"""``torchvision:ARCH``: a torchvision classification model's state dict, e.g. the ResNet-50s of
SimCLR, MoCo, BYOL, SwAV and DINO releases, or a lightly / Lightning checkpoint of one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.sources.base import Source, SourceError, register_source

if TYPE_CHECKING:
    from torch import Tensor, nn

# the attribute holding a torchvision model's classifier, by family
HEADS = ("fc", "classifier", "heads", "head")


class TorchvisionSource(Source):
    name = "torchvision"

    def describe(self, arg: str, weights: Path) -> dict[str, Any]:
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        if arg not in names:
            raise SourceError(
                f"unknown torchvision architecture {arg!r}; use a classification model such as"
                " resnet18, resnet50, wide_resnet50_2, vit_b_16 (torchvision.models.list_models())"
            )
        return {"name": arg}

    def build(self, arch: dict[str, Any]) -> nn.Module:
        import torchvision
        from torch import nn

        model = getattr(torchvision.models, arch["name"])(weights=None)
        for attr in HEADS:
            if isinstance(getattr(model, attr, None), nn.Module):
                setattr(model, attr, nn.Identity())  # pooled features, not class logits
                break
        if hasattr(model, "aux_logits"):  # inception / googlenet: no auxiliary heads
            model.aux_logits = False
            for attr in ("AuxLogits", "aux1", "aux2"):
                if hasattr(model, attr):
                    setattr(model, attr, None)
        return model

    def head_keys(self, model: nn.Module) -> tuple[str, ...]:
        return tuple(f"{h}." for h in HEADS)

    def adapt_keys(self, tensors: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        """lightly's examples keep ``nn.Sequential(*resnet.children()[:-1])``: ``0.weight`` is
        ``conv1.weight``, ``4.0.conv1.weight`` is ``layer1.0.conv1.weight``."""
        if not tensors or not all(k.split(".", 1)[0].isdigit() for k in tensors):
            return tensors
        children = [name for name, _ in model.named_children()]
        out = {}
        for k, v in tensors.items():
            i, _, rest = k.partition(".")
            if int(i) < len(children):
                out[f"{children[int(i)]}.{rest}"] = v
        return out


register_source(TorchvisionSource())
