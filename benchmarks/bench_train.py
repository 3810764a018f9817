"""Training benchmarks, measured in one run on this machine and printed as ratios.

1. step time of tricl / simclr (same encoder, same batch; target <= 1.05): the tri-factor loss
   must add almost nothing to a training step;
2. augmentation throughput of the batched on-device kornia pipeline against a per-image
   torchvision pipeline with the same recipe, on the same images;
3. training images/s of small_cnn (28x28, mnist5k) and resnet18_cifar (32x32) on this CPU;
4. step time of ``--precision bf16`` / fp32 on the CIFAR study's recipe (small_cnn, 3x32x32,
   k = 128): bf16 autocast pays off where the CPU has AVX-512 BF16 or AMX (printed);
5. step time of tri-eigen / simclr on the same recipe: tri-eigen's head re-solves a k x k
   eigenproblem every step (target <= 1.10 at k = 128);
6. step time of channels-last / default (contiguous) memory layout on the same recipe, in bf16
   and fp32: training converts the encoder and both views to channels-last on every device.

Usage: python benchmarks/bench_train.py [--steps 20] [--batch-size 256] [--only 4 5 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tricl.config import RunConfig
from tricl.data import build_augmentation, load_dataset
from tricl.methods import build_encoder, build_loss, get_method
from tricl.train import amp_context, build_optimizer


def time_steps(
    cfg: RunConfig, x: torch.Tensor, steps: int, layout: torch.memory_format = torch.channels_last
) -> list[float]:
    """Seconds per optimizer step (forward both views, loss, backward, step) after 3 warmups.

    layout: the memory format of the encoder and the views (training uses channels-last).
    """
    torch.manual_seed(0)
    enc = build_encoder(cfg, x.shape[1]).to(memory_format=layout)
    opt = build_optimizer(enc, cfg)
    x1, x2 = x.contiguous(memory_format=layout), x.flip(-1).contiguous(memory_format=layout)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        with amp_context(torch.device("cpu"), cfg.precision):
            terms = get_method(cfg.method).loss_terms(enc, (x1, x2), build_loss(cfg))
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return times


def interleaved_ratio(
    a: RunConfig,
    b: RunConfig,
    x: torch.Tensor,
    steps: int,
    rounds: int = 5,
    layouts: tuple[torch.memory_format, torch.memory_format] = (torch.channels_last,) * 2,
):
    """Median step time of a and b, measured in alternating rounds (drift hits both alike)."""
    ta, tb = [], []
    for _ in range(rounds):
        ta += time_steps(a, x, steps // rounds + 1, layouts[0])
        tb += time_steps(b, x, steps // rounds + 1, layouts[1])
    return statistics.median(ta), statistics.median(tb)


def torchvision_digits_pipeline(size: int, mean, std):
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(0.8, 1.25), antialias=True),
            v2.RandomAffine(degrees=15, translate=(0.1, 0.1)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
            v2.RandomErasing(p=0.25, scale=(0.02, 0.1)),
        ]
    )


def augmentation_throughput(n: int = 2048, batch: int = 256) -> tuple[float, float]:
    """Images/s of the batched kornia pipeline and of a per-image torchvision pipeline."""
    data = load_dataset("mnist5k")
    x = data.train_x[:n]
    aug = build_augmentation(data)
    aug(x[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        aug(x[i : i + batch])
    batched = n / (time.perf_counter() - t0)
    tv = torchvision_digits_pipeline(data.image_size, data.mean, data.std)
    t0 = time.perf_counter()
    for img in x:
        tv(img)
    per_image = n / (time.perf_counter() - t0)
    return batched, per_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--only", type=int, nargs="+", choices=range(1, 7), default=range(1, 7), help="parts"
    )
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")

    base = dict(
        dataset="mnist5k",
        backbone="small_cnn",
        proj_hidden_dim=512,
        proj_dim=64,
        batch_size=args.batch_size,
    )
    if 1 in args.only:
        _tri_vs_simclr(base, args)
    if 2 in args.only:
        batched, per_image = augmentation_throughput()
        print(
            f"[2] augmentation: batched kornia {batched:,.0f} img/s, per-image torchvision"
            f" {per_image:,.0f} img/s, ratio = {batched / per_image:.1f}x"
        )
    if 3 in args.only:
        _images_per_second(args)
    cifar = dict(base, dataset="cifar10", proj_dim=128, method="simclr")
    x = torch.randn(args.batch_size, 3, 32, 32)
    if 4 in args.only:
        _bf16_vs_fp32(cifar, x, args)
    if 5 in args.only:
        _eigen_vs_simclr(cifar, x, args)
    if 6 in args.only:
        _layouts(cifar, x, args)


def _tri_vs_simclr(base: dict, args: argparse.Namespace) -> None:
    x = torch.randn(args.batch_size, 1, 28, 28)
    t_tri, t_sim = interleaved_ratio(
        RunConfig(method="tricl", **base), RunConfig(method="simclr", **base), x, args.steps
    )
    print(
        f"[1] step time small_cnn: tricl {t_tri * 1e3:.1f} ms, simclr {t_sim * 1e3:.1f} ms,"
        f" ratio tricl/simclr = {t_tri / t_sim:.3f} (target <= 1.05)"
    )


def _images_per_second(args: argparse.Namespace) -> None:
    for backbone, shape in (("small_cnn", (1, 28, 28)), ("resnet18_cifar", (3, 32, 32))):
        bs = args.batch_size if backbone == "small_cnn" else 64
        cfg = RunConfig(
            method="tricl", backbone=backbone, proj_hidden_dim=512, proj_dim=64, batch_size=bs
        )
        steps = args.steps if backbone == "small_cnn" else 4
        t = statistics.median(time_steps(cfg, torch.randn(bs, *shape), steps))
        print(
            f"[3] training {backbone} {shape[1]}x{shape[2]}: {bs / t:,.0f} img/s"
            f" ({t * 1e3:.0f} ms/step at batch {bs}, two views each)"
        )


def _bf16_vs_fp32(cifar: dict, x: torch.Tensor, args: argparse.Namespace) -> None:
    t_bf16, t_fp32 = interleaved_ratio(
        RunConfig(**cifar, precision="bf16"), RunConfig(**cifar, precision="fp32"), x, args.steps
    )
    print(
        f"[4] step time small_cnn 3x32x32, k 128: bf16 {t_bf16 * 1e3:.0f} ms, fp32"
        f" {t_fp32 * 1e3:.0f} ms, ratio bf16/fp32 = {t_bf16 / t_fp32:.2f} (CPU capability:"
        f" {torch.backends.cpu.get_cpu_capability()})"
    )


def _eigen_vs_simclr(cifar: dict, x: torch.Tensor, args: argparse.Namespace) -> None:
    t_eigen, t_simclr = interleaved_ratio(
        RunConfig(**{**cifar, "method": "tri-eigen"}), RunConfig(**cifar), x, args.steps
    )
    print(
        f"[5] step time small_cnn 3x32x32, k 128: tri-eigen {t_eigen * 1e3:.0f} ms, simclr"
        f" {t_simclr * 1e3:.0f} ms, ratio tri-eigen/simclr = {t_eigen / t_simclr:.3f}"
        " (target <= 1.10)"
    )


def _layouts(cifar: dict, x: torch.Tensor, args: argparse.Namespace) -> None:
    for precision in ("bf16", "fp32"):
        cfg = RunConfig(**cifar, precision=precision)
        t_last, t_default = interleaved_ratio(
            cfg, cfg, x, args.steps, layouts=(torch.channels_last, torch.contiguous_format)
        )
        print(
            f"[6] step time small_cnn 3x32x32, k 128, {precision}: channels-last"
            f" {t_last * 1e3:.0f} ms, default layout {t_default * 1e3:.0f} ms, ratio ="
            f" {t_last / t_default:.2f}"
        )


if __name__ == "__main__":
    main()
