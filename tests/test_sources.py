"""Encoders made elsewhere (``tricl import SOURCE --weights FILE``), without downloads: for each
source a real architecture with random weights, written by that library's own save function,
imported, rebuilt from the run alone and checked against the library's own forward pass; two
imports analysed, compared and shown on every dashboard page; bad input refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tricl.cli import main
from tricl.config import ConfigError, RunConfig
from tricl.foreign import import_encoder
from tricl.io import file_sha256
from tricl.runs import Run, RunError
from tricl.sources.encoder import pool

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def image_folder(root: Path) -> str:
    """Three colour classes of 12 images each, 16x16: ``folder:ROOT``."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            a = rng.integers(0, 80, (16, 16, 3), dtype=np.uint8)
            a[..., c] += 150
            Image.fromarray(a).save(root / name / f"{i}.png")
    return f"folder:{root}"


def timm_weights(path: Path, seed: int, name: str = "test_resnet") -> nn.Module:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()  # with its classifier, as released
    save_file(model.state_dict(), str(path))
    return model


def lightly_checkpoint(path: Path) -> tuple[nn.Module, nn.Module]:
    """A Lightning checkpoint as lightly's examples write it: ``backbone`` is
    ``nn.Sequential(*resnet18.children()[:-1])``, then ``projection_head.layers``."""
    import torchvision

    torch.manual_seed(0)
    backbone = nn.Sequential(*list(torchvision.models.resnet18().children())[:-1]).eval()
    head = nn.Sequential(nn.Linear(512, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 16))
    head.eval()
    sd = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    sd |= {f"projection_head.layers.{k}": v for k, v in head.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3, "hyper_parameters": {"lr": 0.1}}, path)
    return backbone, head


def nothing_written(root: Path) -> bool:
    return not root.exists() or not any(root.iterdir())


# --------------------------------------------------------------------------- each source


def test_torchvision_resnet_with_module_prefix_matches_torchvision(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "r18.pth")
    run = import_encoder(
        "torchvision:resnet18", tmp_path / "r18.pth", runs_root=tmp_path / "runs", name="tv"
    )
    record = run.config.source
    assert run.config.method == "imported" and run.config.backbone == "torchvision:resnet18"
    assert record["weights"]["sha256"] == file_sha256(tmp_path / "r18.pth")
    assert record["weights"]["prefix"] == "module."
    assert "classifier head (2 tensors) dropped" in record["report"]
    assert record["preprocess"]["size"] == 224 and record["preprocess"]["resize"] == 256
    # rebuilt from the run folder alone, it is torchvision's network at ImageNet preprocessing
    x = torch.rand(2, 3, 300, 260)  # any size: resized (shorter side 256), centre-cropped
    enc = Run.load(run.path).encoder()
    side = enc.input(x)  # (2, 3, 224, 224)
    model.fc = nn.Identity()
    with torch.no_grad():
        np.testing.assert_allclose(enc(x).numpy(), model(side).numpy(), rtol=1e-4, atol=1e-5)
    from torchvision.transforms import v2  # torchvision's own ImageNet evaluation pipeline

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    imagenet = v2.Compose(
        [v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.Normalize(mean, std)]
    )
    np.testing.assert_allclose(side.numpy(), imagenet(x).numpy(), atol=1e-4)


def test_timm_model_matches_timm_and_reads_its_pretrained_cfg(tmp_path):
    model = timm_weights(tmp_path / "vit.safetensors", 0, "test_vit")
    run = import_encoder("timm:test_vit", tmp_path / "vit.safetensors", runs_root=tmp_path)
    pre = run.config.source["preprocess"]
    assert (pre["size"], pre["resize"], pre["interpolation"]) == (160, 168, "bicubic")
    assert pre["mean"] == [0.5, 0.5, 0.5] and "timm pretrained_cfg" in pre["origin"]
    x = torch.rand(3, 3, 160, 160)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(run.encoder().input(x)), pre_logits=True)
        np.testing.assert_allclose(run.encoder()(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    assert run.config.proj_dim == model.num_features


def hf_vit(folder: Path, size: int, patch: int = 16, layers: int = 1) -> nn.Module:
    """A tiny Hugging Face ViT (width 32) whose image processor reads ``size`` px, saved with
    ``save_pretrained`` in ``folder``; the model."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=size,
        patch_size=patch,
    )
    model = ViTModel(cfg, add_pooling_layer=False).eval()
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    return model


def test_hf_folder_is_rebuilt_offline_from_its_recorded_config(tmp_path):
    model = hf_vit(tmp_path / "vit", 32, patch=8, layers=2)
    run = import_encoder(f"hf:{tmp_path / 'vit'}", runs_root=tmp_path / "runs", name="hf")
    record = run.config.source
    assert record["arch"]["config"]["hidden_size"] == 32  # the folder's config, copied
    assert record["preprocess"]["mode"] == "squash" and record["preprocess"]["size"] == 32
    for f in (tmp_path / "vit").iterdir():
        f.unlink()  # the run no longer needs the folder
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = model(pixel_values=(x - 0.5) / 0.5).last_hidden_state[:, 0]  # CLS, final norm
        np.testing.assert_allclose(run.encoder()(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("size", "family"),
    [(64, {"family": "imagenet", "size": 64}), (32, {"family": "natural", "size": 16})],
)
def test_spectral_views_of_an_imported_encoder_follow_its_recorded_size(tmp_path, size, family):
    """A model that reads >= 64 px gets SimCLR's ImageNet recipe at its own size; a smaller one
    keeps its dataset's family at the dataset's size (the 36 images are 16 px)."""
    from functools import partial

    from tricl.align import align
    from tricl.analysis.spectral import SPECTRAL_FILE, model_views, spectral_basis
    from tricl.analysis.store import load_npz_meta

    dataset = image_folder(tmp_path / "images")
    hf_vit(tmp_path / "vit", size)
    spec, root = f"hf:{tmp_path / 'vit'}", tmp_path / "runs"
    run = import_encoder(spec, runs_root=root, dataset=dataset, name="v")
    assert run.config.source["preprocess"]["size"] == size
    assert model_views(run) == (family if size >= 64 else None)
    basis = spectral_basis(run, reps=1)
    assert basis.rotation.shape[0] == 32 and 0 < basis.rotation.shape[1] <= 32  # rank of ~29 pairs
    assert np.isfinite(basis.eigenvalues).all()
    assert np.all(np.diff(basis.eigenvalues) <= 1e-6)  # most invariant first
    meta = load_npz_meta(run.path / "analysis" / SPECTRAL_FILE)
    assert meta["augmentation"] == family  # the family is recorded with the basis
    assert ("augmentation" in meta["params"]) == (size >= 64)  # and keys the cache
    assert basis.augmentation == family
    # an aligned copy says which views its axes were estimated on
    (child,) = align([run], partial(spectral_basis, reps=1), runs_root=tmp_path / "aligned")
    assert child.info["aligned"]["basis"]["augmentation"] == family


def test_open_clip_image_tower_and_its_text_tower_recorded(tmp_path):
    import open_clip

    config = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "tiny-clip.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-16-alt", **config).eval()  # the tiny config's CLIP
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    run = import_encoder(
        f"open_clip:{tmp_path / 'tiny-clip.json'}", tmp_path / "clip.pt", runs_root=tmp_path / "r"
    )
    record = run.config.source
    assert run.config.backbone == "open_clip:tiny-clip" and run.config.proj_dim == 16
    assert record["text_tower"]["tensors"] > 0 and record["text_tower"]["imported"] is False
    assert record["preprocess"]["interpolation"] == "bicubic"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = model.encode_image(run.encoder().input(x))
        np.testing.assert_allclose(run.encoder()(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_lightly_lightning_checkpoint_reads_backbone_projector_or_a_layer(tmp_path):
    backbone, head = lightly_checkpoint(tmp_path / "lightly.ckpt")
    run = import_encoder(
        "torchvision:resnet18",
        tmp_path / "lightly.ckpt",
        layer="projector",
        runs_root=tmp_path / "runs",
        name="proj",
    )
    assert run.config.source["weights"]["prefix"] == "backbone."
    assert "projector (9 tensors) read" in run.config.source["report"]
    assert (run.config.proj_hidden_dim, run.config.proj_dim) == (512, 16)
    enc = run.encoder()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        side = enc.input(x)
        np.testing.assert_allclose(
            enc(x).numpy(), head(backbone(side).flatten(1)).numpy(), rtol=1e-4, atol=1e-5
        )
        layer3 = import_encoder(
            "torchvision:resnet18", tmp_path / "lightly.ckpt", layer="layer3",
            runs_root=tmp_path / "runs", name="l3",
        ).encoder()  # fmt: skip
        want = backbone[:7](side).mean(dim=(2, 3))  # conv1 .. layer3, pooled
        np.testing.assert_allclose(layer3(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    assert layer3.out_dim == 256


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "spec, weights, layer, words",
    [
        ("torchvision:resnet50", "lightly.ckpt", "", "lacks 198 of the 318 tensors"),
        ("torchvision:resnet18", "lightly.ckpt", "nope", "has no module 'nope'"),
        ("torchvision:resnet18", "notes.txt", "", "not a readable PyTorch or safetensors"),
        ("torchvision:resnet18", "model.safetensors", "", "does not hold a torchvision:resnet18"),
        ("timm:test_resnet", "lightly.ckpt", "", "test_resnet"),
        ("torchvision:resnet18", "missing.pth", "", "does not exist"),
        ("torchvision:resnet18", "lightly.ckpt", "avgpool.0", "has no module"),
        ("timm:test_vit", "model.safetensors", "projector", "has no projector"),
        ("timm:no_such_net", "model.safetensors", "", "unknown timm model"),
        ("caffe:alexnet", "model.safetensors", "", "unknown encoder source"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix_and_writes_nothing(
    tmp_path, spec, weights, layer, words
):
    lightly_checkpoint(tmp_path / "lightly.ckpt")
    timm_weights(tmp_path / "model.safetensors", 0, "test_vit")
    (tmp_path / "notes.txt").write_text("not weights")
    root = tmp_path / "runs"
    with pytest.raises(RunError) as info:
        import_encoder(spec, tmp_path / weights, layer=layer, runs_root=root)
    msg = str(info.value)
    assert words in msg and "\n" not in msg and ";" in msg, msg
    assert nothing_written(root)


def test_a_state_dict_that_does_not_fit_is_refused(tmp_path):
    import timm
    from safetensors.torch import save_file

    sd = timm.create_model("test_resnet", pretrained=False).state_dict()
    sd["conv1.0.weight"] = sd["conv1.0.weight"][
        :, :1
    ].contiguous()  # a grey-input stem: another network
    save_file(sd, str(tmp_path / "w.safetensors"))
    with pytest.raises(
        RunError, match=r"does not fit a timm:test_resnet: conv1.0.weight has shape"
    ):
        import_encoder("timm:test_resnet", tmp_path / "w.safetensors", runs_root=tmp_path / "r")
    assert nothing_written(tmp_path / "r")


def test_a_layer_that_is_not_a_vector_per_image_is_refused():
    assert pool(torch.zeros(2, 8, 3, 3), "x").shape == (2, 8)  # a feature map: pooled
    assert pool((torch.zeros(2, 5, 4), None), "x").shape == (2, 4)  # tokens: pooled
    with pytest.raises(ValueError, match=r"not a vector per image .* pick a block"):
        pool(torch.zeros(2, 3, 4, 5, 6), "x")
    with pytest.raises(ValueError, match="not a tensor; pick another"):
        pool("text", "x")


def test_an_imported_encoder_is_never_trained(tmp_path):
    from tricl.train import TrainingError, train

    with pytest.raises(ConfigError, match="opened with `tricl import"):
        RunConfig(method="imported")
    cfg = RunConfig(method="imported", backbone="timm:test_resnet", dataset="digits")
    with pytest.raises(TrainingError, match="cannot be trained here"):
        train(cfg, runs_root=tmp_path)
    assert nothing_written(tmp_path)


def test_cli_import_prints_the_report_and_bad_input_exits_2(tmp_path, capsys):
    timm_weights(tmp_path / "m.safetensors", 0)
    root = str(tmp_path / "runs")
    argv = ["import", "timm:test_resnet", "--weights", str(tmp_path / "m.safetensors")]
    assert main([*argv, "--runs-root", root, "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "90 backbone tensors" in out and "next: tricl analyze" in out
    assert main([*argv, "--runs-root", root, "--layer", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "nope" in err
    assert main(["import", "m.ckpt", "--weights", "x.pth", "--runs-root", root]) == 2


# ------------------------------------------------------------------ analysed, compared, shown


@pytest.fixture(scope="module")
def imported_root(tmp_path_factory) -> Path:
    """Two random-weight timm encoders (two seeds) imported on a 36-image folder, analysed in both
    bases and compared."""
    from tricl.analysis import analyze, compare

    base = tmp_path_factory.mktemp("imported")
    dataset = image_folder(base / "images")
    runs = []
    for seed in (0, 1):
        timm_weights(base / f"s{seed}.safetensors", seed)
        runs.append(
            import_encoder(
                "timm:test_resnet",
                base / f"s{seed}.safetensors",
                runs_root=base / "runs",
                dataset=dataset,
                name=f"timm-seed{seed}",
            )
        )
    for run in runs:
        analyze(run, progress=False)
        analyze(run, progress=False, basis="spectral")
    compare(runs, progress=False)
    compare(runs, progress=False, basis="spectral")
    return base / "runs"


def test_imported_runs_are_analysed_and_compared(imported_root):
    from tricl.analysis import analyze, compare

    a = analyze(imported_root / "timm-seed0", progress=False)
    assert not a.recomputed  # cached by the fixture
    assert a.method == "imported" and a.features.k == 96
    assert a.features.z.shape == (6, 96)  # 20% of each class of 12 images
    assert a.importance.default == "variance"  # no S: ranked as SimCLR runs are
    assert a.features.s is None
    spectral = analyze(imported_root / "timm-seed0", progress=False, basis="spectral")
    assert not spectral.recomputed and spectral.features.k <= 96
    pair = compare([imported_root / "timm-seed0", imported_root / "timm-seed1"], progress=False)
    assert not pair.recomputed and pair.corr[(0, 1)].shape == (96, 96)
    assert np.isfinite(pair.pairs.select_dtypes("number").to_numpy()).any()


@pytest.mark.parametrize(
    "page",
    [
        "runs.py",
        "features.py",
        "feature_detail.py",
        "compare_seeds.py",
        "embedding.py",
        "few_features.py",
        "probe.py",
    ],
)
def test_every_page_renders_an_imported_run(page, imported_root, monkeypatch):
    from test_app_pages import app_at, open_page

    at = open_page(app_at(imported_root, monkeypatch, run="timm-seed0"), page)
    assert len(at.title) == 1 and not at.error, [e.value for e in at.error]
