"""Training: real (tiny) runs on sklearn's digits, on 2 CPU cores.

The digits are 8x8 pictures the loader upsamples to 28 px; the runs here take them at 12 px (5x
fewer pixels a step, the same training code), which is what keeps this file near a minute.
"""

import json

import pytest
import torch

from tricl.config import ConfigError, RunConfig
from tricl.methods import build_encoder, build_loss, get_method, methods_with_pair
from tricl.runs import STATE_FILE, WEIGHTS_FILE, Run, RunError, read_weights
from tricl.train import (
    TrainingError,
    build_optimizer,
    default_run_name,
    lr_factor,
    train,
)

TINY = dict(
    dataset="digits",
    backbone="small_cnn",
    proj_hidden_dim=32,
    proj_dim=16,
    batch_size=128,
    lr=2e-3,
    warmup_epochs=0,
    image_size=12,
)


def tiny(**kw) -> RunConfig:
    return RunConfig(**{**TINY, "epochs": 1, **kw})


def weights(run: Run) -> dict[str, torch.Tensor]:
    return read_weights(run.path / WEIGHTS_FILE)[0]


def test_train_writes_a_complete_run_directory(tmp_path):
    run = train(tiny(epochs=2), runs_root=tmp_path, progress=False)
    assert run.path == tmp_path / "tricl_digits_small_cnn_k16_seed0"
    assert {p.name for p in run.path.iterdir()} == {
        "config.json",
        "model.safetensors",
        "train_state.pt",
        "metrics.jsonl",
    }
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss", "contrastive", "decorrelation", "lr", "s_min", "s_max", "seconds"):
        assert key in rows[0]
    info = json.loads((run.path / "config.json").read_text())
    assert info["dataset"]["in_channels"] == 1 and len(info["dataset"]["classes"]) == 10
    assert "torch" in info["versions"]
    enc = run.encoder()
    assert not enc.training and enc.importance().shape == (16,)


def test_s_is_optimised_unless_frozen():
    enc_cfg = tiny()
    enc = build_encoder(enc_cfg, 1)
    opt = build_optimizer(enc, enc_cfg)
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert any(p is enc.importance_logits for p in in_opt)
    frozen_cfg = tiny(s_frozen=True)
    enc2 = build_encoder(frozen_cfg, 1)
    opt2 = build_optimizer(enc2, frozen_cfg)
    assert not any(p is enc2.importance_logits for g in opt2.param_groups for p in g["params"])


def test_s_receives_gradient_and_moves_in_training(tmp_path):
    cfg = tiny()
    enc = build_encoder(cfg, 1)
    x1, x2 = torch.randn(8, 1, 12, 12), torch.randn(8, 1, 12, 12)
    get_method(cfg.method).loss_terms(enc, (x1, x2), build_loss(cfg)).total.backward()
    assert enc.importance_logits.grad is not None
    assert enc.importance_logits.grad.abs().sum() > 0

    learned = train(tiny(), runs_root=tmp_path / "a", progress=False)
    frozen = train(tiny(s_frozen=True), runs_root=tmp_path / "b", progress=False)
    torch.manual_seed(0)
    init = build_encoder(cfg, 1).importance_logits.detach()
    assert not torch.allclose(weights(learned)["importance_logits"], init)
    assert torch.equal(weights(frozen)["importance_logits"], init)


@pytest.mark.parametrize("method", methods_with_pair("views"))
def test_a_few_steps_lower_the_loss_for_every_method(method):
    from tricl.data import build_augmentation, load_dataset

    torch.manual_seed(0)
    cfg = tiny(method=method)
    data = load_dataset("digits", image_size=cfg.image_size)
    enc = build_encoder(cfg, data.channels)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    aug = build_augmentation(data)
    xb = data.train_x[:128]
    views = [(aug(xb), aug(xb)) for _ in range(2)]  # fixed views: the loss must fall on them
    losses = []
    for step in range(12):
        x1, x2 = views[step % 2]
        terms = get_method(method).loss_terms(enc, (x1, x2), build_loss(cfg))
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        losses.append(terms.total.item())
    assert sum(losses[-2:]) < sum(losses[:2]), losses


def test_seed_makes_a_cpu_run_repeatable_bit_for_bit(tmp_path):
    a = train(tiny(), runs_root=tmp_path / "a", progress=False)
    b = train(tiny(), runs_root=tmp_path / "b", progress=False)
    c = train(tiny(seed=1), runs_root=tmp_path / "c", progress=False)
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full = train(tiny(epochs=3), runs_root=tmp_path / "full", progress=False)
    part = train(tiny(epochs=3), runs_root=tmp_path / "part", progress=False, stop_after_epoch=1)
    assert part.epochs_done == 1
    resumed = train(resume=part.path, progress=False)
    assert resumed.epochs_done == 3
    wf, wr = weights(full), weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert [r["epoch"] for r in resumed.metrics()] == [1, 2, 3]
    # resuming a finished run is a no-op; without its train state (as shipped) it is refused
    assert train(resume=resumed.path, progress=False).epochs_done == 3
    (resumed.path / STATE_FILE).unlink()
    with pytest.raises(RunError, match=r"finished \(3/3 epochs\).*nothing to resume") as err:
        train(resume=resumed.path, progress=False)
    assert "\n" not in str(err.value)
    assert weights(Run.load(resumed.path))["importance_logits"].equal(wr["importance_logits"])


def test_save_every_checkpoints_every_nth_epoch_and_a_killed_run_resumes_exactly(
    tmp_path, monkeypatch
):
    import tricl.train as train_module

    full = train(tiny(epochs=4), runs_root=tmp_path / "full", progress=False)
    real_epoch = train_module.train_epoch

    def killed_in_epoch_4(s, epoch):
        if epoch == 3:
            raise KeyboardInterrupt  # the process dies mid-epoch
        return real_epoch(s, epoch)

    monkeypatch.setattr(train_module, "train_epoch", killed_in_epoch_4)
    cfg = tiny(epochs=4, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs_root=tmp_path / "every2", progress=False)
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    run = Run.load(tmp_path / "every2" / full.name)
    # epoch 3 was logged but not checkpointed: the run holds epoch 2
    assert run.epochs_done == 2
    assert [r["epoch"] for r in read_metrics_rows(run)] == [1, 2, 3]
    resumed = train(resume=run.path, progress=False)
    assert resumed.epochs_done == 4 and [r["epoch"] for r in resumed.metrics()] == [1, 2, 3, 4]
    wf, wr = weights(full), weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)


def read_metrics_rows(run: Run) -> list[dict]:
    return [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]


def test_save_every_must_be_positive():
    with pytest.raises(ConfigError, match="save_every"):
        tiny(save_every=0)


def test_a_run_killed_before_its_first_checkpoint_resumes_like_a_fresh_run(tmp_path):
    from tricl.data import load_dataset
    from tricl.runs import create_run_dir
    from tricl.train import dataset_facts

    fresh = train(tiny(epochs=2), runs_root=tmp_path / "fresh", progress=False)
    cfg = tiny(epochs=2)
    facts = dataset_facts(load_dataset("digits", image_size=cfg.image_size))
    run_dir = create_run_dir(tmp_path / "killed", cfg, facts, name=fresh.name)  # no checkpoint
    torch.manual_seed(1234)  # whatever the process did before must not matter
    resumed = train(resume=run_dir, progress=False)
    wf, wr = weights(fresh), weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)


def test_resume_rolls_an_interrupted_checkpoint_forward(tmp_path):
    run = train(tiny(epochs=2), runs_root=tmp_path, progress=False, stop_after_epoch=1)
    # crash between the two renames: the new model is in place, the new state still a temporary
    state = run.path / STATE_FILE
    state.rename(run.path / (STATE_FILE + ".tmp"))
    resumed = train(resume=run.path, progress=False)
    assert resumed.epochs_done == 2
    assert not list(run.path.glob("*.tmp"))


def test_tampered_weights_are_refused_on_resume(tmp_path):
    run = train(tiny(epochs=2), runs_root=tmp_path, progress=False, stop_after_epoch=1)
    data = bytearray((run.path / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the last tensor: still parses
    (run.path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(RunError, match="does not match"):
        train(resume=run.path, progress=False)


def test_existing_run_is_never_overwritten(tmp_path):
    run = train(tiny(), runs_root=tmp_path, progress=False)
    before = (run.path / WEIGHTS_FILE).read_bytes()
    with pytest.raises(RunError, match=r"already exists.*--resume"):
        train(tiny(), runs_root=tmp_path, progress=False)
    assert (run.path / WEIGHTS_FILE).read_bytes() == before


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    run = train(tiny(epochs=3), runs_root=tmp_path, progress=False, stop_after_epoch=1)
    before = (run.path / WEIGHTS_FILE).read_bytes()
    cfg_path = run.path / "config.json"
    info = json.loads(cfg_path.read_text())
    info["config"]["lr"] = 1e30  # a learning rate that blows the weights up
    cfg_path.write_text(json.dumps(info))
    with pytest.raises(TrainingError, match=r"non-finite.*lower --lr") as err:
        train(resume=run.path, progress=False)
    assert "\n" not in str(err.value)
    assert (run.path / WEIGHTS_FILE).read_bytes() == before
    assert Run.load(run.path).epochs_done == 1


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"method": "byol"}, "unknown method"),
        ({"dataset": "imagenet"}, "unknown dataset"),
        ({"backbone": "vit"}, "unknown backbone"),
        ({"temperature": 0.0}, "temperature"),
        ({"batch_size": 1}, "batch_size"),
        ({"s_placement": "left"}, "s_placement"),
    ],
)
def test_bad_config_is_one_clear_line(kw, match):
    with pytest.raises(ConfigError, match=match) as err:
        tiny(**kw)
    assert "\n" not in str(err.value)


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("dataset", "part"),
    [
        ("mnist5k", "mnist5k"),
        ("folder:/data/my.pets", "folder-my.pets"),
        ("folder:/data/pets/", "folder-pets"),
        ("captions:/data/pairs.csv", "captions-pairs"),
        ("captions:relative/dir/pairs.tsv", "captions-pairs"),
        ("wds:/data/shards/shard-{0000..0099}.tar", "wds-shards"),
        ("wds:/data/cc/*.tar", "wds-cc"),
    ],
)
def test_a_dataset_path_gives_one_folder_name(dataset: str, part: str) -> None:
    method = "clip" if dataset.startswith("captions:") else "tricl"
    name = default_run_name(RunConfig(method=method, dataset=dataset, seed=3))
    assert name == f"{method}_{part}_small_cnn_k64_seed3" and "/" not in name


def test_a_second_trainer_of_a_run_is_refused_and_changes_nothing(tmp_path):
    import subprocess
    import sys

    part = train(tiny(epochs=3), runs_root=tmp_path, progress=False, stop_after_epoch=1)
    files = lambda: {p.name: p.read_bytes() for p in part.path.iterdir()}  # noqa: E731
    # another process trains the run (it holds the lock, as train() does until it returns)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from tricl.runs import training_lock\n"
            "with training_lock(Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(120)",
            str(part.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = files()
        with pytest.raises(RunError, match=rf"another process \(pid {holder.pid}\).*resume") as err:
            train(resume=part.path, progress=False)
        assert "\n" not in str(err.value)
        assert files() == before  # no checkpoint recovered, no metric row trimmed or added
    finally:
        holder.kill()  # a killed trainer's lock goes with it (the kernel releases it)
        holder.wait()
    assert train(resume=part.path, progress=False).epochs_done == 3


def test_the_training_lock_writes_nothing_and_refuses_a_second_holder(tmp_path):
    from tricl.runs import SHIPPED_RUNS_ROOT, training_lock

    shipped = next(p for p in sorted(SHIPPED_RUNS_ROOT.iterdir()) if (p / "config.json").exists())
    for folder in (shipped, tmp_path):
        before = sorted(folder.rglob("*"))
        held = pytest.raises(RunError, match="another process")
        with training_lock(folder), held, training_lock(folder):
            pass
        with training_lock(folder / "config.json"):  # not a folder: open_for_resume refuses it
            pass
        assert sorted(folder.rglob("*")) == before  # the lock writes nothing


def _cli_train(tmp_path, *extra: str) -> list[str]:
    return ["train", "--dataset", "digits", "--proj-hidden-dim", "16", "--proj-dim", "8",
            "--batch-size", "512", "--epochs", "2", "--warmup-epochs", "0", "--device", "cpu",
            "--image-size", "12",
            "--runs-root", str(tmp_path), *extra]  # fmt: skip


@pytest.mark.parametrize(("method", "shown", "absent"), [
    ("simclr", {"mean_con"}, {"dec", "mean_dec"}),
    ("tricl", {"mean_con", "mean_dec"}, set()),
])  # fmt: skip
def test_the_progress_bar_shows_the_methods_terms_and_ends_on_the_summary_loss(
    tmp_path, capsys, method, shown, absent
):
    import re

    from tricl.cli import main

    assert main(_cli_train(tmp_path, "--method", method)) == 0
    out, err = capsys.readouterr()
    keys = set(re.findall(r"(\w+)=[-\d.]+", err))
    assert shown <= keys and not (absent & keys), keys
    bar_last = re.findall(r"mean_loss=([-\d.]+)", err)[-1]
    summary = re.search(r"final loss ([-\d.]+), the mean of the last epoch", out)
    assert summary is not None and summary.group(1) == bar_last


def test_resume_of_a_finished_run_says_it_was_already_complete(tmp_path, capsys):
    from tricl.cli import main

    assert main(_cli_train(tmp_path, "--method", "simclr", "--no-progress")) == 0
    first = capsys.readouterr().out
    assert "already complete" not in first
    run_dir = tmp_path / "simclr_digits_small_cnn_k8_seed0"
    before = (run_dir / "model.safetensors").read_bytes()
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{run_dir} was already complete (2/2 epochs); nothing to train" in out
    assert (run_dir / "model.safetensors").read_bytes() == before
