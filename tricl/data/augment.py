"""Batched two-view augmentation on the device: kornia recipes per augmentation family."""

from __future__ import annotations

from collections.abc import Callable

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from tricl.data.core import DatasetError, ImageData, normalize


class Normalize(nn.Module):
    """(x - mean) / std per channel, on whatever device x is on (no buffers to move)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, x: Tensor) -> Tensor:
        """x: float images in [0, 1]. Shape: (B, C, H, W). Returns the same shape."""
        return normalize(x, self.mean, self.std)

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
