"""Decoding image files into uint8 arrays: headers, one image, many images in threads.

Used by the ``folder:PATH`` and ``wds:PATTERN`` datasets (:mod:`tricl.data`; a tar member is an
:class:`ImageSource`) and the caption CSVs (:mod:`tricl.text.captions`); a file that cannot be
decoded raises :class:`ImageError` naming it. Each image is resized while it is read, so a set of
large photos never sits in memory at full size, and a set that would not fit is refused first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FOLDER_FALLBACK_SIZE = 32  # images of mixed (or non-square) sizes are resized to this
PROGRESS_MIN_IMAGES = 1000  # decoding more images than this shows a progress bar
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})
MEMORY_SHARE = 0.8  # decoded images may take at most this share of the available memory
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageError(ValueError):
    """An image file cannot be read; the one-line message names the file and the fix."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def _unreadable(path: Path, exc: Exception) -> ImageError:
    return ImageError(f"cannot read image {path} ({one_line(exc)}); delete or replace that file")


def available_bytes() -> int | None:
    """Memory this process could still take (``MemAvailable`` of /proc/meminfo), or None where
    the system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(n: int, channels: int, side: int, desc: str) -> None:
    """Refuse to decode n images of channels x side x side bytes that memory cannot hold.

    Raises:
        ImageError: they need more than :data:`MEMORY_SHARE` of the available memory.
    """
    need, free = n * channels * side * side, available_bytes()
    if free is not None and need > MEMORY_SHARE * free:
        gib = 1024**3
        raise ImageError(
            f"{desc}: {n} images at {channels}x{side}x{side} need {need / gib:.1f} GiB in memory,"
            f" {free / gib:.1f} GiB are available; pass a smaller image size (--image-size,"
            " e.g. 64 or 224) or fewer images"
        )


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


class ImageSource(Protocol):
    """An image that is not a file of its own (e.g. a member of a tar shard): ``str()`` names it
    in messages, ``open()`` gives its bytes as a binary file object."""

    def open(self) -> BinaryIO: ...


Source = Path | ImageSource  # what the decoders read: an image file, or an ImageSource


def _open(source: Source) -> Image.Image:
    return Image.open(source if isinstance(source, Path) else source.open())


def image_header(path: Source) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) of an image, reading only its header.

    Raises:
        ImageError: the file is not an image PIL can open.
    """
    try:
        with _open(path) as im:
            return im.mode, im.size
    except _IMAGE_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def decode_image(path: Source, mode: str, size: int | None) -> np.ndarray:
    """Decode to uint8 (H, W) for mode "L" or (H, W, 3) for "RGB"; resize+center-crop to size.

    Only the resized image is kept: a large photo is decoded, resized and dropped one at a time.

    Raises:
        ImageError: the file cannot be decoded.
    """
    try:
        with _open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size, size):
                im = ImageOps.fit(im, (size, size), method=Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except _IMAGE_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def _target_size(headers: list[tuple[str, tuple[int, int]]], image_size: int) -> int | None:
    """The side every image is decoded to (None: native; see :func:`decode_all`)."""
    if image_size > 0:
        return image_size
    sizes = {s for _, s in headers}  # (width, height)
    all_square_and_equal = len(sizes) == 1 and len(set(next(iter(sizes)))) == 1
    return None if all_square_and_equal else FOLDER_FALLBACK_SIZE


@dataclass(frozen=True)
class Decoded:
    """Images decoded by :func:`decode_all`.

    Attributes:
        x: the kept images, C = 1 if every image is grayscale else 3. Shape: (N_kept, C, S, S),
            uint8.
        kept: which of the paths were kept (all, unless ``skip_unreadable``). Shape: (N_paths,).
    """

    x: Tensor
    kept: np.ndarray


def decode_all(
    paths: Sequence[Source],
    image_size: int,
    desc: str,
    progress: bool = True,
    min_images: int = PROGRESS_MIN_IMAGES,
    *,
    skip_unreadable: bool = False,
) -> Decoded:
    """Decode images into uint8 (N, C, S, S), C = 1 if every image is grayscale else 3.

    S is ``image_size`` if > 0; else the native size if all images share one square size; else
    :data:`FOLDER_FALLBACK_SIZE`. Non-square images are resized (shorter side) and center-cropped.
    The images are decoded in threads straight into one preallocated array, so memory holds the
    N resized images plus a few being decoded, never N images at full size.

    Args:
        paths: the image files (or :class:`ImageSource` s).
        image_size: the side S (0: see above).
        desc: the progress bar's label.
        progress: draw a progress bar (for more than ``min_images`` images).
        min_images: fewer images than this decode without a bar (they take no time).
        skip_unreadable: leave out images that cannot be decoded instead of raising; the result
            then has fewer rows and its ``kept`` says which.

    Returns:
        The :class:`Decoded` images and which paths were kept.

    Raises:
        ImageError: a file cannot be decoded (and ``skip_unreadable`` is False), or none can.
    """
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        kept, mode, size, side = _layout(pool, paths, image_size, desc, skip_unreadable)
        channels = 1 if mode == "L" else 3
        check_fits(len(paths), channels, side, desc)
        out = np.empty((len(paths), channels, side, side), dtype=np.uint8)  # (N, C, S, S)

        def fill(i: int) -> None:
            if not kept[i]:
                return
            try:
                img = decode_image(paths[i], mode, size)
            except ImageError:
                if not skip_unreadable:
                    raise
                kept[i] = False
                return
            out[i] = img.reshape(side, side, channels).transpose(2, 0, 1)  # (C, S, S)

        bar = tqdm(
            total=len(paths),
            desc=desc,
            unit="img",
            disable=not progress or len(paths) <= min_images,
        )
        with bar:
            for _ in pool.map(fill, range(len(paths))):
                bar.update()
    if not kept.all():
        out = out[kept]  # a copy of the kept rows (only when some were left out)
    if len(out) == 0:
        raise ImageError(
            f"none of the {len(paths)} images can be decoded ({desc}); replace them with"
            f" readable images ({'/'.join(IMAGE_EXTENSIONS)})"
        )
    return Decoded(torch.from_numpy(out), kept)


def _layout(
    pool: ThreadPoolExecutor,
    paths: Sequence[Source],
    image_size: int,
    desc: str,
    skip_unreadable: bool,
) -> tuple[np.ndarray, str, int | None, int]:
    """From the images' headers: which are readable (bool, (N_paths,)), the mode they decode to
    (``"L"`` if every one is grayscale, else ``"RGB"``), the size they are resized to (None:
    native) and the side of the result."""

    def header(p: Source) -> tuple[str, tuple[int, int]] | None:
        try:
            return image_header(p)
        except ImageError:
            if skip_unreadable:
                return None
            raise

    headers = list(pool.map(header, paths))
    kept = np.array([h is not None for h in headers], dtype=bool)
    good = [h for h in headers if h is not None]
    if not good:
        raise ImageError(
            f"none of the {len(paths)} images can be read ({desc}); replace them with"
            f" readable images ({'/'.join(IMAGE_EXTENSIONS)})"
        )
    mode = "L" if all(m in GRAYSCALE_MODES for m, _ in good) else "RGB"
    size = _target_size(good, image_size)
    return kept, mode, size, size if size is not None else good[0][1][0]
