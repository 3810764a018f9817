"""Where a run is written: a run name is one folder inside the runs root, and a runs root that is
a file is refused, in one line, before anything is written (issue 23, items 1 and 2)."""

import pytest

from tricl.cli import main
from tricl.config import RunConfig
from tricl.runs import RunError, create_run_dir

TINY = ["--dataset", "digits", "--epochs", "1", "--proj-hidden-dim", "16", "--proj-dim", "8"]
TINY += ["--batch-size", "8", "--no-progress"]

BAD_NAMES = {
    "parent folder": "../escape",
    "absolute path": "/ABS/escape",
    "subfolder": "a/b",
    "backslash": "a\\b",
    "dot-dot": "..",
    "hidden": ".hidden",
    "underscore (skipped by listings)": "_private",
    "NUL byte": "a\0b",
    "too long": "x" * 256,
}


def _snapshot(root):
    return {str(p) for p in root.rglob("*")}


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_a_run_name_that_is_not_one_folder_is_refused(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "sandbox" / "runs"
    root.mkdir(parents=True)
    name = BAD_NAMES[case].replace("/ABS", str(tmp_path / "abs"))
    code, err = _run(["train", *TINY, "--runs-root", str(root), "--name", name], capsys)
    assert code == 2, (case, err)
    assert err.count("\n") == 1 and err.startswith("error: run name"), (case, err)
    # it says which characters are allowed (or how long a name may be)
    assert ("letters, digits" in err) or ("255 bytes" in err and case == "too long"), err
    assert _snapshot(tmp_path) == {str(tmp_path / "sandbox"), str(root)}, case


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_create_run_dir_refuses_the_same_names(case, tmp_path):
    name = BAD_NAMES[case].replace("/ABS", str(tmp_path / "abs"))
    with pytest.raises(RunError, match="run name"):
        create_run_dir(tmp_path / "runs", RunConfig(), {"in_channels": 1}, name=name)
    assert list(tmp_path.iterdir()) == []


def test_train_from_python_refuses_a_name_that_escapes_the_root(tmp_path):
    from tricl.train import train

    root = tmp_path / "sandbox" / "runs"
    cfg = RunConfig(dataset="digits", epochs=1, proj_hidden_dim=16, proj_dim=8, batch_size=8)
    with pytest.raises(RunError, match=r"run name '\.\./escape'"):
        train(cfg.replace(name="../escape"), runs_root=root, progress=False)
    assert list(tmp_path.rglob("*")) == []


def test_a_good_name_with_dots_and_spaces_is_one_folder(tmp_path, capsys):
    root = tmp_path / "runs"
    code, err = _run(["train", *TINY, "--runs-root", str(root), "--name", "v1.2 final"], capsys)
    assert code == 0, err
    assert [p.name for p in root.iterdir()] == ["v1.2 final"]


@pytest.mark.parametrize("where", ["the root", "a parent of the root"])
def test_a_runs_root_that_is_a_file_is_a_one_line_error(where, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    root = a_file if where == "the root" else a_file / "runs"
    code, err = _run(["train", *TINY, "--runs-root", str(root), "--name", "r"], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "is a file, not a folder" in err, err
    assert "Traceback" not in err
    assert a_file.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt"
    ]
    with pytest.raises(RunError, match="is a file, not a folder"):
        create_run_dir(root, RunConfig(), {"in_channels": 1}, name="r")


def test_import_refuses_a_bad_name_too(tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"never read")
    root = tmp_path / "runs"
    code, err = _run(["import", str(ckpt), "--runs-root", str(root), "--name", "../x"], capsys)
    assert code == 2 and err.startswith("error: run name"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]
