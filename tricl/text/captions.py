"""Image-caption pairs: the ``mnist5k-captions`` generator, the ``captions:PATH.csv`` reader and
:class:`ImageTextData`.

``mnist5k-captions`` gives every mnist5k digit a caption built from its label and three factors
measured from its pixels, so the text carries known factors beyond the class:

- thickness: ``2 * ink_area / ink_boundary``, the ink pixels (value >= 128) over half the number
  of ink/background edges between 4-neighbours. A stroke of width w and length L >> w has area
  about w L and boundary about 2 L, so this is about the stroke width in pixels.
- slant: the second-moment shear of the ink, ``cov(x, y) / var(y)`` with intensity weights,
  x the column and y the row counted upwards: > 0 when the top of the digit leans right.
- size: the area of the bounding box of the ink pixels, in pixels.

Each factor is cut into terciles within each class, with thresholds computed on the TRAIN split
and applied to both splits (level 0, 1, 2: thin/regular/thick, left-slanted/upright/right-slanted,
small/medium/large; the words are relative to the digit's class). One of :data:`TEMPLATES` is
chosen per image from the CRC-32 of its split and position, and every template names the digit and
all three factor levels. Nothing is random: the same images give the same captions on every call.
The continuous values and the levels of every image are kept in :class:`CaptionFactors`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tricl.catalog import CAPTION_DATASET_INFO, parse_dataset
from tricl.data.core import (
    SHUFFLE_SEED,
    DatasetError,
    ImageData,
    channel_stats,
    load_mnist5k,
    mixed,
    split_indices,
)
from tricl.imaging import ImageError, decode_all, image_header
from tricl.text.prompts import DIGIT_WORDS

INK_THRESHOLD = 128  # a pixel is ink from this uint8 value on
FACTORS = ("thickness", "slant", "size")
LEVEL_WORDS = {
    "thickness": ("thin", "regular", "thick"),
    "slant": ("left-slanted", "upright", "right-slanted"),
    "size": ("small", "medium", "large"),
}
SLANT_PHRASES = ("slanted to the left", "standing upright", "slanted to the right")
# Fields: digit (numeral), word (digit name), thickness, slant, size, slant_phrase.
TEMPLATES = (
    "a {size}, {thickness}, {slant} handwritten {digit}",
    "a {size} digit {word} in a {thickness} stroke, {slant_phrase}",
    "a {size}, {thickness} number {word} that is {slant}",
    "the number {digit} written in a {thickness} stroke, {size} and {slant}",
    "handwritten {word}: {size}, {thickness}, {slant_phrase}",
    "a {slant} {size} {digit} with a {thickness} line",
)
CSV_DEFAULTS = {"csv_separator": "\t", "image_column": "filepath", "caption_column": "title"}
CSV_OPTIONS = ("label_column", "allow_outside_paths")  # options without a CSV_DEFAULTS entry
# A CSV's labels come from this column when it has one and no label_column is given: a run stores
# only its dataset spec, so this is how a trained run's analysis finds the labels for zero-shot.
DEFAULT_LABEL_COLUMN = "label"


@dataclass(frozen=True)
class CaptionFactors:
    """The factors a generated caption carries, per image.

    Attributes:
        names: the factor names, :data:`FACTORS`.
        values: measured values, float64, column j is ``names[j]``. Shape: (N, F).
        levels: terciles within the class, int64 in {0, 1, 2}. Shape: (N, F).
        template: index into :data:`TEMPLATES` of each caption, int64. Shape: (N,).
    """

    names: tuple[str, ...]
    values: np.ndarray
    levels: np.ndarray
    template: np.ndarray


@dataclass(eq=False)
class ImageTextData:
    """Images with one caption each, split into train and test.

    Attributes:
        images: the images, labels and classes (no classes and every label -1 when the source
            has no label column, as for any image set without labels; see ``has_labels``).
        train_captions: caption of train image i at position i.
        test_captions: caption of test image i at position i.
        has_labels: whether the labels are real classes (zero-shot and class analyses need them).
        train_factors: the factors of generated captions (None for a CSV).
        test_factors: as ``train_factors``, for the test split.
    """

    images: ImageData
    train_captions: list[str]
    test_captions: list[str]
    has_labels: bool = True
    train_factors: CaptionFactors | None = None
    test_factors: CaptionFactors | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            n = len(getattr(self.images, f"{split}_x"))
            captions = getattr(self, f"{split}_captions")
            if len(captions) != n:
                raise DatasetError(
                    f"{self.name}: {len(captions)} {split} captions for {n} images; give one each"
                )
            empty = next((i for i, c in enumerate(captions) if not c.strip()), None)
            if empty is not None:
                raise DatasetError(f"{self.name}: {split} caption {empty} is empty; write one")

    @property
    def name(self) -> str:
        """The spec it was loaded from, e.g. ``"mnist5k-captions"``."""
        return self.images.name

    def split(self, name: str) -> tuple[Tensor, Tensor, list[str]]:
        """uint8 images (N, C, H, W), int64 labels (N,) and N captions of ``"train"``/``"test"``."""
        x, y = self.images.split(name)
        return x, y, getattr(self, f"{name}_captions")


# --------------------------------------------------------------------------- factor measurement


def measure_factors(images: np.ndarray) -> np.ndarray:
    """Thickness, slant and size of each image (formulas in the module docstring).

    Args:
        images: uint8 grayscale images, ink bright on dark. Shape: (N, H, W).

    Returns:
        float64 ``[thickness, slant, size]`` per image, zeros for an image without ink.
        Shape: (N, 3).
    """
    ink = images >= INK_THRESHOLD  # (N, H, W)
    area = ink.sum(axis=(1, 2)).astype(np.float64)  # (N,)
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))  # (N, H+2, W+2): the border is background
    boundary = (padded[:, 1:] != padded[:, :-1]).sum(axis=(1, 2)) + (
        padded[:, :, 1:] != padded[:, :, :-1]
    ).sum(axis=(1, 2))  # (N,)
    thickness = 2 * area / np.maximum(boundary, 1)
    return np.stack([thickness, _shear(images), _bbox_area(ink)], axis=1)  # (N, 3)


def _shear(images: np.ndarray) -> np.ndarray:
    """Intensity-weighted ``cov(x, y) / var(y)``, y pointing up. (N, H, W) uint8 -> (N,)."""
    w = images.astype(np.float64)  # (N, H, W)
    mass = w.sum(axis=(1, 2))  # (N,)
    safe = np.maximum(mass, 1e-12)
    rows = np.arange(images.shape[1], dtype=np.float64)[None, :, None]  # (1, H, 1)
    cols = np.arange(images.shape[2], dtype=np.float64)[None, None, :]  # (1, 1, W)
    mean_r = (w * rows).sum(axis=(1, 2)) / safe  # (N,)
    mean_c = (w * cols).sum(axis=(1, 2)) / safe
    dr = rows - mean_r[:, None, None]  # (N, H, 1)
    dc = cols - mean_c[:, None, None]  # (N, 1, W)
    var_r = (w * dr**2).sum(axis=(1, 2)) / safe
    cov_rc = (w * dr * dc).sum(axis=(1, 2)) / safe
    # rows grow downwards: y = -row, so cov(x, y) = -cov(col, row)
    return np.where(var_r > 0, -cov_rc / np.maximum(var_r, 1e-12), 0.0)


def _bbox_area(ink: np.ndarray) -> np.ndarray:
    """Area of the bounding box of the ink pixels. (N, H, W) bool -> (N,) float64."""
    extents = []
    for axis in (2, 1):  # rows with ink, then columns with ink
        present = ink.any(axis=axis)  # (N, H) or (N, W)
        first = present.argmax(axis=1)
        last = present.shape[1] - 1 - present[:, ::-1].argmax(axis=1)
        extents.append(np.where(present.any(axis=1), last - first + 1, 0))
    return (extents[0] * extents[1]).astype(np.float64)


def tercile_thresholds(values: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class 1/3 and 2/3 quantiles of each factor.

    Args:
        values: factor values of the train split. Shape: (N, F).
        labels: class of each image. Shape: (N,).
        n_classes: C.

    Returns:
        The two thresholds per class and factor. Shape: (C, F, 2).

    Raises:
        DatasetError: a class has no image.
    """
    out = np.empty((n_classes, values.shape[1], 2))
    for c in range(n_classes):
        members = values[labels == c]  # (N_c, F)
        if len(members) == 0:
            raise DatasetError(f"class {c} has no training image; its terciles are undefined")
        out[c] = np.quantile(members, [1 / 3, 2 / 3], axis=0).T  # (F, 2)
    return out


def tercile_levels(values: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Level 0/1/2 of each value against its class's thresholds.

    Args:
        values: factor values. Shape: (N, F).
        labels: class of each image. Shape: (N,).
        thresholds: from :func:`tercile_thresholds`. Shape: (C, F, 2).

    Returns:
        0 up to the 1/3 quantile, 1 up to the 2/3 quantile, else 2; int64. Shape: (N, F).
    """
    t = thresholds[labels]  # (N, F, 2)
    return (values > t[..., 0]).astype(np.int64) + (values > t[..., 1]).astype(np.int64)


# --------------------------------------------------------------------------- caption generator


def template_index(split: str, position: int) -> int:
    """The template of the image at ``position`` of ``split``: CRC-32 of ``"split:position"``."""
    return zlib.crc32(f"{split}:{position}".encode()) % len(TEMPLATES)


def render_caption(label: int, levels: Sequence[int], template: int) -> str:
    """The caption of a digit ``label`` with factor ``levels`` (thickness, slant, size)."""
    words = {name: LEVEL_WORDS[name][int(lv)] for name, lv in zip(FACTORS, levels, strict=True)}
    return TEMPLATES[template].format(
        digit=str(label),
        word=DIGIT_WORDS[label],
        slant_phrase=SLANT_PHRASES[int(levels[1])],
        **words,
    )


def caption_split(
    x: Tensor, y: Tensor, split: str, thresholds: np.ndarray
) -> tuple[list[str], CaptionFactors]:
    """Captions and factors of one split of digit images.

    Args:
        x: uint8 images, one channel. Shape: (N, 1, H, W).
        y: digit labels 0..9. Shape: (N,).
        split: ``"train"`` or ``"test"`` (part of each image's template seed).
        thresholds: from :func:`tercile_thresholds` on the train split. Shape: (10, 3, 2).

    Returns:
        The N captions and their :class:`CaptionFactors`.
    """
    labels = y.numpy()
    values = measure_factors(x[:, 0].numpy())  # (N, 3)
    levels = tercile_levels(values, labels, thresholds)  # (N, 3)
    template = np.array([template_index(split, i) for i in range(len(labels))], dtype=np.int64)
    rows = zip(labels, levels, template, strict=True)
    captions = [render_caption(int(c), lv, int(t)) for c, lv, t in rows]
    return captions, CaptionFactors(FACTORS, values, levels, template)


def caption_digits(images: ImageData) -> ImageTextData:
    """Generated captions for a digit :class:`ImageData` (mnist5k), see the module docstring."""
    x_train, y_train = images.split("train")
    thresholds = tercile_thresholds(
        measure_factors(x_train[:, 0].numpy()), y_train.numpy(), len(images.classes)
    )
    train_captions, train_factors = caption_split(x_train, y_train, "train", thresholds)
    test_captions, test_factors = caption_split(*images.split("test"), "test", thresholds)
    return ImageTextData(images, train_captions, test_captions, True, train_factors, test_factors)


# --------------------------------------------------------------------------- CSV reader


@dataclass(frozen=True)
class CsvRow:
    """One row of a caption CSV: its line, the image path (resolved), caption and label."""

    line: int
    path: Path
    caption: str
    label: str | None


def read_caption_csv(
    path: Path,
    csv_separator: str = "\t",
    image_column: str = "filepath",
    caption_column: str = "title",
    label_column: str | None = None,
    allow_outside_paths: bool = False,
) -> list[CsvRow]:
    """The rows of an open_clip-style caption CSV, checked; image paths relative to the CSV.

    The file is read as UTF-8 (a BOM is dropped), with no limit on a field's size. ``label_column``
    None reads the labels from a column named :data:`DEFAULT_LABEL_COLUMN` if there is one, else
    the rows have no label. An image path must stay inside the CSV's folder (no absolute path, no
    ``..`` above it) unless ``allow_outside_paths`` is True.

    Raises:
        DatasetError: a one-line message naming the file (and line): missing file or column,
            bytes that are not UTF-8, a NUL byte, short row, empty caption or label, missing
            image, an image path outside the CSV's folder.
    """
    text = _csv_text(path)
    with _field_limit(len(text) + 1):  # csv's default limit (128 KiB) refuses long captions
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=csv_separator)
        columns = reader.fieldnames or []
        if label_column is None and DEFAULT_LABEL_COLUMN in columns:
            label_column = DEFAULT_LABEL_COLUMN
        wanted = {"image_column": image_column, "caption_column": caption_column}
        if label_column is not None:
            wanted["label_column"] = label_column
        for option, column in wanted.items():
            if column not in columns:
                raise DatasetError(
                    f"{path}: no column {column!r} (columns: {columns}, separator"
                    f" {csv_separator!r}); set {option} or csv_separator"
                )
        rows = [_csv_row(path, reader.line_num, r, wanted, allow_outside_paths) for r in reader]
    if len(rows) < 2:
        raise DatasetError(f"{path}: {len(rows)} data rows; a train and a test split need >= 2")
    return rows


def _csv_text(path: Path) -> str:
    """The CSV's text: UTF-8 without a BOM; bad bytes or a NUL are a one-line error naming the
    line."""
    if not path.is_file():
        raise DatasetError(f"caption file {path} does not exist; pass captions:PATH.csv")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.end]
        raise DatasetError(
            f"{path} line {line}: bytes {bad!r} are not UTF-8; save the file as UTF-8"
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DatasetError(f"{path} line {line}: a NUL byte; remove it (captions are plain text)")
    return text


@contextlib.contextmanager
def _field_limit(size: int) -> Iterator[None]:
    """Raise the csv module's (process-wide) field size limit to ``size`` while reading."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, size))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _image_path(path: Path, line: int, raw: str, allow_outside: bool) -> Path:
    """The image ``raw`` names, relative to the CSV ``path``; refused outside its folder."""
    norm = os.path.normpath(raw)
    if not allow_outside and (os.path.isabs(norm) or norm == ".." or norm.startswith("../")):
        raise DatasetError(
            f"{path} line {line}: image {raw} is outside the CSV's folder {path.parent}; move it"
            " under that folder, or pass allow_outside_paths=True to load_image_text"
        )
    image = path.parent / raw
    if not image.is_file():
        raise DatasetError(f"{path} line {line}: image {image} does not exist; fix the path")
    try:
        image_header(image)
    except ImageError as exc:
        raise DatasetError(f"{path} line {line}: {exc}") from exc
    return image


def _csv_row(
    path: Path, line: int, row: dict, wanted: dict[str, str], allow_outside: bool
) -> CsvRow:
    """A checked :class:`CsvRow` from a csv.DictReader row read at ``line``."""
    if None in row or any(v is None for v in row.values()):
        raise DatasetError(f"{path} line {line}: wrong number of fields; check the separator")
    caption = row[wanted["caption_column"]].strip()
    if not caption:
        raise DatasetError(f"{path} line {line}: empty caption; write one or drop the row")
    label = row[wanted["label_column"]].strip() if "label_column" in wanted else None
    if label == "":
        raise DatasetError(f"{path} line {line}: empty label; write one or drop the row")
    image = _image_path(path, line, row[wanted["image_column"]].strip(), allow_outside)
    return CsvRow(line, image, caption, label)


def _csv_split(rows: list[CsvRow]) -> tuple[list[CsvRow], list[CsvRow]]:
    """Fixed 80/20 split like ``folder:``: per label seeded by its CRC-32, else seeded once."""
    groups: dict[str | None, list[CsvRow]] = {}
    for row in rows:
        groups.setdefault(row.label, []).append(row)
    train, test = [], []
    for label, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        seed = SHUFFLE_SEED if label is None else zlib.crc32(label.encode())
        tr, te = split_indices(len(members), seed=seed)
        train += [members[i] for i in tr]
        test += [members[i] for i in te]
    return mixed(train), mixed(test)


def load_caption_csv(spec: str, path: Path, image_size: int = 0, **options) -> ImageTextData:
    """``captions:PATH.csv`` as :class:`ImageTextData` (options of :func:`read_caption_csv`)."""
    rows = read_caption_csv(path, **options)
    train, test = _csv_split(rows)
    has_labels = rows[0].label is not None
    classes = sorted({r.label for r in rows}) if has_labels else []
    index = {c: i for i, c in enumerate(classes)}
    items = train + test
    try:
        x = decode_all([r.path for r in items], image_size, desc=f"loading {path.name}").x
    except ImageError as exc:
        raise DatasetError(str(exc)) from None
    y = torch.tensor([index.get(r.label, -1) for r in items], dtype=torch.int64)
    n = len(train)
    mean, std = channel_stats(x[:n])
    images = ImageData(
        name=spec,
        train_x=x[:n],
        train_y=y[:n],
        test_x=x[n:],
        test_y=y[n:],
        classes=classes,
        family="natural",
        mean=mean,
        std=std,
    )
    return ImageTextData(images, [r.caption for r in train], [r.caption for r in test], has_labels)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class CaptionSource:
    """One entry of :data:`CAPTION_DATASETS`.

    Attributes:
        loader: ``loader(spec, arg, image_size, options) -> ImageTextData``.
        description: one line for help texts.
        takes_path: whether the spec is ``name:PATH``.
    """

    loader: Callable[[str, str | None, int, dict], ImageTextData]
    description: str
    takes_path: bool = False


def _load_mnist5k_captions(
    spec: str, arg: str | None, image_size: int, options: dict
) -> ImageTextData:
    if options:
        raise DatasetError(f"{spec} takes no CSV options, got {sorted(options)}; drop them")
    if image_size not in (0, 28):
        raise DatasetError(f"{spec}: factors are measured at 28x28, got image_size={image_size}")
    data = caption_digits(load_mnist5k())
    data.images.name = spec
    return data


def _load_csv(spec: str, arg: str | None, image_size: int, options: dict) -> ImageTextData:
    unknown = sorted(set(options) - {*CSV_DEFAULTS, *CSV_OPTIONS})
    if unknown:
        known = sorted({*CSV_DEFAULTS, *CSV_OPTIONS})
        raise DatasetError(f"unknown caption CSV options {unknown}; use {known}")
    return load_caption_csv(spec, Path(str(arg)).expanduser(), image_size, **options)


_CAPTION_LOADERS = {"mnist5k-captions": _load_mnist5k_captions, "captions": _load_csv}
# each name's meaning (description, takes a path) is declared once, in tricl.catalog
CAPTION_DATASETS: dict[str, CaptionSource] = {
    name: CaptionSource(_CAPTION_LOADERS[name], info.description, info.takes_path)
    for name, info in CAPTION_DATASET_INFO.items()
}


def load_image_text(
    spec: str, *, image_size: int = 0, **options: str | bool | None
) -> ImageTextData:
    """Load image-caption pairs by name.

    Args:
        spec: ``"mnist5k-captions"`` or ``"captions:PATH.csv"``.
        image_size: if > 0, CSV images are resized to it (mnist5k-captions stays 28x28).
        **options: for CSVs, ``csv_separator`` (default tab), ``image_column`` (``"filepath"``),
            ``caption_column`` (``"title"``), ``label_column`` (None: the column ``label`` if
            the CSV has one, else no labels), ``allow_outside_paths`` (False: image paths must
            stay inside the CSV's folder).

    Raises:
        DatasetError: unknown name, or bad input (one-line message naming file and line).
    """
    name, arg = parse_dataset(spec)
    source = CAPTION_DATASETS.get(name)
    if source is None:
        raise DatasetError(
            f"unknown caption dataset {spec!r}; choose one of {sorted(CAPTION_DATASETS)}"
        )
    if source.takes_path and arg is None:
        raise DatasetError(f"dataset {name!r} needs a path; use {name}:PATH.csv")
    if not source.takes_path and arg is not None:
        raise DatasetError(f"dataset {name!r} takes no argument, got {spec!r}; use {name!r}")
    return source.loader(spec, arg, image_size, options)
