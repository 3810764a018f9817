"""The methods registry: one declaration per method; every entry honours the same contract."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tricl.methods import (
    FEATURE_ORDERS,
    METHODS,
    PAIRS,
    UNKNOWN_COLOR,
    MethodError,
    MethodSpec,
    get_method,
    method_color,
    method_label,
    method_order,
    methods_with_pair,
    register_method,
)

ALL_METHODS = sorted(METHODS)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_declares_a_complete_entry(name) -> None:
    spec = METHODS[name]
    assert spec.name == name
    assert spec.label and spec.description and "\n" not in spec.description
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", spec.color)
    assert spec.pair in PAIRS
    assert method_label(name) == spec.label and method_color(name) == spec.color


def test_labels_and_colours_tell_the_methods_apart() -> None:
    assert len({s.label for s in METHODS.values()}) == len(METHODS)
    assert len({s.color.lower() for s in METHODS.values()}) == len(METHODS)
    assert UNKNOWN_COLOR not in {s.color for s in METHODS.values()}


def test_tri_factor_methods_are_their_kernel_with_s() -> None:
    by_kernel: dict[str, set[bool]] = {}
    for spec in METHODS.values():
        by_kernel.setdefault(spec.loss, set()).add(spec.has_s)
    # triCLIP is CLIP with S; its loss has its own name (the image-text losses are not kernels)
    assert by_kernel.pop("triclip") == {True}
    assert by_kernel == {
        "nt_xent": {False, True},
        "spectral": {False, True},
        "clip": {False},
        "neuralef": {False},
    }
    assert {n for n, s in METHODS.items() if s.has_s} == {
        "tricl", "tri-spectral", "triclip", "tri-eigen"
    }  # fmt: skip


def test_a_head_is_registered_and_only_for_two_view_methods() -> None:
    from tricl.heads import HEADS

    for spec in METHODS.values():
        assert not spec.head or (spec.head in HEADS and spec.pair == "views"), spec.name
    assert METHODS["tri-eigen"].head == "eigen" and METHODS["tri-eigen"].order == "S"
    with pytest.raises(ValueError, match="a head needs pair='views'"):
        MethodSpec("x", "X", "#000000", "x", loss="clip", has_s=True, pair="caption", head="eigen")


def test_every_loss_name_is_registered_for_its_pair_kind() -> None:
    from tricl.losses import FEATURE_KERNELS, IMAGE_TEXT_LOSSES, KERNELS

    registries = {"views": {**KERNELS, **FEATURE_KERNELS}, "caption": IMAGE_TEXT_LOSSES}
    assert set(registries) == set(PAIRS)
    for spec in METHODS.values():
        assert spec.loss in registries[spec.pair], spec.name
    assert set(methods_with_pair("caption")) == {"clip", "triclip"}
    from tricl.train import PAIR_KINDS  # every pair kind has its training step

    assert set(PAIR_KINDS) == set(PAIRS)
    for name in IMAGE_TEXT_LOSSES:  # the loss's own S flag agrees with the method's
        assert IMAGE_TEXT_LOSSES[name].has_s == METHODS[name].has_s


def _text_config(proj_dim: int):
    from tricl.text.encoder import TextEncoderConfig

    return TextEncoderConfig(vocab_size=20, context_length=8, proj_dim=proj_dim, width=16, heads=2)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_build_encoders_gives_an_encoder_with_s_exactly_when_the_method_has_it(name) -> None:
    from tricl.config import RunConfig
    from tricl.models import Encoder

    spec = get_method(name)
    caption = spec.pair == "caption"
    dataset = "mnist5k-captions" if caption else "mnist5k"
    cfg = RunConfig(method=name, dataset=dataset, proj_hidden_dim=16, proj_dim=8)
    context = {"text_config": _text_config(8)} if caption else {}
    model = spec.build_encoders(cfg, 1, **context).eval()
    enc = model.image if caption else model
    assert isinstance(enc, Encoder)
    with torch.no_grad():
        z = enc(torch.randn(2, 1, 28, 28))
    assert z.shape == (2, 8)
    s = model.importance()
    assert (s is not None) == METHODS[name].has_s
    if s is not None:
        assert s.shape == (8,) and (s > 0).all()
    # the run loader's path builds the same module layout (image-text: under "image.")
    prefix = "image." if caption else ""
    image_keys = {k[len(prefix) :] for k in model.state_dict() if k.startswith(prefix)}
    assert set(Encoder.from_config(cfg, 1).state_dict()) == image_keys


@pytest.mark.parametrize("name", methods_with_pair("caption"))
def test_caption_methods_build_image_and_text_encoders(name) -> None:
    from tricl.config import RunConfig

    cfg = RunConfig(method=name, dataset="mnist5k-captions", proj_hidden_dim=16, proj_dim=8)
    model = get_method(name).build_encoders(cfg, 1, text_config=_text_config(8))
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])  # [SOS] ... [EOS] [PAD]
    with torch.no_grad():
        img_z, txt_z = model(torch.randn(2, 1, 28, 28), ids)
    assert img_z.shape == txt_z.shape == (2, 8)
    assert model.logit_scale.requires_grad and model.logit_scale.ndim == 0
    with pytest.raises(ValueError, match="text_config"):
        get_method(name).build_encoders(cfg, 1)


def test_unknown_method_names_the_choices() -> None:
    with pytest.raises(MethodError) as info:
        get_method("byol")
    assert "\n" not in str(info.value)
    for name in METHODS:
        assert repr(name) in str(info.value)
    # charts still draw a run of a method this version does not know
    assert method_label("byol") == "byol" and method_color("byol") == UNKNOWN_COLOR


def test_a_method_is_registered_once(monkeypatch) -> None:
    monkeypatch.setattr("tricl.methods.METHODS", dict(METHODS))
    import tricl.methods as methods

    spec = MethodSpec("byol", "BYOL", "#123456", "one line", loss="nt_xent", has_s=False)
    register_method(spec)
    assert methods.METHODS["byol"] is spec
    with pytest.raises(ValueError, match="registered twice"):
        register_method(spec)
    assert "byol" not in METHODS  # the real registry was untouched


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"pair": "image_text"}, "pair"),
        ({"loss": ""}, "loss kernel"),
        ({"order": "alphabetical"}, "order"),
        ({"order": "S"}, "only with has_s"),
    ],
)
def test_a_malformed_entry_is_refused(changes, match) -> None:
    fields = dict(name="x", label="X", color="#000000", description="d", loss="nt_xent")
    with pytest.raises(ValueError, match=match):
        MethodSpec(**{**fields, "has_s": False, **changes})


def test_the_registry_imports_without_torch() -> None:
    # The dashboard reads labels and colours before it needs a model.
    code = "import sys, tricl.methods; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_feature_order_is_declared_or_derived_from_s() -> None:
    for spec in METHODS.values():
        assert spec.order in FEATURE_ORDERS
        assert method_order(spec.name, spec.has_s) == spec.order
    assert {n for n, s in METHODS.items() if s.order == "S"} == {
        n for n, s in METHODS.items() if s.has_s
    }
    # NeuralEF-CLR's loss orders its outputs: feature 0 is the first eigenfunction
    assert METHODS["neuralef"].order == "index"
    assert METHODS["simclr"].order == "variance"
    # a run of a method this version does not know: S if it has S, else variance
    assert method_order("byol", True) == "S" and method_order("byol", False) == "variance"
