"""A BPE tokenizer trained on the training captions, saved in the run directory as tokenizer.json.

Built with Hugging Face ``tokenizers``: lowercase normaliser, whitespace-and-punctuation
pre-tokenizer, BPE with the special tokens ``[PAD] [SOS] [EOS] [UNK]`` (ids 0..3). Every caption
is encoded as ``[SOS] tokens [EOS]`` padded with ``[PAD]`` to the context length L; a longer caption
is cut to L tokens, keeping ``[EOS]`` last, and counted (:attr:`EncodedText.truncated`). The
context length is stored inside tokenizer.json (its truncation and padding settings), so the file
alone rebuilds the tokenizer. Its SHA-256 is recorded in the text encoder's config: a
tokenizer.json that does not belong to the weights is refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from torch import Tensor

from tricl.io import atomic_write_text

SPECIAL_TOKENS = ("[PAD]", "[SOS]", "[EOS]", "[UNK]")
PAD_ID, SOS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))
TOKENIZER_FILE = "tokenizer.json"
WORD_END = "</w>"
DEFAULT_VOCAB_SIZE = 1000
DEFAULT_CONTEXT_LENGTH = 32


class TokenizerError(ValueError):
    """A tokenizer cannot be trained, loaded or used; the one-line message names the fix."""


@dataclass(frozen=True)
class EncodedText:
    """Captions as token ids.

    Attributes:
        ids: ``[SOS] tokens [EOS] [PAD]...`` per caption, int64. Shape: (N, L).
        truncated: how many captions were longer than L and were cut.
    """

    ids: Tensor
    truncated: int

    def summary(self) -> str:
        """One line for the training log, e.g. ``"256 captions, 3 truncated to 32 tokens"``."""
        n, length = self.ids.shape
        return f"{n} captions, {self.truncated} truncated to {length} tokens"


def encode_captions(
    captions: Sequence[str], tokenize: Callable[[list[str]], tuple[Tensor, int]]
) -> EncodedText:
    """Every tokenizer's ``encode``: checks the captions, then runs the tokenizer's own step.

    Args:
        captions: N non-empty captions.
        tokenize: the tokenizer's step: the captions -> their ids, Shape: (N, L) int64, and how
            many of them were cut to L.

    Returns:
        The :class:`EncodedText`, ids Shape: (N, L).

    Raises:
        TokenizerError: a caption is empty or not a string.
    """
    for i, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise TokenizerError(f"caption {i} is empty or not text ({caption!r}); write one")
    ids, truncated = tokenize(list(captions))
    return EncodedText(ids, truncated)


@dataclass(frozen=True)
class TextTokenizer:
    """A trained BPE tokenizer with its context length; build with :func:`train_tokenizer` or
    :func:`load_tokenizer`.

    Attributes:
        tokenizer: the ``tokenizers.Tokenizer`` (truncation and padding set to the context length).
        sha256: SHA-256 of its JSON text, the form saved as tokenizer.json.
    """

    tokenizer: Tokenizer
    sha256: str

    @property
    def context_length(self) -> int:
        """L, the number of tokens per caption, [SOS] and [EOS] included."""
        return int(self.tokenizer.truncation["max_length"])

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included (the text embedding's rows)."""
        return self.tokenizer.get_vocab_size()

    def encode(self, captions: Sequence[str]) -> EncodedText:
        """Token ids of N captions, padded or truncated to the context length (checked and
        returned as :func:`encode_captions` says)."""
        return encode_captions(captions, self._tokenize)

    def _tokenize(self, captions: list[str]) -> tuple[Tensor, int]:
        encodings = self.tokenizer.encode_batch(captions)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)  # (N, L)
        truncated = sum(1 for e in encodings if e.overflowing)
        return ids.reshape(len(encodings), self.context_length), truncated

    def pieces(self, text: str) -> list[str]:
        """The tokens the encoder reads of ``text``, as words: without [SOS]/[EOS]/[PAD] and the
        end-of-word mark, ``[UNK]`` for characters the tokenizer never saw, cut to the context."""
        tokens = self.tokenizer.encode(text).tokens
        return [t.removesuffix(WORD_END) for t in tokens if t not in SPECIAL_TOKENS or t == "[UNK]"]

    def decode(self, ids: Tensor) -> list[str]:
        """Captions back from ids (N, L), special tokens dropped (lower-cased, as normalised)."""
        return self.tokenizer.decode_batch(ids.tolist(), skip_special_tokens=True)

    def save(self, run_dir: str | Path) -> Path:
        """Writes ``run_dir/tokenizer.json`` atomically (never half-written); returns its path."""
        path = Path(run_dir) / TOKENIZER_FILE
        atomic_write_text(path, self.tokenizer.to_str())
        return path


def trim_padding(ids: Tensor) -> Tensor:
    """Drops the trailing columns that are [PAD] in every row.

    The text encoder's output does not depend on padding, and mnist5k captions use about half of
    the 32-token context, so a batch trimmed to its longest caption runs about twice as fast.

    Args:
        ids: token ids from :meth:`TextTokenizer.encode`. Shape: (N, L).

    Returns:
        The first L' columns, L' the longest caption's length. Shape: (N, L').
    """
    used = (ids != PAD_ID).any(dim=0).nonzero()  # columns with a token in some row
    # the last such column, not the count: a tokenizer whose id 0 is also a token (open_clip's
    # byte-level BPE pads with 0 and spells "!" as 0) keeps its [EOS]
    return ids[:, : int(used.max()) + 1 if len(used) else 0]


def _configure(tokenizer: Tokenizer, context_length: int) -> TextTokenizer:
    """Sets [SOS]/[EOS] wrapping, truncation and padding to L; hashes the JSON form."""
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[SOS] $A [EOS]", special_tokens=[("[SOS]", SOS_ID), ("[EOS]", EOS_ID)]
    )
    # truncation before the post-processor keeps [EOS] as the last of the L tokens
    tokenizer.enable_truncation(max_length=context_length)
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token="[PAD]", length=context_length)
    text = tokenizer.to_str()
    return TextTokenizer(tokenizer, hashlib.sha256(text.encode()).hexdigest())


def train_tokenizer(
    captions: Sequence[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> TextTokenizer:
    """Trains a BPE tokenizer on (training) captions.

    Args:
        captions: the training captions.
        vocab_size: at most this many ids; a small caption vocabulary (mnist5k-captions: 165
            ids) stops earlier, when every word is one token.
        context_length: L, tokens per caption with [SOS] and [EOS]; >= 3.

    Returns:
        The :class:`TextTokenizer`; the same captions give the same tokenizer (and hash).

    Raises:
        TokenizerError: no captions, or a vocab_size / context_length too small.
    """
    if not captions:
        raise TokenizerError("no captions to train the tokenizer on; load the dataset first")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise TokenizerError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")
    if context_length < 3:
        raise TokenizerError(
            f"context_length must be >= 3 ([SOS] word [EOS]), got {context_length}"
        )
    # the end-of-word suffix lets decode() put the spaces back
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix=WORD_END))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.BPEDecoder(suffix=WORD_END)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        end_of_word_suffix=WORD_END,
        show_progress=False,
    )
    tokenizer.train_from_iterator(captions, trainer=trainer)
    tokenizer.model = _canonical_bpe(tokenizer)
    return _configure(tokenizer, context_length)


def _canonical_bpe(tokenizer: Tokenizer) -> models.BPE:
    """The trained BPE with ids in a fixed order: special tokens, sorted alphabet, merges.

    The trainer's merges are deterministic but it numbers the initial alphabet in hash-map order,
    so the same captions gave different ids (and tokenizer.json hashes) from run to run.
    """
    state = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    merged = {a + b for a, b in merges}
    alphabet = sorted(set(state["vocab"]) - merged - set(SPECIAL_TOKENS))
    order = [*SPECIAL_TOKENS, *alphabet, *(a + b for a, b in merges)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(order))}
    return models.BPE(vocab, merges, unk_token="[UNK]", end_of_word_suffix=WORD_END)


def load_tokenizer(path: str | Path, expected_sha256: str | None = None) -> TextTokenizer:
    """Loads a tokenizer.json written by :meth:`TextTokenizer.save`.

    Args:
        path: the file, or a run directory holding ``tokenizer.json``.
        expected_sha256: the hash the text encoder was trained with (its config's
            ``tokenizer_sha256``); None skips the check.

    Raises:
        TokenizerError: missing or unreadable file, no context length in it, or another hash.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    try:
        text = path.read_text(encoding="utf-8")
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:  # OSError, UnicodeDecodeError, or the bare Exception of tokenizers
        reason = " ".join(str(exc).split())
        raise TokenizerError(
            f"cannot read tokenizer {path} ({reason}); restore the run's file"
        ) from exc
    sha = hashlib.sha256(text.encode()).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise TokenizerError(
            f"{path} (sha256 {sha[:12]}) is not the tokenizer the text encoder was trained with"
            f" (sha256 {expected_sha256[:12]}); restore the run's own tokenizer.json"
        )
    if tokenizer.truncation is None or tokenizer.padding is None:
        raise TokenizerError(f"{path} has no context length (truncation/padding); re-save it")
    if [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] != list(range(len(SPECIAL_TOKENS))):
        raise TokenizerError(f"{path} lacks the special tokens {SPECIAL_TOKENS} as ids 0..3")
    return TextTokenizer(tokenizer, sha)
