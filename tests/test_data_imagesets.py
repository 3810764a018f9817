"""Image sets from the user's own files: folders without labels, WebDataset tar shards (with and
without ``cls``), damaged shards, large photos read at the requested size, and bad input.

The registry-wide checks (every dataset loads, resizes) are in ``test_data.py``; these are the
cases particular to image folders and shards, on a few dozen generated images.
"""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import write_shards

import tricl.imaging
from tricl.data import DatasetError, load_dataset
from tricl.data.shards import expand_braces


def _multiset(*tensors: torch.Tensor) -> list[bytes]:
    return sorted(img.numpy().tobytes() for t in tensors for img in t)


def _write_flat(folder: Path, n: int, size: int = 12, fmt: str = "png") -> list[np.ndarray]:
    """n random RGB images directly in folder (no class subfolders)."""
    rng = np.random.default_rng(n)
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.{fmt}")
        out.append(pixels.transpose(2, 0, 1))
    return out


# --------------------------------------------------------------------------- folders without labels


def test_folder_of_images_without_subfolders_has_no_labels(tmp_path):
    written = _write_flat(tmp_path / "photos", 20)
    data = load_dataset(f"folder:{tmp_path / 'photos'}")
    assert not data.labelled and data.classes == []
    assert (len(data.train_x), len(data.test_x)) == (16, 4)
    assert (data.train_y == -1).all() and (data.test_y == -1).all()
    assert _multiset(data.train_x, data.test_x) == sorted(w.tobytes() for w in written)
    again = load_dataset(f"folder:{tmp_path / 'photos'}")
    assert torch.equal(again.train_x, data.train_x), "the split is fixed"


def test_train_and_test_folders_without_labels(tmp_path):
    _write_flat(tmp_path / "set" / "train", 6)
    _write_flat(tmp_path / "set" / "test", 3)
    data = load_dataset(f"folder:{tmp_path / 'set'}", image_size=8)
    assert (len(data.train_x), len(data.test_x), data.image_size) == (6, 3, 8)
    assert data.classes == [] and (data.test_y == -1).all()


def test_large_photos_are_resized_while_read(tmp_path):
    """24 photos of 900x600: the loader keeps only 16-px copies (numpy's traced peak stays far
    below the 39 MB the photos take decoded at full size)."""
    folder = tmp_path / "big"
    folder.mkdir()
    ramp = np.linspace(0, 255, 900, dtype=np.uint8)
    for i in range(24):
        pixels = np.stack([np.tile(ramp, (600, 1))] * 3, axis=-1) // (i % 3 + 1)
        Image.fromarray(pixels).save(folder / f"p{i}.jpg", quality=50)
    tracemalloc.start()
    data = load_dataset(f"folder:{folder}", image_size=16, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert data.train_x.shape[1:] == (3, 16, 16)
    full = 24 * 900 * 600 * 3
    assert peak < full / 3, f"peak {peak / 1e6:.1f} MB of traced memory while loading"


def test_a_set_too_big_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    _write_flat(tmp_path / "photos", 10)
    monkeypatch.setattr(tricl.imaging, "available_bytes", lambda: 10 * 3 * 12 * 12)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"folder:{tmp_path / 'photos'}")
    assert "--image-size" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setattr(tricl.imaging, "available_bytes", lambda: 10 * 3 * 4 * 4 * 2)
    assert load_dataset(f"folder:{tmp_path / 'photos'}", image_size=4).image_size == 4


# --------------------------------------------------------------------------- WebDataset shards


def test_expand_braces():
    assert expand_braces("s-{00..02}.tar") == ["s-00.tar", "s-01.tar", "s-02.tar"]
    assert expand_braces("{a,b}/x{1..2}") == ["a/x1", "a/x2", "b/x1", "b/x2"]
    assert expand_braces("plain.tar") == ["plain.tar"]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_shards_with_cls_are_labelled_by_it(tmp_path, fmt):
    labels = [str(i % 12) for i in range(36)]  # 12 classes: "10" sorts after "9"
    written = write_shards(tmp_path / "w", labels, shards=3, fmt=fmt)
    data = load_dataset(f"wds:{tmp_path / 'w'}/shard-{{0..2}}.tar", progress=False)
    assert data.classes == [str(i) for i in range(12)], "integer labels keep their values"
    assert _multiset(data.train_x, data.test_x) == sorted(w.tobytes() for w in written)
    by_image = {w.tobytes(): int(label) for w, label in zip(written, labels)}
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        assert [by_image[img.numpy().tobytes()] for img in x] == y.tolist()
    glob = load_dataset(f"wds:{tmp_path / 'w'}/*.tar", progress=False)
    assert torch.equal(glob.train_x, data.train_x), "a glob and a brace range read the same"


def test_shards_without_cls_have_no_labels(tmp_path):
    write_shards(tmp_path / "w", [None] * 20, fmt="JPEG")
    data = load_dataset(f"wds:{tmp_path / 'w'}/shard-*.tar", image_size=8, progress=False)
    assert data.classes == [] and not data.labelled
    assert (len(data.train_x), len(data.test_x)) == (16, 4)
    assert (data.train_y == -1).all()


def _damage(path: Path, where: int, what: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[where : where + len(what)] = what
    path.write_bytes(bytes(raw))


def test_a_damaged_shard_is_skipped_with_a_count(tmp_path, capsys):
    write_shards(tmp_path / "w", ["0", "1"] * 12, shards=3)
    shard = tmp_path / "w" / "shard-1.tar"
    _damage(shard, 2048, b"garbage!" * 64)  # over a member header: the archive is broken there
    data = load_dataset(f"wds:{tmp_path / 'w'}/shard-*.tar", progress=False)
    assert len(data.train_x) + len(data.test_x) == 16, "the two whole shards' 16 samples"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "skipped 1 of 3 shards damaged" in err and "shard-1.tar" in err


def test_a_cut_shard_and_an_undecodable_image_are_skipped(tmp_path, capsys):
    write_shards(tmp_path / "w", ["0", "1"] * 12, shards=3)
    cut = tmp_path / "w" / "shard-0.tar"
    cut.write_bytes(cut.read_bytes()[:3000])  # cut inside a member
    # an image member whose bytes are not an image, in an otherwise whole shard
    with tarfile.open(tmp_path / "w" / "shard-2.tar", "a") as tar:
        for name, data in (("bad.png", b"not a png at all"), ("bad.cls", b"1")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = load_dataset(f"wds:{tmp_path / 'w'}/*.tar", progress=False)
    assert len(data.train_x) + len(data.test_x) == 16
    err = capsys.readouterr().err
    assert "1 of 3 shards damaged (shard-0.tar" in err and "1 images that cannot be decoded" in err


def _bad_all_shards_damaged(tmp_path: Path) -> tuple[str, str]:
    write_shards(tmp_path / "w", ["0", "1"] * 4, shards=2)
    for shard in (tmp_path / "w").glob("*.tar"):
        shard.write_bytes(b"\x01" * 2048)
    return f"wds:{tmp_path / 'w'}/*.tar", "none of the 2 shard(s)"


def _bad_pattern_matches_nothing(tmp_path: Path) -> tuple[str, str]:
    return f"wds:{tmp_path}/nothing-*.tar", "matches no files"


def _bad_missing_shard_in_range(tmp_path: Path) -> tuple[str, str]:
    write_shards(tmp_path / "w", ["0", "1"] * 4, shards=2)
    return f"wds:{tmp_path / 'w'}/shard-{{0..2}}.tar", "shard-2.tar"


def _bad_not_a_tar(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b")
    return f"wds:{tmp_path}/x.*", "is not a .tar file"


def _bad_some_samples_without_cls(tmp_path: Path) -> tuple[str, str]:
    write_shards(tmp_path / "w", ["0", None, "1", "0"], shards=1)
    return f"wds:{tmp_path / 'w'}/shard-0.tar", "1 of 4 samples have no .cls"


def _bad_shards_without_images(tmp_path: Path) -> tuple[str, str]:
    write_shards(tmp_path / "w", [], shards=1)
    return f"wds:{tmp_path / 'w'}/shard-0.tar", "holds no images"


def _bad_empty_folder(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "empty").mkdir()
    return f"folder:{tmp_path / 'empty'}", "has no images"


def _bad_folder_of_other_files(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("not an image")
    return f"folder:{tmp_path / 'docs'}", "has no images"


def _bad_folder_of_unreadable_images(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "f").mkdir()
    for i in range(3):
        (tmp_path / "f" / f"{i}.png").write_bytes(b"not a png")
    return f"folder:{tmp_path / 'f'}", "cannot read image"


def _bad_single_image(tmp_path: Path) -> tuple[str, str]:
    _write_flat(tmp_path / "one", 1)
    return f"folder:{tmp_path / 'one'}", "has 1 image"


def _bad_mixed_train_test_layout(tmp_path: Path) -> tuple[str, str]:
    _write_flat(tmp_path / "s" / "train", 3)
    _write_flat(tmp_path / "s" / "test" / "a", 2)
    return f"folder:{tmp_path / 's'}", "lay both out the same way"


BAD_INPUTS = {
    "every shard damaged": _bad_all_shards_damaged,
    "pattern matches nothing": _bad_pattern_matches_nothing,
    "missing shard in a range": _bad_missing_shard_in_range,
    "not a tar file": _bad_not_a_tar,
    "cls on some samples only": _bad_some_samples_without_cls,
    "shards without images": _bad_shards_without_images,
    "empty folder": _bad_empty_folder,
    "folder of other files": _bad_folder_of_other_files,
    "folder of unreadable images": _bad_folder_of_unreadable_images,
    "a single image": _bad_single_image,
    "train and test laid out differently": _bad_mixed_train_test_layout,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_image_sets_raise_one_line_naming_the_fix(case, tmp_path):
    spec, expected = BAD_INPUTS[case](tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(DatasetError) as info:
        load_dataset(spec, progress=False)
    message = str(info.value)
    assert "\n" not in message and expected in message
    assert ";" in message, "the message must name a fix after the problem"
    assert sorted(p for p in tmp_path.rglob("*")) == before, "nothing is written"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_folder_is_refused(tmp_path):
    _write_flat(tmp_path / "locked", 4)
    (tmp_path / "locked").chmod(0)
    try:
        with pytest.raises(DatasetError, match=r"cannot read folder .*; check"):
            load_dataset(f"folder:{tmp_path / 'locked'}")
    finally:
        (tmp_path / "locked").chmod(0o755)
