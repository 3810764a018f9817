"""What the tri-factor methods share: S's options and its learnable logits (torch-free import).

A method with S is the tri-factor form of its kernel (Zhang, Wang & Wang, "Identifiable
Contrastive Learning with Automatic Feature Importance Discovery", NeurIPS 2023): every similarity
goes through the positive diagonal S and a decorrelation penalty is added with weight ``tau``.
``tricl``, ``tri-spectral``, ``tri-eigen`` and ``triclip`` name :class:`TriFactorOptions` among
their options; those that learn S call :func:`add_importance_logits` in ``add_parts``
(:class:`TriFactorParts` does it, with the bar's terms, for a family of methods with and without S).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tricl.methods.options import ConfigError, option

if TYPE_CHECKING:
    from torch import nn

# the keys of tricl.losses.S_PLACEMENTS / DECORRELATIONS and tricl.models.S_PARAMETRIZATIONS
# (tests/test_methods.py checks that they agree; these stay torch-free)
S_PLACEMENTS = ("both", "first_view")
DECORRELATIONS = ("mean", "whiten")
S_PARAMETRIZATIONS = ("softplus", "softplus_mean1")
S_INITS = ("random", "geometric")


@dataclass(frozen=True)
class TriFactorOptions:
    """The options of S and of the tri-factor loss."""

    s_lr_mult: float = option(1.0, "learning-rate factor for S's logits (1: S moves with the rest)")
    tau: float = option(1.0, "weight of the decorrelation term (see --decorrelation; paper: 1.0)")
    decorrelation: str = option(
        "mean",
        "'mean': the paper's mean((Z^T Z/N - I)^2) on unit-norm rows (it cannot reach 0 and is"
        " nearly inert); 'whiten': ||k Z^T Z/N - I||^2 / k, a whitening constraint the features"
        " can meet; with --s-lr-mult 10 it lets a learned S order known latent factors"
        " (docs/RESULTS.md), though not MNIST's near-degenerate classes",
        DECORRELATIONS,
    )
    s_init_std: float = option(0.1, "std of S's logits at init (official code: 0.1)")
    s_init: str = option(
        "random",
        "S's initial values: 'random' (softplus(0.1*randn), the official code) or 'geometric'"
        " (1 down to 10^-spread: distinct from the start)",
        S_INITS,
    )
    s_init_spread: float = option(
        1.0, "decades spanned by a geometric S init (1.0: S from 1 to 0.1)"
    )
    s_placement: str = option(
        "both",
        "'both': every similarity goes through S (the paper's z^T S z'); 'first_view': S scales"
        " only the first view's rows, as the official code does",
        S_PLACEMENTS,
    )
    s_frozen: bool = option(
        False,
        "keep S at its random init, as the official code does (its s never reaches the"
        " optimizer). Off by default: the paper learns S",
    )
    s_param: str = option(
        "softplus",
        "S = softplus(s) (paper), or softplus(s) / mean (decouples S's spread from its scale,"
        " which otherwise acts as an inverse temperature)",
        S_PARAMETRIZATIONS,
    )

    def __post_init__(self) -> None:
        if self.s_init_spread < 0:
            raise ConfigError(f"s_init_spread must be >= 0 decades, got {self.s_init_spread}")
        if self.tau < 0:
            raise ConfigError(f"tau must be >= 0, got {self.tau} (paper: 1.0)")
        if self.s_lr_mult < 0 or self.s_init_std < 0:
            raise ConfigError("s_lr_mult and s_init_std must be >= 0")


def add_importance_logits(encoder: nn.Module, cfg: Any) -> None:
    """Gives ``encoder`` S's learnable logits, initialised as ``cfg.s_init`` says.

    ``random`` draws ``s_init_std * randn`` (the official code: 0.1); ``geometric`` puts S from 1
    down to ``10^-s_init_spread``: distinct values break the rotation symmetry from the first
    step, instead of waiting for a near-flat random S to spread.
    """
    import torch

    k = encoder.proj_dim
    if cfg.s_init == "geometric":
        target = torch.logspace(0, -cfg.s_init_spread, k)  # (k,)
        logits = torch.log(torch.expm1(target))  # softplus^-1
    else:
        logits = torch.randn(k) * cfg.s_init_std
    encoder.learn_importance(logits, cfg.s_param)


class TriFactorParts:
    """Mixin for a family of methods, each with or without S (``has_s``): with S, the progress
    bar reports the decorrelation term too and the encoder gets S's learnable logits.

    Put it before :class:`~tricl.methods.base.Method` among the bases.
    """

    has_s: bool
    terms: tuple[tuple[str, str], ...]

    def __init__(self) -> None:
        super().__init__()
        if self.has_s:
            self.terms = (("contrastive", "con"), ("decorrelation", "dec"))

    def add_parts(self, encoder: nn.Module, cfg: Any) -> None:
        """S's learnable logits (on the image encoder), for the tri-factor form."""
        if self.has_s:
            add_importance_logits(encoder, cfg)
