"""Training the caption methods (clip, triclip): real tiny runs from a CSV this test writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gloo_pair import run_two_ranks
from PIL import Image

from tricl.cli import main
from tricl.config import RunConfig
from tricl.data import ImageData, load_dataset
from tricl.methods import methods_with_pair
from tricl.models import Encoder
from tricl.runs import STATE_FILE, TOKENIZER_FILE, WEIGHTS_FILE, Run, RunError, read_weights
from tricl.text.encoder import TextEncoder
from tricl.text.tokenizer import train_tokenizer
from tricl.train import train

SHAPES = ("square", "stripes", "cross", "dot")
SIZES = ("small", "large")


def write_caption_csv(root: Path, n: int = 40, size: int = 16, *, labels: bool = False) -> Path:
    """``n`` 16x16 PNGs of 4 shapes in 2 sizes and an open_clip CSV captioning each (with the
    shape as a ``label`` column if ``labels``)."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    lines = ["filepath\ttitle" + ("\tlabel" if labels else "")]
    for i in range(n):
        shape, big = SHAPES[i % 4], (i // 4) % 2
        img = rng.integers(0, 50, (size, size), dtype=np.uint8)
        lo, hi = (2, 14) if big else (5, 11)
        if shape == "square":
            img[lo:hi, lo:hi] = 220
        elif shape == "stripes":
            img[lo:hi, lo:hi:3] = 220
        elif shape == "cross":
            img[size // 2, lo:hi] = img[lo:hi, size // 2] = 220
        else:
            img[size // 2 - 1 : size // 2 + 1, size // 2 - 1 : size // 2 + 1] = 220
        Image.fromarray(img).save(root / "img" / f"{i:02d}.png")
        line = f"img/{i:02d}.png\ta {SIZES[big]} bright {shape} on a dark ground"
        lines.append(line + (f"\t{shape}" if labels else ""))
    path = root / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def caption_csv(tmp_path_factory) -> Path:
    return write_caption_csv(tmp_path_factory.mktemp("captions"))


def tiny(csv: Path, **kw) -> RunConfig:
    values = dict(
        method="triclip",
        dataset=f"captions:{csv}",
        proj_hidden_dim=16,
        proj_dim=8,
        batch_size=8,
        epochs=1,
        warmup_epochs=0,
        lr=2e-3,
        text_width=16,
        text_heads=2,
        text_layers=1,
        text_context_length=12,
        device="cpu",
    )
    return RunConfig(**(values | kw))


def weights(run: Run) -> dict[str, torch.Tensor]:
    return read_weights(run.path / WEIGHTS_FILE)[0]


@pytest.mark.parametrize("method", methods_with_pair("caption"))
def test_one_epoch_from_a_csv_rebuilds_both_encoders_from_the_run_directory(
    caption_csv, tmp_path, method
) -> None:
    run = train(tiny(caption_csv, method=method), runs_root=tmp_path, progress=False)
    assert sorted(p.name for p in run.path.iterdir()) == sorted(
        ["config.json", "metrics.jsonl", WEIGHTS_FILE, STATE_FILE, TOKENIZER_FILE]
    )
    (row,) = run.metrics()
    assert row["epoch"] == 1 and np.isfinite(row["loss"]) and row["temperature"] > 0
    assert ("s_min" in row) == (method == "triclip")
    info = json.loads((run.path / "config.json").read_text())
    assert info["text_encoder"]["width"] == 16 and info["config"]["method"] == method

    # a fresh process's view: everything comes from the run directory alone
    again = Run.load(run.path)
    saved = weights(again)
    assert {k.split(".")[0] for k in saved} == {"image", "text", "logit_scale"}
    image = again.encoder()
    text = again.text_encoder()
    tokenizer = again.tokenizer()
    assert isinstance(image, Encoder) and isinstance(text, TextEncoder)
    assert (image.importance() is not None) == (method == "triclip")
    for name, tensor in text.state_dict().items():
        assert torch.equal(tensor, saved[f"text.{name}"]), name
    for name, tensor in image.state_dict().items():
        assert torch.equal(tensor, saved[f"image.{name}"]), name
    assert again.logit_scale() == pytest.approx(float(saved["logit_scale"].exp()))

    # image analyses read the images of the captions; the two encoders meet in one space
    data = again.load_data()
    assert isinstance(data, ImageData) and len(data.train_x) == 32
    # and so does every image consumer that loads the dataset by name (tricl analyze, align)
    assert load_dataset(again.config.dataset).train_x.equal(data.train_x)
    pairs = again.load_image_text()
    ids = tokenizer.encode(pairs.train_captions[:4]).ids
    with torch.no_grad():
        img_z = image(data.preprocess(data.train_x[:4]))
        txt_z = text(ids)
    assert img_z.shape == txt_z.shape == (4, 8)


def test_triclip_resumed_after_one_epoch_equals_two_uninterrupted_epochs(
    caption_csv, tmp_path
) -> None:
    cfg = tiny(caption_csv, epochs=2)
    full = train(cfg, runs_root=tmp_path / "full", progress=False)
    part = train(cfg, runs_root=tmp_path / "part", progress=False, stop_after_epoch=1)
    assert part.epochs_done == 1
    resumed = train(resume=part.path, progress=False)
    wf, wr = weights(full), weights(resumed)
    assert wf.keys() == wr.keys()
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert [r["epoch"] for r in resumed.metrics()] == [1, 2]
    # the seed fixes the run bit for bit: a second fresh run equals the first
    other = train(cfg, runs_root=tmp_path / "other", progress=False)
    assert all(torch.equal(wf[k], weights(other)[k]) for k in wf)


def test_a_tokenizer_that_does_not_match_the_weights_is_a_one_line_error(
    caption_csv, tmp_path
) -> None:
    run = train(tiny(caption_csv, epochs=2), runs_root=tmp_path, progress=False,
                stop_after_epoch=1)  # fmt: skip
    path = run.path / TOKENIZER_FILE
    original = path.read_text()
    # a tokenizer trained on other captions: another hash and another vocabulary
    train_tokenizer(["one two three", "four five six seven"], 40, 12).save(run.path)
    for read in (run.tokenizer, run.text_encoder, lambda: train(resume=run.path, progress=False)):
        with pytest.raises(RunError) as info:
            read()
        message = str(info.value)
        assert "\n" not in message and str(path) in message and "tokenizer" in message
    path.write_text(original)
    assert run.text_encoder() is not None  # the run's own file is accepted again
    path.unlink()
    with pytest.raises(RunError, match=r"no tokenizer\.json") as info:
        Run.load(run.path)
    assert "\n" not in str(info.value)


def test_an_image_only_run_has_no_text_side(tmp_path) -> None:
    run = train(
        RunConfig(dataset="digits", proj_hidden_dim=16, proj_dim=8, batch_size=256, epochs=1,
                  warmup_epochs=0, device="cpu"),
        runs_root=tmp_path, progress=False,
    )  # fmt: skip
    for read in (run.tokenizer, run.text_encoder, run.load_image_text):
        with pytest.raises(RunError, match="trained on images only"):
            read()


def test_cli_trains_triclip_with_text_flags(caption_csv, tmp_path, capsys) -> None:
    argv = [
        "train", "--method", "triclip", "--dataset", f"captions:{caption_csv}",
        "--proj-dim", "8", "--proj-hidden-dim", "16", "--batch-size", "8", "--epochs", "1",
        "--text-width", "16", "--text-heads", "2", "--text-layers", "1",
        "--runs-root", str(tmp_path), "--no-progress", "--name", "cli",
    ]  # fmt: skip
    assert main(argv) == 0
    run = Run.load(tmp_path / "cli")
    assert run.config.method == "triclip" and run.text_encoder().cfg.width == 16
    # the wrong kind of dataset is refused before anything is written
    assert main(["train", "--method", "clip", "--dataset", "digits", "--no-progress",
                 "--runs-root", str(tmp_path / "none")]) == 2  # fmt: skip
    assert "image-caption pairs" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


WORKER = """
import sys, torch, torch.distributed as dist
from test_image_text_train import ddp_setup, ddp_loss
rank, init_file, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
torch.set_num_threads(1)
model, x, ids, loss_fn = ddp_setup()
ddp = torch.nn.parallel.DistributedDataParallel(model)
share = slice(rank * len(x) // 2, (rank + 1) * len(x) // 2)
terms = ddp_loss(ddp, model, x[share], ids[share], loss_fn)
terms.total.backward()
if rank == 0:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.save({"loss": terms.total.detach(), "grads": grads}, out)
dist.barrier()
dist.destroy_process_group()
"""


def ddp_setup():
    """A triclip model (eval: no per-rank batch statistics), 8 images and captions, its loss."""
    from tricl.methods import build_loss, get_method
    from tricl.text.encoder import TextEncoderConfig

    cfg = RunConfig(method="triclip", dataset="mnist5k-captions", proj_hidden_dim=16, proj_dim=8)
    text = TextEncoderConfig(vocab_size=20, context_length=8, proj_dim=8, width=16, heads=2)
    torch.manual_seed(0)
    model = get_method("triclip").build_model(cfg, 1, text_config=text).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 28, 28, generator=g)
    ids = torch.randint(4, 20, (8, 6), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # [SOS] ... [EOS]
    return model, x, ids, build_loss(cfg)


def ddp_loss(model, module, x, ids, loss_fn):
    """The training loop's caption loss (features gathered from every rank with gradients)."""
    from tricl.methods import get_method

    assert module is getattr(model, "module", model)
    return get_method("triclip").loss_terms(model, (x, ids), loss_fn)


@pytest.mark.slow
def test_two_process_gloo_triclip_equals_one_process(tmp_path) -> None:
    model, x, ids, loss_fn = ddp_setup()
    ref = ddp_loss(model, model, x, ids, loss_fn)
    ref.total.backward()
    got = run_two_ranks(WORKER, tmp_path)
    torch.testing.assert_close(got["loss"], ref.total.detach(), rtol=1e-5, atol=1e-6)
    ref_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(got["grads"]) == set(ref_grads)
    assert {"logit_scale", "image.importance_logits", "text.token_embedding.weight"} <= set(
        ref_grads
    )
    for n, g in ref_grads.items():
        torch.testing.assert_close(got["grads"][n], g, rtol=1e-4, atol=1e-6, msg=n)
