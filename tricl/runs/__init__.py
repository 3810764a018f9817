"""Run directories: create, checkpoint, recover, load (weights only, never code), list, import.

This package is the only writer of a run directory (``docs/ARCHITECTURE.md``, "Run directories
and reliability")::

    <run>/config.json        RunConfig + dataset facts + library versions + git commit
                             (+ ``parent`` and ``aligned`` for a run derived by ``tricl align``)
    <run>/model.safetensors  encoder weights; metadata holds the epoch (image-text methods: the
                             prefixes ``image.``, ``text.`` and ``logit_scale``)
    <run>/tokenizer.json     clip/triclip only: the BPE tokenizer of the training captions (an
                             open_clip import uses open_clip's own, recorded in config.json)
    <run>/train_state.pt     optimizer + RNG state for --resume, loaded with weights_only=True
    <run>/metrics.jsonl      one JSON line per epoch
    <run>/analysis/          artifacts of tricl.analysis

Every file is written to a temporary name in the same folder, flushed and renamed into place
(:mod:`tricl.io`), and a new run is assembled in a hidden folder that is renamed into place, so a
crash or Ctrl-C never leaves half a file or half a run. New runs go to the user's runs root
(``$TRICL_RUNS`` or ``./runs``); the runs shipped with the repository live in
:data:`SHIPPED_RUNS_ROOT`.

The modules: :mod:`~tricl.runs.files` (file names, weights, train state, checkpoints, metrics),
:mod:`~tricl.runs.record` (roots, names, creating a run, reading config.json),
:mod:`~tricl.runs.run` (:class:`Run`, listing), :mod:`~tricl.runs.resume` (lock, resume point).
"""

from tricl.config import RunConfig
from tricl.io import (
    FAULT_ENV,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
)
from tricl.runs.files import (
    CONFIG_FILE,
    FORMAT_VERSION,
    METRICS_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    WEIGHTS_FORMAT,
    RunError,
    canonical_safetensors,
    check_state_file,
    load_state_file,
    log_epoch,
    read_metrics,
    read_weights,
    read_weights_header,
    recover_checkpoint,
    save_epoch,
    state_to_bytes,
    trim_metrics,
    weights_epoch,
    weights_to_bytes,
    write_checkpoint,
    write_metrics,
)
from tricl.runs.record import (
    SHIPPED_RUNS_ROOT,
    check_run_name,
    check_runs_root,
    create_run_dir,
    default_runs_root,
    ensure_new_run,
    git_commit,
    is_image_text,
    is_shipped,
    library_versions,
    load_run_tokenizer,
    read_run_info,
    read_text_config,
    run_roots,
)
from tricl.runs.resume import ResumePoint, open_for_resume, training_lock
from tricl.runs.run import BrokenRun, Run, list_runs

__all__ = [
    "CONFIG_FILE",
    "FAULT_ENV",
    "FORMAT_VERSION",
    "METRICS_FILE",
    "SHIPPED_RUNS_ROOT",
    "STATE_FILE",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "WEIGHTS_FORMAT",
    "BrokenRun",
    "ResumePoint",
    "Run",
    "RunConfig",
    "RunError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "canonical_safetensors",
    "check_run_name",
    "check_runs_root",
    "check_state_file",
    "create_run_dir",
    "default_runs_root",
    "ensure_new_run",
    "file_sha256",
    "git_commit",
    "is_image_text",
    "is_shipped",
    "library_versions",
    "list_runs",
    "load_run_tokenizer",
    "load_state_file",
    "log_epoch",
    "open_for_resume",
    "read_metrics",
    "read_run_info",
    "read_text_config",
    "read_weights",
    "read_weights_header",
    "recover_checkpoint",
    "run_roots",
    "save_epoch",
    "state_to_bytes",
    "training_lock",
    "trim_metrics",
    "weights_epoch",
    "weights_to_bytes",
    "write_checkpoint",
    "write_metrics",
]
