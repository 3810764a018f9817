"""The memory-mapped feature store: one split's features, written by one streaming pass.

``RUN/analysis/<split>/store/`` holds the features of every image of one split, as ``.npy`` files
that readers open with ``np.load(mmap_mode="r")`` (nothing is read until a row is used):

================  =========  ==================================================================
file              dtype      content
================  =========  ==================================================================
``z.<id>.npy``    float16    projector outputs (the analysis's features). Shape: (N, k).
``h.<id>.npy``    float32    backbone features (full precision: the backbone probe is fitted on
                             them, and gives the same numbers as on a fresh pass). (N, feat_dim).
``y.<id>.npy``    int64      class of each image, -1 without labels. Shape: (N,).
``store.json``               key (weights hash, dataset, image size, split), version, images
                             hash, classes, shapes and ``id``
================  =========  ==================================================================

The pass fills the arrays batch by batch through ``np.lib.format.open_memmap`` on temporary files
(one batch of activations in memory, never the N x feat_dim matrix); each file is renamed into
place (:func:`tricl.runs.atomic_path`) and ``store.json``, written last, names the ``id`` of the
files it belongs to, so a reader never pairs a description with the files of another pass. A
missing, truncated or garbled store, or one of other weights or images, reads as None and is
written again. Both splits' analyses read the same train store: the 50,000 train images go
through the encoder once, not once per evaluation split.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tricl.analysis.features import images_hash, n_batches
from tricl.analysis.store import _UNREADABLE, locked, to_json
from tricl.runs import atomic_path, atomic_write_bytes

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

STORE_DIR = "store"
STORE_FILE = "store.json"
# bump when the files' layout or content changes: every store is then written again
STORE_VERSION = 1
_DTYPES = {"z": np.float16, "h": np.float32, "y": np.int64}


@dataclass(frozen=True, eq=False)
class SplitStore:
    """One split's stored features, memory-mapped (read-only).

    Attributes:
        z: projector outputs. Shape: (N, k), float16.
        h: backbone features. Shape: (N, feat_dim), float32.
        y: classes, -1 without labels. Shape: (N,).
        meta: the contents of ``store.json``.
    """

    z: np.ndarray
    h: np.ndarray
    y: np.ndarray
    meta: dict[str, Any]

    @property
    def id(self) -> str:
        """The id of the pass that wrote these files."""
        return str(self.meta["id"])

    @property
    def images_hash(self) -> str:
        return str(self.meta["images_hash"])


def store_dir(split_dir: Path) -> Path:
    """The store folder of one split's analysis folder (``RUN/analysis/<split>``)."""
    return Path(split_dir) / STORE_DIR


def _files(folder: Path, store_id: str) -> dict[str, Path]:
    return {name: folder / f"{name}.{store_id}.npy" for name in _DTYPES}


def read_store(
    split_dir: Path, key: dict[str, Any], store_id: str | None = None
) -> SplitStore | None:
    """The split's store if whole and written for ``key`` (and, given, with id ``store_id``).

    Returns:
        The :class:`SplitStore` (arrays memory-mapped), or None when it is missing, truncated,
        garbled, of another version or key.
    """
    folder = store_dir(split_dir)
    try:
        meta = json.loads((folder / STORE_FILE).read_text())
        if not isinstance(meta, dict) or meta.get("version") != STORE_VERSION:
            return None
        if meta.get("key") != key or (store_id is not None and meta.get("id") != store_id):
            return None
        arrays = {
            name: np.load(path, mmap_mode="r", allow_pickle=False)
            for name, path in _files(folder, str(meta["id"])).items()
        }
        n, k, d = int(meta["n"]), int(meta["k"]), int(meta["feat_dim"])
    except _UNREADABLE:  # a truncated .npy raises ValueError when mapped
        return None
    want = {"z": (n, k), "h": (n, d), "y": (n,)}
    for name, arr in arrays.items():
        if arr.shape != want[name] or arr.dtype != _DTYPES[name]:
            return None
    return SplitStore(arrays["z"], arrays["h"], arrays["y"], meta)


@dataclass(frozen=True)
class EncoderPass:
    """What one streaming pass of an encoder reads.

    Attributes:
        encoder: has ``forward_features`` (images -> h) and ``project`` (h -> z).
        images: uint8 images. Shape: (N, C, H, W).
        labels: their classes. Shape: (N,).
        preprocess: uint8 (B, C, H, W) -> normalised float (B, C, H, W).
        classes: class names.
        device: where the encoder runs.
        batch_size: images per forward pass.
    """

    encoder: nn.Module
    images: Tensor
    labels: Tensor
    preprocess: Callable[[Tensor], Tensor]
    classes: list[str]
    device: str | torch.device
    batch_size: int


def _stream(
    job: EncoderPass, tmp: dict[str, Path], tick: Callable[[], None] | None
) -> dict[str, tuple[int, ...]]:
    """The encoder's z and h for every image, batch by batch, and the labels, into the
    memory-mapped ``.npy`` files at ``tmp`` (created at the first batch, when the widths are
    known); returns each array's shape once flushed and unmapped."""
    n, step = len(job.images), job.batch_size
    out: dict[str, np.ndarray] = {}
    for start in range(0, n, step):
        x = job.preprocess(job.images[start : start + step].to(job.device))  # (B, C, H, W)
        h = job.encoder.forward_features(x)  # (B, feat_dim)
        z = job.encoder.project(h)  # (B, k)
        if not out:
            shapes = {"z": (n, z.shape[1]), "h": (n, h.shape[1]), "y": (n,)}
            out = {
                name: np.lib.format.open_memmap(
                    tmp[name], mode="w+", dtype=_DTYPES[name], shape=shapes[name]
                )
                for name in tmp
            }
        stop = start + len(z)
        out["z"][start:stop] = z.float().cpu().numpy()  # float32 -> float16, as stored before
        out["h"][start:stop] = h.float().cpu().numpy()
        if tick is not None:
            tick()
    out["y"][:] = job.labels.numpy().astype(np.int64)
    shapes = {name: arr.shape for name, arr in out.items()}
    for arr in out.values():
        arr.flush()
    out.clear()  # unmap before the files are renamed into place
    return shapes


def write_store(
    split_dir: Path,
    key: dict[str, Any],
    job: EncoderPass,
    *,
    images_hash: str,
    tick: Callable[[], None] | None = None,
) -> SplitStore:
    """One streaming pass of the encoder over ``job.images`` into the split's store.

    Args:
        split_dir: the split's analysis folder.
        key: what the store is for (weights hash, dataset, image size, split).
        job: the encoder, images and how to read them.
        images_hash: :func:`tricl.analysis.features.images_hash` of images and labels.
        tick: called after every batch.

    Returns:
        The written store, memory-mapped.
    """
    import torch

    folder = store_dir(split_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for torn in folder.glob(".*.tmp"):  # a killed pass's temporary files (callers hold the lock)
        torn.unlink(missing_ok=True)
    store_id = uuid.uuid4().hex[:12]
    paths = _files(folder, store_id)
    job.encoder.eval()
    with contextlib.ExitStack() as stack, torch.inference_mode():
        tmp = {name: stack.enter_context(atomic_path(path)) for name, path in paths.items()}
        shapes = _stream(job, tmp, tick)
    meta = {
        "key": key,
        "version": STORE_VERSION,
        "id": store_id,
        "n": len(job.images),
        "k": int(shapes["z"][1]),
        "feat_dim": int(shapes["h"][1]),
        "images_hash": images_hash,
        "classes": list(job.classes),
    }
    atomic_write_bytes(folder / STORE_FILE, to_json(meta).encode())
    for old in folder.glob("*.npy"):  # files of earlier passes: nothing names them any more
        if old not in paths.values():
            old.unlink(missing_ok=True)
    got = read_store(split_dir, json.loads(to_json(key)), store_id)
    if got is None:
        raise OSError(f"the feature store in {folder} did not read back; check the disk")
    return got


def split_store(
    split_dir: Path, key: dict[str, Any], job: EncoderPass, *, progress: Any, lock: bool
) -> SplitStore:
    """The split's store: read when it holds these weights' features of these very images, else
    written by one pass of the encoder (:func:`write_store`).

    Args:
        split_dir, key, job: as :func:`write_store`.
        progress: a :class:`~tricl.analysis.stages.Progress` (its ``add`` and ``tick``).
        lock: hold the split folder's lock while checking and writing (False: the caller holds
            it; the lock is not re-entrant).
    """
    digest = images_hash(job.images, job.labels)
    with locked(split_dir) if lock else contextlib.nullcontext():
        got = read_store(split_dir, key)
        if got is not None and got.images_hash == digest:
            return got
        progress.add(n_batches(len(job.images), job.batch_size))
        return write_store(split_dir, key, job, images_hash=digest, tick=progress.tick)


def store_size(split_dir: Path) -> int:
    """Bytes of the split's store files."""
    folder = store_dir(split_dir)
    return sum(p.stat().st_size for p in folder.glob("*")) if folder.is_dir() else 0
