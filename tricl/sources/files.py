"""Reading a foreign weights file safely and matching its tensors to a model.

Nothing here can execute code from a file: safetensors is plain data, and a PyTorch pickle is read
with ``weights_only=True``, the globals it names (Lightning's hyper-parameter containers, or
anything malicious) bound to inert stand-ins. The state dict is then found in its container
(Lightning ``state_dict``, ``model``, ``teacher``, ...), the backbone's key prefix detected
(``module.``, ``backbone.``, ``encoder_q.``, ... or given) and checked against the model: its own
tensors must all be there with their shapes; extra ones are reported in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.io import first_line
from tricl.sources.errors import SourceError

if TYPE_CHECKING:
    from torch import Tensor, nn

# containers of a state dict inside a checkpoint (Lightning, DeiT/MAE, DINO, generic)
CONTAINERS = ("state_dict", "model", "model_state_dict", "teacher", "student", "net", "module")
# module names under which SSL code keeps the projection MLP beside the backbone
PROJECTOR_NAMES = ("projector", "projection_head", "projection", "proj_head", "head_proj", "fc")
_PREFIX_DEPTH = 3  # candidate prefixes: up to this many leading key components


class _Inert:
    """Stand-in for any class or function a checkpoint names (argparse, omegaconf, ...): it
    records what the pickle passes and runs nothing, so loading cannot execute code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value


class NeedsCode(Exception):
    """A pickle torch refuses to load even with inert stand-ins: it names ``names``."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def load_inert(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, the globals outside torch's allowlist
    that the file names (hyper-parameter containers, or anything malicious) bound to inert
    stand-ins, so their code never runs; the one safe pickle reader of tricl.

    Raises:
        NeedsCode: the file is refused all the same (it needs code to load).
        Exception: whatever ``torch.load`` raises for a file that is not a PyTorch pickle.
    """
    import torch
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    names: list[str] = []
    try:
        names = get_unsafe_globals_in_checkpoint(str(path))
        stand_ins = [(type(n.rsplit(".", 1)[-1], (_Inert,), {}), n) for n in names]
        with safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "blocked" in str(exc):
            raise NeedsCode(names) from None
        raise


def load_pickle(path: Path, what: str) -> Any:
    """:func:`load_inert` with the errors a source gives.

    Raises:
        SourceError: not a readable PyTorch file, or it needs code to load (one line, the fix).
    """
    try:
        return load_inert(path)
    except NeedsCode as exc:
        raise SourceError(
            f"{path} was refused: it references {exc}, which could execute"
            " code, and tricl never runs code from a checkpoint; re-export it with torch.save"
            " of a state dict"
        ) from None
    except Exception as exc:
        raise SourceError(
            f"{path} is not a readable PyTorch or safetensors file ({first_line(exc)}); pass {what}"
        ) from None


def read_tensors(path: Path, what: str = "the encoder's weights file") -> dict[str, Tensor]:
    """The flat name -> tensor dict of a safetensors file or a PyTorch checkpoint.

    Args:
        path: the weights file.
        what: how the fix names the file the user should pass.

    Raises:
        SourceError: missing, unreadable, or no tensors in it.
    """
    if not path.is_file():
        raise SourceError(f"weights file {path} does not exist; check the path given to --weights")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise SourceError(
                f"{path} is not a readable safetensors file ({first_line(exc)}); pass {what}"
            ) from None
    found = state_dict_of(load_pickle(path, what))
    if not found:
        raise SourceError(f"{path} holds no tensors (no state dict found); pass {what}")
    return found


def state_dict_of(obj: Any) -> dict[str, Tensor]:
    """The state dict inside a checkpoint: the dict itself, or the first container that has one."""
    import torch

    if not isinstance(obj, dict):
        return {}
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and len(tensors) * 2 >= len(obj):
        return tensors
    for key in CONTAINERS:
        inner = state_dict_of(obj.get(key))
        if inner:
            return inner
    return tensors


@dataclass
class Match:
    """A checkpoint's tensors matched to a model.

    Attributes:
        prefix: the key prefix the backbone's tensors had (stripped).
        tensors: the model's state dict, taken from the checkpoint.
        unexpected: checkpoint keys under ``prefix`` the model has no place for (dropped).
        outside: how many tensors lay outside ``prefix`` (projector, momentum encoder, ...).
        projector: the projection MLP beside the backbone, if the checkpoint has one.
    """

    prefix: str
    tensors: dict[str, Tensor]
    unexpected: list[str]
    outside: int
    head: int = 0
    projector: dict[str, Tensor] = field(default_factory=dict)

    def report(self, path: Path, projector_read: bool = False) -> str:
        """One line: what was taken, what was dropped."""
        where = f"under {self.prefix!r}" if self.prefix else "at the top level"
        text = f"{path.name}: {len(self.tensors)} backbone tensors {where}, all matched"
        if self.head:
            text += f"; the classifier head ({self.head} tensors) dropped"
        if self.unexpected:
            shown = ", ".join(self.unexpected[:3]) + (", ..." if len(self.unexpected) > 3 else "")
            text += f"; {len(self.unexpected)} unused ({shown})"
        outside = self.outside - len(self.projector)
        if self.projector:
            use = "read" if projector_read else "found (--layer projector reads it)"
            text += f"; its projector ({len(self.projector)} tensors) {use}"
        if outside > 0:
            text += f"; {outside} other tensors outside the backbone ignored"
        return text


def _candidates(keys: list[str]) -> set[str]:
    out = {""}
    for k in keys:
        parts = k.split(".")
        for n in range(1, min(_PREFIX_DEPTH, len(parts) - 1) + 1):
            out.add(".".join(parts[:n]) + ".")
    return out


def match_state(
    tensors: dict[str, Tensor],
    model: nn.Module,
    *,
    prefix: str | None,
    head_keys: tuple[str, ...],
    adapt: Any,
    spec: str,
    path: Path,
) -> Match:
    """The model's tensors from a checkpoint, under the prefix that fits it best (or ``prefix``).

    Args:
        tensors: the checkpoint's flat state dict.
        model: the freshly built model (its keys and shapes are the target).
        prefix: the backbone's key prefix if the user gave one (``--prefix``), else detected.
        head_keys: key prefixes of a classification head, dropped silently.
        adapt: ``(tensors, model) -> tensors``, the source's renaming after the prefix is stripped.
        spec: the source spec, for messages.
        path: the weights file, for messages.

    Raises:
        SourceError: no tensors fit, some of the model's own are missing, or shapes differ.
    """
    target = model.state_dict()
    wanted = set(target)
    options = [prefix] if prefix is not None else sorted(_candidates(list(tensors)), key=len)
    best: tuple[int, str, dict[str, Tensor]] = (-1, "", {})
    for p in options:
        stripped = {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}
        stripped = adapt(stripped, model)
        hits = len(wanted & set(stripped))
        if hits > best[0]:
            best = (hits, p, stripped)
    hits, chosen, stripped = best
    if hits <= 0:
        sample = ", ".join(list(tensors)[:3])
        hint = f"--prefix {prefix!r} matches nothing" if prefix is not None else ""
        raise SourceError(
            f"{path} does not hold a {spec} ({hint or 'no key fits it'}; its keys look like"
            f" {sample}); pass that architecture's weights, name the architecture they belong"
            " to, or give the backbone's key prefix with --prefix"
        )
    missing = sorted(wanted - set(stripped))
    if missing:
        raise SourceError(
            f"{path} lacks {len(missing)} of the {len(wanted)} tensors of a {spec} backbone"
            f" (e.g. {', '.join(missing[:3])}; prefix {chosen!r}); pass the weights of that"
            " architecture, or the backbone's key prefix with --prefix"
        )
    bad = [k for k in wanted if tuple(stripped[k].shape) != tuple(target[k].shape)]
    if bad:
        k = sorted(bad)[0]
        raise SourceError(
            f"{path} does not fit a {spec}: {k} has shape {tuple(stripped[k].shape)}, the model"
            f" {tuple(target[k].shape)} ({len(bad)} such tensors); pick the architecture the"
            " weights were trained with (e.g. another depth or width)"
        )
    extra = [k for k in stripped if k not in wanted]
    unexpected = sorted(k for k in extra if not k.startswith(tuple(head_keys)))
    inside = sum(1 for k in tensors if k.startswith(chosen))
    return Match(
        prefix=chosen,
        tensors={k: stripped[k] for k in wanted},
        unexpected=unexpected,
        outside=len(tensors) - inside,
        head=len(extra) - len(unexpected),
        projector=find_projector(tensors, chosen),
    )


def find_projector(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The projection MLP's tensors beside the backbone (keys relative to the MLP), or {}.

    Looked for under ``projector.``, ``projection_head.``, ... next to the backbone's prefix (and
    ``fc.`` inside it: MoCo v2 keeps its MLP there); a single linear layer is a classifier, not a
    projector.
    """
    parts = prefix.rstrip(".").split(".") if prefix else []
    outers = {".".join(parts[:-1]) + "." if len(parts) > 1 else "", prefix}
    for outer in sorted(outers, key=len):
        for name in PROJECTOR_NAMES:
            p = f"{outer}{name}."
            found = {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}
            if sum(1 for k, v in found.items() if k.endswith("weight") and v.ndim == 2) >= 2:
                return found
    return {}


def _natural(path: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def mlp_spec(tensors: dict[str, Tensor]) -> list[list[Any]]:
    """The layers of a projection MLP from its tensors: Linear and BatchNorm1d, in key order, a
    ReLU after each block but the last (SimCLR, MoCo v2, BYOL, lightly heads).

    Returns:
        ``[["linear", in, out, bias], ["batchnorm", n, affine], ["relu"], ...]``, and each layer's
        source key prefix in :func:`mlp_state`'s order.

    Raises:
        SourceError: a tensor that is neither (e.g. a conv or an attention block).
    """
    modules = sorted({k.rsplit(".", 1)[0] if "." in k else "" for k in tensors}, key=_natural)
    spec: list[list[Any]] = []
    for i, m in enumerate(modules):
        p = f"{m}." if m else ""
        w = tensors.get(f"{p}weight")
        if f"{p}running_mean" in tensors:
            spec.append(["batchnorm", int(tensors[f"{p}running_mean"].shape[0]), w is not None])
        elif w is not None and w.ndim == 2:
            spec.append(["linear", int(w.shape[1]), int(w.shape[0]), f"{p}bias" in tensors])
        else:
            raise SourceError(
                f"the projector's {m or 'top'} layer is neither Linear nor BatchNorm1d; read the"
                " backbone instead (drop --layer projector)"
            )
        nxt = modules[i + 1] if i + 1 < len(modules) else None
        if nxt is not None and not (spec[-1][0] == "linear" and f"{nxt}.running_mean" in tensors):
            spec.append(["relu"])
    return spec


def mlp_state(tensors: dict[str, Tensor], spec: list[list[Any]]) -> dict[str, Tensor]:
    """The MLP's tensors renamed to the indices of :func:`build_mlp`'s ``nn.Sequential``."""
    modules = sorted({k.rsplit(".", 1)[0] if "." in k else "" for k in tensors}, key=_natural)
    slots = [i for i, layer in enumerate(spec) if layer[0] != "relu"]
    out = {}
    for slot, m in zip(slots, modules):
        p = f"{m}." if m else ""
        for k, v in tensors.items():
            if k.startswith(p) and "." not in k[len(p) :]:
                out[f"{slot}.{k[len(p) :]}"] = v
    return out


def build_mlp(spec: list[list[Any]]) -> nn.Sequential:
    """The ``nn.Sequential`` of an :func:`mlp_spec` (random weights)."""
    from torch import nn

    layers: list[nn.Module] = []
    for layer in spec:
        if layer[0] == "linear":
            layers.append(nn.Linear(int(layer[1]), int(layer[2]), bias=bool(layer[3])))
        elif layer[0] == "batchnorm":
            layers.append(nn.BatchNorm1d(int(layer[1]), affine=bool(layer[2])))
        else:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
