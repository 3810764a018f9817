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

BATCH_SIZE = 256  # the most images per forward pass (small inputs)
# Activations of one forward pass may take about this much memory: a ResNet-50 at 224 px keeps
# ~13 MB of feature maps alive per image, so 256 images would need over 3 GiB (measured by
# :func:`batch_size_for`, which sizes the batch from the model's largest feature map)
ACTIVATION_BUDGET = 1 << 30
LIVE_MAPS = 4  # feature maps alive at once in a forward pass (a residual block's in, mid, out)


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


def batch_size_for(
    encoder: nn.Module,
    image: Tensor,
    preprocess: Callable[[Tensor], Tensor],
    *,
    device: str | torch.device = "cpu",
    budget: int = ACTIVATION_BUDGET,
    most: int = BATCH_SIZE,
) -> int:
    """Images per forward pass that keep the activations within ``budget`` bytes.

    One image goes through the encoder with a hook on every module; the largest output (a ResNet's
    stem or first stage at the model's input size, a ViT's MLP) times :data:`LIVE_MAPS` is the
    memory one image needs.

    Args:
        encoder: has ``forward_features``.
        image: one uint8 image. Shape: (1, C, H, W).
        preprocess: as in :func:`extract`.
        device: where the encoder runs.
        budget: bytes of activations allowed per forward pass.
        most: the largest batch returned.

    Returns:
        The batch size, between 1 and ``most``.
    """
    import torch

    largest = [0]

    def size(module: nn.Module, args: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    handles = [m.register_forward_hook(size) for m in encoder.modules()]
    try:
        encoder.eval()
        with torch.inference_mode():
            encoder.forward_features(preprocess(image[:1].to(device)))
    finally:
        for handle in handles:
            handle.remove()
    return int(max(1, min(most, budget // max(1, LIVE_MAPS * largest[0]))))


def extract(
    encoder: nn.Module,
    images: Tensor,
    preprocess: Callable[[Tensor], Tensor],
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    tick: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features and projector outputs of every image, in eval mode.

    The outputs are allocated once and filled batch by batch (no list of batches to concatenate:
    the peak is the two matrices plus one batch's activations).

    Args:
        encoder: has ``forward_features`` (images -> h) and ``project`` (h -> z).
        images: uint8 images. Shape: (N, C, H, W).
        preprocess: uint8 (B, C, H, W) -> normalised float (B, C, H, W) (``ImageData.preprocess``).
        device: where the encoder runs.
        batch_size: images per forward pass; None: :func:`batch_size_for` (the memory budget).
        tick: called after every batch (progress bars).

    Returns:
        ``(z, h)`` as float32 arrays. Shapes: (N, k), (N, feat_dim).
    """
    import torch

    if batch_size is None:
        batch_size = batch_size_for(encoder, images[:1], preprocess, device=device)
    encoder.eval()
    n = len(images)
    z_out = h_out = np.empty((0, 0), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = preprocess(images[start : start + batch_size].to(device))  # (B, C, H, W) float
            h = encoder.forward_features(x)  # (B, feat_dim)
            z = encoder.project(h)  # (B, k)
            if start == 0:
                z_out = np.empty((n, z.shape[1]), dtype=np.float32)  # (N, k)
                h_out = np.empty((n, h.shape[1]), dtype=np.float32)  # (N, feat_dim)
            z_out[start : start + len(z)] = z.float().cpu().numpy()
            h_out[start : start + len(h)] = h.float().cpu().numpy()
            if tick is not None:
                tick()
    return z_out, h_out


def n_batches(n: int, batch_size: int = BATCH_SIZE) -> int:
    """Forward passes :func:`extract` makes for n images."""
    return -(-n // batch_size)
