"""Rotation drive against batch noise (tricl.experiments.rotation_snr), on tiny digits runs."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import TINY as TRAIN_TINY

from tricl import methods
from tricl.config import RunConfig
from tricl.experiments.common import Variant, train_seeds
from tricl.experiments.rotation_report import (
    SECTION_TITLE,
    plot_steps,
    preferred_angles,
    summarize,
    sweep_summary,
)
from tricl.experiments.rotation_snr import (
    SNRError,
    batch_size_sweep,
    givens,
    main,
    paired_differences,
    rotation_drive,
)

# the training tests' tiny recipe, k = 8, at the digits' 28 px (at 12 px the swap's drive of the
# spread-S run is not felt on every pair: the known answers here were set at 28 px)
TINY = {**TRAIN_TINY, "proj_dim": 8, "epochs": 1, "image_size": 0}
# S held at a hand-set geometric spread (1 down to 10^-spread), so the drive's sign is known
FIXED_S = dict(method="tricl", s_init="geometric", s_frozen=True)
FAST = dict(ranks=4, batches=6, batch_size=64)


def build_loss(method: str):
    """The loss of ``method`` with the default hyperparameters."""
    return methods.build_loss(RunConfig(method=method))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """SimCLR, triCL with S from 1 to 0.1, and triCL with a flat S (one epoch each)."""
    root = tmp_path_factory.mktemp("runs")
    variants = {
        "simclr": Variant("simclr", {"method": "simclr"}),
        "spread": Variant("tricl-spread", FIXED_S | {"s_init_spread": 1.0}),
        "flat": Variant("tricl-flat", FIXED_S | {"s_init_spread": 0.0}),
    }
    return {name: train_seeds(v, [0], root, **TINY)[0] for name, v in variants.items()}


def test_givens_inverts_and_swaps() -> None:
    z = torch.randn(5, 4, dtype=torch.float64)
    back = givens(givens(z, 1, 3, 0.7), 1, 3, -0.7)
    torch.testing.assert_close(back, z)
    swapped = givens(z, 1, 3, math.pi / 2)
    torch.testing.assert_close(swapped[:, 1], -z[:, 3])
    torch.testing.assert_close(swapped[:, 3], z[:, 1])
    torch.testing.assert_close(swapped[:, [0, 2]], z[:, [0, 2]])
    assert torch.equal(givens(z, 1, 3, 0.0), z)


def _hand_built_views(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature 0 identical in both views (fully invariant), feature 1 independent noise."""
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(n, generator=gen)
    z1 = torch.stack([shared, torch.randn(n, generator=gen)], dim=1)  # (n, 2)
    z2 = torch.stack([shared, torch.randn(n, generator=gen)], dim=1)  # (n, 2)
    return z1, z2


def test_the_loss_prefers_the_invariant_feature_in_the_high_s_slot() -> None:
    z1, z2 = _hand_built_views()
    loss_fn = build_loss("tricl")
    angles = [math.pi / 4, math.pi / 2]
    high_first = torch.tensor([1.0, 0.1])
    d = paired_differences(loss_fn, z1, z2, high_first, [(0, 1)], angles).diff
    # moving the invariant feature out of the S = 1 slot makes positives less similar
    assert d[0, 0] > 0 and d[0, 1] > d[0, 0]
    # the same features with S reversed: the swap now helps, by exactly as much
    rev = paired_differences(loss_fn, z1, z2, high_first.flip(0), [(0, 1)], angles).diff
    assert rev[0, 1] == pytest.approx(-d[0, 1], rel=1e-4)
    # a swap by pi/2 is the column permutation (the sign flip changes no loss)
    base = float(loss_fn(z1, z2, high_first).total)
    swapped = float(loss_fn(z1[:, [1, 0]], z2[:, [1, 0]], high_first).total)
    assert d[0, 1] == pytest.approx(swapped - base, rel=1e-5)
    # SimCLR's NT-Xent on normalised rows cannot tell any rotation from another
    flat = paired_differences(build_loss("simclr"), z1, z2, None, [(0, 1)], angles)
    assert np.abs(flat.diff).max() < 1e-6 * base and np.abs(flat.slope).max() < 1e-5


def test_the_slope_is_the_derivative_of_the_loss_in_the_angle() -> None:
    z1, z2 = _hand_built_views()
    loss_fn, s = build_loss("tricl"), torch.tensor([1.0, 0.1])
    h = 1e-2
    got = paired_differences(loss_fn, z1, z2, s, [(0, 1)], [0.6 - h, 0.6, 0.6 + h])
    central = (got.diff[0, 2] - got.diff[0, 0]) / (2 * h)
    assert got.slope[0, 1] == pytest.approx(central, rel=1e-2)
    assert got.slope[0, 1] > 0  # half way to the swap, the loss pushes back towards 0


@pytest.mark.parametrize("tilt", [20.0, -35.0])
def test_the_preferred_angle_undoes_a_known_tilt(tilt) -> None:
    """Features rotated away from the loss's optimum by ``tilt``: the loss asks for -tilt."""
    z1, z2 = _hand_built_views()
    r1, r2 = (givens(z, 0, 1, math.radians(tilt)) for z in (z1, z2))
    angles = {"45°": math.pi / 4, "90°": math.pi / 2}
    got = paired_differences(
        build_loss("tricl"), r1, r2, torch.tensor([1.0, 0.9]), [(0, 1)], [*angles.values()]
    )
    frame = pd.DataFrame(
        {"run": "hand", "arm": "hand", "rank": 1, "pair": "1-2", "angle": list(angles),
         "felt": True, "drive": got.diff[0], "slope": got.slope[0]}
    )  # fmt: skip
    found = preferred_angles([frame])
    # the sample's own optimum sits within a degree of 0 (feature 1's sign is symmetric)
    assert found["theta_star"].iloc[0] == pytest.approx(-tilt, abs=1.5)
    assert found["model_error"].iloc[0] < 0.01  # the first-harmonic model holds


def test_neuralef_orders_its_features_by_force_not_by_value() -> None:
    z1, z2 = _hand_built_views()
    swap = paired_differences(build_loss("neuralef"), z1, z2, None, [(0, 1)], [math.pi / 2])
    # NeuralEF-CLR's value is symmetric in two adjacent features: a swap costs nothing ...
    assert abs(swap.diff[0, 0]) < 1e-6 * abs(swap.loss)
    # ... but half way there its stop-gradient penalty pushes the features apart
    half = paired_differences(build_loss("neuralef"), z1, z2, None, [(0, 1)], [math.pi / 4])
    assert abs(half.slope[0, 0]) > 1e-3


def test_simclr_drive_is_exactly_zero(runs, tmp_path) -> None:
    frame = rotation_drive(runs["simclr"], **FAST)
    assert len(frame) == (FAST["ranks"] - 1) * 2
    assert (frame["drive"].abs() < 1e-6 * frame["loss"]).all()
    assert not frame["felt"].any()
    assert np.isinf(frame["steps_needed"]).all() and (frame["snr"] == 0).all()
    assert "s_a" not in frame
    plot_steps([frame], tmp_path / "steps.png")  # every pair at infinity still draws
    assert (tmp_path / "steps.png").stat().st_size > 0


def test_a_flat_s_makes_the_tri_factor_loss_rotation_invariant(runs) -> None:
    frame = rotation_drive(runs["flat"], **FAST)
    assert not frame["felt"].any()  # the decorrelation term is rotation invariant too
    assert np.allclose(frame["s_a"], frame["s_b"])


def test_a_spread_s_gives_the_swap_a_drive(runs) -> None:
    run = runs["spread"]
    frame = rotation_drive(run, **FAST)
    swap = frame[frame["angle"] == "90°"]
    assert swap["felt"].all() and (swap["noise"] > 0).all()
    assert (swap["drive"].abs() > 1e-4 * swap["loss"]).all()
    assert (swap["s_a"] > swap["s_b"]).all()  # S order: slot a is the more important one
    assert swap["slot_a"].tolist() == [0, 1, 2]  # geometric S falls with the index
    angles = preferred_angles([frame])
    assert len(angles) == 3 and angles["theta_star"].between(-90, 90).all()
    assert (angles["model_error"] < 0.1).all()
    ratio = (swap["noise"] / swap["drive"]) ** 2
    np.testing.assert_allclose(swap["steps_needed"], ratio)
    assert (frame["steps_trained"] == run.epochs_done * (frame["train_images"] // 128)).all()
    again = rotation_drive(run, **FAST)
    pd.testing.assert_frame_equal(frame, again)  # the seed fixes images and views


def test_summary_and_batch_sweep(runs) -> None:
    frames = [rotation_drive(runs[name], **FAST) for name in ("simclr", "spread")]
    table = summarize(frames)
    assert len(table) == 4 and set(table["arm"]) == {"simclr", "tricl-spread"}
    simclr = table[table["arm"] == "simclr"]
    assert (simclr["resolved"] == 0).all() and np.isinf(simclr["steps_needed"]).all()
    assert table["resolved"].between(0, 1).all()
    sweep = batch_size_sweep(runs["spread"], [16, 256], ranks=3, batches=16)
    fits = sweep_summary(sweep)
    assert sorted(set(fits["batch_size"])) == [16, 256]
    swap = fits[fits["angle"] == "90°"]
    # independent samples: the noise of a mean over B pairs falls about as B^-0.5
    assert 0.2 < swap["alpha"].iloc[0] < 0.9, swap["alpha"].iloc[0]
    assert (fits["epochs_needed"] > 0).all()


def test_settings_the_run_cannot_meet_are_refused(runs) -> None:
    with pytest.raises(SNRError, match=r"ranks must be in 2\.\.8"):
        rotation_drive(runs["spread"], ranks=9, batches=2)
    with pytest.raises(SNRError, match="batches must be >= 2"):
        rotation_drive(runs["spread"], batches=1)


def test_cli_help_bad_path_and_report(runs, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "steps_needed" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not exist" in err and "tricl runs" in err
    out = tmp_path / "out"
    args = [str(runs["simclr"].path), str(runs["spread"].path), "--ranks", "3", "--batches", "3"]
    args += ["--batch-size", "32", "--out", str(out), "--no-progress", "--batch-sizes", "16", "32"]
    args += ["--sweep", str(runs["spread"].path)]
    for _ in range(2):  # a second report replaces the section, never appends a copy
        assert main(args) == 0
    text = (out / "RESULTS.md").read_text()
    assert text.count(SECTION_TITLE) == 1 and "tricl-spread" in text and "β" in text
    assert "θ*" in text
    assert (out / "figures" / "rotation_snr.png").stat().st_size > 0
    assert len(pd.read_csv(out / "rotation_drive.csv")) == 2 * 2 * 2
    (out / "RESULTS.md").write_text("# Study\n\n## Other\n\nkept\n")
    assert main(["--report", str(out)]) == 0  # the report again from the CSVs, nothing measured
    text = (out / "RESULTS.md").read_text()
    assert text.count(SECTION_TITLE) == 1 and "kept" in text and "tricl-spread" in text
    assert main([]) == 2 and "no RUN given" in capsys.readouterr().err
    assert sorted(set(pd.read_csv(out / "batch_sweep.csv")["batch_size"])) == [16, 32]
