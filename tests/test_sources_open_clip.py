"""An open_clip checkpoint imported on a caption dataset is an image-text run: both towers, the
logit scale and open_clip's own tokenizer, rebuilt offline from the run folder and checked against
open_clip's ``encode_image`` / ``encode_text``; ``tricl analyze`` computes its caption side
(zero-shot, retrieval, top captions, word lift) and its pair basis, the caption probe reads it and
the Features page shows its captions; a checkpoint without a text tower, or a source without one,
is refused in one line on a caption dataset and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_app_pages import app_at, open_page, texts
from test_image_text_train import write_caption_csv
from test_sources import nothing_written, timm_weights

from tricl import serve
from tricl.cli import main
from tricl.foreign import import_encoder
from tricl.runs import Run, RunError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# the smallest CLIP open_clip builds: a 1-block ViT on 32 px, a 2-block text tower of width 32
# (its 49,408 token rows are the tokenizer's vocabulary), 16 tokens of context, 16 features
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
CAPTION = "a large bright cross on a dark ground"


def clip_checkpoint(root: Path, seed: int = 0) -> tuple[torch.nn.Module, Path, Path]:
    """open_clip's model of the tiny config with random weights, saved as open_clip users do
    (``torch.save(model.state_dict())``); the model, its config .json and the weights file."""
    import open_clip

    (root / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-S-16-alt", **TINY_CLIP).eval()
    torch.save(model.state_dict(), root / "clip.pt")
    return model, root / "tiny-clip.json", root / "clip.pt"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Run, torch.nn.Module]:
    """The tiny CLIP imported on a 40-image caption CSV with labels and analysed by the CLI."""
    base = tmp_path_factory.mktemp("open_clip")
    csv = write_caption_csv(base / "captions", labels=True)
    model, config, weights = clip_checkpoint(base)
    run = import_encoder(
        f"open_clip:{config}",
        weights,
        runs_root=base / "runs",
        dataset=f"captions:{csv}",
        name="clip-tiny",
    )
    assert main(["analyze", str(run.path), "--no-progress"]) == 0
    return run, model


def test_both_towers_and_the_tokenizer_are_open_clips(imported):
    import open_clip

    run, model = imported
    run = Run.load(run.path)  # rebuilt from the folder alone
    record = run.config.source
    assert run.image_text and run.config.method == "imported"
    assert record["text"]["tokenizer"] == "SimpleTokenizer"
    assert record["text"]["context_length"] == 16
    assert (
        "its text tower (29 tensors at the top level) and open_clip's tokenizer read"
        in (record["report"])
    )
    assert "ignored" not in record["report"]  # every tensor of the file was read
    assert not (run.path / "tokenizer.json").exists()  # the tokenizer ships with open_clip
    ours = run.tokenizer()
    theirs = open_clip.get_tokenizer("ViT-B-32", context_length=16)  # open_clip's CLIP BPE
    captions = [CAPTION, "a small bright dot on a dark ground!?"]
    ids = ours.encode(captions).ids
    assert torch.equal(ids, theirs(captions))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(
            run.text_encoder()(ids).numpy(), model.encode_text(ids).numpy(), atol=1e-5
        )
        want = model.encode_image(run.encoder().input(x))
        np.testing.assert_allclose(run.encoder()(x).numpy(), want.numpy(), atol=1e-5)
    assert run.logit_scale() == pytest.approx(float(model.logit_scale.exp()))
    long = ours.encode([CAPTION * 4])
    assert long.truncated == 1 and long.ids[0, -1] == theirs.eot_token_id


def test_analyze_computes_the_caption_side_and_the_pair_basis(imported):
    from tricl.analysis import load_analysis
    from tricl.analysis.image_text import load_text_analysis
    from tricl.analysis.pair_basis import pair_basis

    run, _ = imported
    a = load_analysis(run)
    text = load_text_analysis(run)
    assert text is not None and text.features.text_z.shape == a.features.z.shape
    assert text.features.class_names == ("cross", "dot", "square", "stripes")
    zero = text.zero_shot
    assert 0.0 <= zero["zero_shot_acc"] <= 1.0
    assert {"i2t_r1", "t2i_r1"} <= set(zero)
    assert text.top_captions.indices.shape[0] == 16  # every feature's top captions
    words = {w for c in text.features.captions for w in c.split()}
    assert len(text.tokens) and set(text.tokens["token"]) <= words  # word lift, by caption word
    basis = pair_basis(run, progress=False)
    assert basis.image_rotation.shape[0] == basis.text_rotation.shape[0] == 16


def test_caption_probe_encodes_as_the_stored_caption_features(imported):
    from tricl.analysis.image_text import load_text_analysis

    run, _ = imported
    stored = load_text_analysis(run).features
    got = serve.encode_text(str(run.path), run.weights_hash, stored.captions[0])
    np.testing.assert_allclose(got["z"], stored.text_z[0].astype(np.float32), atol=1e-2)
    assert got["context_length"] == 16 and not got["truncated"]
    assert got["tokens"][:3] == stored.captions[0].split()[:3]
    cut = serve.encode_text(str(run.path), run.weights_hash, CAPTION * 4)
    assert cut["truncated"] and len(cut["tokens"]) == 14  # L minus [SOT] and [EOT]
    with pytest.raises(ValueError, match="empty"):
        serve.encode_text(str(run.path), run.weights_hash, " ")


def test_features_page_shows_the_imported_runs_captions(imported, monkeypatch):
    from tricl.analysis.image_text import load_text_analysis

    run, _ = imported
    at = open_page(app_at(run.path.parent, monkeypatch, run=run.name), "features.py")
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    text = load_text_analysis(run)
    first = text.features.captions[int(text.top_captions.indices[0, 0])]
    assert table["top captions"].iloc[0].startswith(first)
    assert "ranked by the **text encoder's** feature #i" in texts(at)


@pytest.mark.parametrize(
    "case, words",
    [
        ("image tower only", "holds no text tower, only the image tower"),
        ("timm", "has no text tower, so it cannot read a caption dataset"),
        ("a layer", "is not the image embedding"),
        ("short vocabulary", "has 100 token rows but open_clip's tokenizer has 49408"),
    ],
)
def test_no_text_side_on_a_caption_dataset_is_refused_in_one_line(tmp_path, case, words):
    model, config, weights = clip_checkpoint(tmp_path)
    spec, layer = f"open_clip:{config}", ""
    if case == "image tower only":
        visual = {k: v for k, v in model.state_dict().items() if k.startswith("visual.")}
        torch.save(visual, weights)
    elif case == "timm":
        timm_weights(weights, 0)
        spec = "timm:test_resnet"
    elif case == "a layer":
        layer = "transformer"
    else:
        small = {**TINY_CLIP, "text_cfg": {**TINY_CLIP["text_cfg"], "vocab_size": 100}}
        config.write_text(json.dumps(small))
    root = tmp_path / "runs"
    with pytest.raises(RunError) as info:
        import_encoder(spec, weights, layer=layer, runs_root=root, dataset="mnist5k-captions")
    msg = str(info.value)
    assert words in msg and "\n" not in msg, msg
    assert "--dataset mnist5k" in msg or "drop --layer" in msg, msg
    assert nothing_written(root)


def test_two_imported_seeds_are_compared_on_both_sides(imported, capsys):
    """``tricl compare`` of two open_clip imports (two seeds of random weights), in both bases:
    the image table and its verdicts, and the image-text table with an image and a text row (in
    the spectral basis each side rotated onto its run's pair basis), stored and read back."""
    from tricl.analysis import load_comparison
    from tricl.analysis.image_text_compare import SIDES, load_image_text_comparison

    first, _ = imported
    (first.path.parent / "seed1").mkdir()
    _, config, weights = clip_checkpoint(first.path.parent / "seed1", seed=1)
    second = import_encoder(
        f"open_clip:{config}",
        weights,
        runs_root=first.path.parent,
        dataset=first.config.dataset,
        name="clip-tiny-seed1",
    )
    paths = [str(first.path), str(second.path)]
    for basis in ("trained", "spectral"):
        assert main(["compare", *paths, "--basis", basis, "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert f"verdict, {basis} basis (mean over 1 pair(s))" in out
        assert f"image and text features, {basis} basis:" in out
        image = load_comparison(paths, basis=basis)
        assert image is not None and image.pairs["run_b"].tolist() == ["clip-tiny-seed1"]
        assert np.isfinite(image.pairs[["ordered_corr_top8", "mcc", "cka"]].to_numpy()).all()
        text = load_image_text_comparison(paths, basis=basis)
        assert text is not None and sorted(text.pairs["side"]) == sorted(SIDES)
        rows = text.pairs.set_index("side")
        assert np.isfinite(rows[["ordered_corr_top8", "mcc", "cka"]].to_numpy()).all()
        k = 16 if basis == "trained" else None  # the pair basis keeps the rank of the CCA
        for side in SIDES:
            shape = text.abs_corr(side, 0, 1).shape
            assert shape == (k, k) if k else 0 < shape[0] <= 16
        if basis == "trained":  # (whitened on 8 images, any two spans agree: CKA 1)
            # two random text towers are not one model: their text features differ
            assert rows.loc["text", "cka"] < 0.99
    # the image side of the trained basis is the image comparison's: the same features, scores
    image, text = load_comparison(paths), load_image_text_comparison(paths)
    got = text.pairs.set_index("side").loc["image", ["ordered_corr_top8", "mcc", "cka"]]
    want = image.pairs[["ordered_corr_top8", "mcc", "cka"]].iloc[0]
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), atol=1e-6)
