"""Run configuration: one frozen dataclass per run, validated where it is built.

Each field carries its own help text (the recommended value and what goes wrong otherwise, DINO
style) and, where the value is a name, its choices. The ``tricl train`` flags are generated from
these fields, so a new setting is declared once.

:class:`RunConfig` is the general settings below plus the option fields of every registered
method (:func:`tricl.methods.option_groups`: e.g. ``tau`` and ``s_*`` of the tri-factor methods,
``nef_*`` of NeuralEF-CLR, ``text_*`` of the caption methods), flat and namespaced by their
names, so ``config.json`` stays one flat object: a run written before the options moved into the
methods loads unchanged, and a new method's options become fields and flags without an edit here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from tricl.methods import METHODS, get_method, option_groups
from tricl.methods.options import ConfigError, field_choices, option, options_of
from tricl.methods.trifactor import DECORRELATIONS, S_INITS, S_PARAMETRIZATIONS, S_PLACEMENTS

__all__ = [
    "DECORRELATIONS",
    "OPTIMIZERS",
    "PRECISIONS",
    "REQUIRED_KEYS",
    "S_INITS",
    "S_PARAMETRIZATIONS",
    "S_PLACEMENTS",
    "ConfigError",
    "RunConfig",
    "field_choices",
]

OPTIMIZERS = ("adamw", "sgd", "lars")
PRECISIONS = ("auto", "fp32", "bf16")
# a config.json without these is not a run of this project (defaults would silently invent them)
REQUIRED_KEYS = ("method", "dataset", "backbone", "proj_hidden_dim", "proj_dim", "epochs", "seed")
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "dict[str, Any]": (dict,),
}
_PAIR_WORDS = {"views": "images (two augmented views)", "caption": "image-caption pairs"}
_opt = option


def _methods() -> list[str]:
    return sorted(METHODS)


def _backbones() -> list[str]:
    from tricl.catalog import BACKBONE_INFO

    return sorted(BACKBONE_INFO)


def _method_help() -> str:
    listed = "; ".join(f"'{name}': {m.description}" for name, m in METHODS.items())
    return (
        f"the training method. {listed}. The caption methods train on image-caption pairs"
        " (--dataset mnist5k-captions or captions:PATH.csv). Recommended: tricl, and simclr with"
        " the same seeds to compare"
    )


@dataclass(frozen=True)
class _Settings:
    """The general settings of a run; :class:`RunConfig` adds the methods' options."""

    method: str = _opt("tricl", _method_help(), _methods)
    dataset: str = _opt(
        "mnist5k",
        "a dataset name or folder:PATH (an ImageFolder tree, with train/ and test/ or split"
        " 80/20). mnist5k ships with the install; cifar10, cifar100 and stl10 download on first"
        " use into $TRICL_DATA. clip/triclip need image-caption pairs: mnist5k-captions or"
        " captions:PATH.csv (open_clip CSV)",
    )
    backbone: str = _opt(
        "small_cnn",
        "small_cnn for CPU work on 28-32px images; resnet18_cifar for the paper's CIFAR setup"
        " (GPU); resnet18/resnet50 for 64px and larger",
        _backbones,
    )
    proj_hidden_dim: int = _opt(512, "projector hidden width (paper: 2048 with ResNet-18)")
    proj_dim: int = _opt(
        64,
        "k, the number of features (projector output width). Paper: 256 on CIFAR; 64 is plenty"
        " for digits and keeps the dashboard readable",
    )
    proj_batchnorm: bool = _opt(
        False,
        "add BatchNorm1d to the projector (solo-learn's SimCLR head). Off matches the official"
        " triCL code",
    )
    epochs: int = _opt(
        15,
        "training epochs (the shipped runs: 15; paper: 200 on CIFAR-10). Fewer than ~10 on"
        " mnist5k leaves features unordered",
    )
    batch_size: int = _opt(
        256, "global batch (split over GPUs). Paper: 256. Smaller batches give fewer negatives"
    )
    optimizer: str = _opt(
        "adamw", "adamw for small CPU runs; lars (lr 0.4) for the paper's ResNet recipe", OPTIMIZERS
    )
    lr: float = _opt(
        1e-3,
        "peak learning rate after warmup (adamw: 1e-3; lars: 0.4 x batch/256). Too high makes the"
        " loss non-finite",
    )
    weight_decay: float = _opt(1e-5, "weight decay (paper: 1e-5); much larger shrinks S to zero")
    warmup_epochs: int = _opt(1, "linear warmup before cosine decay (paper: 10 of 200)")
    temperature: float = _opt(
        0.2, "softmax temperature (paper: 0.2). Lower sharpens negatives and can diverge"
    )
    save_every: int = _opt(
        1,
        "write a checkpoint every N epochs (and after the last); metrics are logged every epoch."
        " 1 (default) loses at most one epoch to a crash; raise it when an epoch takes seconds"
        " and the checkpoint write dominates (a killed run resumes from the last checkpoint)",
    )
    seed: int = _opt(0, "seed; a CPU run is repeatable bit for bit (compare runs over seeds 0-2)")
    device: str = _opt("auto", "auto (CUDA if present), cpu, cuda, cuda:1")
    precision: str = _opt(
        "auto",
        "arithmetic of the training steps: 'auto' (bf16 autocast on CUDA, float32 on a CPU),"
        " 'fp32', or 'bf16' (autocast on any device: on a CPU with AVX-512 BF16 or AMX a step is"
        " about 2x faster, see benchmarks/bench_train.py). The losses stay float32 either way",
        PRECISIONS,
    )
    image_size: int = _opt(
        0, "resize images to this size (0: the dataset's own; keep 0 for mnist5k)"
    )
    name: str = _opt(
        "",
        "run folder name (default: method_dataset_backbone_kK_seedS); name a run to keep"
        " variants of one recipe apart",
    )
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": "", "cli": False})

    def __post_init__(self) -> None:
        from tricl.catalog import CAPTION_DATASET_INFO, DATASET_INFO, dataset_pair, parse_dataset

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            types = _TYPES.get(str(f.type), (object,))
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ConfigError(
                    f"{f.name} must be {f.type}, got {type(value).__name__} {value!r}"
                )
            choices = field_choices(f)
            if f.name == "backbone" and not get_method(self.method).trainable:
                continue  # an imported encoder's backbone is its source spec (_check_source)
            if choices and value not in choices:
                raise ConfigError(
                    f"unknown {f.name} {value!r}; choose one of {choices}"
                    f" (e.g. --{f.name.replace('_', '-')} {f.default})"
                )
        self._check_source()
        kind, _ = parse_dataset(self.dataset)
        pair = dataset_pair(kind)
        if pair is None:
            raise ConfigError(
                f"unknown dataset {self.dataset!r}; choose one of"
                f" {sorted(DATASET_INFO) + sorted(CAPTION_DATASET_INFO)} or folder:PATH"
            )
        wanted = get_method(self.method).pair
        if pair != wanted:
            names = CAPTION_DATASET_INFO if wanted == "caption" else DATASET_INFO
            raise ConfigError(
                f"method {self.method!r} trains on {_PAIR_WORDS[wanted]} but dataset"
                f" {self.dataset!r} has {_PAIR_WORDS[pair]}; use one of {sorted(names)}"
                " or another method"
            )
        self._check_ranges()
        for group in option_groups():  # each method's options check their own values
            options_of(self, group)

    def _check_source(self) -> None:
        from tricl.catalog import SOURCE_INFO, parse_source

        if not get_method(self.method).trainable and parse_source(self.backbone) is None:
            raise ConfigError(
                f"method {self.method!r} is an encoder opened with `tricl import SOURCE --weights"
                f" FILE` (SOURCE one of {sorted(SOURCE_INFO)}), not trained here; pick a training"
                " method (e.g. --method simclr)"
            )

    def _check_ranges(self) -> None:
        for name in ("proj_hidden_dim", "proj_dim", "epochs", "batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2: contrastive losses need negatives")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature} (paper: 0.2)")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.image_size < 0:
            raise ConfigError(
                f"image_size must be >= 0 (0: the dataset's own), got {self.image_size}"
            )
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}"
            )

    @property
    def uses_importance(self) -> bool:
        """Whether the method has the importance diagonal S."""
        return get_method(self.method).has_s

    def replace(self, **changes: Any) -> RunConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a dict, ignoring keys this version does not know (forward compatible).

        Raises:
            ConfigError: ``data`` is not a dict, lacks one of :data:`REQUIRED_KEYS`, or holds an
                invalid value.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"the run config must be a JSON object, got {type(data).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ConfigError(f"the run config lacks the required keys {missing}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _copy_field(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=f.metadata)
    return field(default=f.default, metadata=f.metadata)


def _compose() -> type:
    """RunConfig: :class:`_Settings` plus every method's option fields (each keeps its help
    and choices, so the flags follow)."""
    fields = [
        (f.name, f.type, _copy_field(f))
        for group in option_groups()
        for f in dataclasses.fields(group)
    ]
    doc = (
        "Everything that defines a training run. Saved as ``config.json`` beside the weights.\n\n"
        "    Loading a run rebuilds the model from this object alone (nanoGPT style). The fields"
        " are\n    the general settings of :class:`_Settings` and the methods' option fields.\n    "
    )
    namespace = {"__doc__": doc, "__module__": __name__, "__qualname__": "RunConfig"}
    return dataclasses.make_dataclass(
        "RunConfig", fields, bases=(_Settings,), frozen=True, namespace=namespace
    )


RunConfig = _compose()
