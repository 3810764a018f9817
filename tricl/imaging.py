"""Decoding image files into uint8 arrays: headers, one image, many images in threads.

Used by the ``folder:PATH`` datasets (:mod:`tricl.data`) and the caption CSVs
(:mod:`tricl.text.captions`); a file that cannot be decoded raises :class:`ImageError` naming it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FOLDER_FALLBACK_SIZE = 32  # images of mixed (or non-square) sizes are resized to this
PROGRESS_MIN_IMAGES = 1000  # decoding more images than this shows a progress bar
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageError(ValueError):
    """An image file cannot be read; the one-line message names the file and the fix."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def _unreadable(path: Path, exc: Exception) -> ImageError:
    return ImageError(f"cannot read image {path} ({one_line(exc)}); delete or replace that file")


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) of an image, reading only its header.

    Raises:
        ImageError: the file is not an image PIL can open.
    """
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except _IMAGE_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def decode_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    """Decode to uint8 (H, W) for mode "L" or (H, W, 3) for "RGB"; resize+center-crop to size.

    Raises:
        ImageError: the file cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size, size):
                im = ImageOps.fit(im, (size, size), method=Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except _IMAGE_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def decode_all(
    paths: list[Path],
    image_size: int,
    desc: str,
    progress: bool = True,
    min_images: int = PROGRESS_MIN_IMAGES,
) -> Tensor:
    """Decode image files into uint8 (N, C, S, S), C = 1 if every image is grayscale else 3.

    S is ``image_size`` if > 0; else the native size if all images share one square size; else
    :data:`FOLDER_FALLBACK_SIZE`. Non-square images are resized (shorter side) and center-cropped.

    Args:
        paths: the image files.
        image_size: the side S (0: see above).
        desc: the progress bar's label.
        progress: draw a progress bar (for more than ``min_images`` images).
        min_images: fewer images than this decode without a bar (they take no time).

    Raises:
        ImageError: a file cannot be decoded.
    """
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        headers = list(pool.map(image_header, paths))
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
                pool.map(lambda p: decode_image(p, mode, size), paths),
                total=len(paths),
                desc=desc,
                unit="img",
                disable=not progress or len(paths) <= min_images,
            )
        )
    x = np.stack(images)  # (N, S, S) or (N, S, S, 3)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)  # (N, C, S, S)
    return torch.from_numpy(np.ascontiguousarray(x))
