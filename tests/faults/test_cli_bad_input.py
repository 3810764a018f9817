"""Bad input to the tricl command: exit status 2, exactly one line on stderr, nothing written."""

import os

import pytest
import torch

from tricl.cli import main

# put before each case's flags (the later flag wins): were a case accepted, it would be a short run
TINY = ["--dataset", "digits", "--epochs", "1", "--proj-hidden-dim", "16", "--proj-dim", "8"]
TINY += ["--batch-size", "8", "--no-progress"]


def _folders(tmp_path, image_folder):
    empty = tmp_path / "empty"
    empty.mkdir(parents=True)
    texts = tmp_path / "texts" / "a"
    texts.mkdir(parents=True)
    (texts / "notes.txt").write_text("not an image")
    broken = tmp_path / "broken_png" / "a"
    broken.mkdir(parents=True)
    for i in range(3):
        (broken / f"{i}.png").write_bytes(b"\x89PNG garbage")
    not_run = tmp_path / "not_a_run"
    not_run.mkdir()
    (not_run / "readme.txt").write_text("hello")
    return {
        "IMAGES": str(image_folder),
        "EMPTY": str(empty),
        "TEXTS": str(texts.parent),
        "BROKEN_PNG": str(broken.parent),
        "NOT_RUN": str(not_run),
        "A_FILE": str(not_run / "readme.txt"),
    }


CASES = {
    "unknown method": ["train", "--method", "byol"],
    "unknown dataset": ["train", "--dataset", "imagenet"],
    "unknown backbone": ["train", "--backbone", "vit"],
    "unknown optimizer": ["train", "--optimizer", "adam"],
    "unknown decorrelation": ["train", "--decorrelation", "full"],
    "unknown device": ["train", "--device", "tpu9"],
    "not a number": ["train", "--epochs", "ten"],
    "zero epochs": ["train", "--epochs", "0"],
    "negative epochs": ["train", "--epochs", "-3"],
    "batch of one": ["train", "--batch-size", "1"],
    "zero lr": ["train", "--lr", "0"],
    "negative temperature": ["train", "--temperature", "-0.5"],
    "zero proj dim": ["train", "--proj-dim", "0"],
    "warmup past epochs": ["train", "--epochs", "2", "--warmup-epochs", "5"],
    "negative image size": ["train", "--image-size", "-1"],
    "negative seed": ["train", "--seed", "-1"],
    "negative tau": ["train", "--tau", "-1"],
    "missing folder": ["train", "--dataset", "folder:/no/such/dir"],
    "empty folder": ["train", "--dataset", "folder:EMPTY"],
    "folder without images": ["train", "--dataset", "folder:TEXTS"],
    "folder of broken images": ["train", "--dataset", "folder:BROKEN_PNG"],
    "folder without a path": ["train", "--dataset", "folder:"],
    "batch larger than the data": ["train", "--dataset", "folder:IMAGES", "--batch-size", "64"],
    "existing run": ["train", "--dataset", "folder:IMAGES", "--name", "taken"],
    "resume of nothing": ["train", "--resume", "/no/such/run"],
    "resume of a plain folder": ["train", "--resume", "NOT_RUN"],
    "resume of a file": ["train", "--resume", "A_FILE"],
    "unknown command": ["fly"],
    "runs with an unknown flag": ["runs", "--colour"],
    "import of nothing": ["import", "/no/such.ckpt"],
    "import of a text file": ["import", "A_FILE"],
}
if not torch.cuda.is_available():
    CASES["cuda without a GPU"] = ["train", "--device", "cuda"]


def _snapshot(*roots):
    return {str(p) for root in roots for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    case, image_folder, tmp_path, capsys, monkeypatch
):
    paths = _folders(tmp_path / "inputs", image_folder)
    runs_root = tmp_path / "user_runs"
    (runs_root / "taken").mkdir(parents=True)  # someone's run, never to be touched
    (runs_root / "taken" / "config.json").write_text('{"mine": true}')
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TRICL_RUNS", str(runs_root))
    argv = [_expand(a, paths) for a in CASES[case]]
    if argv[0] == "train" and "--resume" not in argv:
        argv = ["train", *TINY, *argv[1:]]
    before = _snapshot(runs_root, cwd, tmp_path / "inputs")
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, (case, err)
    assert err.count("\n") == 1 and err.startswith("error: "), (case, err)
    assert "Traceback" not in err
    assert _snapshot(runs_root, cwd, tmp_path / "inputs") == before, case
    assert (runs_root / "taken" / "config.json").read_text() == '{"mine": true}'
    assert not os.path.exists(cwd / "runs")


def _expand(arg: str, paths: dict[str, str]) -> str:
    if arg in paths:
        return paths[arg]
    if arg.startswith("folder:") and arg[7:] in paths:
        return "folder:" + paths[arg[7:]]
    return arg


# ------------------------------------------------- checks that need real runs, before any work


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory, image_folder):
    """Two tiny runs of two image folders (different datasets, a few seconds each)."""
    import shutil

    from tricl.config import RunConfig
    from tricl.train import train

    root = tmp_path_factory.mktemp("two_datasets")
    other = shutil.copytree(image_folder, root.parent / "other_shapes")
    small = {"proj_dim": 8, "proj_hidden_dim": 16, "epochs": 1, "warmup_epochs": 0}
    return tuple(
        train(
            RunConfig(dataset=f"folder:{folder}", batch_size=8, name=name, **small),
            runs_root=root,
            progress=False,
        ).path
        for name, folder in (("shapes", image_folder), ("other", other))
    )


def test_compare_of_runs_of_different_datasets_is_refused_before_any_analysis(two_datasets, capsys):
    shapes, other = two_datasets
    before = _snapshot(shapes.parent)
    assert main(["compare", str(shapes), str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different datasets" in err, err
    assert shapes.name in err and other.name in err
    assert _snapshot(shapes.parent) == before, "an analysis or comparison was written"


def test_align_of_an_image_text_run_is_refused_in_one_line(tmp_path, capsys):
    from tricl.runs import SHIPPED_RUNS_ROOT

    clip = next(SHIPPED_RUNS_ROOT.glob("clip_*"))
    before = _snapshot(clip)
    assert main(["align", str(clip), "--runs-root", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image-text run" in err and "--basis spectral" in err, err
    assert _snapshot(clip) == before and not (tmp_path / "out").exists()
