"""The same tensors give the same ``model.safetensors`` bytes (issue 23, item 3).

safetensors writes the header's ``__metadata__`` in hash-map order, which changes from call to
call and process to process; tricl rewrites it sorted. The analysis caches are keyed by the
weights file's hash, and a bit-identical resume is checked with ``sha256sum``, so the bytes, not
only the tensors, must agree.
"""

import json

import pytest
import torch
from safetensors.torch import load

from tricl.runs import (
    SHIPPED_RUNS_ROOT,
    WEIGHTS_FILE,
    canonical_safetensors,
    file_sha256,
    weights_to_bytes,
)

META = {k: str(i) for i, k in enumerate(["format", "epoch", "imported", "zeta", "alpha", "mid"])}


def _header(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])


def test_weights_bytes_do_not_depend_on_the_metadata_order():
    state = {"b.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.ones(3, dtype=torch.int64)}
    blobs = {weights_to_bytes(state, dict(META)) for _ in range(8)}
    assert len(blobs) == 1  # safetensors alone gives several orders of 6 keys in 8 calls
    data = blobs.pop()
    assert list(_header(data)["__metadata__"]) == sorted(META)
    tensors = load(data)
    assert tensors.keys() == state.keys() and all(tensors[k].equal(state[k]) for k in state)


def test_the_canonical_form_of_a_shipped_weights_file_is_the_file_itself():
    # the shipped runs' bytes (and so their analysis caches' key) must not change; their header
    # already has the keys in sorted order, and the rewrite gives back exactly safetensors' layout
    path = next(p for p in sorted(SHIPPED_RUNS_ROOT.glob(f"*/{WEIGHTS_FILE}")))
    data = path.read_bytes()
    assert canonical_safetensors(data) == data


@pytest.mark.slow
def test_two_same_seed_runs_write_the_same_weights_file(image_folder, tmp_path, cli, train_args):
    hashes = set()
    for i in range(3):  # three processes: an unsorted header would differ in most of them
        done = cli(train_args(image_folder, tmp_path / f"root{i}", epochs=1))
        assert done.returncode == 0, done.stderr[-2000:]
        hashes.add(file_sha256(tmp_path / f"root{i}" / "r" / WEIGHTS_FILE))
    assert len(hashes) == 1
