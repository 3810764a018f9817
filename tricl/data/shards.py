"""``wds:PATTERN``: WebDataset tar shards, read with the standard library's :mod:`tarfile`.

A shard is an uncompressed ``.tar`` whose members are grouped into samples by key: the member's
path up to the first dot of its file name (``0001.jpg``, ``0001.cls`` and ``0001.txt`` are one
sample). A sample's image is its ``jpg``, ``jpeg``, ``png`` or ``webp`` member; its optional
``cls`` member holds its label (an integer, or a class name) as text. Samples without an image
(e.g. metadata only) are left out; either every sample has a ``cls`` or none has (a set without
labels). The samples are split 80/20 as a folder is (per class, or as one group without labels).

Why tarfile and not the ``webdataset`` package: reading is two cheap passes: the tar headers
(which shards are whole, which samples and labels they hold) and then each image's bytes by its
offset, decoded and resized in threads straight into the dataset's array, exactly as an image
folder is. A damaged shard is found in the first pass (a bad header, a member cut short, bytes
after the last member that are not the end-of-archive block) and skipped with a count; the
pipeline of ``webdataset`` reads sequentially and either stops at the first damaged shard or
skips it without saying which, and it would be one more dependency for what ``tarfile`` does.
"""

from __future__ import annotations

import glob
import io
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from tricl.data.core import DatasetError, ImageData, LoadRequest, from_decoded, split_groups
from tricl.imaging import PROGRESS_MIN_IMAGES, ImageError, decode_all, one_line

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")  # a sample's image member, first found wins
LABEL_KEY = "cls"
WDS_FIX = (
    "pass wds:PATTERN naming .tar shards by a brace range or a glob, e.g."
    " wds:/data/shard-{000000..000099}.tar or wds:/data/shards/*.tar"
)
_BLOCK = 512  # tar block size; an archive ends with zero blocks
_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)\}")


class ShardError(Exception):
    """A shard whose tar structure is damaged (the message says where)."""


@dataclass(frozen=True)
class TarMember:
    """One image inside a shard, read by its offset (an :class:`tricl.imaging.ImageSource`)."""

    shard: Path
    name: str
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"

    def open(self) -> BinaryIO:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"the shard ends {self.size - len(data)} bytes into this member")
        return io.BytesIO(data)


def expand_braces(pattern: str) -> list[str]:
    """Every string a brace pattern names, in order: ``a{1..3}`` -> a1 a2 a3 (zero-padded as
    written: ``{00..02}`` -> 00 01 02), ``a{x,y}`` -> ax ay; nested and repeated braces work."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth = 0
    for end in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[end], 0)
        if depth == 0:
            break
    else:
        raise DatasetError(f"unbalanced braces in {pattern!r}; {WDS_FIX}")
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    match = _RANGE.fullmatch("{" + body + "}")
    if match:
        lo, hi = int(match.group(1)), int(match.group(2))
        width = len(match.group(1))
        step = 1 if hi >= lo else -1
        options = [f"{i:0{width}d}" for i in range(lo, hi + step, step)]
    else:
        options = _split_top_level(body)
    return [h + t for o in options for h in expand_braces(head + o) for t in expand_braces(tail)]


def _split_top_level(body: str) -> list[str]:
    """``a,{b,c},d`` -> ``["a", "{b,c}", "d"]``: commas outside nested braces."""
    parts, depth, current = [], 0, ""
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def shard_paths(pattern: str) -> list[Path]:
    """The .tar files a pattern names (brace ranges, then globs), sorted, each once.

    Raises:
        DatasetError: nothing matches, a named shard is missing, or a match is not a .tar file.
    """
    found: list[Path] = []
    missing = []
    for name in expand_braces(pattern):
        name = str(Path(name).expanduser())
        if glob.has_magic(name):
            found += [Path(p) for p in sorted(glob.glob(name))]
        elif Path(name).exists():
            found.append(Path(name))
        else:
            missing.append(name)
    if missing:
        raise DatasetError(
            f"{len(missing)} shard(s) of {pattern} do not exist (first: {missing[0]}); fix the"
            " pattern or the range"
        )
    shards = sorted(set(found))
    if not shards:
        raise DatasetError(f"wds:{pattern} matches no files; {WDS_FIX}")
    other = [p for p in shards if p.suffix != ".tar" or not p.is_file()]
    if other:
        raise DatasetError(
            f"{other[0]} is not a .tar file (wds reads uncompressed tar shards); narrow the"
            " pattern to the .tar shards"
        )
    return shards


@dataclass(frozen=True)
class Sample:
    """A sample of a shard: its image and its label text (None without a ``cls`` member)."""

    image: TarMember
    label: str | None


def _key_ext(name: str) -> tuple[str, str] | None:
    """WebDataset's split of a member name: ``dir/0001.seg.png`` -> (``dir/0001``, ``seg.png``)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def scan_shard(path: Path) -> tuple[list[Sample], int]:
    """The samples of one shard, reading only tar headers and ``cls`` members.

    Returns:
        ``(samples, without_image)``: the samples with an image, and how many had none.

    Raises:
        ShardError: the shard is not a whole tar archive.
    """
    try:
        length = path.stat().st_size
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        labels: dict[str, str] = {}
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile() or (parts := _key_ext(info.name)) is None:
                    continue
                if info.offset_data + info.size > length:
                    raise ShardError(f"member {info.name} is cut short")
                key, ext = parts
                members.setdefault(key, {})[ext] = info
                if ext == LABEL_KEY:
                    raw = tar.extractfile(info).read()  # type: ignore[union-attr]
                    labels[key] = raw.decode("utf-8", errors="replace").strip()
            end = tar.offset  # where the header after the last member was read
        with open(path, "rb") as f:
            f.seek(end)
            tail = f.read(_BLOCK)
    except (tarfile.TarError, OSError, EOFError, UnicodeError) as exc:
        raise ShardError(one_line(exc)) from None
    if tail.strip(b"\0"):  # neither the end-of-archive block nor the end of the file
        raise ShardError(f"a damaged tar header at byte {end}")
    samples, without_image = [], 0
    for key, by_ext in members.items():
        ext = next((e for e in IMAGE_KEYS if e in by_ext), None)
        if ext is None:
            without_image += 1
            continue
        info = by_ext[ext]
        image = TarMember(path, info.name, info.offset_data, info.size)
        samples.append(Sample(image, labels.get(key)))
    return samples, without_image


def _class_name(label: str) -> str:
    """``" 07"`` -> ``"7"``: integer labels by value, other labels as written."""
    return str(int(label)) if re.fullmatch(r"-?\d+", label) else label


def _class_order(names: set[str]) -> list[str]:
    """Class names in label order: integers numerically (``cls`` 0..9 stay labels 0..9)."""
    if all(re.fullmatch(r"-?\d+", v) for v in names):
        return [str(v) for v in sorted(int(v) for v in names)]
    return sorted(names)


def _group(samples: list[Sample], pattern: str) -> tuple[dict[str, list] | list, list[str]]:
    """The split's input: images by class name, or a plain list when no sample has a label."""
    unlabelled = sum(s.label is None for s in samples)
    if unlabelled == len(samples):
        return [s.image for s in samples], []
    if unlabelled:
        raise DatasetError(
            f"wds:{pattern}: {unlabelled} of {len(samples)} samples have no .{LABEL_KEY} member;"
            f" give every sample a .{LABEL_KEY} label, or none (a set without labels)"
        )
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(_class_name(str(s.label)), []).append(s.image)
    return groups, _class_order(set(groups))


def _scan_all(shards: list[Path], pattern: str) -> tuple[list[Sample], list[str], int]:
    """Every readable shard's samples, the damaged shards' reasons, and samples without image."""
    samples: list[Sample] = []
    damaged: list[str] = []
    without_image = 0
    for shard in shards:
        try:
            found, missing = scan_shard(shard)
        except ShardError as exc:
            damaged.append(f"{shard.name}: {exc}")
            continue
        samples += found
        without_image += missing
    if len(damaged) == len(shards):
        raise DatasetError(
            f"none of the {len(shards)} shard(s) of wds:{pattern} can be read ({damaged[0]});"
            " re-create them as uncompressed tar files (tar -cf, or webdataset's TarWriter)"
        )
    if not samples:
        raise DatasetError(
            f"wds:{pattern} holds no images ({'/'.join(IMAGE_KEYS)} members, {without_image}"
            " samples without one); add images to the shards"
        )
    return samples, damaged, without_image


def load_shards(request: LoadRequest) -> ImageData:
    """``wds:PATTERN``: the images (and ``cls`` labels) of the tar shards PATTERN names."""
    pattern = str(request.arg)
    shards = shard_paths(pattern)
    samples, damaged, without_image = _scan_all(shards, pattern)
    groups, classes = _group(samples, pattern)
    if isinstance(groups, list) and len(groups) < 2:
        raise DatasetError(f"wds:{pattern} holds 1 image; add more (at least a train and a test)")
    train, test, classes = split_groups(groups, classes or None)
    items = train + test
    desc = f"loading {len(shards) - len(damaged)} shards"
    try:
        decoded = decode_all(
            [m for m, _ in items],
            request.image_size,
            desc + (f" ({len(damaged)} damaged skipped)" if damaged else ""),
            request.progress,
            PROGRESS_MIN_IMAGES,
            skip_unreadable=True,
        )
    except ImageError as exc:
        raise DatasetError(str(exc)) from None
    x, kept = decoded.x, decoded.kept
    bad = int((~kept).sum())
    _report_skipped(pattern, len(shards), damaged, bad, without_image)
    n_train = int(kept[: len(train)].sum())
    y = torch.tensor([label for (_, label), k in zip(items, kept) if k], dtype=torch.int64)
    if n_train == 0 or n_train == len(y):
        raise DatasetError(
            f"wds:{pattern}: no readable image is left in the {'train' if not n_train else 'test'}"
            " split; replace the shards' undecodable images"
        )
    return from_decoded(request, x, y, n_train, classes)


def _report_skipped(
    pattern: str, n_shards: int, damaged: list[str], bad: int, without_image: int
) -> None:
    """One line on stderr naming what was left out, so a partial read is never silent."""
    parts = []
    if damaged:
        parts.append(f"{len(damaged)} of {n_shards} shards damaged ({damaged[0]})")
    if bad:
        parts.append(f"{bad} images that cannot be decoded")
    if without_image:
        parts.append(f"{without_image} samples without an image ({'/'.join(IMAGE_KEYS)})")
    if parts:
        print(f"wds:{pattern}: skipped " + "; ".join(parts), file=sys.stderr)
