"""The architecture study: two backbones, the same recipe, compared rank by rank (tiny)."""

from __future__ import annotations

import numpy as np
import pytest
from shared_runs import session_dir
from test_app_pages import TINY, make_fixture_runs

from tricl.experiments.architectures import (
    architecture_study,
    chosen_bases,
    consensus_table,
    main,
    pair_table,
    study_markdown,
)
from tricl.experiments.results import replace_dataset_section

ARCHS = ["small_cnn", "small_resnet"]
M = "tricl"


def _study(root, reuse):
    # the trained basis only: the spectral one runs the same code after its own (slower) estimate
    return architecture_study(
        [M], ARCHS, [0, 1], root, TINY, reuse=reuse, progress=False, bases=("trained",)
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    # the small CNN's seeds are the session's fixture runs (the same recipe): only the residual
    # network's two seeds are trained here
    shipped = make_fixture_runs(session_dir(tmp_path_factory, "app_runs"))
    root = tmp_path_factory.mktemp("arch")
    return _study(root, shipped), root, shipped


def test_every_pair_is_scored_within_and_across_architectures(study):
    study, root, shipped = study
    assert [r.config.backbone for r in study.runs[(M, "small_resnet")]] == ARCHS[1:] * 2
    assert all(r.path.parent == shipped for r in study.runs[(M, "small_cnn")])  # reused
    assert (root / "_compare").is_dir() and not (shipped / "_compare" / "x").exists()
    trained = study.pairs[study.pairs["basis"] == "trained"]
    counts = trained["pairs"].value_counts().to_dict()
    assert counts == {
        "within small_cnn": 1,
        "within small_resnet": 1,
        "small_cnn vs small_resnet": 4,
    }
    # the rank-by-rank |corr| is the registry's top-8 ordered corr, pair by pair
    for basis in ("trained",):
        ranks = study.ranks[study.ranks["basis"] == basis]
        per_pair = ranks.groupby(["i", "j"])["abs_corr"].mean().to_numpy()
        top8 = study.pairs[study.pairs["basis"] == basis]["top8"].to_numpy()
        np.testing.assert_allclose(np.sort(per_pair), np.sort(top8), atol=1e-6)
    assert study.ranks["abs_corr"].between(0, 1 + 1e-6).all()


def test_tables_and_section(study, tmp_path):
    study, _, _ = study
    table = pair_table(study)
    assert set(table["basis"]) == {"trained"} and len(table) == 3
    assert chosen_bases(["tri-eigen", "simclr"]) == {"tri-eigen": "trained", "simclr": "spectral"}
    cons = consensus_table(study, chosen_bases([M]))
    assert list(cons["rank"]) == list(range(1, 9))
    assert f"{M} (trained): small_cnn vs small_resnet" in cons.columns
    lines = study_markdown(study, tmp_path / "figures", "python -m tricl.experiments.architectures")
    assert (tmp_path / "figures" / "architectures_small_cnn_small_resnet.png").stat().st_size > 0
    said = [line for line in lines if "agree across architectures at" in line]
    assert len(said) == 1 and said[0].startswith(f"- {M} (trained basis): ranks ")
    old = "# R\n## A\na\n## Known-answer check\nk\n"
    once = replace_dataset_section(old, lines)
    assert once.count("## Across architectures") == 1
    assert replace_dataset_section(once, lines) == once  # a rerun rewrites it in place
    assert once.index("## Across architectures") < once.index("## Known-answer")


def test_a_second_call_trains_nothing(study):
    study, root, shipped = study
    weights = sorted(root.rglob("model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in weights]
    again = _study(root, shipped)
    assert [p.stat().st_mtime_ns for p in weights] == stamps and weights
    assert again.pairs["top8"].tolist() == pytest.approx(study.pairs["top8"].tolist())


def test_bad_arguments_get_one_line(tmp_path, capsys):
    assert main(["--backbones", "small_cnn", "--runs-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: give at least two --backbones") and "\n" not in err
    assert main(["--backbones", "small_cnn", "vgg", "--runs-root", str(tmp_path)]) == 2
    assert "unknown 'vgg'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written
