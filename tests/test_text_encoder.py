"""Tests for tricl.text.encoder: shapes and size, padding invariance, causality, rebuilding from
the saved config + weights + tokenizer.json, mismatch errors, and a few CLIP training steps."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tricl.losses import CLIP_INIT_LOGIT_SCALE, build_image_text_loss
from tricl.text.encoder import (
    TextEncoder,
    TextEncoderConfig,
    load_text_encoder,
    text_encoder_config,
)
from tricl.text.tokenizer import EOS_ID, PAD_ID, TokenizerError, train_tokenizer

CAPTIONS = [
    f"a {size}, {thick} handwritten {digit} that is {slant}"
    for size in ("small", "large")
    for thick in ("thin", "thick")
    for digit in ("zero", "one", "two", "three")
    for slant in ("upright", "left-slanted")
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CAPTIONS, context_length=24)


@pytest.fixture
def encoder(tokenizer):
    torch.manual_seed(0)
    return TextEncoder(text_encoder_config(tokenizer, proj_dim=16)).eval()


def test_shapes_and_size(tokenizer, encoder):
    ids = tokenizer.encode(CAPTIONS[:5]).ids  # (5, 24)
    assert encoder.forward_features(ids).shape == (5, 128)
    assert encoder(ids).shape == (5, 16)
    default = TextEncoder(TextEncoderConfig(vocab_size=200, context_length=32, proj_dim=128))
    n_params = sum(p.numel() for p in default.parameters())
    assert 300_000 < n_params < 800_000  # about 0.5M: fast on CPU


def test_padding_does_not_change_the_output(tokenizer, encoder):
    ids = tokenizer.encode(CAPTIONS[:6]).ids  # (6, 24), padded
    longest = int((ids != PAD_ID).sum(dim=1).max())
    with torch.no_grad():
        full = encoder(ids)
        trimmed = encoder(ids[:, :longest])
        alone = encoder(ids[:1, : int((ids[0] != PAD_ID).sum())])  # no padding at all
    torch.testing.assert_close(full, trimmed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full[:1], alone, atol=1e-5, rtol=1e-5)


def test_causal_tokens_after_eos_are_ignored_but_earlier_ones_count(tokenizer, encoder):
    ids = tokenizer.encode(CAPTIONS[:2]).ids
    eos = int((ids[0] == EOS_ID).nonzero()[0])
    changed_after, changed_before = ids.clone(), ids.clone()
    changed_after[0, eos + 1 :] = 7  # garbage after [EOS], not even [PAD]
    changed_before[0, 1] = ids[1, 1] + 1 if ids[1, 1] + 1 != EOS_ID else ids[1, 1] + 2
    with torch.no_grad():
        base = encoder(ids)
        torch.testing.assert_close(encoder(changed_after), base, atol=1e-5, rtol=1e-5)
        assert (encoder(changed_before)[0] - base[0]).abs().max() > 1e-3


def test_rebuild_from_run_directory_gives_identical_outputs(tokenizer, encoder, tmp_path):
    tokenizer.save(tmp_path)
    (tmp_path / "text_config.json").write_text(json.dumps(encoder.config()))
    save_file(encoder.state_dict(), tmp_path / "text.safetensors")
    config = json.loads((tmp_path / "text_config.json").read_text())
    loaded_tok, rebuilt = load_text_encoder(
        tmp_path, config, load_file(tmp_path / "text.safetensors")
    )
    ids = loaded_tok.encode(CAPTIONS).ids
    torch.testing.assert_close(ids, tokenizer.encode(CAPTIONS).ids)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(ids), encoder(ids), atol=0, rtol=0)


def test_a_tokenizer_that_does_not_match_the_weights_is_refused(tokenizer, encoder, tmp_path):
    other = train_tokenizer(["an entirely different set of words"], context_length=24)
    other.save(tmp_path)
    state = encoder.state_dict()
    with pytest.raises(TokenizerError, match="not the tokenizer") as info:
        load_text_encoder(tmp_path, encoder.config(), state)
    assert "\n" not in str(info.value) and "tokenizer.json" in str(info.value)
    unhashed = encoder.config() | {"tokenizer_sha256": ""}  # e.g. a hand-written config
    with pytest.raises(TokenizerError, match="embedding rows"):
        load_text_encoder(tmp_path, unhashed, state)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.ones(2, 30, dtype=torch.int64), "L<=24"),
        (torch.ones(2, 5, dtype=torch.int64), "no \\[EOS\\]"),
    ],
)
def test_bad_ids_are_refused(encoder, ids, message):
    with pytest.raises(ValueError, match=message):
        encoder(ids)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"vocab_size": 50, "context_length": 8, "proj_dim": 4, "width": 30}, "divisible"),
        ({"vocab_size": 0, "context_length": 8, "proj_dim": 4}, "vocab_size"),
        ({"vocab_size": 50, "context_length": 8, "proj_dim": 4, "depth": 2}, "unknown"),
    ],
)
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        TextEncoder.from_config(config)


@pytest.mark.parametrize("method", ["clip", "triclip"])
def test_clip_steps_align_captions_with_fixed_image_features(tokenizer, method):
    torch.manual_seed(1)
    encoder = TextEncoder(text_encoder_config(tokenizer, proj_dim=8, width=32, heads=2))
    ids = tokenizer.encode(CAPTIONS[:16]).ids
    img_z = torch.randn(16, 8)  # stand-in image features, one per caption
    logit_scale = torch.nn.Parameter(torch.tensor(CLIP_INIT_LOGIT_SCALE))
    s_logits = torch.nn.Parameter(torch.zeros(8))
    loss = build_image_text_loss(method)
    params = [*encoder.parameters(), logit_scale, s_logits]
    opt = torch.optim.Adam(params, lr=3e-3)

    def step() -> float:
        importance = torch.nn.functional.softplus(s_logits) if method == "triclip" else None
        value = loss(img_z, encoder(ids), importance, logit_scale).total
        opt.zero_grad()
        value.backward()
        opt.step()
        return float(value.detach())

    first = step()
    for _ in range(30):
        last = step()
    assert last < first / 2, (first, last)
