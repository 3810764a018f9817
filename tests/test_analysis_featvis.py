"""Feature visualisation by optimisation: deterministic for a seed, a known answer (the image
drives the feature above every dataset image), the spectral direction objective, the cache's keys,
and the CLI's bad input. On a copy of one tiny fixture run (digits, 28 px)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from shared_runs import session_dir
from test_app_pages import _heavy_imports, make_fixture_runs

from tricl.analysis import load_analysis
from tricl.analysis.featvis import VisSettings, load_visualization, vis_path
from tricl.analysis.optvis import FourierImage, visualise, visualize
from tricl.analysis.spectral import load_spectral_basis
from tricl.analysis.store import load_npz, save_npz
from tricl.cli import build_parser, main
from tricl.jobs import visualize_command
from tricl.runs import Run

RUN = "tricl_digits_small_cnn_k16_seed0"
FAST = VisSettings(steps=12, batch=2)


@pytest.fixture(scope="session")
def featvis_root(tmp_path_factory):
    """A copy of the fixture runs that these tests (and the page's) may write visualisations
    into; shared, so the page test reads the images the known-answer tests made (on one xdist
    worker). The copy is the worker's; the runs it copies are the session's, built once for every
    worker (the app tests use them too), never again for this file."""
    root = tmp_path_factory.getbasetemp() / "featvis_runs"
    if not root.is_dir():
        src = make_fixture_runs(session_dir(tmp_path_factory, "app_runs"))
        shutil.copytree(src, root, ignore=shutil.ignore_patterns("featvis", "_jobs", ".done"))
    return root


@pytest.fixture
def run_dir(featvis_root):
    return featvis_root / RUN


def _features_of(run_dir, image: np.ndarray) -> np.ndarray:
    """The run's z of one stored uint8 image (C, H, W), computed apart from the code under test."""
    run = Run.load(run_dir)
    data = run.input_data(run.load_data())
    with torch.no_grad():
        return run.encoder().eval()(data.preprocess(torch.from_numpy(image[None].copy())))[0]


def test_same_seed_same_image_and_another_seed_another(run_dir):
    enc = Run.load(run_dir).encoder().eval()
    before = [p.detach().clone() for p in enc.parameters()]
    a, b = (visualise(enc, 3, (1, 28, 28), lambda x: x, FAST) for _ in range(2))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.trace, b.trace)
    other = visualise(enc, 3, (1, 28, 28), lambda x: x, VisSettings(steps=12, batch=2, seed=1))
    assert not np.array_equal(a.image, other.image)
    assert a.image.shape == (1, 28, 28) and a.image.dtype == np.uint8
    # the encoder is left as it was: same weights, still trainable, no gradient kept
    assert all(torch.equal(p, q) for p, q in zip(before, enc.parameters()))
    assert all(p.requires_grad and p.grad is None for p in enc.parameters())


def test_fourier_image_mixes_decorrelated_colours_and_stays_in_range():
    """Only the first decorrelated component set: R, G and B move together (its column of the
    colour mix has three like-signed entries), and a huge spectrum stays inside [0, 1]."""
    rgb = FourierImage(3, (32, 32), 1.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        rgb.spectrum[1:] = 0
        rgb.spectrum.mul_(100)
        x = rgb()[0].reshape(3, -1).numpy()  # (3, H*W)
    assert np.corrcoef(x)[np.triu_indices(3, 1)].min() > 0.99
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.1
    gray = FourierImage(1, (28, 28), 1.0, torch.Generator().manual_seed(0))
    assert gray().shape == (1, 1, 28, 28) and gray.mix is None


def test_the_image_drives_the_feature_above_its_top_dataset_image(run_dir):
    """A known answer: optimised within the pixel range, the feature exceeds its value on every
    evaluation image (the top one), and the stored activation is the encoder's on the image."""
    a = load_analysis(run_dir)
    feature = int(a.importance.order(a.importance.default)[0])
    vis = visualize(run_dir, feature)
    z = a.features.z[:, feature].astype(np.float64)
    top = float(a.top_images.top_values[feature, 0])
    assert vis.activation > top >= np.percentile(z, 99)
    assert vis.activation > z.mean() + 3 * z.std()
    assert vis.trace[-1] > vis.trace[0] and len(vis.trace) == VisSettings().steps
    assert vis.activation == pytest.approx(float(_features_of(run_dir, vis.image)[feature]), 1e-4)


def test_spectral_feature_is_a_direction_objective(run_dir):
    """In the spectral basis the optimised value is z's projection on the basis's direction
    (checked with the rotation itself), and it exceeds the spectral feature's top image."""
    basis = load_spectral_basis(run_dir)
    a = load_analysis(run_dir, basis="spectral")
    vis = visualize(run_dir, 0, "spectral")
    z = _features_of(run_dir, vis.image).numpy()[None]  # (1, k)
    assert vis.activation == pytest.approx(float(basis.project(z)[0, 0]), abs=1e-4)
    assert vis.activation > float(a.top_images.top_values[0, 0])
    assert vis.path.name.startswith("spectral-0-")


def test_the_cache_is_reused_and_keyed_by_feature_basis_settings_and_weights(run_dir):
    first = visualize(run_dir, 1, settings=FAST)
    stamp = first.path.stat().st_mtime_ns
    again = visualize(run_dir, 1, settings=FAST)
    assert again.path == first.path and first.path.stat().st_mtime_ns == stamp  # read, not made
    np.testing.assert_array_equal(again.image, first.image)
    stored = load_visualization(run_dir, 1, settings=FAST)
    assert stored is not None and stored.activation == first.activation
    others = [
        visualize(run_dir, 2, settings=FAST),
        visualize(run_dir, 1, "spectral", settings=FAST),
        visualize(run_dir, 1, settings=VisSettings(steps=12, batch=2, seed=1)),
    ]
    assert len({first.path, *(o.path for o in others)}) == 4
    assert all(not np.array_equal(o.image, first.image) for o in others)
    assert load_visualization(run_dir, 3, settings=FAST) is None  # never asked for
    assert (
        load_visualization(run_dir, 1, "spectral", settings=VisSettings(steps=13, batch=2)) is None
    )
    # other weights (a retrained run) make the file stale: read as missing, made again
    arrays, meta = load_npz(first.path)
    save_npz(first.path, arrays, {**meta, "key": {**meta["key"], "weights_hash": "0" * 16}})
    assert load_visualization(run_dir, 1, settings=FAST) is None
    remade = visualize(run_dir, 1, settings=FAST)
    np.testing.assert_array_equal(remade.image, first.image)  # the same seed, the same image
    first.path.write_bytes(b"torn")  # a damaged cache is missing, never a traceback
    assert load_visualization(run_dir, 1, settings=FAST) is None


def test_cli_makes_and_prints_and_the_job_command_parses(run_dir, capsys):
    assert (
        main(["visualize", str(run_dir), "--feature", "5", "--steps", "12", "--no-progress"]) == 0
    )
    out = capsys.readouterr().out
    path = vis_path(run_dir, "trained", 5, VisSettings(steps=12))
    assert path.is_file() and str(path) in out and "activation" in out and "top test image" in out
    args = build_parser().parse_args(visualize_command(run_dir, 5, "spectral")[3:])
    assert (args.command, args.feature, args.basis) == ("visualize", 5, "spectral")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--feature", "16"], "feature 16 is out of range: the run has 16 features in the trained"),
        (["--feature", "-1"], "use --feature 0 … 15"),
        (["--feature", "0", "--basis", "nope"], "unknown basis 'nope'; use one of trained"),
        (["--feature", "0", "--steps", "0"], "steps and batch must be >= 1"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(run_dir, capsys, argv, message):
    folder = run_dir / "analysis" / "featvis"
    before = sorted(folder.iterdir()) if folder.is_dir() else []
    assert main(["visualize", str(run_dir), *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert (sorted(folder.iterdir()) if folder.is_dir() else []) == before


def test_reading_a_visualisation_never_imports_torch(run_dir):
    visualize(run_dir, 0, settings=FAST)
    code = (
        "from tricl.analysis.featvis import VisSettings, load_visualization; "
        f"assert load_visualization({str(run_dir)!r}, 0, settings=VisSettings(steps=12, batch=2))"
    )
    assert _heavy_imports(code) == []
