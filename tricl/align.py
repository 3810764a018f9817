"""``tricl align``: export a run whose own axes are its spectral basis (an *aligned* run).

The trained features of a run are not identifiable across seeds, but the same features rotated onto
the run's spectral basis (:mod:`tricl.analysis.spectral`) are, up to sign and inside eigenvalue
clusters. An aligned run bakes that rotation into the checkpoint, so every tool that loads it (this
package's analysis, or a plain ``Encoder``) gets the identifiable features as its own axes::

    z_aligned = (projector(backbone(x)) - mean) @ rotation = aligner(projector(backbone(x)))

It is a new run directory ``<parent>-aligned``: the parent's weights, plus a fixed affine layer
``aligner`` (weight ``rotation^T``, bias ``-mean @ rotation``) and a fixed importance vector (the
eigenvalues, so the default feature order is the spectral order, most invariant first). Its
config.json records the parent (name, path, weights hash) and the basis used (the weights hash it
was estimated for, its fingerprint and parameters). It loads like any run, is never trained further
(``tricl train --resume`` refuses it), and cannot itself be aligned again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from tricl.bases import SPECTRAL_ESTIMATE, SpectralBasis
from tricl.runs import (
    METRICS_FILE,
    WEIGHTS_FILE,
    WEIGHTS_FORMAT,
    Run,
    RunError,
    create_run_dir,
    default_runs_root,
    weights_to_bytes,
)

ALIGNED_SUFFIX = "-aligned"


# ``basis_of(run) -> SpectralBasis``: the run's spectral basis, read from its cache or estimated
# (``tricl.analysis.spectral.spectral_basis``; the analysis sits above this module, so the caller
# hands it in).
BasisOf = Callable[[Run], SpectralBasis]


def aligned_name(parent: Run) -> str:
    """The folder name of ``parent``'s aligned run."""
    return parent.name + ALIGNED_SUFFIX


def _load_parents(runs: Sequence[Run | str | Path]) -> list[Run]:
    """Open every run; refuse aligned and image-text runs, repeats and a mix of datasets (nothing
    read beyond)."""
    loaded = [r if isinstance(r, Run) else Run.load(r) for r in runs]
    if not loaded:
        raise RunError("align needs at least one run; list runs with `tricl runs`")
    for r in loaded:
        if r.aligned:
            parent = (r.parent or {}).get("name", "its parent")
            raise RunError(
                f"{r.path} is already aligned (derived from {parent}); its axes are its spectral"
                " basis already: align the parent instead"
            )
        if r.image_text:  # its spectral basis is the pair basis, which one image layer cannot hold
            raise RunError(
                f"{r.path} is a {r.config.method} image-text run, whose spectral basis is the pair"
                " basis of its image and caption features, not an image-side layer; read its"
                " features in it with `tricl compare --basis spectral` instead of aligning it"
            )
    if len({r.path.resolve() for r in loaded}) < len(loaded):
        raise RunError("a run is given twice; pass each run once")
    datasets = sorted({r.config.dataset for r in loaded})
    if len(datasets) > 1:
        raise RunError(
            f"the runs come from different datasets ({', '.join(datasets)}); align the runs of"
            " one dataset per call, so their aligned features describe the same images"
        )
    return loaded


def _check_targets(parents: list[Run], root: Path) -> None:
    names = [aligned_name(p) for p in parents]
    if len(set(names)) < len(names):
        raise RunError(
            f"two runs share a folder name ({', '.join(p.name for p in parents)}), so their"
            " aligned runs would collide; align them in separate calls with different --runs-root"
        )
    for name in names:
        if (root / name).exists():
            raise RunError(
                f"{root / name} already exists; delete it to align again, or pass another"
                " --runs-root"
            )


def _check_train_split(parents: list[Run]) -> None:
    """The basis is estimated on the train split: each run's dataset must load and have one."""
    seen: set[tuple[str, int]] = set()
    for r in parents:
        key = (r.config.dataset, r.config.image_size)
        if key in seen:
            continue
        try:
            data = r.load_data()
        except ValueError as exc:  # DatasetError and friends: one line that names the fix
            raise RunError(
                f"cannot align {r.name}: its dataset {r.config.dataset!r} cannot be loaded"
                f" ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from None
        if len(data.train_x) == 0:
            raise RunError(
                f"cannot align {r.name}: its dataset {r.config.dataset!r} has no train images,"
                " and the spectral basis is estimated on the train split only"
            )
        seen.add(key)


def aligned_weights(parent: Run, basis: SpectralBasis) -> dict[str, torch.Tensor]:
    """The parent's tensors with the aligner and the fixed importance added (S's logits dropped).

    Args:
        parent: the run to align.
        basis: its :class:`~tricl.bases.SpectralBasis` (k features -> r).

    Returns:
        A state dict that ``tricl.methods.build_encoder(cfg, in_channels, aligned_dim=r)`` loads
        strictly.
    """
    from tricl.methods import build_encoder

    tensors = parent.encoder_weights()  # an image-text run: its image encoder's
    tensors.pop("importance_logits", None)
    weight, bias = basis.as_linear()  # (r, k), (r,)
    tensors["aligner.weight"] = torch.from_numpy(weight.copy())
    tensors["aligner.bias"] = torch.from_numpy(bias.copy())
    tensors["fixed_importance"] = torch.from_numpy(basis.eigenvalues.astype("float64"))
    # strict load: a layout mistake fails here, before anything is written
    enc = build_encoder(parent.config, parent.in_channels, aligned_dim=basis.rank)
    enc.load_state_dict(tensors, strict=True)
    return tensors


def _write_aligned(parent: Run, basis: SpectralBasis, root: Path) -> Run:
    name = aligned_name(parent)
    meta = {"epoch": str(parent.epochs_done), "format": WEIGHTS_FORMAT, "aligned": "1"}
    record = {
        "aligned": {
            "dim": basis.rank,
            "basis": {
                "weights_hash": parent.weights_hash,
                "fingerprint": basis.fingerprint,
                "params": {**SPECTRAL_ESTIMATE, "split": "train"},
                "pairs": basis.pairs,
                # the views the basis was estimated on (an imported 224-px encoder: ImageNet's)
                **({"augmentation": basis.augmentation} if basis.augmentation else {}),
            },
        }
    }
    run_dir = create_run_dir(
        root,
        parent.config.replace(name=name),
        parent.dataset_info,
        name=name,
        parent={
            "name": parent.name,
            "path": str(parent.path.resolve()),
            "weights_hash": parent.weights_hash,
        },
        info=record,
        files={
            WEIGHTS_FILE: weights_to_bytes(aligned_weights(parent, basis), meta),
            METRICS_FILE: b"",  # the training history is the parent's
        },
    )
    return Run.load(run_dir)


def align(
    runs: Sequence[Run | str | Path],
    basis_of: BasisOf,
    *,
    runs_root: str | Path | None = None,
) -> list[Run]:
    """Write one aligned run per run, ``<runs_root>/<parent>-aligned``.

    Every check runs before anything is written: aligned runs, image-text runs (clip, triclip:
    their basis is the pair basis of image and caption features), repeated runs, runs of different
    datasets, existing targets and unloadable datasets (or ones without a train split) are refused
    with a one-line :class:`~tricl.runs.RunError`. Each parent's spectral basis is then asked of
    ``basis_of``, e.g. ``functools.partial(tricl.analysis.spectral_basis, device="cpu")``: read
    from its cache or estimated (and cached with the parent, as ``tricl compare`` does).

    Args:
        runs: the runs (or their folders) to align; all of one dataset.
        basis_of: ``basis_of(run)``, the run's spectral basis estimated with
            :data:`tricl.bases.SPECTRAL_ESTIMATE` (what the aligned run records).
        runs_root: where the aligned runs go (default: ``$TRICL_RUNS`` or ``./runs``).

    Returns:
        The aligned runs, in the order given.
    """
    parents = _load_parents(runs)
    root = Path(runs_root) if runs_root is not None else default_runs_root()
    _check_targets(parents, root)
    _check_train_split(parents)
    bases = [basis_of(p) for p in parents]
    return [_write_aligned(p, b, root) for p, b in zip(parents, bases)]
