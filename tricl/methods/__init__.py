"""The training methods, one declaration each.

A method names its label and colour (the one source the app, the CLI and the experiments read),
what a training pair is, the encoders it trains, its contrastive loss kernel and whether it has the
learnable importance diagonal S. Every list of methods (``--method`` choices, chart legends, study
arms, the loss tests) is derived from :data:`METHODS`; adding a method is one
:func:`register_method` call.

``clip`` and ``triclip`` train on image-caption pairs (``pair="caption"``): their encoders are an
image encoder, a text encoder and CLIP's learnable temperature (:mod:`tricl.text.model`), their
losses those of :data:`tricl.losses.IMAGE_TEXT_LOSSES`.

A method with S is the tri-factor form of its kernel: :func:`tricl.losses.build_loss` routes its
similarities through S and adds the decorrelation term. That is data here, not a separate loss.

This module is light on purpose (no torch at import time): the dashboard reads labels and colours
from it before it needs a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

# "views": two augmented views of one image; "caption": one augmented view and its caption
PAIRS = ("views", "caption")
# How a method's features are ranked by default (tricl.analysis.importance): "S" by the learned
# importance diagonal, "variance" by the variance of the normalised features, "index" by their
# position (a method whose loss orders its outputs, feature 0 first).
FEATURE_ORDERS = ("S", "variance", "index")


class MethodError(ValueError):
    """An unknown method; the one-line message names the choices."""


def build_image_encoder(cfg: Any, in_channels: int) -> nn.Module:
    """The :class:`tricl.models.Encoder` (backbone, projector, S if the method has it) of ``cfg``.

    Args:
        cfg: a :class:`tricl.config.RunConfig`.
        in_channels: image channels of the dataset.
    """
    from tricl.models import Encoder  # torch is imported only when a model is built

    return Encoder.from_config(cfg, in_channels)


def build_image_text_model(cfg: Any, in_channels: int, text_config: Any = None) -> nn.Module:
    """The :class:`tricl.text.model.ImageTextModel` of ``cfg``: image encoder, text encoder and
    the learnable logit scale.

    Args:
        cfg: a :class:`tricl.config.RunConfig`.
        in_channels: image channels of the dataset.
        text_config: the :class:`tricl.text.encoder.TextEncoderConfig` (its vocab and context
            length come from the run's tokenizer, so the caller must give it).
    """
    from tricl.text.model import ImageTextModel

    if text_config is None:
        raise ValueError(
            f"method {cfg.method!r} needs text_config (from the run's tokenizer) to build its"
            " text encoder; pass text_config=text_encoder_config(tokenizer, cfg.proj_dim)"
        )
    return ImageTextModel.from_config(cfg, in_channels, text_config)


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes:
        name: the key (``--method``, ``config.json``).
        label: how charts and tables name it.
        color: its colour on every chart (hex).
        description: one line for help texts and the dashboard.
        loss: its contrastive kernel: for ``pair="views"`` a key of :data:`tricl.losses.KERNELS`
            (``"nt_xent"``, ``"spectral"``) or of :data:`tricl.losses.FEATURE_KERNELS`
            (``"neuralef"``), for ``pair="caption"`` a key of
            :data:`tricl.losses.IMAGE_TEXT_LOSSES` (``"clip"`` or ``"triclip"``).
        has_s: whether it learns the importance diagonal S (tri-factor methods: the kernel's
            similarities go through S and the decorrelation term is added).
        pair: what a training pair is (see :data:`PAIRS`).
        encoders: ``encoders(cfg, in_channels, **context)`` builds the modules it trains (caption
            methods take ``text_config``).
        order: the default importance order of its features, one of :data:`FEATURE_ORDERS`
            (empty: ``"S"`` with S, else ``"variance"``). The analysis, compare and the study
            rank features by it.
        head: a key of :data:`tricl.heads.HEADS` (empty: none): a layer after the projector whose
            weights are solved from statistics during training; with ``has_s`` it gives S
            (``tri-eigen``: the eigenvalues of the cross-view covariance), in place of learned
            logits.
    """

    name: str
    label: str
    color: str
    description: str
    loss: str
    has_s: bool
    pair: str = "views"
    encoders: Callable[..., nn.Module] = build_image_encoder
    order: str = ""
    head: str = ""

    def __post_init__(self) -> None:
        if self.pair not in PAIRS:
            raise ValueError(f"method {self.name!r}: pair {self.pair!r} is not one of {PAIRS}")
        if not self.loss:
            raise ValueError(f"method {self.name!r} names no loss kernel; set loss='nt_xent'")
        if self.head and self.pair != "views":
            raise ValueError(f"method {self.name!r}: a head needs pair='views', not {self.pair!r}")
        if not self.order:  # frozen: the derived default is set once, here
            object.__setattr__(self, "order", "S" if self.has_s else "variance")
        if self.order not in FEATURE_ORDERS or (self.order == "S" and not self.has_s):
            raise ValueError(
                f"method {self.name!r}: order {self.order!r} must be one of {FEATURE_ORDERS}"
                " ('S' only with has_s=True)"
            )

    def build_encoders(self, cfg: Any, in_channels: int, **context: Any) -> nn.Module:
        """The modules this method trains for ``cfg`` (a RunConfig), on ``in_channels`` images;
        ``context`` holds what the pair kind adds (``text_config`` for caption methods)."""
        return self.encoders(cfg, in_channels, **context)


METHODS: dict[str, MethodSpec] = {}
UNKNOWN_COLOR = "#7F7F7F"


def register_method(spec: MethodSpec) -> MethodSpec:
    """Adds ``spec`` to :data:`METHODS` (names are unique)."""
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is registered twice; pick another name")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The method called ``name``.

    Raises:
        MethodError: no such method.
    """
    spec = METHODS.get(name)
    if spec is None:
        raise MethodError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return spec


def methods_with_pair(pair: str) -> list[str]:
    """The registered methods whose training pair is ``pair`` (a key of :data:`PAIRS`), in order."""
    return [name for name, spec in METHODS.items() if spec.pair == pair]


def method_label(name: str) -> str:
    """The method's display label (the name itself for a method this version does not know)."""
    spec = METHODS.get(name)
    return spec.label if spec is not None else name


def method_order(name: str, has_s: bool) -> str:
    """The default importance order of a method's features (a key of :data:`FEATURE_ORDERS`);
    for a method this version does not know, ``"S"`` if its run has S, else ``"variance"``."""
    spec = METHODS.get(name)
    if spec is not None:
        return spec.order
    return "S" if has_s else "variance"


def method_color(name: str) -> str:
    """The method's chart colour (grey for a method this version does not know)."""
    spec = METHODS.get(name)
    return spec.color if spec is not None else UNKNOWN_COLOR


register_method(
    MethodSpec(
        "simclr",
        "SimCLR",
        "#4C78A8",
        "SimCLR NT-Xent (Chen et al. 2020)",
        loss="nt_xent",
        has_s=False,
    )
)
register_method(
    MethodSpec(
        "tricl",
        "triCL",
        "#E4572E",
        "tri-SimCLR: NT-Xent through S + decorrelation",
        loss="nt_xent",
        has_s=True,
    )
)
register_method(
    MethodSpec(
        "spectral",
        "Spectral",
        "#54A24B",
        "spectral contrastive loss (HaoChen et al. 2021)",
        loss="spectral",
        has_s=False,
    )
)
register_method(
    MethodSpec(
        "tri-spectral",
        "tri-Spectral",
        "#B279A2",
        "tri-SCL: spectral loss through S + decorrelation",
        loss="spectral",
        has_s=True,
    )
)
register_method(
    MethodSpec(
        "clip",
        "CLIP",
        "#F2A900",
        "CLIP image-caption InfoNCE, learnable temperature (Radford et al. 2021)",
        loss="clip",
        has_s=False,
        pair="caption",
        encoders=build_image_text_model,
    )
)
register_method(
    MethodSpec(
        "triclip",
        "triCLIP",
        "#9D755D",
        "tri-CLIP: image-caption similarities through S + decorrelation",
        loss="triclip",
        has_s=True,
        pair="caption",
        encoders=build_image_text_model,
    )
)
register_method(
    MethodSpec(
        "neuralef",
        "NeuralEF-CLR",
        "#17BECF",
        "NeuralEF-CLR: ordered eigenfunctions of the augmentation kernel (Deng et al. 2023)",
        loss="neuralef",
        has_s=False,
        order="index",
    )
)
register_method(
    MethodSpec(
        "tri-eigen",
        "tri-Eigen",
        "#7F3C8D",
        "triCL with F and S solved in closed form: NT-Xent through S on the eigenbasis of the"
        " running cross-view covariance (S = its eigenvalues)",
        loss="nt_xent",
        has_s=True,
        head="eigen",
    )
)
