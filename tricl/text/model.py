"""The model a caption method (``clip``, ``triclip``) trains: image encoder, text encoder, scale.

One module, so a run's ``model.safetensors`` holds all its weights under three prefixes
(``image.``: the :class:`tricl.models.Encoder`, with S for triclip; ``text.``: the
:class:`tricl.text.encoder.TextEncoder`; ``logit_scale``: CLIP's learnable ``log(1/T)``), and
the optimizer, checkpoints, resume and DDP treat it like the Encoder of the two-view methods.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tricl.losses import CLIP_INIT_LOGIT_SCALE
from tricl.models import Encoder
from tricl.text.encoder import TextEncoder

IMAGE_PREFIX = "image."
TEXT_PREFIX = "text."


class ImageTextModel(nn.Module):
    """Images and captions to k features each; ``importance()`` is the image encoder's S."""

    def __init__(self, image: Encoder, text: TextEncoder | nn.Module) -> None:
        super().__init__()
        if image.out_dim != text.out_dim:
            raise ValueError(
                f"image features ({image.out_dim}) and text features ({text.out_dim}) differ;"
                " build both with the run's proj_dim"
            )
        self.image = image
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(CLIP_INIT_LOGIT_SCALE))

    @property
    def out_dim(self) -> int:
        """k, the width of both sides' features."""
        return self.image.out_dim

    @property
    def importance_logits(self) -> nn.Parameter | None:
        """S's logits (the image encoder's), so the optimizer groups treat them as for Encoder."""
        return self.image.importance_logits

    def importance(self) -> Tensor | None:
        """Diagonal of S (triclip), shared by both modalities. Shape: (k,), or None (clip)."""
        return self.image.importance()

    def forward(self, x: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Image and caption features.

        Args:
            x: augmented images. Shape: (B, C, H, W).
            ids: token ids of their captions, row i the caption of image i. Shape: (B, L').

        Returns:
            ``(img_z, txt_z)``, each Shape: (B, k).
        """
        return self.image(x), self.text(ids)


def split_state_dict(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors under ``prefix`` (``"image."`` or ``"text."``), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
