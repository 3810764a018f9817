"""Corrupt cache files: every artifact of analysis/ and _compare/, every way a file goes bad.

Each case copies two tiny trained, analysed and compared runs, damages one file (truncated,
emptied, garbage, or valid JSON / npz / CSV of the wrong type or shape), then checks that the
read path returns None without raising and that ``tricl analyze`` / ``tricl compare`` recompute
it (exit 0, the file readable again) instead of failing with a traceback.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tricl.analysis import analyze, compare, comparison, load_analysis, load_comparison
from tricl.analysis.spectral import load_spectral_basis
from tricl.cli import main
from tricl.config import RunConfig
from tricl.runs import Run
from tricl.train import train

# 12-px digits (the loader resizes the 8x8 pictures): a fifth of 28 px's pixels, the same files
TINY = {"dataset": "digits", "proj_dim": 8, "proj_hidden_dim": 16, "epochs": 1, "batch_size": 128}
TINY["image_size"] = 12
ANALYSIS_NPZ = [
    "features",
    "importance",
    "stats",
    "top_images",
    "embedding",
    "activation_bands",
    "interventions",
]
# stages without a field of their own in Analysis: optional on the read path
OPTIONAL_NPZ = {"activation_bands.npz", "interventions.npz"}


@pytest.fixture(scope="module", autouse=True)
def one_pass_spectral():
    """Spectral bases from one pass over the train split (the default 4 take ~4x as long)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(comparison.SPECTRAL_PARAMS, "reps", 1)
        yield


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, one_pass_spectral) -> Path:
    """A runs root with two analysed tiny runs and their comparison (spectral scores included)."""
    root = tmp_path_factory.mktemp("pristine")
    runs = [train(RunConfig(seed=s, **TINY), runs_root=root, progress=False) for s in (0, 1)]
    for r in runs:
        analyze(r, progress=False)
    compare(runs, progress=False)
    return root


def _spectral(run_path: Path):
    return load_spectral_basis(Run.load(run_path), **comparison.SPECTRAL_PARAMS)


# --------------------------------------------------------------------------- the faults


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(300))


def _npz_meta_list(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["__meta__"] = np.array("[]")
    np.savez(path.with_suffix(""), **arrays)  # np.savez appends .npz


def _npz_wrong_shape(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: (npz[k] if k == "__meta__" else npz[k][..., None]) for k in npz.files}
    np.savez(path.with_suffix(""), **arrays)


def _sidecar(csv: Path) -> Path:
    return csv.with_name(csv.name + ".json")


def _csv_wrong_shape(path: Path) -> None:
    """Valid CSV with a consistent sidecar, but one column short."""
    import hashlib

    lines = path.read_text().splitlines()
    data = "\n".join(",".join(line.split(",")[:-1]) for line in lines).encode() + b"\n"
    path.write_bytes(data)
    side = json.loads(_sidecar(path).read_text())
    side["sha256"] = hashlib.sha256(data).hexdigest()
    _sidecar(path).write_text(json.dumps(side))


def _json_list(path: Path) -> None:
    path.write_text("[]")


def _json_meta_list(path: Path) -> None:
    side = json.loads(path.read_text())
    side["meta"] = []
    path.write_text(json.dumps(side))


BYTES = {"truncated": _truncate, "emptied": _empty, "garbage": _garbage}
NPZ = {**BYTES, "meta_is_a_list": _npz_meta_list, "wrong_shape": _npz_wrong_shape}
CSV = {**BYTES, "wrong_shape": _csv_wrong_shape}
JSON = {**BYTES, "a_list": _json_list, "meta_is_a_list": _json_meta_list}


def _files() -> list[tuple[str, str]]:
    """(file, where): where is analysis (the split folder), run (RUN/analysis) or compare."""
    out = [(f"{s}.npz", "analysis") for s in ANALYSIS_NPZ]
    out += [("downstream.csv", "analysis"), ("downstream.csv.json", "analysis")]
    out += [("spectral.npz", "run"), ("corr.npz", "compare")]
    for table in ("pairs.csv", "matches.csv"):
        out += [(table, "compare"), (table + ".json", "compare")]
    return out


def _npy_wrong_shape(path: Path) -> None:
    """A whole .npy file, one row short."""
    arr = np.load(path)
    with open(path, "wb") as fh:  # np.save(path) would append .npy to a name without it
        np.save(fh, arr[:-1])


NPY = {**BYTES, "wrong_shape": _npy_wrong_shape}
# the feature store (RUN/analysis/<split>/store/): its arrays are named z.<id>.npy etc.
STORE = [
    ("z.npy", "store", "truncated"),
    ("z.npy", "store", "garbage"),
    ("z.npy", "store", "wrong_shape"),
    ("h.npy", "store", "truncated"),
    ("y.npy", "store", "emptied"),
    ("z.npy", "train store", "truncated"),  # the test split's analysis reads the train store
    *(("store.json", "store", fault) for fault in ("truncated", "garbage", "a_list")),
]


def _faults(name: str) -> dict:
    if name.endswith(".npy"):
        return NPY
    return JSON if name.endswith(".json") else CSV if name.endswith(".csv") else NPZ


CASES = [
    pytest.param(name, where, fault, id=f"{name}-{fault}")
    for name, where in _files()
    for fault in _faults(name)
] + [pytest.param(name, where, fault, id=f"{where}-{name}-{fault}") for name, where, fault in STORE]


# --------------------------------------------------------------------------- the test


def _layout(root: Path) -> tuple[list[Path], Path]:
    runs = sorted(p for p in root.iterdir() if not p.name.startswith("_"))
    (cmp,) = list((root / "_compare").iterdir())
    return runs, cmp


@pytest.mark.parametrize(("name", "where", "fault"), CASES)
def test_a_corrupt_cache_file_is_recomputed_never_a_traceback(
    pristine, tmp_path, capsys, name, where, fault
):
    root = tmp_path / "runs"
    shutil.copytree(pristine, root)
    runs, cmp = _layout(root)
    folders = {
        "analysis": runs[0] / "analysis" / "test",
        "run": runs[0] / "analysis",
        "store": runs[0] / "analysis" / "test" / "store",
        "train store": runs[0] / "analysis" / "train" / "store",
    }
    folder = folders.get(where, cmp)
    path = folder / name
    if name.endswith(".npy"):  # z.npy: the z.<id>.npy of the store's one pass
        (path,) = folder.glob(name.replace(".", ".*.", 1))
    before = path.read_bytes()
    _faults(name)[fault](path)
    assert path.read_bytes() != before

    # the read path (the dashboard) sees "not cached", never an exception
    if where in ("analysis", "store", "train store"):
        got = load_analysis(runs[0])
        if name in OPTIONAL_NPZ:  # a stage with no typed field reads as absent, the rest stays
            assert got is not None and name.removesuffix(".npz") not in got.values
        else:
            assert got is None
        argv = ["analyze", str(runs[0]), "--no-progress"]
    elif where == "run":
        assert _spectral(runs[0]) is None
        argv = ["compare", *map(str, runs), "--no-progress", "--force"]
    else:
        assert load_comparison(runs) is None
        argv = ["compare", *map(str, runs), "--no-progress"]

    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    assert load_analysis(runs[0]) is not None
    assert load_comparison(runs) is not None
    assert _spectral(runs[0]) is not None


def test_the_matrix_covers_every_file_of_analysis_and_compare(pristine):
    runs, cmp = _layout(pristine)
    on_disk = {p.name for p in (runs[0] / "analysis" / "test").iterdir()}
    on_disk |= {p.name for p in (runs[0] / "analysis").iterdir() if p.is_file()}
    on_disk |= {p.name for p in cmp.iterdir()}
    assert on_disk - {".lock"} == {name for name, _ in _files()} | {"store"}
    for split in ("test", "train"):  # every file of both stores is damaged by some case
        store = {p.name.split(".")[0] for p in (runs[0] / "analysis" / split / "store").iterdir()}
        assert store - {".lock"} == {"z", "h", "y", "store"}
    assert {name for name, _, _ in STORE} == {"z.npy", "h.npy", "y.npy", "store.json"}
    assert len(CASES) == 72 + 9


def test_a_broken_run_config_is_one_line_exit_2(pristine, tmp_path, capsys):
    """Not a cache: the run itself. The user gets one line naming the file, exit 2."""
    root = tmp_path / "runs"
    shutil.copytree(pristine, root)
    runs, _ = _layout(root)
    (runs[0] / "config.json").write_text("[]")
    capsys.readouterr()
    assert main(["analyze", str(runs[0]), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "config.json" in err, err
