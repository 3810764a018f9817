"""Run configuration: one frozen dataclass per run, validated where it is built.

Each field carries its own help text (the recommended value and what goes wrong otherwise, DINO
style) and, where the value is a name, its choices. The ``tricl train`` flags are generated from
these fields, so a new setting is declared once, here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

S_PLACEMENTS = ("both", "first_view")
OPTIMIZERS = ("adamw", "sgd", "lars")
S_PARAMETRIZATIONS = ("softplus", "softplus_mean1")
S_INITS = ("random", "geometric")
DECORRELATIONS = ("mean", "whiten")
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


_TEXT_SIZES = ("text_width", "text_layers", "text_heads")
_PAIR_WORDS = {"views": "images (two augmented views)", "caption": "image-caption pairs"}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and the fix."""


def _methods() -> list[str]:
    from tricl.methods import METHODS

    return sorted(METHODS)


def _backbones() -> list[str]:
    from tricl.catalog import BACKBONE_INFO

    return sorted(BACKBONE_INFO)


def _opt(default: Any, help: str, choices: Iterable[str] | Callable[[], list[str]] = ()) -> Any:
    """A field with its help text and choices (a tuple, or a function for a registry's keys)."""
    meta = {"help": help, "choices": choices if callable(choices) else tuple(choices)}
    return field(default=default, metadata=meta)


def field_choices(f: dataclasses.Field) -> list[str]:
    """The allowed values of a :class:`RunConfig` field (empty: any value of its type)."""
    choices = f.metadata.get("choices", ())
    return list(choices() if callable(choices) else choices)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run. Saved as ``config.json`` beside the weights.

    Loading a run rebuilds the model from this object alone (nanoGPT style).
    """

    method: str = _opt(
        "tricl",
        "loss: 'tricl' (z^T S z' with learnable diagonal S + decorrelation; the paper), 'simclr'"
        " (NT-Xent baseline), 'spectral' / 'tri-spectral' (spectral contrastive loss without /"
        " with S), 'tri-eigen' (triCL with the last rotation and S solved in closed form from"
        " running covariances, features in eigenvalue order), 'neuralef' (NeuralEF-CLR:"
        " ordered eigenfunctions, feature 0 first; see --nef-alpha); 'clip' / 'triclip' train on"
        " image-caption pairs (--dataset mnist5k-captions"
        " or captions:PATH.csv). Recommended: tricl, and simclr with the same seeds to compare",
        _methods,
    )
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
    s_lr_mult: float = _opt(1.0, "learning-rate factor for S's logits (1: S moves with the rest)")
    temperature: float = _opt(
        0.2, "softmax temperature (paper: 0.2). Lower sharpens negatives and can diverge"
    )
    tau: float = _opt(1.0, "weight of the decorrelation term (see --decorrelation; paper: 1.0)")
    decorrelation: str = _opt(
        "mean",
        "'mean': the paper's mean((Z^T Z/N - I)^2) on unit-norm rows (it cannot reach 0 and is"
        " nearly inert); 'whiten': ||k Z^T Z/N - I||^2 / k, a whitening constraint the features"
        " can meet; with --s-lr-mult 10 it lets a learned S order known latent factors"
        " (docs/RESULTS.md), though not MNIST's near-degenerate classes",
        DECORRELATIONS,
    )
    nef_alpha: float = _opt(
        1.0,
        "neuralef: weight of the ordering penalty on the upper triangle of the cross-view Gram"
        " matrix (official: 1). 0 drops the ordering (every feature chases the top eigenvalue)",
    )
    nef_scale: float = _opt(
        10.0,
        "neuralef: scale t of the normalised features (official --t: 10); the penalty grows as"
        " t^2 against the reward's t, so it also sets the penalty's strength",
    )
    s_init_std: float = _opt(0.1, "std of S's logits at init (official code: 0.1)")
    s_init: str = _opt(
        "random",
        "S's initial values: 'random' (softplus(0.1*randn), the official code) or 'geometric'"
        " (1 down to 10^-spread: distinct from the start)",
        S_INITS,
    )
    s_init_spread: float = _opt(1.0, "decades spanned by a geometric S init (1.0: S from 1 to 0.1)")
    s_placement: str = _opt(
        "both",
        "'both': every similarity goes through S (the paper's z^T S z'); 'first_view': S scales"
        " only the first view's rows, as the official code does",
        S_PLACEMENTS,
    )
    s_frozen: bool = _opt(
        False,
        "keep S at its random init, as the official code does (its s never reaches the"
        " optimizer). Off by default: the paper learns S",
    )
    s_param: str = _opt(
        "softplus",
        "S = softplus(s) (paper), or softplus(s) / mean (decouples S's spread from its scale,"
        " which otherwise acts as an inverse temperature)",
        S_PARAMETRIZATIONS,
    )
    text_width: int = _opt(
        128,
        "clip/triclip: text Transformer width (128 with 2 layers is ~0.55M parameters and keeps"
        " CPU steps about as fast as the small_cnn image side; wider mostly costs time)",
    )
    text_layers: int = _opt(2, "clip/triclip: text Transformer layers (2 suffice for captions)")
    text_heads: int = _opt(4, "clip/triclip: attention heads; must divide --text-width")
    text_vocab_size: int = _opt(
        1000,
        "clip/triclip: most BPE tokens learned from the training captions (mnist5k-captions"
        " stops at 165: every word one token); saved in the run as tokenizer.json",
    )
    text_context_length: int = _opt(
        32,
        "clip/triclip: tokens per caption with [SOS]/[EOS]; longer captions are cut (the count"
        " is logged), so raise it for long CSV captions",
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
        from tricl.methods import get_method

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            types = _TYPES.get(str(f.type), (object,))
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ConfigError(
                    f"{f.name} must be {f.type}, got {type(value).__name__} {value!r}"
                )
            choices = field_choices(f)
            if choices and value not in choices:
                raise ConfigError(
                    f"unknown {f.name} {value!r}; choose one of {choices}"
                    f" (e.g. --{f.name.replace('_', '-')} {f.default})"
                )
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

    def _check_ranges(self) -> None:
        if self.s_init_spread < 0:
            raise ConfigError(f"s_init_spread must be >= 0 decades, got {self.s_init_spread}")
        names = ("proj_hidden_dim", "proj_dim", "epochs", "batch_size", "save_every", *_TEXT_SIZES)
        for name in names:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.text_width % self.text_heads:
            raise ConfigError(
                f"text_width {self.text_width} is not divisible by text_heads {self.text_heads};"
                " try --text-width 128 --text-heads 4"
            )
        if self.text_vocab_size <= 4 or self.text_context_length < 3:
            raise ConfigError(
                "text_vocab_size must be > 4 (the special tokens) and text_context_length >= 3"
                f" ([SOS] word [EOS]), got {self.text_vocab_size} and {self.text_context_length}"
            )
        if self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2: contrastive losses need negatives")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature} (paper: 0.2)")
        if self.tau < 0:
            raise ConfigError(f"tau must be >= 0, got {self.tau} (paper: 1.0)")
        if self.nef_alpha < 0 or not self.nef_scale > 0:
            raise ConfigError(
                f"nef_alpha must be >= 0 and nef_scale > 0, got {self.nef_alpha} and"
                f" {self.nef_scale} (official: 1 and 10)"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.s_lr_mult < 0 or self.s_init_std < 0:
            raise ConfigError("weight_decay, s_lr_mult and s_init_std must be >= 0")
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
        """Whether the method has a learnable diagonal importance matrix S."""
        from tricl.methods import get_method

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
