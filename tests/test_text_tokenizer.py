"""Tests for tricl.text.tokenizer: BPE training, padding/truncation to the context length,
truncation counts, atomic save/load with the hash check, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from tricl.text.tokenizer import (
    EOS_ID,
    PAD_ID,
    SOS_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    TokenizerError,
    load_tokenizer,
    train_tokenizer,
    trim_padding,
)

CAPTIONS = [
    f"a {size}, {thick} handwritten {digit}"
    for size in ("small", "medium", "large")
    for thick in ("thin", "regular", "thick")
    for digit in ("zero", "one", "two", "7")
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CAPTIONS, vocab_size=200, context_length=12)


def test_special_tokens_have_fixed_ids(tokenizer):
    ids = [tokenizer.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == [PAD_ID, SOS_ID, EOS_ID, UNK_ID] == [0, 1, 2, 3]
    assert SPECIAL_TOKENS[0] == "[PAD]" and tokenizer.context_length == 12
    assert 4 < tokenizer.vocab_size <= 200


def test_training_is_deterministic(tokenizer):
    again = train_tokenizer(CAPTIONS, vocab_size=200, context_length=12)
    assert again.sha256 == tokenizer.sha256
    other = train_tokenizer([*CAPTIONS, "a purple eight"], vocab_size=200, context_length=12)
    assert other.sha256 != tokenizer.sha256


def test_encode_pads_and_wraps_with_sos_eos(tokenizer):
    encoded = tokenizer.encode(["A Small, thin handwritten 7", "a thick zero"])
    ids = encoded.ids
    assert ids.dtype == torch.int64 and ids.shape == (2, 12) and encoded.truncated == 0
    assert ids[:, 0].tolist() == [SOS_ID, SOS_ID]
    n_tokens = (ids != PAD_ID).sum(dim=1)
    for row, n in zip(ids, n_tokens, strict=True):
        assert row[n - 1] == EOS_ID and (row[n:] == PAD_ID).all()
    assert UNK_ID not in ids.tolist()[0]
    # lower-cased by the normaliser, words split from punctuation, spaces restored on decode
    assert tokenizer.decode(ids) == ["a small , thin handwritten 7", "a thick zero"]


def test_long_captions_are_truncated_counted_and_keep_eos(tokenizer):
    long = " ".join(["small thin one"] * 10)
    encoded = tokenizer.encode([long, "a one", long])
    assert encoded.truncated == 2
    assert encoded.ids.shape == (3, 12) and encoded.ids[0, -1] == EOS_ID
    assert encoded.summary() == "3 captions, 2 truncated to 12 tokens"


def test_trim_padding_keeps_the_longest_caption(tokenizer):
    ids = tokenizer.encode(["a one", "a small, thin handwritten two"]).ids
    trimmed = trim_padding(ids)
    longest = int((ids[1] != PAD_ID).sum())
    assert trimmed.shape == (2, longest) and trimmed[1, -1] == EOS_ID
    torch.testing.assert_close(trimmed, ids[:, :longest])


def test_unknown_characters_map_to_unk(tokenizer):
    ids = tokenizer.encode(["a qqq one"]).ids[0].tolist()
    assert UNK_ID in ids


def test_save_load_roundtrip_is_atomic_and_hashed(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path)
    assert path.name == "tokenizer.json" and sorted(p.name for p in tmp_path.iterdir()) == [
        "tokenizer.json"
    ]  # no temporary file left behind
    loaded = load_tokenizer(tmp_path, expected_sha256=tokenizer.sha256)
    assert loaded.sha256 == tokenizer.sha256 and loaded.context_length == 12
    torch.testing.assert_close(loaded.encode(CAPTIONS).ids, tokenizer.encode(CAPTIONS).ids)


def test_load_refuses_another_tokenizer(tokenizer, tmp_path):
    train_tokenizer(["completely different text"], context_length=12).save(tmp_path)
    with pytest.raises(TokenizerError, match=r"tokenizer.json .* is not the tokenizer") as info:
        load_tokenizer(tmp_path / "tokenizer.json", expected_sha256=tokenizer.sha256)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"), [(None, "cannot read tokenizer"), ("{not json", "cannot read")]
)
def test_load_unreadable_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenizerError, match=message) as info:
        load_tokenizer(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    ("captions", "kwargs", "message"),
    [
        ([], {}, "no captions"),
        (CAPTIONS, {"vocab_size": 4}, "vocab_size"),
        (CAPTIONS, {"context_length": 2}, "context_length"),
    ],
)
def test_bad_training_arguments(captions, kwargs, message):
    with pytest.raises(TokenizerError, match=message):
        train_tokenizer(captions, **kwargs)


@pytest.mark.parametrize("caption", ["", "   ", None])
def test_empty_caption_is_refused(tokenizer, caption):
    with pytest.raises(TokenizerError, match="caption 1 is empty"):
        tokenizer.encode(["a one", caption])
