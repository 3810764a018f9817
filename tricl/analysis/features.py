"""A run's features on a dataset split: projector outputs z (the paper's features), backbone h."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # reading stored features needs no torch (the dashboard's server never loads it)
    import torch
    from torch import Tensor, nn

BATCH_SIZE = 256


@dataclass(frozen=True, eq=False)
class Features:
    """A run's features on the evaluation split, plus z of the train split.

    Attributes:
        z: projector outputs of the evaluation images. Shape: (N, k).
        h: backbone features of the evaluation images. Shape: (N, feat_dim).
        labels: class of each evaluation image, -1 for a set without labels. Shape: (N,).
        indices: index of each row in the evaluation split (what top-image indices refer to).
            Shape: (N,).
        train_z: projector outputs of the train split (probe and retrieval database). Shape: (M, k).
        train_labels: their classes. Shape: (M,).
        s: the diagonal of S (softplus of the importance logits), or None. Shape: (k,).
        classes: class names; label i is ``classes[i]``; empty without labels.
        dataset: dataset spec the images came from.
        split: evaluation split name.
        images_hash: hash of the evaluation images and labels (runs compared must share it).
    """

    z: np.ndarray
    h: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    train_z: np.ndarray
    train_labels: np.ndarray
    s: np.ndarray | None
    classes: list[str]
    dataset: str
    split: str
    images_hash: str

    @property
    def k(self) -> int:
        """Number of features."""
        return int(self.z.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def has_labels(self) -> bool:
        """Whether the images have class labels (class views and probes need them)."""
        return self.n_classes > 0


def images_hash(x: Tensor, y: Tensor) -> str:
    """First 16 hex digits of the SHA-256 of uint8 images (N, C, H, W) and labels (N,)."""
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.contiguous().numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:16]


def extract(
    encoder: nn.Module,
    images: Tensor,
    preprocess: Callable[[Tensor], Tensor],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = BATCH_SIZE,
    tick: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features and projector outputs of every image, in eval mode.

    Args:
        encoder: has ``forward_features`` (images -> h) and ``project`` (h -> z).
        images: uint8 images. Shape: (N, C, H, W).
        preprocess: uint8 (B, C, H, W) -> normalised float (B, C, H, W) (``ImageData.preprocess``).
        device: where the encoder runs.
        batch_size: images per forward pass.
        tick: called after every batch (progress bars).

    Returns:
        ``(z, h)`` as float32 arrays. Shapes: (N, k), (N, feat_dim).
    """
    import torch

    encoder.eval()
    zs, hs = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start : start + batch_size].to(device))  # (B, C, H, W) float
            h = encoder.forward_features(x)  # (B, feat_dim)
            z = encoder.project(h)  # (B, k)
            zs.append(z.float().cpu().numpy())
            hs.append(h.float().cpu().numpy())
            if tick is not None:
                tick()
    return np.concatenate(zs), np.concatenate(hs)


def n_batches(n: int, batch_size: int = BATCH_SIZE) -> int:
    """Forward passes :func:`extract` makes for n images."""
    return -(-n // batch_size)
