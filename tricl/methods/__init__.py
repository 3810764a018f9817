"""The training methods, one declaration each.

A method names its label and colour (the one source the app, the CLI and the experiments read),
what a training pair is, whether it has the learnable importance diagonal S, and its loss. Every
list of methods (``--method`` choices, chart legends, study arms) is derived from :data:`METHODS`.

This module is light on purpose (no torch at import time): the dashboard reads labels and colours
from it before it needs a model.
"""

from __future__ import annotations

from dataclasses import dataclass

PAIRS = ("views",)  # "views": two augmented views of one image


class MethodError(ValueError):
    """An unknown method; the one-line message names the choices."""


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes:
        name: the key (``--method``, ``config.json``).
        label: how charts and tables name it.
        color: its colour on every chart (hex).
        description: one line for help texts and the dashboard.
        has_s: whether it learns the importance diagonal S (tri-factor methods); its features are
            then ordered by ``softplus(s)``, else by variance.
        pair: what a training pair is (see :data:`PAIRS`).
        loss: the name of its loss in :data:`tricl.losses.LOSSES`.
    """

    name: str
    label: str
    color: str
    description: str
    has_s: bool
    pair: str = "views"
    loss: str = ""

    def __post_init__(self) -> None:
        if self.pair not in PAIRS:
            raise ValueError(f"method {self.name!r}: pair {self.pair!r} is not one of {PAIRS}")
        if not self.loss:
            object.__setattr__(self, "loss", self.name)


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


def method_label(name: str) -> str:
    """The method's display label (the name itself for a method this version does not know)."""
    spec = METHODS.get(name)
    return spec.label if spec is not None else name


def method_color(name: str) -> str:
    """The method's chart colour (grey for a method this version does not know)."""
    spec = METHODS.get(name)
    return spec.color if spec is not None else UNKNOWN_COLOR


register_method(
    MethodSpec("simclr", "SimCLR", "#4C78A8", "SimCLR NT-Xent (Chen et al. 2020)", has_s=False)
)
register_method(
    MethodSpec(
        "tricl",
        "triCL",
        "#E4572E",
        "tri-SimCLR: NT-Xent through S + decorrelation",
        has_s=True,
    )
)
register_method(
    MethodSpec(
        "spectral",
        "Spectral",
        "#54A24B",
        "spectral contrastive loss (HaoChen et al. 2021)",
        has_s=False,
    )
)
register_method(
    MethodSpec(
        "tri-spectral",
        "tri-Spectral",
        "#B279A2",
        "tri-SCL: spectral loss through S + decorrelation",
        has_s=True,
    )
)
