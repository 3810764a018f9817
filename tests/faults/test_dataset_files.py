"""Hostile or unusual dataset files: caption CSVs and CIFAR batches (issue 23, items 4 and 9).

A caption CSV may hold any field size; it is read as UTF-8, and bad bytes or a NUL byte are a
one-line error naming the line; an image path outside the CSV's folder is refused unless
``allow_outside_paths`` is given. A CIFAR batch planted under ``$TRICL_DATA`` is read as numpy
arrays only: a pickle that would run code is refused, and its code never runs.
"""

import pickle

import numpy as np
import pytest
from PIL import Image

from tricl.data import DatasetError, load_dataset
from tricl.text.captions import load_image_text


def _csv(tmp_path, rows: list[tuple[str, str]], name="pairs.csv") -> bytes:
    """``rows`` of (image path, caption) as tab-separated UTF-8 lines; 10 images in img/."""
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(10):
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    lines = ["filepath\ttitle"] + [f"{p}\t{c}" for p, c in rows]
    return ("\n".join(lines) + "\n").encode()


def _rows(n=10):
    return [(f"img/{i}.png", f"a picture number {i}") for i in range(n)]


def _write(tmp_path, data: bytes):
    path = tmp_path / "pairs.csv"
    path.write_bytes(data)
    return f"captions:{path}"


def _one_line_error(spec, match, **options):
    with pytest.raises(DatasetError, match=match) as info:
        load_image_text(spec, **options)
    assert "\n" not in str(info.value) and "pairs.csv" in str(info.value)
    return str(info.value)


def test_a_caption_over_the_csv_modules_128_kib_limit_loads(tmp_path):
    rows = _rows()
    long = "a picture " + "very " * 40_000 + "long"  # 200 kB, over csv's default 131072
    rows[3] = (rows[3][0], long)
    data = load_image_text(_write(tmp_path, _csv(tmp_path, rows)))
    assert long in data.train_captions + data.test_captions
    import csv

    assert csv.field_size_limit() == 131072  # the process-wide limit is restored


def test_bytes_that_are_not_utf8_are_a_one_line_error_naming_the_line(tmp_path):
    data = _csv(tmp_path, _rows()).replace(b"number 4", b"caf\xe9 4")  # latin-1, line 6
    err = _one_line_error(_write(tmp_path, data), "line 6: bytes")
    assert "UTF-8" in err


def test_a_nul_byte_in_a_caption_is_a_one_line_error_naming_the_line(tmp_path):
    data = _csv(tmp_path, _rows()).replace(b"number 7", b"num\x00ber 7")  # line 9
    _one_line_error(_write(tmp_path, data), "line 9: a NUL byte")


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_an_image_outside_the_csvs_folder_is_refused_unless_allowed(tmp_path, where):
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.full((8, 8), 99, np.uint8)).save(outside)
    csv_dir = tmp_path / "set"
    csv_dir.mkdir()
    rows = _rows()
    rows[2] = (str(outside) if where == "absolute" else "../elsewhere.png", rows[2][1])
    spec = _write(csv_dir, _csv(csv_dir, rows))
    err = _one_line_error(spec, "line 4: image .* is outside the CSV's folder")
    assert "allow_outside_paths" in err  # the message names the option
    data = load_image_text(spec, allow_outside_paths=True)
    assert len(data.train_captions) + len(data.test_captions) == 10


def test_a_path_that_goes_down_and_back_up_inside_the_folder_is_fine(tmp_path):
    rows = _rows()
    rows[1] = ("img/../img/1.png", rows[1][1])
    load_image_text(_write(tmp_path, _csv(tmp_path, rows)))


# --------------------------------------------------------------------------- CIFAR batches


class _Planted:
    """A pickle that creates a file when unpickled (what a malicious batch could do instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _fake_cifar10(root, marker):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        x = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        entry = {"data": x, "labels": [i % 10 for i in range(4)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    names = ["airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
    planted = {"data": _Planted(marker), "labels": [0, 1, 2, 3]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(planted, protocol=2))


def test_a_planted_cifar_batch_cannot_run_code(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    _fake_cifar10(tmp_path / "data", marker)
    monkeypatch.setenv("TRICL_DATA", str(tmp_path / "data"))
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", download=False)
    assert not marker.exists()  # the pickle's call never happened
    assert "refused to load" in str(info.value) and "\n" not in str(info.value)


def test_original_style_cifar_batches_still_load(tmp_path):
    _fake_cifar10(tmp_path, tmp_path / "unused")
    entry = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(entry, 2))
    data = load_dataset("cifar10", root=tmp_path, download=False)
    assert data.train_x.shape == (20, 3, 32, 32) and len(data.test_y) == 4
    assert data.classes[1] == "car"
