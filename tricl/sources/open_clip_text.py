"""open_clip's text side behind tricl's text contract: its tokenizer and its text tower.

:class:`OpenClipTokenizer` has the interface of :class:`~tricl.text.tokenizer.TextTokenizer` that
the caption analysis and the caption probe use (``encode`` -> :class:`EncodedText` with the
truncations counted, ``pieces``, ``context_length``, ``vocab_size``), built on open_clip's
``SimpleTokenizer`` (the byte-level BPE of CLIP, its vocabulary file shipped inside the
open_clip package: nothing is downloaded). :class:`OpenClipText` is the text tower
(``TextTransformer``) as ``encode_text`` runs it: token ids -> the text embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricl.text.tokenizer import EncodedText, encode_captions

TOKENIZER_NAME = "SimpleTokenizer"  # open_clip's CLIP BPE, what get_tokenizer(name) gives


class OpenClipTokenizer:
    """open_clip's ``SimpleTokenizer`` at a model's context length.

    Attributes:
        tokenizer: the open_clip tokenizer (ids: [SOT] tokens [EOT], padded with 0).
    """

    def __init__(self, context_length: int, kwargs: dict[str, Any] | None = None) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.tokenizer = SimpleTokenizer(context_length=context_length, **(kwargs or {}))

    @property
    def context_length(self) -> int:
        """L, tokens per caption with [SOT] and [EOT]."""
        return int(self.tokenizer.context_length)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    def encode(self, captions: Sequence[str]) -> EncodedText:
        """Token ids as open_clip makes them, and how many captions were cut to L (checked and
        returned as :func:`~tricl.text.tokenizer.encode_captions` says)."""
        return encode_captions(captions, self._tokenize)

    def _tokenize(self, captions: list[str]) -> tuple[Tensor, int]:
        ids = self.tokenizer(captions)  # (N, L), int64
        room = self.context_length - 2  # [SOT] and [EOT]
        return ids, sum(1 for c in captions if len(self.tokenizer.encode(c)) > room)

    def pieces(self, text: str) -> list[str]:
        """The tokens the tower reads of ``text``, as text (without [SOT]/[EOT]), cut to L."""
        ids = self.tokenizer.encode(text)[: self.context_length - 2]
        return [self.tokenizer.decode([i]).strip() for i in ids]

    def decode(self, ids: Tensor) -> list[str]:
        """Captions back from ids (N, L), [SOT], [EOT] and padding dropped."""
        special = {*self.tokenizer.all_special_ids, 0}
        rows = [[i for i in row if i not in special] for row in ids.tolist()]
        return [self.tokenizer.decode(r).strip() for r in rows]


class OpenClipText(nn.Module):
    """open_clip's text tower as tricl's text encoder (``CLIP.encode_text``, not normalised).

    Attributes:
        tower: the ``TextTransformer`` (its tensors named as in an open_clip checkpoint).
    """

    def __init__(self, tower: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.tower = tower
        self.out_dim = out_dim
        self.context_length = int(tower.context_length)

    def forward(self, ids: Tensor) -> Tensor:
        """The text embedding. Shape: (B, L') -> (B, out_dim), L' <= L.

        Ids trimmed of their padding (:func:`~tricl.text.tokenizer.trim_padding`) are padded back
        to L: the tower's attention mask and pooling are built for its full context.
        """
        if ids.ndim != 2 or ids.shape[1] > self.context_length:
            raise ValueError(
                f"token ids must be (B, L<={self.context_length}), got {tuple(ids.shape)};"
                " encode captions with the run's tokenizer"
            )
        ids = F.pad(ids, (0, self.context_length - ids.shape[1]))  # (B, L), open_clip pads with 0
        out = self.tower(ids)
        return out[0] if isinstance(out, tuple) else out  # (B, out_dim)


def build_text_tower(model_cfg: dict[str, Any]) -> OpenClipText:
    """open_clip's text tower of a model config, random weights."""
    from open_clip.model import _build_text_tower

    tower = _build_text_tower(
        model_cfg["embed_dim"], dict(model_cfg["text_cfg"]), bool(model_cfg.get("quick_gelu"))
    )
    return OpenClipText(tower, int(model_cfg["embed_dim"]))


def text_tensors(
    tensors: dict[str, Tensor], image_prefix: str
) -> tuple[str, dict[str, Tensor], Tensor | None]:
    """Where the text tower's tensors are beside the image tower's ``visual.``: at the top level
    (``CLIP``) or under ``text.`` (``CustomTextCLIP``); its tensors (prefix removed) and the
    logit scale (None when absent).

    Shape: the logit scale is a scalar tensor.
    """
    outer = image_prefix.removesuffix("visual.") if image_prefix.endswith("visual.") else ""
    prefix = f"{outer}text." if f"{outer}text.token_embedding.weight" in tensors else outer
    found = {
        k[len(prefix) :]: v
        for k, v in tensors.items()
        if k.startswith(prefix) and not k.startswith(f"{outer}visual.")
    }
    scale = tensors.get(f"{outer}logit_scale")
    return prefix, found, scale


def default_logit_scale() -> Tensor:
    """open_clip's initial ``log(1/0.07)``, for a checkpoint that does not hold its own."""
    return torch.tensor(1 / 0.07).log()
