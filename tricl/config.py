"""Run configuration: one frozen dataclass per run, validated where it is built."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

S_PLACEMENTS = ("both", "first_view")
OPTIMIZERS = ("adamw", "sgd", "lars")
S_PARAMETRIZATIONS = ("softplus", "softplus_mean1")
S_INITS = ("random", "geometric")
DECORRELATIONS = ("mean", "whiten")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and the fix."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run. Saved as ``config.json`` beside the weights.

    Loading a run rebuilds the model from this object alone (nanoGPT style).
    """

    method: str = "tricl"
    dataset: str = "mnist5k"
    backbone: str = "small_cnn"
    proj_hidden_dim: int = 512
    proj_dim: int = 64
    proj_batchnorm: bool = False
    epochs: int = 20
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    warmup_epochs: int = 1
    s_lr_mult: float = 1.0
    temperature: float = 0.2
    tau: float = 1.0
    decorrelation: str = "mean"
    s_init_std: float = 0.1
    s_init: str = "random"
    s_init_spread: float = 1.0
    s_placement: str = "both"
    s_frozen: bool = False
    s_param: str = "softplus"
    seed: int = 0
    device: str = "auto"
    image_size: int = 0
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from tricl.data import DATASETS, parse_dataset
        from tricl.losses import LOSSES
        from tricl.models import BACKBONES

        if self.method not in LOSSES:
            raise ConfigError(
                f"unknown method {self.method!r}; choose one of {sorted(LOSSES)}"
                " (e.g. --method tricl)"
            )
        kind, _ = parse_dataset(self.dataset)
        if kind not in DATASETS:
            raise ConfigError(
                f"unknown dataset {self.dataset!r}; choose one of {sorted(DATASETS)} or folder:PATH"
            )
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.s_placement not in S_PLACEMENTS:
            raise ConfigError(
                f"unknown s_placement {self.s_placement!r}; choose one of {S_PLACEMENTS}"
            )
        if self.s_param not in S_PARAMETRIZATIONS:
            raise ConfigError(
                f"unknown s_param {self.s_param!r}; choose one of {S_PARAMETRIZATIONS}"
            )
        if self.decorrelation not in DECORRELATIONS:
            raise ConfigError(
                f"unknown decorrelation {self.decorrelation!r}; choose one of {DECORRELATIONS}"
            )
        if self.s_init not in S_INITS:
            raise ConfigError(f"unknown s_init {self.s_init!r}; choose one of {S_INITS}")
        if self.s_init_spread < 0:
            raise ConfigError(f"s_init_spread must be >= 0 decades, got {self.s_init_spread}")
        for name in ("proj_hidden_dim", "proj_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2: contrastive losses need negatives")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature} (paper: 0.2)")
        if self.tau < 0:
            raise ConfigError(f"tau must be >= 0, got {self.tau} (paper: 1.0)")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}"
            )

    @property
    def uses_importance(self) -> bool:
        """Whether the method has a learnable diagonal importance matrix S."""
        from tricl.losses import LOSSES

        return LOSSES[self.method].uses_importance

    def replace(self, **changes: Any) -> RunConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a dict, ignoring keys this version does not know (forward compatible)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
