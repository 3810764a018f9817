"""The tricl command line: help that helps, run listing, one-line errors with exit status 2."""

import subprocess
import sys

import pytest

from tricl.cli import build_parser, main


def test_train_help_documents_every_flag_with_a_recommendation():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    train = sub.choices["train"]
    for action in train._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 15, action.dest
    text = train.format_help()
    for word in ("--method", "--s-frozen", "--s-placement", "paper", "torchrun", "--resume"):
        assert word in text


def test_console_script_runs_help():
    out = subprocess.run(
        [sys.executable, "-m", "tricl", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    for cmd in ("train", "runs", "analyze", "compare", "import"):
        assert cmd in out.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--dataset", "imagenet"], "unknown dataset"),
        (["train", "--dataset", "folder:/no/such/dir"], "/no/such/dir"),
        (["train", "--resume", "/no/such/run"], "cannot resume"),
        (["import", "/no/such.ckpt"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRICL_RUNS", str(tmp_path))
    assert main(argv + (["--no-progress"] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err
    assert "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_runs_lists_runs_and_says_how_to_train_when_empty(tmp_path, capsys):
    assert main(["runs", "--runs-root", str(tmp_path)]) == 0
    assert "tricl train" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--proj-dim",
                "8",
                "--proj-hidden-dim",
                "16",
                "--batch-size",
                "128",
                "--image-size",
                "12",
                "--seed",
                "3",
                "--runs-root",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["runs", "--runs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tricl_digits_small_cnn_k8_seed3" in out and "1/1" in out and "digits" in out


def test_train_decorrelation_flag_reaches_the_run_and_compare_prints_spectral_scores(
    tmp_path, capsys
):
    common = ["--dataset", "digits", "--epochs", "1", "--proj-dim", "8", "--proj-hidden-dim"]
    common += ["16", "--batch-size", "128", "--runs-root", str(tmp_path), "--no-progress"]
    common += ["--image-size", "12"]  # 12-px digits: a fifth of the pixels, the same code
    for seed in ("0", "1"):
        argv = ["train", *common, "--seed", seed, "--decorrelation", "whiten", "--tau", "2"]
        assert main(argv) == 0
    runs = sorted(p for p in tmp_path.iterdir() if not p.name.startswith("_"))
    assert len(runs) == 2
    from tricl.runs import Run

    assert Run.load(runs[0]).config.decorrelation == "whiten"
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "spectral_corr_top8" in out and "ordered_corr_top8" in out
    # one verdict line per basis, in the words the Compare page and the README use
    from tricl.report.verdicts import VERDICTS

    lines = [ln for ln in out.splitlines() if ln.startswith("verdict, ")]
    assert [ln.split(" (")[0] for ln in lines] == [
        "verdict, trained basis",
        "verdict, spectral basis",
    ]
    assert all(any(f"): {v.word}: {v.meaning}" in ln for v in VERDICTS) for ln in lines), lines
    assert "CKA" in lines[0] and "CKA" not in lines[1]  # CKA is not read in a whitened basis
    assert main(["compare", *map(str, runs), "--no-progress", "--no-spectral"]) == 0
    out = capsys.readouterr().out
    assert "spectral_corr_top8" not in out
    assert next(ln for ln in out.splitlines() if ln.startswith("verdict, ")).startswith(
        "verdict, trained basis (mean over 1 pair(s)): "
    )


def test_train_flags_are_generated_from_the_run_config():
    import dataclasses

    from tricl.config import RunConfig
    from tricl.methods import METHODS

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    actions = {a.dest: a for a in sub.choices["train"]._actions}
    for f in dataclasses.fields(RunConfig):
        if not f.metadata.get("cli", True):  # extra, an imported encoder's source record
            assert f.name not in actions, f.name
            continue
        assert f.name in actions, f.name
        assert actions[f.name].help.startswith(f.metadata["help"][:20]) or f.name == "dataset"
        if f.type != "bool":
            assert actions[f.name].default == f.default, f.name
    assert sorted(actions["method"].choices) == sorted(METHODS)
    assert RunConfig().epochs == 15  # the shipped runs' recipe


def test_no_progress_silences_the_image_folder_loading_bar(tmp_path, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    import tricl.data

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8), 20 * i + 50 * (c == "b"), np.uint8)).save(
                tmp_path / "imgs" / c / f"{i}.png"
            )
    monkeypatch.setattr(tricl.data, "PROGRESS_MIN_IMAGES", 0)  # a bar even for 20 images
    argv = ["train", "--dataset", f"folder:{tmp_path / 'imgs'}", "--epochs", "1", "--proj-dim"]
    argv += ["4", "--proj-hidden-dim", "8", "--batch-size", "4", "--warmup-epochs", "0"]
    argv += ["--runs-root", str(tmp_path / "runs")]
    assert main([*argv, "--name", "quiet", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*argv, "--name", "loud"]) == 0
    assert "loading imgs" in capsys.readouterr().err

    # the Python API's progress=False silences the loading bar too, whatever the process default
    from tricl.analysis import analyze

    tricl.data.set_progress(True)
    analyze(tmp_path / "runs" / "quiet", progress=False)
    assert "loading imgs" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_bad_basis_exits_2_with_one_line(command, capsys, tmp_path):
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main([command, *runs, "--basis", "junk", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown basis 'junk'; use one of trained, spectral"
    assert list(tmp_path.iterdir()) == []


def test_analyze_and_compare_in_the_spectral_basis(tmp_path, capsys):
    import json
    from pathlib import Path

    from tricl.analysis import load_analysis
    from tricl.analysis.comparison import CONSENSUS_COLUMNS, pair_columns

    common = ["--dataset", "digits", "--epochs", "1", "--proj-dim", "8", "--proj-hidden-dim"]
    common += ["16", "--batch-size", "128", "--runs-root", str(tmp_path), "--no-progress"]
    common += ["--image-size", "12"]  # 12-px digits: a fifth of the pixels, the same code
    for seed in ("0", "1"):
        assert main(["train", *common, "--seed", seed]) == 0
    runs = sorted(str(p) for p in tmp_path.iterdir() if not p.name.startswith("_"))
    capsys.readouterr()
    assert main(["analyze", runs[0], "--basis", "spectral", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "spectral basis" in out and "order not identifiable" in out
    spectral = load_analysis(runs[0], basis="spectral")
    assert spectral is not None and spectral.importance.default == "eigenvalue"
    assert load_analysis(runs[0]) is not None  # the trained analysis it builds on
    assert main(["compare", *runs, "--basis", "spectral", "--json", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and list(rows[0]) == pair_columns(spectral=False)
    assert load_analysis(runs[1], basis="spectral") is not None  # computed by compare
    assert main(["compare", *runs, "--consensus", "--json", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ranks = min(load_analysis(r, basis="spectral").k for r in runs)  # a basis may drop a direction
    assert [r["rank"] for r in rows] == list(range(1, ranks + 1))
    assert list(rows[0]) == CONSENSUS_COLUMNS and len(rows[0]["top_indices"]) == 32
    assert rows[0]["representative"] in {Path(r).name for r in runs}
    assert main(["compare", *runs, "--consensus", "--no-progress"]) == 0
    assert capsys.readouterr().out.split()[:3] == ["rank", "mean_abs_corr", "min_abs_corr"]


def _tiny_pair(root, capsys) -> list[str]:
    """Two seeds of a tiny digits run under ``root``."""
    common = ["--dataset", "digits", "--epochs", "1", "--proj-dim", "8", "--proj-hidden-dim"]
    common += ["16", "--batch-size", "128", "--runs-root", str(root), "--no-progress"]
    common += ["--image-size", "12"]
    for seed in ("0", "1"):
        assert main(["train", *common, "--seed", seed]) == 0
    capsys.readouterr()
    return sorted(str(p) for p in root.iterdir() if not p.name.startswith("_"))


def _files(root) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_compare_of_shipped_runs_writes_the_users_runs_root_not_checkpoints(
    tmp_path, capsys, monkeypatch
):
    """README: the shipped runs in checkpoints/ are never written without --runs-root
    checkpoints; what it already holds is read, new comparisons go to $TRICL_RUNS/_compare."""
    import json

    import tricl.runs.record
    from tricl.analysis import analyze, compare

    shipped, mine = tmp_path / "checkpoints", tmp_path / "runs"
    runs = _tiny_pair(shipped, capsys)
    for r in runs:
        analyze(r, progress=False)
    monkeypatch.setattr(tricl.runs.record, "SHIPPED_RUNS_ROOT", shipped.resolve())
    monkeypatch.setenv("TRICL_RUNS", str(mine))
    before = _files(shipped)

    assert main(["compare", *runs, "--json", "--no-spectral", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert [set(json.loads(line)) >= {"run_a", "run_b"} for line in out.splitlines()] == [True]
    assert "comparing 2 runs" in err and str(mine / "_compare") in err  # progress on stderr
    assert _files(shipped) == before
    assert len(list((mine / "_compare").iterdir())) == 1

    stored = compare(runs, spectral=False, progress=False)  # the Python API: beside the runs
    assert stored.path.parent == shipped / "_compare"
    assert stored.path.name in {p.name for p in (mine / "_compare").iterdir()}  # the same id
    before = _files(shipped)
    assert main(["compare", *runs, "--no-spectral", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "comparing" not in err and str(stored.path) in err  # read where it is stored
    assert _files(shipped) == before

    assert main(["compare", *runs, "--no-spectral", "--runs-root", str(tmp_path / "x")]) == 0
    assert len(list((tmp_path / "x" / "_compare").iterdir())) == 1


def test_align_help_names_each_default_once():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(sub.choices["align"].format_help().split())
    assert "(default: None)" not in text
    assert text.count("(default: cpu)") == 1 and text.count("./runs)") == 1


def test_top_level_help_names_every_method():
    from tricl.methods import METHODS

    text = " ".join(build_parser().format_help().split())
    for spec in METHODS.values():
        assert spec.label in text


def test_runs_prints_whole_dataset_names(tmp_path, capsys, monkeypatch):
    from tricl.runs import SHIPPED_RUNS_ROOT

    if not (SHIPPED_RUNS_ROOT / "clip_mnist5k-captions_small_cnn_k64_seed0").is_dir():
        pytest.skip("no shipped clip runs")
    assert main(["runs", "--runs-root", str(SHIPPED_RUNS_ROOT)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert "mnist5k-captions" in {row[2] for row in rows if row}
