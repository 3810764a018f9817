"""The plateau study: the plateau rule, train-split scoring, run reuse per budget, report, CLI."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import TINY  # the training tests' tiny recipe; budgets set the epochs

from tricl.experiments.common import Variant, _probe_accuracies, probe_split
from tricl.experiments.plateau import (
    SCORES,
    PlateauError,
    absolute_dataset,
    main,
    paired_gain,
    plateau_epoch,
    plateau_markdown,
    plateau_study,
    plateau_table,
    train_split_scores,
)
from tricl.runs import Run, RunError, read_metrics
from tricl.train import train

BUDGETS = (1, 2)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A SimCLR plateau study on digits: one run of 1 epoch and one of 2 (seconds each)."""
    root = tmp_path_factory.mktemp("plateau")
    return plateau_study("simclr", BUDGETS, runs_root=root, base=TINY), root


@pytest.mark.parametrize(
    ("accuracies", "expected"),
    [
        ((0.50, 0.60, 0.605), 20),  # rose by 0.10, then by 0.005
        ((0.50, 0.505, 0.508), 10),  # flat from the start
        ((0.50, 0.60, 0.70), None),  # still rising at the largest budget
        ((0.50, 0.70, 0.55), 20),  # a later drop is not a rise
        ((0.60, 0.55, 0.65), None),  # a dip, then a rise past the first budget
        ((0.60, 0.605, 0.63), None),  # flat to the next budget, not to every longer one
    ],
)
def test_plateau_epoch_is_the_first_budget_no_longer_one_beats(accuracies, expected) -> None:
    assert plateau_epoch((10, 20, 40), accuracies, threshold=0.01) == expected


def test_plateau_rule_edges() -> None:
    assert plateau_epoch((10,), (0.9,)) is None  # nothing longer to compare with
    assert plateau_epoch((10, 20), (0.50, 0.55), threshold=0.1) == 10
    for budgets, accs in [((20, 10), (0.5, 0.6)), ((10, 20), (0.5,)), ((10, 20), (0.5, np.nan))]:
        with pytest.raises(PlateauError):
            plateau_epoch(budgets, accs)


def test_probe_split_partitions_the_train_rows_three_to_one() -> None:
    fit, held = probe_split(1000)
    assert len(fit) == 750 and len(held) == 250
    assert set(fit).isdisjoint(held) and set(fit) | set(held) == set(range(1000))
    np.testing.assert_array_equal(probe_split(1000)[1], held)  # fixed, not reshuffled per call


def test_scores_use_the_train_split_only(study) -> None:
    s, _ = study
    run = Run.load(s.table["run"].iloc[-1])
    data = run.load_data()
    scores = train_split_scores(run, data)
    assert set(scores) == set(SCORES)
    assert all(0.1 < v <= 1.0 for v in scores.values())  # 10 classes: chance is 0.1
    # a test split of blank images with one label: scores that read it would change
    blank = dataclasses.replace(
        data,
        test_x=torch.zeros((3, *data.test_x.shape[1:]), dtype=torch.uint8),
        test_y=torch.zeros(3, dtype=torch.int64),
    )
    assert train_split_scores(run, blank) == scores
    # the probe rows are the study's validation rows (validation_scores' split)
    from tricl.analysis.features import extract

    z, _ = extract(run.encoder(), data.train_x, data.preprocess)
    same = _probe_accuracies([z], [z], data.train_y.numpy(), top=z.shape[1])["full_acc"]
    assert scores["linear_acc"] == pytest.approx(same)


def test_study_has_one_separate_run_per_budget(study) -> None:
    s, root = study
    t = s.table
    assert t["epochs"].tolist() == list(BUDGETS)
    for epochs, path in zip(t["epochs"], t["run"]):
        assert Path(path).parent == root / f"e{epochs}"
        config = json.loads((Path(path) / "config.json").read_text())["config"]
        assert config["epochs"] == epochs  # its own schedule, not a checkpoint of a longer run
    epochs_s = [[r["seconds"] for r in read_metrics(Path(p))] for p in t["run"]]
    np.testing.assert_allclose(t["wall_s"], [sum(e) for e in epochs_s])
    np.testing.assert_allclose(t["fastest_epoch_s"], [min(e) for e in epochs_s])
    pace = min(min(e) for e in epochs_s)
    np.testing.assert_allclose(t["paced_wall_s"], [len(e) * pace for e in epochs_s])
    # one logged epoch time per epoch of each budget (not which run was faster: that depends on
    # the machine's load, and CI failed on it once under load)
    assert [len(e) for e in epochs_s] == list(BUDGETS) and min(pace, *t["wall_s"]) > 0


def test_a_second_call_reuses_the_runs(study) -> None:
    s, root = study
    mtimes = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())
    mtimes = [(p, m) for p, m in mtimes if "analysis" not in p.parts]
    again = plateau_study("simclr", BUDGETS, runs_root=root, base=TINY)
    assert [(p, p.stat().st_mtime_ns) for p, _ in mtimes] == mtimes  # nothing trained again
    for key in SCORES:
        np.testing.assert_allclose(again.table[key], s.table[key])


def test_reuse_takes_a_finished_run_of_the_exact_recipe(study, tmp_path) -> None:
    _, root = study
    one = plateau_study("simclr", (1,), runs_root=tmp_path, base=TINY, reuse=root / "e1")
    assert Path(one.table["run"].iloc[0]).parent == root / "e1"
    assert not any(tmp_path.iterdir())  # nothing trained
    # a run of another recipe (1 epoch) where the 2-epoch run belongs is refused, not resumed
    shutil.copytree(root / "e1", tmp_path / "e2")
    with pytest.raises(RunError, match="another recipe"):
        plateau_study("simclr", (2,), runs_root=tmp_path, base=TINY)


def test_no_train_scores_finished_runs_and_never_resumes_one(study, tmp_path) -> None:
    _, root = study
    again = plateau_study("simclr", BUDGETS, runs_root=root, base=TINY, train=False)
    assert again.table["epochs"].tolist() == list(BUDGETS)
    # a 2-epoch run stopped after its first epoch, as one another process is still training
    cfg = Variant("simclr", {"method": "simclr"}).config(0, **TINY, epochs=2)
    partial = train(cfg, runs_root=tmp_path / "e2", progress=False, stop_after_epoch=1)
    with pytest.raises(PlateauError, match=r"budget 2: .* has 1 of 2 epochs"):
        plateau_study(
            "simclr", BUDGETS, runs_root=tmp_path, base=TINY, reuse=root / "e1", train=False
        )
    assert Run.load(partial.path).epochs_done == 1  # not resumed
    assert not (tmp_path / "e1").exists()  # nothing trained


def test_report_has_the_table_the_plateau_and_a_figure(study, tmp_path) -> None:
    s, _ = study
    lines = plateau_markdown(s, tmp_path / "figures")
    text = "\n".join(lines)
    assert (tmp_path / "figures" / "plateau_simclr_seed0.png").stat().st_size > 1000
    assert plateau_table(s).to_markdown(index=False) in text
    expected = "plateau at" if s.plateau() is not None else "still rising"
    assert expected in text
    # a bf16 study is its own section with its own figure, beside the float32 one
    bf16 = dataclasses.replace(s, base={**s.base, "precision": "bf16"})
    lines = plateau_markdown(bf16, tmp_path / "figures")
    assert lines[0].endswith("(simclr, bf16)")
    assert (tmp_path / "figures" / "plateau_simclr_bf16_seed0.png").exists()


def test_cli_help_says_what_it_measures(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "linear probe" in out and "TRAIN split" in out and "min" in out


@pytest.mark.parametrize("dataset", ["folder:/nonexistent/images", "no-such-dataset"])
def test_cli_bad_dataset_is_one_line_and_writes_nothing(dataset, tmp_path, capsys) -> None:
    rc = main(["--dataset", dataset, "--budgets", "1", "--runs-root", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("config.json"))


def test_bad_budgets_are_refused_before_training(tmp_path) -> None:
    for budgets in [(), (2, 2), (0, 1)]:
        with pytest.raises(PlateauError):
            plateau_study("simclr", budgets, runs_root=tmp_path, base=TINY)
    with pytest.raises(PlateauError, match="unknown method"):
        plateau_study("nope", (1,), runs_root=tmp_path, base=TINY)
    assert not any(tmp_path.iterdir())


def test_a_relative_folder_is_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the recipe of a run made from another directory must match
    assert absolute_dataset("folder:data/cifar") == f"folder:{tmp_path / 'data' / 'cifar'}"
    assert absolute_dataset("digits") == "digits"


def test_paired_gain_is_the_mean_difference_with_its_standard_error() -> None:
    gain, se = paired_gain(np.array([1, 1, 0, 0]), np.array([1, 1, 1, 0]))
    assert gain == pytest.approx(0.25)
    assert se == pytest.approx(0.5 / 2)  # sd of (0, 0, 1, 0) with ddof 1, over sqrt(4)


def test_the_gain_column_is_paired_on_the_held_images(study) -> None:
    t = study[0].table
    assert np.isnan(t["linear_acc_gain"].iloc[0]) and np.isnan(t["linear_acc_gain_se"].iloc[0])
    np.testing.assert_allclose(t["linear_acc_gain"].iloc[1], t["linear_acc"].diff().iloc[1])
    assert 0 < t["linear_acc_gain_se"].iloc[1] < 0.1


def test_cli_rewrites_its_section_of_a_results_file_in_place(tmp_path) -> None:
    results = tmp_path / "docs" / "RESULTS.md"
    results.parent.mkdir()
    results.write_text("# R\n\n## mnist5k\n\nm\n\n## Known-answer check\n\nk\n")
    argv = ["--dataset", "digits", "--budgets", "1", "--runs-root", str(tmp_path / "r")]
    argv += ["--no-progress", "--results", str(results)]
    assert main(argv) == 0
    assert main(argv) == 0  # the second call replaces the section, it does not add another
    text = results.read_text()
    assert text.count("## Training length") == 1
    assert text.index("m\n") < text.index("## Training length") < text.index("## Known-answer")
    assert "Made by `python -m tricl.experiments.plateau --dataset digits" in text
    assert (results.parent / "figures" / "plateau_simclr_seed0.png").is_file()
