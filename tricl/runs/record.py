"""Where runs live and what a run records: the runs roots, run names, creating a run folder
(all or nothing) and reading its ``config.json`` (and an image-text run's text records)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tricl.config import ConfigError, RunConfig
from tricl.io import (
    atomic_write_bytes,
    atomic_write_text,
    check_folder_name,
    first_line,
    fsync_dir,
    rename,
)
from tricl.runs.files import CONFIG_FILE, FORMAT_VERSION, TOKENIZER_FILE, RunError

SHIPPED_RUNS_ROOT = Path(__file__).resolve().parents[2] / "checkpoints"


def default_runs_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where new runs go: ``$TRICL_RUNS`` if set, else ``./runs`` (never the shipped runs).

    Args:
        environ: the environment to read (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    return Path(env.get("TRICL_RUNS") or "runs")


def run_roots() -> list[Path]:
    """The roots listed by default: the user's runs, then the shipped ones (when both exist)."""
    roots = [default_runs_root()]
    if SHIPPED_RUNS_ROOT.is_dir() and SHIPPED_RUNS_ROOT.resolve() != roots[0].resolve():
        roots.append(SHIPPED_RUNS_ROOT)
    return roots


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` is one of the runs shipped with the repository."""
    return Path(path).resolve().parent == SHIPPED_RUNS_ROOT


def check_run_name(name: str) -> str:
    """Return ``name`` if it is one folder name inside the runs root (see
    :func:`tricl.io.check_folder_name`).

    Raises:
        RunError: the name would write outside the runs root, into a subfolder, or a hidden
            folder (``../x``, ``/abs``, ``a/b``, ``.x``), naming the characters allowed.
    """
    try:
        return check_folder_name(name, "run name")
    except ValueError as exc:
        raise RunError(f"{exc} (--name)") from None


def check_runs_root(root: Path) -> None:
    """Refuse a runs root that is a file (or lies under one), before anything is written.

    Raises:
        RunError: one line naming the file and the fix.
    """
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir():
                raise RunError(
                    f"runs root {root}: {folder} is a file, not a folder; pass a folder to"
                    " --runs-root (or set TRICL_RUNS to one)"
                )
            return


def git_commit() -> str:
    """The commit of the tricl checkout (``unknown`` outside git)."""
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return "unknown"


def library_versions() -> dict[str, str]:
    """The versions of tricl, torch, torchvision and Python, as config.json records them."""
    from importlib.metadata import version

    import torch

    from tricl import __version__

    return {
        "tricl": __version__,
        "torch": torch.__version__,
        "torchvision": version("torchvision"),  # importing it costs 1.5 s a process
        "python": platform.python_version(),
    }


def ensure_new_run(run_dir: Path, fix: str) -> None:
    """Refuse a run name that is taken; ``fix`` says what to do instead."""
    if run_dir.exists():
        raise RunError(f"run directory {run_dir} already exists; {fix}")


def _sweep_partial_runs(root: Path) -> None:
    """Remove hidden half-built run folders whose builder process is gone (killed)."""
    for tmp in root.glob(".new-*"):
        pid = tmp.name.rsplit(".", 2)[-2] if tmp.name.count(".") >= 3 else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


def create_run_dir(
    root: Path,
    cfg: RunConfig,
    dataset: Mapping[str, Any],
    *,
    name: str,
    parent: Mapping[str, Any] | str | None = None,
    info: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Create the run directory ``root/name``: config.json (+ ``files``), all or nothing.

    The folder is assembled under a hidden name and renamed into place, so a crash never leaves a
    half-made run. Call it only after every argument check has passed.

    Args:
        root: the runs root.
        cfg: the run's configuration.
        dataset: dataset facts (``in_channels``, ``image_size``, ``classes``, ...).
        name: the folder name (one path component, :func:`check_run_name`).
        parent: the run this one is derived from, if any: its path, or (``tricl align``) its
            ``name``, ``path`` and ``weights_hash``.
        info: more top-level keys for config.json (e.g. ``imported_from``).
        files: more files to put in the new folder (name -> bytes), e.g. imported weights.

    Returns:
        The run directory.
    """
    check_run_name(name)
    if cfg.name:  # train() joins cfg.name to the root before it gets here: "../x" -> name "x"
        check_run_name(cfg.name)
    check_runs_root(root)
    run_dir = root / name
    ensure_new_run(run_dir, "pick another --name")
    record: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "dataset": dict(dataset),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **(info or {}),
    }
    if parent is not None:
        record["parent"] = parent if isinstance(parent, str) else dict(parent)
    root.mkdir(parents=True, exist_ok=True)
    _sweep_partial_runs(root)
    tmp_dir = root / f".new-{name}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    tmp_dir.mkdir()
    try:
        atomic_write_text(tmp_dir / CONFIG_FILE, json.dumps(record, indent=2))
        for fname, data in (files or {}).items():
            atomic_write_bytes(tmp_dir / fname, data)
        rename(tmp_dir, run_dir)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return run_dir


def read_run_info(run_dir: Path) -> tuple[dict[str, Any], RunConfig]:
    """Read and check ``config.json``: the record and its :class:`RunConfig`.

    Raises:
        RunError: the file is missing, not JSON, or lacks or mistypes a required value.
    """
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise RunError(
            f"{run_dir} has no {CONFIG_FILE}, so it is not a tricl run; train one with"
            " `tricl train` or convert a checkpoint with `tricl import`"
        )
    try:
        info = json.loads(cfg_path.read_bytes())
        if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
            raise ConfigError("no 'config' object")
        dataset = info.get("dataset")
        if not isinstance(dataset, dict) or not isinstance(dataset.get("in_channels"), int):
            raise ConfigError("no 'dataset' object with in_channels")
        config = RunConfig.from_dict(info["config"])
        _check_aligned_record(info)
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, ConfigError
        raise RunError(
            f"{cfg_path} is unreadable ({first_line(exc)}); restore it or retrain"
        ) from None
    return info, config


def _check_aligned_record(info: Mapping[str, Any]) -> None:
    """An ``aligned`` record must name its feature count and come with its ``parent``."""
    aligned = info.get("aligned")
    if aligned is None:
        return
    dim = aligned.get("dim") if isinstance(aligned, dict) else None
    if not (isinstance(dim, int) and dim > 0) or not isinstance(info.get("parent"), dict):
        raise ConfigError("its 'aligned' record lacks a positive 'dim' or a 'parent' object")


def is_image_text(cfg: RunConfig) -> bool:
    """Whether ``cfg``'s run pairs images with captions (weights of image and text): a clip or
    triclip run, or an imported encoder with its text tower (open_clip)."""
    from tricl.methods import get_method

    return get_method(cfg.method).pair_of(cfg) == "caption"


def read_text_config(run_dir: Path):
    """The :class:`~tricl.text.encoder.TextEncoderConfig` recorded in an image-text run.

    Raises:
        RunError: config.json has no valid ``text_encoder`` record.
    """
    from tricl.text.encoder import TextEncoderConfig

    info, _ = read_run_info(run_dir)
    record = info.get("text_encoder")
    try:
        return TextEncoderConfig(**record)
    except (TypeError, ValueError) as exc:
        raise RunError(
            f"{run_dir / CONFIG_FILE} has no valid text_encoder record ({first_line(exc)});"
            " restore it or retrain"
        ) from None


def load_run_tokenizer(run_dir: Path, text_config):
    """The run's tokenizer.json, checked against the text encoder it was trained with.

    Raises:
        RunError: the file is missing, unreadable, or not the one the weights were trained with
            (another hash, vocab size or context length), in one line naming the file.
    """
    from tricl.text.tokenizer import TokenizerError, load_tokenizer

    try:
        tokenizer = load_tokenizer(run_dir, expected_sha256=text_config.tokenizer_sha256 or None)
    except TokenizerError as exc:
        raise RunError(str(exc)) from None
    path = run_dir / TOKENIZER_FILE
    if tokenizer.vocab_size != text_config.vocab_size:
        raise RunError(
            f"{path} has {tokenizer.vocab_size} tokens but the text encoder was built for"
            f" {text_config.vocab_size}; restore the run's own tokenizer.json"
        )
    if tokenizer.context_length != text_config.context_length:
        raise RunError(
            f"{path} has context length {tokenizer.context_length} but the text encoder was"
            f" built for {text_config.context_length}; restore the run's own tokenizer.json"
        )
    return tokenizer
