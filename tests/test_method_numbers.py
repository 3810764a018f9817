"""A method's numbers do not move when its code moves: tiny deterministic runs of every method
that existed before the methods became one file each, against losses recorded from that code.

``tests/data/method_losses.json`` was written by ``python tests/test_method_numbers.py --write``
on the code before the move (commit message says which); each entry holds the per-epoch means of
the loss terms of a 2-epoch run of 2 steps per epoch (4 optimizer steps), the S / temperature
statistics, and the trained encoder's features of one fixed batch (which covers the
end-of-training hook, e.g. tri-eigen's refit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from test_image_text_train import write_caption_csv

from tricl.config import RunConfig
from tricl.train import train

GOLDEN = Path(__file__).parent / "data" / "method_losses.json"
VIEWS = ("simclr", "tricl", "spectral", "tri-spectral", "neuralef", "tri-eigen")
CAPTIONS = ("clip", "triclip")
ROW_KEYS = ("loss", "contrastive", "decorrelation", "s_min", "s_max", "s_mean", "temperature")
COMMON = dict(
    proj_hidden_dim=16, proj_dim=8, epochs=2, warmup_epochs=0, lr=2e-3, seed=0, device="cpu",
    precision="fp32", save_every=2,
)  # fmt: skip


def tiny_config(method: str, csv: Path) -> RunConfig:
    """A 2-epoch run of 2 steps per epoch: digits (1437 train images) at batch 512, or the test
    CSV's 40 captioned images at batch 16."""
    if method in CAPTIONS:
        text = dict(text_width=16, text_heads=2, text_layers=1, text_context_length=12)
        return RunConfig(method=method, dataset=f"captions:{csv}", batch_size=16, **text, **COMMON)
    return RunConfig(method=method, dataset="digits", batch_size=512, **COMMON)


def numbers(method: str, root: Path) -> dict[str, list[float]]:
    """The recorded numbers of one tiny run of ``method`` (trained under ``root``)."""
    csv = root / "captions" / "pairs.csv"
    if not csv.exists():
        write_caption_csv(root / "captions")
    torch.set_num_threads(1)
    run = train(tiny_config(method, csv), runs_root=root / "runs", progress=False)
    out = {k: [float(r[k]) for r in run.metrics()] for k in ROW_KEYS if k in run.metrics()[0]}
    enc = run.encoder()
    g = torch.Generator().manual_seed(0)
    size = 16 if method in CAPTIONS else 28
    x = torch.rand(8, 1, size, size, generator=g)
    with torch.no_grad():
        z = enc(x)  # (8, k)
    out["features"] = z.flatten()[:16].tolist()
    s = enc.importance()
    if s is not None:
        out["importance"] = s.float().tolist()
    return out


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, list[float]]]:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("method", VIEWS + CAPTIONS)
def test_a_retrained_run_matches_the_numbers_of_the_code_before(method, golden, tmp_path):
    got = numbers(method, tmp_path)
    want = golden[method]
    assert sorted(got) == sorted(want)
    for key, values in want.items():
        assert got[key] == pytest.approx(values, rel=1e-4, abs=1e-5), (method, key)


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_method_numbers.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        table = {m: numbers(m, Path(tmp) / m) for m in VIEWS + CAPTIONS}
    GOLDEN.write_text(json.dumps(table, indent=1) + "\n")
