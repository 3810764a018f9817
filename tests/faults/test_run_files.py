"""Every file of a run directory damaged in every way: `tricl runs` and `--resume` stay clean.

A damaged config, weights file or train state makes the run BROKEN in `tricl runs` (exit 0, one
line with the reason) and `tricl train --resume` refuses it (exit 2, one line). metrics.jsonl is a
log: a damaged one keeps the run usable, and resume goes on with the readable lines.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from tricl.cli import main
from tricl.config import RunConfig
from tricl.runs import METRICS_FILE, STATE_FILE, WEIGHTS_FILE, Run, read_metrics, weights_to_bytes
from tricl.train import train


@pytest.fixture(scope="module")
def half_run(image_folder, tmp_path_factory):
    """A 2-epoch run stopped after epoch 1 (so --resume has work to do)."""
    cfg = RunConfig(
        dataset=f"folder:{image_folder}",
        proj_hidden_dim=16,
        proj_dim=8,
        epochs=2,
        batch_size=8,
        warmup_epochs=0,
        name="r",
    )
    root = tmp_path_factory.mktemp("base")
    return train(cfg, runs_root=root, progress=False, stop_after_epoch=1).path


def _garbage(data: bytes) -> bytes:
    return np.random.default_rng(0).integers(0, 256, max(len(data), 64), dtype=np.uint8).tobytes()


def _other_format(name: str, data: bytes, tmp_path) -> bytes:
    """Well-formed bytes of the wrong kind for ``name``."""
    if name == WEIGHTS_FILE:  # a torch.save archive where safetensors belongs
        torch.save({"w": torch.zeros(2)}, tmp_path / "x.pt")
        return (tmp_path / "x.pt").read_bytes()
    if name == STATE_FILE:  # safetensors where a torch.save archive belongs
        return weights_to_bytes({"w": torch.zeros(2)}, {"epoch": "1"})
    return b'[1, 2]\n"epoch"\n{"epoch": "one"}\n'  # JSON, but not the objects expected


DAMAGES = {
    "truncated": lambda name, data, tmp: data[: len(data) // 2],
    "emptied": lambda name, data, tmp: b"",
    "garbage": lambda name, data, tmp: _garbage(data),
    "other_format": _other_format,
}
FILES = ["config.json", WEIGHTS_FILE, STATE_FILE, METRICS_FILE]
# JSON configs of the wrong shape, and a train state that is a valid archive of the wrong object
EXTRA = [
    ("config.json", "empty_object"),
    ("config.json", "missing_keys"),
    ("config.json", "wrong_types"),
    (STATE_FILE, "valid_archive_wrong_object"),
]


def _damage(run_dir, name, how, tmp_path) -> None:
    path = run_dir / name
    data = path.read_bytes()
    if how in DAMAGES:
        path.write_bytes(DAMAGES[how](name, data, tmp_path))
    elif how == "empty_object":
        path.write_bytes(b"{}")
    elif how == "missing_keys":
        info = json.loads(data)
        del info["config"]["proj_dim"]
        path.write_text(json.dumps(info))
    elif how == "wrong_types":
        info = json.loads(data)
        info["config"]["proj_dim"] = "eight"
        path.write_text(json.dumps(info))
    else:
        torch.save([1, 2, 3], path)


CASES = [(f, h) for f in FILES for h in DAMAGES] + EXTRA


@pytest.mark.parametrize(("name", "how"), CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_a_damaged_run_file_is_listed_and_refused_in_one_line(
    half_run, tmp_path, capsys, name, how
):
    root = tmp_path / "runs"
    run_dir = root / "r"
    shutil.copytree(half_run, run_dir)
    _damage(run_dir, name, how, tmp_path)

    assert main(["runs", "--runs-root", str(root)]) == 0
    out = capsys.readouterr()
    row = next(line for line in out.out.splitlines() if line.startswith("r "))
    log_only = name == METRICS_FILE
    light_check = (name, how) == (STATE_FILE, "valid_archive_wrong_object")  # needs a full load
    if log_only or light_check:
        assert "BROKEN" not in row and "1/2" in row, row
    else:
        assert "BROKEN: " in row and name in row, row
    assert out.err == ""

    code = main(["train", "--resume", str(run_dir), "--no-progress"])
    err = capsys.readouterr().err.strip()
    if log_only:  # the log is rebuilt from its readable lines and training goes on
        assert code == 0 and err == ""
        assert Run.load(run_dir).epochs_done == 2
        assert read_metrics(run_dir)[-1]["epoch"] == 2
    else:
        assert code == 2
        assert err.startswith("error: ") and "\n" not in err, err
        assert name in err or "train state" in err, err


def test_metrics_past_the_weights_are_ignored_and_trimmed_on_resume(half_run, tmp_path, capsys):
    """A kill between the metrics line and the weights: the weights' epoch is the truth."""
    run_dir = tmp_path / "runs" / "r"
    shutil.copytree(half_run, run_dir)
    rows = read_metrics(run_dir)
    with open(run_dir / METRICS_FILE, "a") as fh:
        fh.write(json.dumps({**rows[0], "epoch": 2, "loss": 123.0}) + "\n")
    run = Run.load(run_dir)
    assert run.epochs_done == 1 and [r["epoch"] for r in run.metrics()] == [1]
    assert run.summary()["epochs"] == "1/2" and run.summary()["final_loss"] != 123.0
    assert main(["runs", "--runs-root", str(run_dir.parent)]) == 0
    assert "1/2" in capsys.readouterr().out
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["loss"] != 123.0
