"""Run directories: loading, listing, atomic writes, refusing unsafe checkpoints, import."""

import argparse
import os
import pickle

import pytest
import torch

from tricl.config import RunConfig
from tricl.foreign import import_checkpoint
from tricl.models import Encoder
from tricl.runs import (
    STATE_FILE,
    WEIGHTS_FILE,
    BrokenRun,
    Run,
    RunError,
    atomic_write_bytes,
    list_runs,
    load_state_file,
)
from tricl.train import train

TINY = RunConfig(
    dataset="digits", proj_hidden_dim=32, proj_dim=16, batch_size=128, epochs=1, warmup_epochs=0
)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(TINY, runs_root=root, progress=False)
    return root


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    class Boom(Exception):
        pass

    from tricl.runs import atomic_path

    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise Boom
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_truncated_weights_are_a_one_line_error(runs_root, tmp_path):
    src = Run.load(next(runs_root.iterdir()))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in src.path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = (broken / WEIGHTS_FILE).read_bytes()
    (broken / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="truncated or corrupt") as err:
        Run.load(broken)  # the header check catches it before any tensor is read
    assert "\n" not in str(err.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_train_state_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / STATE_FILE
    torch.save({"epoch": 1, "payload": _Evil()}, path)
    with pytest.raises(RunError, match="cannot be loaded safely") as err:
        load_state_file(path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "PWNED").exists() and not os.path.exists("PWNED")


def test_missing_weights_and_missing_config_are_clear(tmp_path):
    (tmp_path / "nocfg").mkdir()
    with pytest.raises(RunError, match="not a tricl run"):
        Run.load(tmp_path / "nocfg")
    with pytest.raises(RunError, match="does not exist"):
        Run.load(tmp_path / "nothere")


def test_list_runs_marks_broken_runs_and_keeps_the_others(runs_root, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    good = next(p for p in runs_root.iterdir() if p.is_dir())
    (root / good.name).mkdir()
    for f in good.iterdir():
        (root / good.name / f.name).write_bytes(f.read_bytes())
    (root / "zz_broken").mkdir()
    (root / "zz_broken" / "config.json").write_text("{not json")
    (root / "_compare").mkdir()  # internal folders are not runs
    runs = list_runs(root)
    assert [type(r) for r in runs] == [Run, BrokenRun]
    assert "unreadable" in runs[1].reason
    assert runs[0].summary()["method"] == "tricl"


def _official_state_dict(batchnorm: bool, with_s: bool) -> dict[str, torch.Tensor]:
    enc = Encoder(
        "resnet18_cifar",
        3,
        proj_hidden_dim=64,
        proj_dim=24,
        proj_batchnorm=batchnorm,
    )
    sd = {
        f"backbone.{k[len('backbone.') :]}": v
        for k, v in enc.state_dict().items()
        if k.startswith("backbone.")
    }
    sd.update({k: v for k, v in enc.state_dict().items() if k.startswith("projector.")})
    if with_s:
        sd["scale_param"] = torch.randn(24) * 0.1
    sd["classifier.weight"] = torch.randn(10, 512)  # online linear head: ignored on import
    return sd


@pytest.mark.parametrize("batchnorm", [False, True])
def test_import_official_checkpoint_with_hyperparameter_objects(tmp_path, batchnorm):
    sd = _official_state_dict(batchnorm, with_s=True)
    ns = argparse.Namespace(temperature=0.2, method="simclr")  # not loadable with weights_only
    ckpt = {"epoch": 199, "state_dict": sd, "hyper_parameters": {"cfg": ns, "tau": 1.0}}
    path = tmp_path / "tricl-cifar10.ckpt"
    torch.save(ckpt, path)
    run = import_checkpoint(path, runs_root=tmp_path / "runs")
    assert run.config.method == "tricl" and run.config.backbone == "resnet18_cifar"
    assert run.config.s_placement == "first_view" and run.config.s_frozen
    assert (run.config.proj_dim, run.config.proj_hidden_dim) == (24, 64)
    enc = run.encoder()
    torch.testing.assert_close(enc.importance_logits.detach(), sd["scale_param"])
    torch.testing.assert_close(enc.backbone.conv1.weight.detach(), sd["backbone.conv1.weight"])
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 24)


def test_import_never_executes_code_from_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sd = _official_state_dict(False, with_s=False)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": {"x": _Evil()}}, path)
    with pytest.raises(RunError, match="never runs code") as err:
        import_checkpoint(path, runs_root=tmp_path / "runs")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "runs").exists()


def test_import_rejects_non_checkpoints_without_leaving_a_run(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"hello": 1})[:10])
    with pytest.raises(RunError, match="not a readable PyTorch checkpoint"):
        import_checkpoint(bad, runs_root=tmp_path / "runs")
    no_bb = tmp_path / "nobb.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, no_bb)
    with pytest.raises(RunError, match=r"lacks backbone\.conv1\.weight"):
        import_checkpoint(no_bb, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_new_runs_go_to_the_user_root_and_the_shipped_root_is_the_repos(monkeypatch, tmp_path):
    from pathlib import Path

    from tricl.runs import SHIPPED_RUNS_ROOT, default_runs_root, run_roots

    assert Path(__file__).resolve().parents[1] / "checkpoints" == SHIPPED_RUNS_ROOT
    monkeypatch.delenv("TRICL_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_runs_root() == Path("runs")
    assert run_roots()[0] == Path("runs")
    monkeypatch.setenv("TRICL_RUNS", str(tmp_path / "mine"))
    assert default_runs_root() == tmp_path / "mine"


def test_shipped_runs_load_unchanged_and_new_runs_keep_their_format(runs_root):
    import json

    from tricl.runs import SHIPPED_RUNS_ROOT

    shipped = [r for r in list_runs(SHIPPED_RUNS_ROOT) if isinstance(r, Run)]
    if not shipped:
        pytest.skip("no shipped runs in checkpoints/")
    assert not [r for r in list_runs(SHIPPED_RUNS_ROOT) if isinstance(r, BrokenRun)]
    new = json.loads((next(runs_root.iterdir()) / "config.json").read_text())
    for run in shipped:
        assert run.shipped and run.epochs_done == run.config.epochs == 15
        # format, config, dataset, versions, git_commit, created (+ the text encoder of a
        # clip / triclip run, which the image run that the fixture trains has not)
        assert set(run.info) == set(new) | ({"text_encoder"} if run.image_text else set())
        assert set(run.info["dataset"]) == set(new["dataset"])
        assert set(run.info["config"]) <= set(new["config"])
        assert run.summary()["final_loss"] == run.metrics()[-1]["loss"]


def test_one_function_creates_runs_and_records_a_parent(tmp_path):
    import json

    from tricl.runs import create_run_dir

    cfg = TINY.replace(name="derived")
    facts = {"in_channels": 1, "image_size": 8, "classes": ["a"]}
    path = create_run_dir(tmp_path, cfg, facts, name="derived", parent="../base")
    info = json.loads((path / "config.json").read_text())
    assert info["parent"] == "../base" and info["format"] == "tricl-run-1"
    assert info["config"] == cfg.to_dict() and info["dataset"] == facts
    assert {"versions", "git_commit", "created"} <= set(info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derived"]  # nothing half-built left
    with pytest.raises(RunError, match="already exists"):
        create_run_dir(tmp_path, cfg, facts, name="derived")


@pytest.mark.parametrize(
    ("config_json", "reason"),
    [
        ("{}", "no 'config' object"),
        ('{"config": {}, "dataset": {"in_channels": 1}}', "lacks the required keys"),
        ('{"config": [], "dataset": {"in_channels": 1}}', "no 'config' object"),
        ("[1, 2]", "no 'config' object"),
    ],
)
def test_an_incomplete_config_is_broken_not_filled_with_defaults(
    runs_root, tmp_path, config_json, reason
):
    good = next(p for p in runs_root.iterdir() if p.is_dir())
    (tmp_path / "r").mkdir()
    for f in good.iterdir():
        (tmp_path / "r" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "r" / "config.json").write_text(config_json)
    (broken,) = list_runs(tmp_path)
    assert isinstance(broken, BrokenRun) and reason in broken.reason


def test_log_epoch_replaces_that_epoch_and_later_lines(tmp_path):
    from tricl.runs import log_epoch, read_metrics, write_metrics

    write_metrics(tmp_path, [{"epoch": e, "loss": float(e)} for e in (1, 2, 3)])
    log_epoch(tmp_path, {"epoch": 2, "loss": 0.5})  # epoch 2 re-run after a resume
    assert read_metrics(tmp_path) == [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary, renamed into place
