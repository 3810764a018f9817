"""What a page calls to get its artifacts: read them, or say what is missing and offer a job.

A missing analysis or comparison is never computed inside the page's script run (it takes minutes
and the server would answer nobody else meanwhile). The page shows what is missing and an
"Analyse now" button that starts a :mod:`tricl.jobs` job (``tricl analyze`` / ``tricl compare``
in a subprocess). One job runs at a time on a server (``TRICL_MAX_JOBS`` to allow more): a job
asked for while another runs waits, shown as "queued (position N)". While the job waits or runs,
a fragment redraws its state every second (the rest of the page stays usable) with a Cancel
button; when it ends the page reruns and reads the new files. A job already queued or running for
the same runs (started by another page or another visitor) is joined.

The job does not start by itself on first open: an analysis costs minutes of CPU on a machine
others share, and merely opening a link (or a crawler following one) should not spend it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import draw
import models
import readers
import sections
import state
import streamlit as st

from tricl.bases import Basis, get_basis
from tricl.jobs import (
    CANCELLED,
    FAILED,
    STALE,
    JobError,
    JobStore,
    analyze_command,
    compare_command,
    consensus_command,
)
from tricl.runs import Run

POLL_S = 1.0
ANALYSIS_WHAT = (
    "features, importance orders, per-feature statistics, top images, UMAP and few-feature "
    "curves: about a minute per run on a laptop CPU"
)
SPECTRAL_WHAT = (
    "the run's spectral basis (estimated on 4 x 2 augmented views of at most 5,000 train images: "
    "about 20 s per run for a small CNN on a CPU, 13 min for a resnet18_cifar, about 1.5 h for a "
    "224-px ResNet-50 on 2 CPU cores) "
    "and the features, top images, class statistics and few-feature curves in it (plus the "
    "trained-basis analysis first if it is missing)"
)
IMAGE_TEXT_COMPARE_WHAT = (
    "the image and the text features of every pair of these runs: ordered correlation, MCC, "
    "CKA (and, in the pair basis, each run's canonical correlation of its train image and "
    "text features first), plus the image comparison of the same runs"
)
CONSENSUS_WHAT = (
    "every run's spectral-basis analysis, then the |corr| of each spectral rank across every "
    "pair of runs"
)
TEXT_WHAT = (
    "the caption side of an image-text run: text features of the evaluation captions, zero-shot "
    "accuracy, image->text and text->image recall, top captions and tokens per feature and the "
    "caption factor table (the image analysis is read, not redone): seconds per run"
)
COMPARE_WHAT = (
    "ordered correlation, MCC, CKA and the same scores in each run's spectral basis (estimated "
    "on augmented train pairs the first time: about 20 s per run for a small CNN on a CPU, "
    "1.5 h for a 224-px ResNet-50)"
)


def job_store(runs: Sequence[Run]) -> JobStore:
    """Where the jobs of these runs live: ``_jobs`` beside the first run (as ``_compare``).

    Every store of the server shares its slots, so the job cap holds across runs roots, pages
    and visitors. A bad ``TRICL_MAX_JOBS`` stops the page with the fix.
    """
    try:
        return JobStore(Path(runs[0].path).parent / "_jobs")
    except JobError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()


def require_runs() -> state.RunIndex:
    """The run index; a page with nothing to show explains how to train a run and stops."""
    idx = state.index()
    if not idx.runs:
        draw.show_train_hint(idx.where)
        st.stop()
    return idx


def feature_page(page: str) -> sections.Context:
    """A feature page's run and its analysis in the sidebar's basis, with the notes the run's
    kind adds under the header between them (the ``<page>.header`` sections): the
    :class:`sections.Context` the page hands its other sections. Stops where there is none."""
    require_runs()
    run = state.current_run()
    ctx = sections.Context(run=run, basis=get_basis(state.current_basis()))
    sections.draw(f"{page}.header", ctx)
    ctx.analysis = analysis_of(run, ctx.basis.name)
    return ctx


def _what(basis: Basis) -> str:
    """What an analysis job computes in ``basis`` (the spectral one estimates its basis too)."""
    return ANALYSIS_WHAT if basis.legacy_keys else SPECTRAL_WHAT


def _key(key: str, basis: Basis) -> str:
    """A widget key per basis (the trained basis keeps the key it had before bases existed)."""
    return key if basis.legacy_keys else f"{key}_{basis.name}"


def analyses(
    runs: Sequence[Run], *, key: str, basis: str | Basis = "trained", summary: bool = False
) -> dict[str, Any]:
    """The stored analyses of the runs in ``basis`` (with ``summary``, in the trained basis: their
    summaries, no feature arrays read); missing ones get a job panel, broken ones an error."""
    basis = get_basis(basis)
    got = readers.summaries(runs) if summary else readers.analyses(runs, basis.name)
    flag = "".join(f" {arg}" for arg in basis.cli_args())
    for name, msg in got.errors.items():
        st.error(
            f"the analysis files of {name} cannot be read ({msg}); analyse it again with "
            f"`tricl analyze --force{flag} {name}`",
            icon=":material/error:",
        )
    if got.missing:
        offer_analysis(got.missing, key=key, basis=basis)
    return got.found


def analysis_of(run: Run, basis: str | Basis = "trained") -> Any:
    """One run's stored analysis in ``basis``; otherwise the page offers the job and stops."""
    got = analyses([run], key=_key(f"analyse_{run.name}", get_basis(basis)), basis=basis)
    if run.name not in got:
        st.stop()
    check_images(run, got[run.name])
    return got[run.name]


def text_analyses(runs: Sequence[Run], *, key: str) -> dict[str, Any]:
    """The stored text analyses of the image-text runs among ``runs``.

    Runs whose image analysis is stored but whose text analysis is not get one job panel (the
    same ``tricl analyze`` command, which reads the image side and computes the text side);
    runs with neither are left to the image analysis's panel, whose job does both.
    """
    return _text_side(readers.text_analyses(runs), key)


def zero_shots(runs: Sequence[Run], *, key: str) -> dict[str, dict[str, float]]:
    """The stored zero-shot metrics of the image-text runs among ``runs`` (no feature array
    read), with the job panel of :func:`text_analyses`."""
    return _text_side(readers.zero_shots(runs), key)


def _text_side(got: readers.Analyses, key: str) -> dict[str, Any]:
    for name, msg in got.errors.items():
        st.error(
            f"the caption analysis files of {name} cannot be read ({msg}); analyse it again "
            f"with `tricl analyze --force {name}`",
            icon=":material/error:",
        )
    analysed = readers.summaries(got.missing).found
    todo = [r for r in got.missing if r.name in analysed]
    if todo:
        names = ", ".join(f"`{r.name}`" for r in todo)
        _job_panel(
            job_store(todo),
            analyze_command([r.path for r in todo], readers.EVAL_SPLIT),
            f"{len(todo)} image-text run(s) have no stored caption analysis yet: {names}.",
            TEXT_WHAT,
            "Analyse now",
            f"text_{key}",
        )
    return got.found


def text_analysis(run: Run) -> Any | None:
    """One image-text run's stored text analysis, or None after offering the job."""
    return text_analyses([run], key=f"analyse_{run.name}").get(run.name)


def _stored(
    read: Any, runs: Sequence[Run], command: list[str], detail: str, label: str, key: str
) -> Any:
    """What ``read()`` returns, or None after offering the job writing it (or saying why not)."""
    try:
        got = read()
    except Exception as exc:  # unreadable files: say so, keep the page working
        st.error(f"cannot compare {', '.join(r.name for r in runs)}: {exc}")
        return None
    if isinstance(got, readers.Missing):
        _job_panel(job_store(runs), command, f"{got.reason.capitalize()}.", detail, label, key)
        return None
    return got


def comparison(runs: Sequence[Run], *, key: str, basis: str | Basis = "trained") -> Any | None:
    """The stored comparison of the runs in ``basis``, or None after offering the job (or
    explaining why)."""
    basis = get_basis(basis)
    return _stored(
        lambda: readers.comparison(runs, basis.name),
        runs,
        compare_command([r.path for r in runs], readers.EVAL_SPLIT, basis),
        COMPARE_WHAT if basis.legacy_keys else SPECTRAL_WHAT,
        "Compare now",
        _key(key, basis),
    )


def image_text_comparison(runs: Sequence[Run], *, key: str, basis: str | Basis) -> Any | None:
    """The stored image-and-text comparison of image-text runs in ``basis``, or None after
    offering the ``tricl compare`` job that writes it."""
    basis = get_basis(basis)
    return _stored(
        lambda: readers.image_text_comparison(runs, basis.name),
        runs,
        compare_command([r.path for r in runs], readers.EVAL_SPLIT, basis),
        IMAGE_TEXT_COMPARE_WHAT,
        "Compare now",
        f"{key}_{basis.name}",
    )


def consensus(runs: Sequence[Run], *, key: str) -> Any | None:
    """The stored consensus of the runs' spectral ranks, or None after offering the job."""
    return _stored(
        lambda: readers.consensus(runs),
        runs,
        consensus_command([r.path for r in runs], readers.EVAL_SPLIT),
        CONSENSUS_WHAT,
        "Compute the consensus",
        key,
    )


def offer_analysis(
    runs: Sequence[Run], *, key: str, force: bool = False, basis: str | Basis = "trained"
) -> None:
    """Say which runs have no analysis (in ``basis``) and offer the job (or show the one
    running)."""
    basis = get_basis(basis)
    command = analyze_command([r.path for r in runs], readers.EVAL_SPLIT, basis)
    names = ", ".join(f"`{r.name}`" for r in runs)
    where = basis.where()
    what = (
        f"Analyse {names} again{where}."
        if force
        else f"{len(runs)} run(s) have no stored analysis{where} yet: {names}."
    )
    label = "Analyse again" if force else "Analyse now"
    _job_panel(
        job_store(runs),
        [*command, "--force"] if force else command,
        what,
        _what(basis),
        label,
        key,
    )


def offer_job(
    runs: Sequence[Run], command: list[str], what: str, detail: str, label: str, key: str
) -> None:
    """A panel that says what is missing (``what``), what the job computes (``detail``) and
    starts ``command`` as a job of these runs (or shows the one queued or running)."""
    _job_panel(job_store(runs), command, what, detail, label, key)


def _job_panel(
    store: JobStore, command: list[str], what: str, detail: str, label: str, key: str
) -> None:
    status = store.find(command)
    with st.container(border=True):
        st.markdown(f":material/hourglass_empty: {what}")
        st.caption(f"Computes {detail}; stored on disk, so it happens once.")
        if status is not None and status.running:
            _progress(str(store.root), status.id, key)
            return
        if status is not None and status.state in (FAILED, STALE):
            log = store.folder(status.id) / "log.txt"
            tail = log.read_bytes()[-1500:].decode(errors="replace") if log.is_file() else ""
            how = (
                f"failed (exit code {status.exit_code})"
                if status.state == FAILED
                else "stopped without finishing (its process is gone)"
            )
            st.error(f"The last try {how}; the end of its log:", icon=":material/error:")
            st.code(log_tail(tail), language=None)
        elif status is not None and status.state == CANCELLED:
            st.caption("The last try was cancelled.")
        if st.button(label, key=f"start_{key}", type="primary", icon=":material/play_arrow:"):
            try:
                store.start(command)
            except (OSError, JobError) as exc:  # e.g. the runs folder is read-only
                st.error(f"cannot start the job in {store.root}: {exc}")
                return
            st.rerun()


def log_tail(text: str, lines: int = 12) -> str:
    """The last lines of a job's log, each tqdm bar collapsed to its last redraw."""
    rows = []
    for row in text.split("\n"):
        drawn = [part for part in row.split("\r") if part.strip()]
        if drawn:
            rows.append(drawn[-1])
    return "\n".join(rows[-lines:])


def queued_text(position: int | None, limit: int) -> str:
    """What a queued job's panel says while it waits for one of the server's ``limit`` slots."""
    place = f" (position {position})" if position is not None else ""
    running = "one job runs" if limit == 1 else f"{limit} jobs run"
    return (
        f"Queued{place}: {running} at a time on this server (TRICL_MAX_JOBS); this one starts "
        "when the jobs ahead of it end"
    )


@st.fragment(run_every=POLL_S)
def _progress(root: str, job: str, key: str) -> None:
    """The job's place in the queue or progress bar, and a Cancel button; reruns the page when
    the job ends."""
    store = JobStore(root)
    status = store.status(job)
    if status is None or not status.running:
        st.rerun()  # the whole page: it now reads what the job wrote (or shows why it failed)
    fraction = status.fraction
    text = (
        queued_text(status.position, store.limit)
        if status.queued
        else f"Running for {status.elapsed:.0f} s · {status.progress or 'starting…'}"
    )
    st.progress(fraction if fraction is not None and not status.queued else 0.0, text=text)
    if st.button("Cancel", key=f"cancel_{key}", icon=":material/cancel:"):
        store.cancel(job)
        st.rerun()


def check_images(run: Run, analysis: Any) -> None:
    """Warn (offering to analyse again) if the dataset no longer holds the analysed images.

    That happens when the dataset's files or loading code changed after the analysis; the
    artifacts then describe other images than the ones the pages would show.
    """
    current = models.split_hash(run, analysis)
    if current != analysis.features.images_hash:
        st.warning(
            f"The {analysis.dataset} {analysis.split} images changed since {run.name} was "
            "analysed, so its pictures may not match its numbers; analyse it again.",
            icon=":material/sync_problem:",
        )
        offer_analysis(
            [run], key=f"reanalyse_{run.name}_{analysis.basis}", force=True, basis=analysis.basis
        )
