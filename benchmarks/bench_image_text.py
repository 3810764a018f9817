"""Image-text benchmarks (issue #11), measured in one run on this machine.

1. step time of triclip / clip: same image encoder, same text encoder, same batch of mnist5k
   images and their generated captions; forward both encoders, the loss, backward and the
   optimizer step, measured in alternating rounds so machine drift hits both alike
   (target <= 1.05: S must add almost nothing);
2. training images/s of triclip on this CPU, read from a real ``tricl train`` run's
   metrics.jsonl (epochs after the first, which pays for tokenizer training and warm-up);
3. zero-shot accuracy and retrieval recall of the shipped clip / triclip runs, from their stored
   text analyses (``tricl analyze``; nothing is recomputed here).

Usage: python benchmarks/bench_image_text.py [--steps 40] [--batch-size 256] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tricl.config import RunConfig
from tricl.losses import build_image_text_loss
from tricl.methods import build_model
from tricl.text.captions import load_image_text
from tricl.text.encoder import text_encoder_config
from tricl.text.tokenizer import train_tokenizer, trim_padding
from tricl.train import build_optimizer

REPO = Path(__file__).resolve().parents[1]


def _batch(batch_size: int, cfg: RunConfig):
    """The first ``batch_size`` training images of mnist5k-captions, their caption ids, and the
    text encoder config the run would use."""
    data = load_image_text("mnist5k-captions")
    tok = train_tokenizer(data.train_captions, cfg.text_vocab_size, cfg.text_context_length)
    text_cfg = text_encoder_config(
        tok, cfg.proj_dim, width=cfg.text_width, layers=cfg.text_layers,
        heads=cfg.text_heads, proj_hidden_dim=cfg.proj_hidden_dim,
    )  # fmt: skip
    ids = trim_padding(tok.encode(data.train_captions[:batch_size]).ids)
    x = data.images.train_x[:batch_size].float() / 255.0  # (B, 1, 28, 28)
    return x, ids, text_cfg, data.images.channels


def time_steps(cfg: RunConfig, x, ids, text_cfg, channels: int, steps: int) -> list[float]:
    """Seconds per optimizer step after 3 warm-up steps."""
    torch.manual_seed(0)
    model = build_model(cfg, channels, text_config=text_cfg)
    loss_fn = build_image_text_loss(cfg)
    opt = build_optimizer(model, cfg)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        img_z, txt_z = model(x, ids)
        terms = loss_fn(img_z, txt_z, model.importance(), model.logit_scale)
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return times


def step_ratio(steps: int, batch_size: int, rounds: int = 5) -> tuple[float, float]:
    """Median step seconds of triclip and of clip, in alternating rounds."""
    tri = RunConfig(method="triclip", dataset="mnist5k-captions", text_width=64)
    clip = RunConfig(method="clip", dataset="mnist5k-captions", text_width=64)
    x, ids, text_cfg, channels = _batch(batch_size, tri)
    t_tri, t_clip = [], []
    for _ in range(rounds):
        t_tri += time_steps(tri, x, ids, text_cfg, channels, steps // rounds + 1)
        t_clip += time_steps(clip, x, ids, text_cfg, channels, steps // rounds + 1)
    return statistics.median(t_tri), statistics.median(t_clip)


def training_throughput(epochs: int) -> tuple[float, float]:
    """Images/s of a real ``tricl train --method triclip`` run (median over epochs 2..), and its
    wall time in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tricl", "train", "--method", "triclip", "--dataset",
             "mnist5k-captions", "--epochs", str(epochs), "--text-width", "64",
             "--runs-root", tmp, "--name", "bench", "--no-progress"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(tmp) / "bench" / "metrics.jsonl").open()]
    speeds = [r["images_per_s"] for r in rows if r.get("epoch", 0) >= 2 and "images_per_s" in r]
    return statistics.median(speeds), wall


def shipped_zero_shot() -> list[str]:
    """One table row per shipped image-text run, from its stored text analysis."""
    from tricl.analysis.image_text import load_text_analysis
    from tricl.runs import SHIPPED_RUNS_ROOT, Run, list_runs

    rows = []
    for run in list_runs(SHIPPED_RUNS_ROOT):
        if not isinstance(run, Run) or not run.image_text:
            continue
        text = load_text_analysis(run)
        if text is None:
            rows.append(f"| {run.name} | not analysed | | | | |")
            continue
        z = text.zero_shot
        cells = [z.get(k, float("nan")) for k in ("zero_shot_acc", "i2t_r1", "i2t_r5", "t2i_r1")]
        cells.append(z["t2i_r5"])
        rows.append(f"| {run.name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="timed steps per method")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3, help="epochs of the throughput run")
    p.add_argument("--skip-train", action="store_true", help="skip the real training run")
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    t_tri, t_clip = step_ratio(args.steps, args.batch_size)
    print(f"step time: triclip {t_tri * 1e3:.1f} ms, clip {t_clip * 1e3:.1f} ms"
          f" (batch {args.batch_size}, {torch.get_num_threads()} threads)")  # fmt: skip
    print(f"ratio triclip / clip: {t_tri / t_clip:.3f} (target <= 1.05)")
    if not args.skip_train:
        speed, wall = training_throughput(args.epochs)
        print(f"triclip training: {speed:.0f} images/s ({args.epochs} epochs in {wall:.1f} s)")
    print("\n| shipped run | zero-shot acc | i2t R@1 | i2t R@5 | t2i R@1 | t2i R@5 |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(shipped_zero_shot()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
