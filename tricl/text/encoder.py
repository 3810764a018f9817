"""A small Transformer text encoder with a projector to the k contrastive features.

token ids (B, L) -> token + positional embedding -> pre-LN ``nn.TransformerEncoder`` with a causal
mask (each token attends to itself and earlier tokens, as in CLIP) -> final LayerNorm -> the hidden
state at the [EOS] position (B, width) -> projector ``Linear, ReLU, Linear`` (like the image
encoder's) -> z (B, k). Because attention is causal and [PAD] keys are masked, the tokens after
[EOS] cannot change the output: padding a batch to any length up to the context length gives the
same features. The defaults (width 128, 2 layers, 4 heads, vocab 165, L 32, k 128) have 0.55M
parameters, so CPU training is fast.

The config (:meth:`TextEncoder.config`) is a JSON-serialisable dict that holds everything needed to
rebuild the module (:meth:`TextEncoder.from_config`), including the SHA-256 of the tokenizer.json
it was trained with; :func:`load_text_encoder` rebuilds tokenizer and encoder from a run directory
and refuses a tokenizer that does not match the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tricl.text.tokenizer import (
    EOS_ID,
    PAD_ID,
    TextTokenizer,
    TokenizerError,
    load_tokenizer,
    trim_padding,
)


@dataclass(frozen=True)
class TextEncoderConfig:
    """Everything that rebuilds a :class:`TextEncoder` (saved as a dict in the run's config).

    Attributes:
        vocab_size: token ids (embedding rows), the tokenizer's vocab size.
        context_length: L, the longest token sequence (positional embeddings).
        proj_dim: k, the output features (the image encoder's ``proj_dim``).
        width: Transformer width.
        layers: Transformer layers.
        heads: attention heads; must divide ``width``.
        proj_hidden_dim: hidden units of the projector.
        tokenizer_sha256: SHA-256 of the tokenizer.json these weights were trained with.
    """

    vocab_size: int
    context_length: int
    proj_dim: int
    width: int = 128
    layers: int = 2
    heads: int = 4
    proj_hidden_dim: int = 512
    tokenizer_sha256: str = ""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "proj_dim", "width", "layers", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"text encoder {name} must be an integer >= 1, got {value!r}")
        if self.width % self.heads:
            raise ValueError(
                f"text encoder width {self.width} is not divisible by heads {self.heads};"
                " try width 128 with 4 heads"
            )


class TextEncoder(nn.Module):
    """Token ids -> k features z; see the module docstring for the architecture."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.cfg = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.randn(config.context_length, config.width))
        nn.init.normal_(self.positional_embedding, std=0.01)
        layer = nn.TransformerEncoderLayer(
            config.width,
            config.heads,
            dim_feedforward=4 * config.width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # the nested-tensor fast path drops padded positions and would change numerics with padding
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(config.width)
        self.projector = nn.Sequential(
            nn.Linear(config.width, config.proj_hidden_dim),
            nn.ReLU(),
            nn.Linear(config.proj_hidden_dim, config.proj_dim),
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | TextEncoderConfig) -> TextEncoder:
        """A fresh encoder from its config dict (as :meth:`config` returns it)."""
        if isinstance(config, TextEncoderConfig):
            return cls(config)
        known = {f.name for f in fields(TextEncoderConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"unknown text encoder config keys {unknown}; expected {sorted(known)}"
            )
        return cls(TextEncoderConfig(**config))

    @property
    def out_dim(self) -> int:
        """k, the width of its features (as :attr:`tricl.models.Encoder.out_dim`)."""
        return self.cfg.proj_dim

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable dict :meth:`from_config` rebuilds this encoder from."""
        return asdict(self.cfg)

    def forward_features(self, ids: Tensor) -> Tensor:
        """Hidden state at each caption's [EOS]. Shape: (B, L') -> (B, width), L' <= L.

        Raises:
            ValueError: ids longer than the context length, or a row without [EOS].
        """
        if ids.ndim != 2 or ids.shape[1] > self.cfg.context_length:
            raise ValueError(
                f"token ids must be (B, L<={self.cfg.context_length}), got {tuple(ids.shape)};"
                " encode captions with the run's tokenizer"
            )
        is_eos = ids == EOS_ID  # (B, L')
        if not bool(is_eos.any(dim=1).all()):
            raise ValueError("a caption has no [EOS] token; encode captions with the tokenizer")
        length = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:length]  # (B, L', width)
        # True = may not attend: later tokens (causal) and [PAD] keys; both boolean, as torch wants
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).triu(1)
        x = self.transformer(
            x, mask=causal, src_key_padding_mask=ids == PAD_ID, is_causal=True
        )  # (B, L', width)
        eos = is_eos.int().argmax(dim=1)  # (B,) the first [EOS]
        pooled = x[torch.arange(len(ids), device=ids.device), eos]  # (B, width)
        return self.ln_final(pooled)

    def project(self, h: Tensor) -> Tensor:
        """Projector. Shape: (B, width) -> (B, k)."""
        return self.projector(h)

    def forward(self, ids: Tensor) -> Tensor:
        """The k features z of token ids. Shape: (B, L') -> (B, k)."""
        return self.project(self.forward_features(ids))


def text_encoder_config(
    tokenizer: TextTokenizer, proj_dim: int, **architecture: int
) -> TextEncoderConfig:
    """The config of a text encoder for ``tokenizer`` (vocab, context length and hash from it)."""
    return TextEncoderConfig(
        vocab_size=tokenizer.vocab_size,
        context_length=tokenizer.context_length,
        proj_dim=proj_dim,
        tokenizer_sha256=tokenizer.sha256,
        **architecture,
    )


def load_text_encoder(
    run_dir: str | Path, config: Mapping[str, Any], state_dict: Mapping[str, Tensor]
) -> tuple[TextTokenizer, TextEncoder]:
    """Rebuilds a run's tokenizer and text encoder from its directory.

    Args:
        run_dir: the run directory holding ``tokenizer.json``.
        config: the text encoder's config dict, as saved from :meth:`TextEncoder.config`.
        state_dict: the text encoder's weights (keys without a prefix).

    Returns:
        The tokenizer and the encoder with its weights, in eval mode.

    Raises:
        TokenizerError: tokenizer.json is missing, unreadable, has another hash, or its vocab or
            context length differ from the weights (one line naming the file).
    """
    tokenizer = load_tokenizer(run_dir, expected_sha256=config.get("tokenizer_sha256") or None)
    path = Path(run_dir) / "tokenizer.json"
    rows = state_dict.get("token_embedding.weight")
    if rows is not None and rows.shape[0] != tokenizer.vocab_size:
        raise TokenizerError(
            f"{path} has {tokenizer.vocab_size} tokens but the text encoder weights have"
            f" {rows.shape[0]} embedding rows; restore the run's own tokenizer.json"
        )
    if tokenizer.context_length != config.get("context_length"):
        raise TokenizerError(
            f"{path} has context length {tokenizer.context_length} but the text encoder was"
            f" built for {config.get('context_length')}; restore the run's own tokenizer.json"
        )
    encoder = TextEncoder.from_config(config)
    encoder.load_state_dict(dict(state_dict))
    return tokenizer, encoder.eval()


def embed_captions(
    encoder: TextEncoder,
    tokenizer: TextTokenizer,
    captions: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    tick: Callable[[], None] | None = None,
) -> tuple[np.ndarray, int]:
    """The k features z of captions, each distinct text encoded once, in eval mode.

    Generated captions repeat (mnist5k-captions: about 1,600 distinct texts for 5,000 images), and
    equal token ids give equal features, so only the distinct texts go through the encoder.

    Args:
        encoder: the run's text encoder.
        tokenizer: the run's tokenizer.
        captions: N non-empty captions.
        device: where the encoder runs.
        batch_size: distinct captions per forward pass.
        tick: called after every batch (progress bars).

    Returns:
        ``(z, truncated)``: float32 features, row i the caption i's, Shape: (N, k); and how many
        distinct captions were longer than the context length and were cut.
    """
    distinct = list(dict.fromkeys(captions))
    row = {c: i for i, c in enumerate(distinct)}
    encoder.eval()
    out, truncated = [], 0
    with torch.inference_mode():
        for start in range(0, len(distinct), batch_size):
            encoded = tokenizer.encode(distinct[start : start + batch_size])
            truncated += encoded.truncated
            ids = trim_padding(encoded.ids).to(device)  # (B, L')
            out.append(encoder(ids).float().cpu().numpy())  # (B, k)
            if tick is not None:
                tick()
    z = np.concatenate(out) if out else np.zeros((0, encoder.out_dim), np.float32)
    return z[[row[c] for c in captions]], truncated  # (N, k)


def n_caption_batches(captions: Sequence[str], batch_size: int = 256) -> int:
    """Forward passes :func:`embed_captions` makes for ``captions`` (progress bars)."""
    return -(-len(set(captions)) // batch_size)
