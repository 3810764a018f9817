"""What a method's options are made of: fields with their help text and choices (torch-free).

A method declares its options as a small frozen dataclass of :func:`option` fields whose names
are the run-config keys (``nef_alpha``, ``text_width``: namespaced by a prefix, so that
``config.json`` stays one flat object and runs written before stay readable). Its
``__post_init__`` checks the values and raises :class:`ConfigError`. :class:`tricl.config.RunConfig`
takes every registered method's option fields as its own, so each becomes a ``tricl train`` flag
with the field's help (DINO style: the recommended value and what goes wrong otherwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and the fix."""


def option(default: Any, help: str, choices: Iterable[str] | Callable[[], list[str]] = ()) -> Any:
    """A field with its help text and choices (a tuple, or a function for a registry's keys)."""
    meta = {"help": help, "choices": choices if callable(choices) else tuple(choices)}
    return dataclasses.field(default=default, metadata=meta)


def field_choices(f: dataclasses.Field) -> list[str]:
    """The allowed values of a config field (empty: any value of its type)."""
    choices = f.metadata.get("choices", ())
    return list(choices() if callable(choices) else choices)


def options_of(cfg: Any, group: type) -> Any:
    """The ``group`` options (a dataclass of :func:`option` fields) that ``cfg`` holds.

    Args:
        cfg: a :class:`tricl.config.RunConfig` (or any object with the group's attributes).
        group: the options dataclass.

    Raises:
        ConfigError: a value is invalid (the group's own checks).
    """
    return group(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(group)})


def check_at_least(values: dict[str, float], low: float) -> None:
    """Raises ConfigError naming the first of ``values`` (name -> value) below ``low``."""
    for name, value in values.items():
        if value < low:
            raise ConfigError(f"{name} must be >= {low:g}, got {value}")
