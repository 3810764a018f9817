"""Downloadable datasets: CIFAR-10/100 (read without pickle's code execution) and STL-10.

An archive is downloaded only when files are absent, and torchvision checks its md5 while doing
so. Files already in place (placed by hand, or a small test set) are accepted by presence: their
md5 is not checked, so they are read as data and nothing else. The CIFAR "python version" batches
are pickles of numpy arrays; :func:`read_cifar_batch` unpickles them with only numpy's array
reconstruction allowed, so a file planted under ``$TRICL_DATA`` cannot run code (torchvision's
loader would run whatever the pickle names). STL-10's files are raw bytes read by numpy.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from tricl.data.core import DatasetError, ImageData, LoadRequest, one_line

# the only globals a CIFAR batch's pickle may name: numpy's array reconstruction (numpy 1 and 2)
# and _codecs.encode, with which protocol 2 writes bytes (str -> bytes, nothing else)
_NUMPY_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and numpy arrays, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a CIFAR batch holds only numpy arrays, so this"
                " file is not an original one"
            )
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> dict[str, Any]:
    """One CIFAR "python version" file (a pickled dict), unpickled without running code.

    Raises:
        pickle.UnpicklingError: the pickle names anything but numpy's array reconstruction.
        ValueError: it is not a dict.
    """
    with open(path, "rb") as fh:
        entry = _ArraysOnly(fh, encoding="latin1").load()  # latin1: the files are Python 2's
    if not isinstance(entry, dict):
        raise ValueError(f"{path.name} holds a {type(entry).__name__}, not a CIFAR batch dict")
    return entry


class _Cifar:
    """CIFAR-10/100 ``(root, train, download)`` like torchvision's classes, read without pickle's
    globals: ``data`` uint8 (N, 3, 32, 32), ``targets``, ``classes``."""

    source: ClassVar[str]  # the torchvision class (its url, archive name and md5), by name
    base_folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    meta_file: ClassVar[str]
    names_key: ClassVar[str]
    labels_key: ClassVar[str]
    channels_last: ClassVar[bool] = False

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        if download:  # md5-checked archive; extraction unpickles nothing
            import torchvision  # imported on use: 1.5 s of every process's start otherwise
            from torchvision.datasets.utils import download_and_extract_archive

            src = getattr(torchvision.datasets, self.source)
            download_and_extract_archive(src.url, root, filename=src.filename, md5=src.tgz_md5)
        folder = Path(root) / self.base_folder
        data, targets = [], []
        for name in self.train_files if train else self.test_files:
            entry = read_cifar_batch(folder / name)
            x, y = entry["data"], entry[self.labels_key]
            if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2):
                raise ValueError(f"{name}: 'data' is not a uint8 (N, 3072) array")
            if len(y) != len(x) or not all(isinstance(v, int) for v in y):
                raise ValueError(f"{name}: {len(y)} integer labels for {len(x)} images expected")
            data.append(x.reshape(-1, 3, 32, 32))  # (N, 3072) -> (N, C, H, W)
            targets += y
        self.data = np.concatenate(data)
        self.targets = targets
        self.classes = [str(c) for c in read_cifar_batch(folder / self.meta_file)[self.names_key]]


class _CIFAR10(_Cifar):
    source = "CIFAR10"
    base_folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file, names_key, labels_key = "batches.meta", "label_names", "labels"
    required_files = (*train_files, *test_files, meta_file)


class _CIFAR100(_Cifar):
    source = "CIFAR100"
    base_folder = "cifar-100-python"
    train_files, test_files = ("train",), ("test",)
    meta_file, names_key, labels_key = "meta", "fine_label_names", "fine_labels"
    required_files = (*train_files, *test_files, meta_file)


class _STL10:
    """torchvision's STL-10 ``(root, train, download)``, its class built on first use (importing
    torchvision costs every process 1.5 s). Only the labelled splits: the 2.6 GB unlabeled_X.bin
    is neither needed nor required."""

    base_folder = "stl10_binary"
    required_files = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")
    channels_last: ClassVar[bool] = False

    def __new__(cls, root: str, train: bool = True, download: bool = False) -> Any:
        return _stl10_class()(root, split="train" if train else "test", download=download)


@functools.cache
def _stl10_class() -> type:
    import torchvision

    class STL10(torchvision.datasets.STL10):
        def _check_integrity(self) -> bool:
            # torchvision checks the md5 of every extracted file, which only the original files
            # pass; placed (or test) files are accepted by presence (they are read as raw bytes)
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name in _STL10.required_files)

    assert STL10.base_folder == _STL10.base_folder
    return STL10


# download: network and archive errors; read: truncated or foreign files
_DOWNLOAD_ERRORS = (OSError, RuntimeError, tarfile.TarError, EOFError)
_READ_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    pickle.UnpicklingError,
    KeyError,
    TypeError,
)


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


def load_downloadable(
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
                f" ({one_line(exc)}); {fix}"
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
            f"{name}: the files in {folder} are unreadable ({one_line(exc)}); delete them to"
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
