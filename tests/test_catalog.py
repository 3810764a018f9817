"""The light catalog of names: each has an implementation; reading runs needs no torch."""

import subprocess
import sys

import pytest

from tricl.catalog import (
    BACKBONE_INFO,
    CAPTION_DATASET_INFO,
    DATASET_INFO,
    dataset_pair,
    parse_dataset,
)


def test_every_backbone_and_dataset_name_has_an_implementation() -> None:
    from tricl.data import DATASETS
    from tricl.models import BACKBONES

    assert set(BACKBONES) == set(BACKBONE_INFO)
    assert set(DATASETS) == set(DATASET_INFO)
    for name, info in DATASET_INFO.items():
        assert DATASETS[name].family == info.family
        assert DATASETS[name].description == info.description


def test_every_caption_dataset_name_has_a_caption_loader() -> None:
    # caption datasets load through tricl.text (images + captions), not tricl.data.DATASETS
    from tricl.text.captions import CAPTION_DATASETS

    assert set(CAPTION_DATASETS) == set(CAPTION_DATASET_INFO)
    assert not set(CAPTION_DATASET_INFO) & set(DATASET_INFO)
    for name, info in CAPTION_DATASET_INFO.items():
        assert CAPTION_DATASETS[name].description == info.description
        assert CAPTION_DATASETS[name].takes_path == info.takes_path
        assert dataset_pair(name) == "caption"
    assert dataset_pair("mnist5k") == "views" and dataset_pair("nope") is None


@pytest.mark.parametrize(
    ("method", "dataset", "says"),
    [("triclip", "mnist5k", "image-caption pairs"), ("tricl", "mnist5k-captions", "images")],
)
def test_a_method_on_the_wrong_kind_of_dataset_is_a_one_line_config_error(
    method, dataset, says
) -> None:
    from tricl.config import ConfigError, RunConfig

    with pytest.raises(ConfigError) as info:
        RunConfig(method=method, dataset=dataset)
    message = str(info.value)
    assert "\n" not in message and says in message and repr(dataset) in message


def test_parse_dataset_splits_name_and_path() -> None:
    assert parse_dataset("folder:/p/q") == ("folder", "/p/q")
    assert parse_dataset("mnist5k") == ("mnist5k", None)


def test_listing_and_reading_runs_does_not_import_torch() -> None:
    # the dashboard's server lists runs and reads their configs; torch alone is ~700 MiB resident
    code = (
        "import sys\n"
        "from tricl.config import RunConfig\n"
        "from tricl.runs import SHIPPED_RUNS_ROOT, list_runs\n"
        "RunConfig(method='simclr', backbone='resnet18', dataset='folder:/x')\n"
        "runs = list_runs(SHIPPED_RUNS_ROOT)\n"
        "[(r.summary(), r.weights_hash, r.epochs_done) for r in runs]\n"
        "heavy = [m for m in ('torch', 'torchvision', 'kornia') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(len(runs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 6
