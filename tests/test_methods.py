"""The methods registry: one file per method; every entry honours the same contract."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tricl.losses import LossTerms
from tricl.methods import (
    FEATURE_ORDERS,
    METHODS,
    PAIRS,
    UNKNOWN_COLOR,
    Method,
    MethodError,
    build_encoder,
    get_method,
    method_color,
    method_label,
    method_order,
    methods_with_pair,
    option_groups,
    register_method,
)

ALL_METHODS = list(METHODS)
# those trained here (an imported encoder has no loss and is never trained)
TRAINING_METHODS = [name for name, m in METHODS.items() if m.trainable]
REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (REPO / "checkpoints").glob("*/config.json"))


def _config(name: str, **settings):
    from tricl.config import RunConfig

    dataset = "mnist5k-captions" if METHODS[name].pair == "caption" else "mnist5k"
    return RunConfig(method=name, dataset=dataset, proj_hidden_dim=16, proj_dim=8, **settings)


def _text_config(proj_dim: int):
    from tricl.text.encoder import TextEncoderConfig

    return TextEncoderConfig(vocab_size=20, context_length=8, proj_dim=proj_dim, width=16, heads=2)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_declares_a_complete_entry(name) -> None:
    method = METHODS[name]
    assert isinstance(method, Method) and method.name == name
    assert method.label and method.description and "\n" not in method.description
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", method.color)
    assert method.pair in PAIRS and method.order in FEATURE_ORDERS
    assert method_label(name) == method.label and method_color(name) == method.color
    fields = {f.name for f in dataclasses.fields(LossTerms)} - {"total"}
    assert bool(method.terms) == method.trainable and {f for f, _ in method.terms} <= fields


def test_labels_and_colours_tell_the_methods_apart() -> None:
    assert len({m.label for m in METHODS.values()}) == len(METHODS)
    assert len({m.color.lower() for m in METHODS.values()}) == len(METHODS)
    assert UNKNOWN_COLOR not in {m.color for m in METHODS.values()}


def test_the_shipped_methods_are_all_registered() -> None:
    assert {"simclr", "tricl", "spectral", "tri-spectral", "clip", "triclip", "neuralef",
            "tri-eigen"} <= set(METHODS)  # fmt: skip
    assert {n for n, m in METHODS.items() if m.has_s} == {
        "tricl", "tri-spectral", "triclip", "tri-eigen"
    }  # fmt: skip
    assert set(methods_with_pair("caption")) == {"clip", "triclip"}
    assert METHODS["tri-eigen"].head and METHODS["tri-eigen"].order == "S"


@pytest.mark.parametrize("name", TRAINING_METHODS)
def test_build_model_has_s_exactly_when_the_method_has_it(name) -> None:
    from tricl.models import Encoder

    method, cfg = get_method(name), _config(name)
    caption = method.pair == "caption"
    context = {"text_config": _text_config(8)} if caption else {}
    model = method.build_model(cfg, 1, **context).eval()
    enc = model.image if caption else model
    assert isinstance(enc, Encoder)
    with torch.no_grad():
        z = enc(torch.randn(2, 1, 28, 28))
    assert z.shape == (2, 8)
    s = model.importance()
    assert (s is not None) == method.has_s
    if s is not None:
        assert s.shape == (8,) and (s > 0).all()
    # the run loader's path builds the same module layout (image-text: under "image.")
    prefix = "image." if caption else ""
    image_keys = {k[len(prefix) :] for k in model.state_dict() if k.startswith(prefix)}
    assert set(build_encoder(cfg, 1).state_dict()) == image_keys


@pytest.mark.parametrize("name", TRAINING_METHODS)
def test_param_groups_hold_every_trainable_parameter_once(name) -> None:
    method, cfg = get_method(name), _config(name)
    context = {"text_config": _text_config(8)} if method.pair == "caption" else {}
    model = method.build_model(cfg, 1, **context)
    grouped = [p for g in method.param_groups(model, cfg) for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})
    assert {id(p) for p in grouped} == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("name", methods_with_pair("caption"))
def test_caption_methods_build_image_and_text_encoders(name) -> None:
    method, cfg = get_method(name), _config(name)
    model = method.build_model(cfg, 1, text_config=_text_config(8))
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])  # [SOS] ... [EOS] [PAD]
    with torch.no_grad():
        img_z, txt_z = model(torch.randn(2, 1, 28, 28), ids)
    assert img_z.shape == txt_z.shape == (2, 8)
    assert model.logit_scale.requires_grad and model.logit_scale.ndim == 0
    with pytest.raises(ValueError, match="text_config"):
        method.build_model(cfg, 1)


def test_unknown_method_names_the_choices() -> None:
    with pytest.raises(MethodError) as info:
        get_method("byol")
    assert "\n" not in str(info.value)
    for name in METHODS:
        assert repr(name) in str(info.value)
    # charts still draw a run of a method this version does not know
    assert method_label("byol") == "byol" and method_color("byol") == UNKNOWN_COLOR


class _Byol(Method):
    name = "byol"
    label = "BYOL"
    color = "#123456"
    description = "one line"


def test_a_method_is_registered_once(monkeypatch) -> None:
    monkeypatch.setattr("tricl.methods.base.METHODS", dict(METHODS))
    from tricl.methods import base

    method = register_method(_Byol())
    assert base.METHODS["byol"] is method
    with pytest.raises(ValueError, match="registered twice"):
        register_method(_Byol())
    assert "byol" not in METHODS  # the real registry was untouched


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"pair": "image_text"}, "pair"),
        ({"label": ""}, "name, label and description"),
        ({"order": "alphabetical"}, "order"),
        ({"order": "S"}, "only with has_s"),
        ({"pair": "caption", "head": "eigen", "has_s": True}, "a head needs pair='views'"),
    ],
)
def test_a_malformed_entry_is_refused(changes, match) -> None:
    bad = type("Bad", (_Byol,), changes)
    with pytest.raises(ValueError, match=match):
        bad()


def test_the_registry_imports_without_torch() -> None:
    # The dashboard reads labels and colours before it needs a model.
    code = "import sys, tricl.methods, tricl.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_feature_order_is_declared_or_derived_from_s() -> None:
    for method in METHODS.values():
        assert method_order(method.name, method.has_s) == method.order
    assert {n for n, m in METHODS.items() if m.order == "S"} == {
        n for n, m in METHODS.items() if m.has_s
    }
    # NeuralEF-CLR's loss orders its outputs: feature 0 is the first eigenfunction
    assert METHODS["neuralef"].order == "index"
    assert METHODS["simclr"].order == "variance"
    # a run of a method this version does not know: S if it has S, else variance
    assert method_order("byol", True) == "S" and method_order("byol", False) == "variance"


# ------------------------------------------------------------------------- options -> settings


def test_every_option_is_a_run_setting_with_help_and_a_flag() -> None:
    from tricl.cli import build_parser
    from tricl.config import RunConfig

    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    train_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for group in option_groups():
        for f in dataclasses.fields(group):
            assert f.name in fields and fields[f.name].default == f.default
            assert fields[f.name].default_factory == f.default_factory
            assert f.metadata["help"] == fields[f.name].metadata["help"] != ""
            flag = "--" + f.name.replace("_", "-")
            # a record written by a command (an imported encoder's source) is not a flag
            assert (flag in train_help) == f.metadata.get("cli", True), f.name
    # one owner per name: the groups' fields never collide
    names = [f.name for g in option_groups() for f in dataclasses.fields(g)]
    assert len(names) == len(set(names))


def test_an_option_group_checks_its_own_values() -> None:
    from tricl.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="nef_alpha"):
        RunConfig(method="neuralef", nef_alpha=-0.5)
    with pytest.raises(ConfigError, match="text_width 10 is not divisible"):
        RunConfig(method="clip", dataset="mnist5k-captions", text_width=10, text_heads=3)
    with pytest.raises(ConfigError, match="tau"):
        RunConfig(tau=-1.0)


def test_the_option_choices_agree_with_their_implementations() -> None:
    from tricl.losses import DECORRELATIONS, S_PLACEMENTS
    from tricl.methods import trifactor
    from tricl.models import S_PARAMETRIZATIONS

    assert set(trifactor.S_PLACEMENTS) == set(S_PLACEMENTS)
    assert set(trifactor.DECORRELATIONS) == set(DECORRELATIONS)
    assert set(trifactor.S_PARAMETRIZATIONS) == set(S_PARAMETRIZATIONS)


OLD_STYLE = {  # a config.json "config" object written before the options moved into the methods
    "method": "neuralef", "dataset": "mnist5k", "backbone": "small_cnn", "proj_hidden_dim": 512,
    "proj_dim": 64, "proj_batchnorm": False, "epochs": 15, "batch_size": 256,
    "optimizer": "adamw", "lr": 0.001, "weight_decay": 1e-05, "warmup_epochs": 1,
    "s_lr_mult": 1.0, "temperature": 0.2, "tau": 1.0, "decorrelation": "mean",
    "nef_alpha": 0.5, "nef_scale": 7.0, "s_init_std": 0.1, "s_init": "random",
    "s_init_spread": 1.0, "s_placement": "both", "s_frozen": False, "s_param": "softplus",
    "text_width": 128, "text_layers": 2, "text_heads": 4, "text_vocab_size": 1000,
    "text_context_length": 32, "save_every": 1, "seed": 3, "device": "auto",
    "precision": "auto", "image_size": 0, "name": "", "extra": {},
}  # fmt: skip


def test_an_old_style_flat_config_loads_into_the_new_config() -> None:
    from tricl.config import RunConfig

    cfg = RunConfig.from_dict(OLD_STYLE)
    assert (cfg.nef_alpha, cfg.nef_scale, cfg.seed, cfg.text_width) == (0.5, 7.0, 3, 128)
    written = json.loads(cfg.to_json())  # its keys come back with their values (plus new ones)
    assert {k: written[k] for k in OLD_STYLE} == OLD_STYLE
    assert build_encoder(cfg, 1).importance() is None


@pytest.mark.skipif(not SHIPPED, reason="no shipped runs in checkpoints/")
@pytest.mark.parametrize("run_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_a_shipped_run_config_parses_and_its_weights_load_strictly(run_dir) -> None:
    from tricl.config import RunConfig
    from tricl.runs import Run

    stored = json.loads((run_dir / "config.json").read_text())["config"]
    cfg = RunConfig.from_dict(stored)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    assert {k: v for k, v in cfg.to_dict().items() if k in stored} == {
        k: v for k, v in stored.items() if k in known
    }
    enc = Run.load(run_dir).encoder()  # strict key matching
    assert enc.out_dim == cfg.proj_dim


def test_every_feature_order_has_its_scores() -> None:
    from tricl.analysis.importance import ORDER_SCORES

    assert set(ORDER_SCORES) == set(FEATURE_ORDERS)
