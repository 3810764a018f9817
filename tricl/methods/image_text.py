"""What the caption methods share: the text encoder's options and the image-text model
(torch-free import).

A caption method (``pair = "caption"``) trains an image encoder, a text encoder and CLIP's
learnable temperature (:class:`tricl.text.model.ImageTextModel`) on image-caption pairs; its loss
is one of :data:`tricl.losses.IMAGE_TEXT_LOSSES` (named like the method).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tricl.methods.base import Batch, Method, unwrap
from tricl.methods.options import ConfigError, check_at_least, option
from tricl.methods.trifactor import TriFactorParts

if TYPE_CHECKING:
    from torch import nn

    from tricl.losses import ImageTextLossFn, LossTerms


@dataclass(frozen=True)
class TextOptions:
    """The text encoder of the caption methods (``--text-*``)."""

    text_width: int = option(
        128,
        "clip/triclip: text Transformer width (128 with 2 layers is ~0.55M parameters and keeps"
        " CPU steps about as fast as the small_cnn image side; wider mostly costs time)",
    )
    text_layers: int = option(2, "clip/triclip: text Transformer layers (2 suffice for captions)")
    text_heads: int = option(4, "clip/triclip: attention heads; must divide --text-width")
    text_vocab_size: int = option(
        1000,
        "clip/triclip: most BPE tokens learned from the training captions (mnist5k-captions"
        " stops at 165: every word one token); saved in the run as tokenizer.json",
    )
    text_context_length: int = option(
        32,
        "clip/triclip: tokens per caption with [SOS]/[EOS]; longer captions are cut (the count"
        " is logged), so raise it for long CSV captions",
    )

    def __post_init__(self) -> None:
        sizes = ("text_width", "text_layers", "text_heads")
        check_at_least({name: getattr(self, name) for name in sizes}, 1)
        if self.text_width % self.text_heads:
            raise ConfigError(
                f"text_width {self.text_width} is not divisible by text_heads {self.text_heads};"
                " try --text-width 128 --text-heads 4"
            )
        if self.text_vocab_size <= 4 or self.text_context_length < 3:
            raise ConfigError(
                "text_vocab_size must be > 4 (the special tokens) and text_context_length >= 3"
                f" ([SOS] word [EOS]), got {self.text_vocab_size} and {self.text_context_length}"
            )


class ImageTextMethod(TriFactorParts, Method):
    """CLIP's symmetric InfoNCE between images and their captions, with a learnable temperature;
    with ``has_s`` every image-text similarity goes through S and the decorrelation term of both
    modalities is added."""

    pair = "caption"

    def build_model(self, cfg: Any, in_channels: int, **context: Any) -> nn.Module:
        """Image encoder, text encoder and logit scale.

        Args:
            cfg: a :class:`tricl.config.RunConfig`.
            in_channels: image channels of the dataset.
            **context: ``text_config``, the :class:`tricl.text.encoder.TextEncoderConfig` (its
                vocab and context length come from the run's tokenizer, so the caller gives it).
        """
        from tricl.text.encoder import TextEncoder
        from tricl.text.model import ImageTextModel

        text_config = context.get("text_config")
        if text_config is None:
            raise ValueError(
                f"method {self.name!r} needs text_config (from the run's tokenizer) to build its"
                " text encoder; pass text_config=text_encoder_config(tokenizer, cfg.proj_dim)"
            )
        image = self.build_encoder(cfg, in_channels)
        return ImageTextModel(image, TextEncoder.from_config(text_config))

    def build_loss(self, cfg: Any) -> ImageTextLossFn:
        from tricl.losses import build_image_text_loss

        return build_image_text_loss(cfg)

    def loss_terms(
        self, model: nn.Module, batch: Batch, loss_fn: Callable[..., LossTerms]
    ) -> LossTerms:
        """Images and captions forwarded, gathered from every rank with their gradients (each
        image meets the captions of the whole global batch as negatives), and the loss.

        Args:
            model: the model, possibly wrapped in DistributedDataParallel.
            batch: ``(x, ids)``: augmented images (B_local, C, H, W) and their captions' token
                ids (B_local, L').
            loss_fn: what :meth:`build_loss` built.
        """
        from tricl import distributed

        img_z, txt_z = model(*batch)  # (B_local, k) each
        img_z = distributed.gather_with_grad(img_z)  # (B_global, k)
        txt_z = distributed.gather_with_grad(txt_z)  # (B_global, k)
        enc = unwrap(model)
        return loss_fn(img_z, txt_z, enc.importance(), enc.logit_scale)
