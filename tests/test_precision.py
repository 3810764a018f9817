"""RunConfig.precision: bf16 autocast training on a CPU, real (tiny) runs on sklearn's digits."""

import sys
import types

import pytest
import torch
from test_train import tiny, weights  # the training tests' tiny recipe

from tricl.analysis import analyze
from tricl.config import ConfigError, RunConfig
from tricl.experiments.common import Variant, train_seeds
from tricl.runs import RunError
from tricl.train import amp_context, train


def test_unknown_precision_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"unknown precision 'fp16'.*--precision auto") as err:
        tiny(precision="fp16")
    assert "\n" not in str(err.value)


def test_old_runs_without_the_field_keep_their_arithmetic():
    old = tiny().to_dict()
    del old["precision"]  # a config.json written before the field existed
    assert RunConfig.from_dict(old).precision == "auto"


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("auto", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16)],
)
def test_amp_context_on_a_cpu(precision, dtype):
    layer = torch.nn.Linear(4, 3)
    with amp_context(torch.device("cpu"), precision):
        assert layer(torch.randn(2, 4)).dtype == dtype


@pytest.mark.parametrize("method", ["tricl", "tri-eigen"])
def test_bf16_training_runs_and_resumes_bit_for_bit(tmp_path, method):
    # 12-px digits: bf16 autocast is emulated on most CPUs, 2.4x slower a step at 28 px
    cfg = tiny(method=method, epochs=2, precision="bf16", image_size=12)
    full = train(cfg, runs_root=tmp_path / "full", progress=False)
    rows = full.metrics()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert full.config.precision == "bf16"  # saved with the run, so a resume keeps it
    part = train(cfg, runs_root=tmp_path / "part", progress=False, stop_after_epoch=1)
    resumed = train(resume=part.path, progress=False)
    wf, wr = weights(full), weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    # and the weights stay float32: autocast changes the arithmetic, not the parameters
    assert all(v.dtype in (torch.float32, torch.float64, torch.int64) for v in wf.values())
    fp32 = train(
        tiny(method=method, epochs=2, image_size=12), runs_root=tmp_path / "fp32", progress=False
    )
    assert not all(torch.equal(wf[k], weights(fp32)[k]) for k in wf)


def test_a_study_refuses_to_resume_a_run_of_another_recipe(tmp_path):
    variant = Variant("simclr", {"method": "simclr"})
    base = dict(tiny().to_dict(), method="simclr")
    for key in ("seed", "name", "extra"):
        base.pop(key)
    train_seeds(variant, [0], tmp_path, **base)
    with pytest.raises(RunError, match=r"another recipe.*own --runs-root") as err:
        train_seeds(variant, [0], tmp_path, **{**base, "precision": "bf16"})
    assert "\n" not in str(err.value)


def test_parallel_training_trains_resumes_and_skips(tmp_path, monkeypatch):
    from tricl.experiments import common

    variant = Variant("simclr", {"method": "simclr"})
    base = tiny(method="simclr", epochs=2).to_dict()
    for key in ("seed", "name", "extra"):
        base.pop(key)
    # the parent's __main__ is a page that cannot be imported alone (as Streamlit's AppTest
    # leaves it): spawned workers must not re-run it
    page = tmp_path / "page.py"
    page.write_text("import labels_only_beside_the_page\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", main)
    killed = train(tiny(method="simclr", epochs=2), runs_root=tmp_path, stop_after_epoch=1)
    assert killed.epochs_done == 1
    jobs = [(variant, 0), (variant, 1)]
    done = common.train_in_parallel(jobs, tmp_path, workers=2, analyze=True, **base)
    assert sorted(p.name for p in done) == [killed.path.name, killed.path.name[:-1] + "1"]
    assert common.train_in_parallel(jobs, tmp_path, 2, **base) == []
    for path in done:  # both bases analysed in the workers; the study's own calls read the cache
        for basis in ("trained", "spectral"):
            assert analyze(path, basis=basis, progress=False).recomputed == ()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(common, "train", no_training)
    runs = train_seeds(variant, [0, 1], tmp_path, **base)
    assert [r.epochs_done for r in runs] == [2, 2]
    assert [r["epoch"] for r in runs[0].metrics()] == [1, 2]


def test_a_failing_parallel_run_stops_the_study_with_its_one_line_error(tmp_path):
    from tricl.data import DatasetError
    from tricl.experiments.common import train_in_parallel

    variant = Variant("simclr", {"method": "simclr"})
    base = tiny(method="simclr", dataset=f"folder:{tmp_path / 'missing'}").to_dict()
    for key in ("seed", "name", "extra"):
        base.pop(key)
    with pytest.raises(DatasetError, match="missing") as err:
        train_in_parallel([(variant, 0), (variant, 1)], tmp_path / "runs", 2, **base)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_reproduce_refuses_zero_workers_in_one_line(capsys):
    from tricl.experiments.reproduce import main

    with pytest.raises(SystemExit) as exit_:
        main(["--workers", "0", "--no-mnist5k"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--workers must be >= 1, got 0" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux")
def test_parallel_workers_die_with_a_killed_study():
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    # a study (the parent) whose one worker is busy, as in training; then the study is killed
    script = (
        "import concurrent.futures, multiprocessing, os, time\n"
        "from tricl.experiments.common import _worker_init\n"
        "pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("
        "'spawn'), initializer=_worker_init, initargs=(1, os.getpid()))\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "pool.submit(time.sleep, 120)\n"
        "time.sleep(120)\n"
    )
    study = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(study.stdout.readline())
    study.kill()
    study.wait()

    def alive(pid: int) -> bool:  # a zombie awaiting its reaper counts as dead
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    survived = alive(worker)
    if survived:  # do not leave it behind
        os.kill(worker, signal.SIGKILL)
    assert not survived, "the worker outlived the study and would go on training"
