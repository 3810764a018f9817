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
        ops.append(_blur(data.image_size))
    return ops


def _digits_ops(data: ImageData) -> list[nn.Module]:
    """Mild crops, rotation and shifts, small erasures; no flips (a flipped 2 is not a 2)."""
    size = (data.image_size, data.image_size)
    return [
        K.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(0.8, 1.25), cropping_mode="resample"),
        K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), p=1.0),
        K.RandomErasing(scale=(0.02, 0.1), ratio=(0.3, 3.3), value=0.0, p=0.25),
    ]


class GreyToRGB(nn.Module):
    """One channel repeated three times (as PIL's ``convert("RGB")``); colour images pass as they
    are."""

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, 1 or 3, H, W) -> (B, 3, H, W)."""
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _blur(size: int) -> nn.Module:
    """SimCLR's Gaussian blur: a kernel of about 10% of the side, sigma in [0.1, 2], p = 0.5."""
    kernel = int(0.1 * size) // 2 * 2 + 1  # odd
    return K.RandomGaussianBlur((kernel, kernel), sigma=(0.1, 2.0), p=0.5)


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


def imagenet_augmentation(
    size: int, mean: tuple[float, ...], std: tuple[float, ...], channels: int
) -> Augmentation:
    """SimCLR's ImageNet recipe at a model's input size, then the model's own normalisation (the
    :data:`~tricl.catalog.IMAGENET_FAMILY` family).

    Random resized crop (scale 0.08-1) to ``size``, horizontal flip, colour jitter of strength 1
    (0.8, 0.8, 0.8, 0.2; p = 0.8), grayscale (p = 0.2), Gaussian blur (p = 0.5); grey images are
    made RGB first, as the model's evaluation pipeline does.

    Args:
        size: the side of the square the model reads (its preprocessing's crop), in pixels.
        mean: the model's per-channel mean (three entries, images in [0, 1]).
        std: the model's per-channel standard deviation.
        channels: channels of the dataset's images (1 or 3).

    Returns:
        An :class:`Augmentation`: uint8 (B, channels, H, W) of any H, W -> one random view, float32
        (B, 3, size, size) normalised as the model expects.
    """
    ops = [
        GreyToRGB(),
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0), cropping_mode="resample"),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8),
        K.RandomGrayscale(p=0.2),
        _blur(size),
        Normalize(mean, std),
    ]
    return Augmentation(ops, channels)
