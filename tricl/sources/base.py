"""The encoder-source contract, its registry and the model's own preprocessing (torch-free).

A source (:class:`Source`, one file each in this package) says how an encoder made elsewhere is
rebuilt: from the run's recorded ``arch`` (a JSON record: a model name, or a library's model config
copied into the run) it builds the module with random weights and no classification head
(:meth:`Source.build`), names its own preprocessing (:meth:`Source.preprocess`) and reads its
default features (:meth:`Source.features`). Heavy libraries (timm, open_clip, transformers) are
imported inside those methods, only when a run of that source is opened.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tricl.catalog import SOURCE_INFO, parse_source
from tricl.sources.errors import SourceError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from tricl.sources.files import Match

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")
RESIZE_MODES = ("shortest", "squash")


@dataclass(frozen=True)
class Preprocess:
    """The model's own input pipeline, applied per batch inside the imported encoder.

    Attributes:
        size: side of the square the model reads (the centre crop), in pixels.
        resize: the shorter side is resized to this before the crop (``mode="shortest"``); equal
            to ``size`` when the model's pipeline has no crop.
        mode: ``"shortest"`` (resize the shorter side, centre crop) or ``"squash"`` (resize both
            sides to ``size``).
        interpolation: one of :data:`INTERPOLATIONS`.
        mean: per-channel mean the model was trained with (images in [0, 1]).
        std: per-channel standard deviation.
        origin: where these values come from (recorded with the run, shown to the user).
    """

    size: int
    resize: int
    mode: str
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    origin: str

    def __post_init__(self) -> None:
        if self.size < 1 or self.resize < self.size:
            raise SourceError(
                f"preprocessing resize {self.resize} / crop {self.size} is impossible; the crop"
                " must be >= 1 px and no larger than the resize"
            )
        if self.mode not in RESIZE_MODES or self.interpolation not in INTERPOLATIONS:
            raise SourceError(
                f"preprocessing mode {self.mode!r} / interpolation {self.interpolation!r}: use"
                f" one of {RESIZE_MODES} / {INTERPOLATIONS}"
            )
        if len(self.mean) != len(self.std) or not all(s > 0 for s in self.std):
            raise SourceError("preprocessing mean/std need one entry per channel and std > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        try:
            return cls(
                size=int(data["size"]),
                resize=int(data["resize"]),
                mode=str(data["mode"]),
                interpolation=str(data["interpolation"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                origin=str(data.get("origin", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"the recorded preprocessing is incomplete ({exc})") from None


def imagenet_preprocess(size: int = 224, crop_pct: float = 0.875, origin: str = "") -> Preprocess:
    """torchvision's ImageNet evaluation pipeline: resize to size / crop_pct, centre crop, ImageNet
    mean/std."""
    return Preprocess(
        size, int(size / crop_pct), "shortest", "bilinear", IMAGENET_MEAN, IMAGENET_STD,
        origin or "ImageNet evaluation (resize 256, centre crop 224, ImageNet mean/std)",
    )  # fmt: skip


@dataclass(frozen=True)
class CheckpointFile:
    """A weights file as an import read it.

    Attributes:
        path: the file.
        tensors: every tensor in it, by key.
        prefix: the key prefix of the image backbone's tensors (stripped when they matched).
    """

    path: Path
    tensors: dict[str, Tensor]
    prefix: str


@dataclass(frozen=True)
class TextSide:
    """A checkpoint's text side, as :meth:`Source.load_text` reads it.

    Attributes:
        tower: the text encoder with the file's weights: token ids (B, L') -> features (B, k).
        scale: the logit scale, ``log(1/T)``. Shape: ().
        used: how many of the file's tensors it took.
        line: one line on what was read, for the import's report.
    """

    tower: nn.Module
    scale: Tensor
    used: int
    line: str


class Source:
    """Where an imported encoder comes from. Subclasses set ``name`` and override the methods.

    Attributes:
        name: the key (``tricl import NAME:ARG``), declared in :data:`tricl.catalog.SOURCE_INFO`.
    """

    name: ClassVar[str] = ""

    def default_weights(self, arg: str) -> Path | None:
        """The weights file when ``--weights`` is not given (a saved folder's own file), or None."""
        return None

    def describe(self, arg: str, weights: Path) -> dict[str, Any]:
        """The ``arch`` record of ``NAME:ARG``: everything :meth:`build` needs, JSON-able, read
        from the user's files (a library's config is copied into it, so rebuilding is offline).

        Raises:
            SourceError: the architecture is unknown or its files are unreadable.
        """
        return {"name": arg}

    def build(self, arch: dict[str, Any]) -> nn.Module:
        """The module with random weights and no classification head."""
        raise NotImplementedError

    def load(
        self, arch: dict[str, Any], path: Path, prefix: str | None, spec: str
    ) -> tuple[nn.Module, Match, dict[str, Tensor]]:
        """The model with the file's weights, how they matched, and the file's tensors.

        The default reads the file safely and matches its keys to :meth:`build`'s model
        (:func:`tricl.sources.files.match_state`); a library with its own key conversions (Hugging
        Face) overrides it.
        """
        from tricl.sources.files import match_state, read_tensors

        tensors = read_tensors(path)
        model = self.build(arch)
        found = match_state(
            tensors,
            model,
            prefix=prefix,
            head_keys=self.head_keys(model),
            adapt=self.adapt_keys,
            spec=spec,
            path=path,
        )
        model.load_state_dict(found.tensors, strict=True)
        return model, found, tensors

    def preprocess(self, arch: dict[str, Any], model: nn.Module) -> Preprocess:
        """The model's own evaluation preprocessing."""
        return imagenet_preprocess()

    def features(self, model: nn.Module, x: Tensor) -> Any:
        """The default features: the pooled output of the backbone. x: (B, 3, S, S) normalised."""
        return model(x)

    def head_keys(self, model: nn.Module) -> tuple[str, ...]:
        """Key prefixes of the classification head that an import drops silently (``fc.``)."""
        return ()

    def adapt_keys(self, tensors: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        """Source-specific renaming of a state dict whose prefix is already stripped."""
        return tensors

    def extra_record(self, tensors: dict[str, Tensor]) -> dict[str, Any]:
        """What the run records of the whole checkpoint besides the encoder (e.g. a text tower
        that an import on images leaves out)."""
        return {}

    # ------------------------------------------------------------ a text side (image-text runs)

    def describe_text(self, arch: dict[str, Any]) -> dict[str, Any]:
        """The ``text`` record of an import with the checkpoint's text side: its tokenizer (name,
        context length, settings), everything :meth:`tokenizer` and :meth:`build_text` need
        besides ``arch``, JSON-able and rebuilt offline.

        Raises:
            SourceError: the source has no text side, or it cannot be rebuilt offline.
        """
        raise SourceError(
            f"a {self.name} encoder has no text tower, so it cannot read a caption dataset;"
            " import it on an image set (e.g. --dataset mnist5k), or import an open_clip model"
        )

    def build_text(self, arch: dict[str, Any], text: dict[str, Any]) -> nn.Module:
        """The text encoder with random weights: token ids (B, L') -> features (B, k), with
        ``out_dim`` = k, the image encoder's width."""
        raise NotImplementedError

    def tokenizer(self, text: dict[str, Any]) -> Any:
        """The source's own tokenizer, with :class:`~tricl.text.tokenizer.TextTokenizer`'s
        interface: ``encode`` (-> ``EncodedText``), ``pieces``, ``context_length``."""
        raise NotImplementedError

    def load_text(
        self, arch: dict[str, Any], text: dict[str, Any], file: CheckpointFile
    ) -> TextSide:
        """The checkpoint's text side: its text encoder with the file's weights and its logit
        scale (:class:`TextSide`).

        Raises:
            SourceError: the file holds no text side, or one that does not fit.
        """
        raise NotImplementedError


SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    """Adds ``source`` to :data:`SOURCES`; its name must be declared in the catalog."""
    if source.name not in SOURCE_INFO:
        raise ValueError(f"source {source.name!r} is not declared in tricl.catalog.SOURCE_INFO")
    SOURCES[source.name] = source
    return source


def parse_spec(spec: str) -> tuple[Source, str]:
    """The source and argument of ``NAME:ARG``.

    Raises:
        SourceError: not of that form, or an unknown source (one line naming the choices).
    """
    parsed = parse_source(spec)
    if parsed is None or parsed[0] not in SOURCES:
        examples = "torchvision:resnet50, timm:vit_small_patch16_224, hf:./dinov2-small"
        raise SourceError(
            f"unknown encoder source {spec!r}; write SOURCE:ARG with SOURCE one of"
            f" {sorted(SOURCE_INFO)} (e.g. {examples}, open_clip:ViT-B-32)"
        )
    return SOURCES[parsed[0]], parsed[1]
