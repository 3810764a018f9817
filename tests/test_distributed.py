"""Two gloo processes on one global batch give the loss and gradients of one process."""

import os
import subprocess
import sys

import pytest
import torch
from gloo_pair import run_two_ranks

from tricl.config import RunConfig
from tricl.methods import build_encoder, build_loss, get_method

B = 16


def _setup(method: str):
    cfg = RunConfig(method=method, dataset="digits", proj_hidden_dim=32, proj_dim=8, batch_size=B)
    torch.manual_seed(0)
    enc = build_encoder(cfg, 1).eval()  # eval: batch-norm statistics are not per-rank
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(B, 1, 28, 28, generator=g)
    x2 = torch.randn(B, 1, 28, 28, generator=g)
    return cfg, enc, x1, x2


WORKER = """
import sys, torch, torch.distributed as dist
from test_distributed import B, _setup
from tricl.methods import build_loss, get_method
rank, world, init_file, method, out = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
torch.set_num_threads(1)
cfg, enc, x1, x2 = _setup(method)
model = torch.nn.parallel.DistributedDataParallel(enc)
share = slice(rank * B // world, (rank + 1) * B // world)
terms = get_method(method).loss_terms(model, (x1[share], x2[share]), build_loss(cfg))
terms.total.backward()
if rank == 0:
    grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
    torch.save({"loss": terms.total.detach(), "grads": grads}, out)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "tricl", "tri-eigen"])
def test_two_process_gloo_equals_one_process(tmp_path, method):
    cfg, enc, x1, x2 = _setup(method)
    ref = get_method(method).loss_terms(enc, (x1, x2), build_loss(cfg))
    ref.total.backward()
    got = run_two_ranks(WORKER, tmp_path, method)
    torch.testing.assert_close(got["loss"], ref.total.detach(), rtol=1e-5, atol=1e-6)
    ref_grads = {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}
    assert set(got["grads"]) == set(ref_grads)
    if enc.importance_logits is not None:
        assert "importance_logits" in got["grads"]
    if enc.head is not None:  # the head solved its map from the gathered global batch
        assert ref.total.isfinite() and float(enc.head.steps) == 1
    for n, g in ref_grads.items():
        if enc.head is None:
            torch.testing.assert_close(got["grads"][n], g, rtol=1e-4, atol=1e-6, msg=n)
            continue
        # through a whitening of 32 samples, float32 rounding of the gathered features reaches
        # single entries at 1e-4 of the gradient's size; the whole tensor must still agree
        error = float((got["grads"][n] - g).norm() / g.norm().clamp_min(1e-12))
        assert error < 1e-4, (n, error)


@pytest.mark.slow
def test_torchrun_trains_a_run_with_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRICL_RUNS": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "tricl",
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--proj-dim",
        "8",
        "--proj-hidden-dim",
        "32",
        "--batch-size",
        "128",
        "--no-progress",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1 and (runs[0] / "model.safetensors").exists()
    assert proc.stdout.count("run ") == 1  # only rank 0 reports
