"""Where the dashboard looks for runs, which runs it may open, and the state it keeps in the URL.

Roots: by default the shipped runs (the repository's ``checkpoints/``) and the user runs root
(``$TRICL_RUNS``, else ``./runs``, if it exists); ``--runs-root DIR`` shows DIR only. With
``--confine`` (or ``TRICL_CONFINE=1``) the sidebar's "Runs folder" box only accepts folders inside
those roots, so a visitor cannot make the server list an arbitrary folder of its disk.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import streamlit as st

from tricl.runs import SHIPPED_RUNS_ROOT, BrokenRun, Run, RunError, default_runs_root, list_runs

REPO_ROOT = Path(__file__).resolve().parent.parent
# Keys of st.session_state that mirror the URL (st.query_params).
URL_RUN, URL_RUNS, URL_FEATURE, URL_ORDER = "run", "runs", "feature", "order"
URL_BASIS = "basis"
# The bases of tricl.analysis.BASES (a test checks they agree): named here because importing
# tricl.analysis.pipeline would pull torch into the server process.
BASES = ("trained", "spectral")
BASIS_LABELS = {
    "trained": "trained axes (importance order)",
    "spectral": "spectral basis (most augmentation-invariant first)",
}
MAX_FEATURE = 1_000_000  # a feature rank beyond any k: clamped to the run's k later
TRUE_WORDS = ("1", "true", "yes", "on")


class RunRefused(ValueError):
    """A run in the URL, or a folder typed in the sidebar, is refused; the message says why."""


@dataclass(frozen=True)
class AppOptions:
    """Where the dashboard looks for runs.

    Attributes:
        roots: folders whose sub-folders are runs, listed in this order (resolved).
        extra_runs: run directories passed by path (``--run DIR``), listed beside the roots'.
        confine: the sidebar's folder box only accepts folders inside ``allowed``.
        allowed: the roots the server was started with (what ``confine`` keeps the box inside).
    """

    roots: tuple[Path, ...]
    extra_runs: tuple[Path, ...] = ()
    confine: bool = False
    allowed: tuple[Path, ...] = ()

    @property
    def runs_root(self) -> Path:
        """The first root: where comparisons and jobs of runs from several roots go."""
        return self.roots[0]


def parse_options(argv: Sequence[str], environ: Mapping[str, str]) -> AppOptions:
    """Options from ``streamlit run app/main.py -- [--runs-root DIR] [--run DIR ...] [--confine]``.

    Without ``--runs-root`` the roots are the shipped runs and the user runs root (if it exists).
    Unknown arguments are ignored, so the module can be imported under pytest.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs-root", default=None)
    parser.add_argument("--run", action="append", default=[])
    parser.add_argument("--confine", action="store_true")
    args, _ = parser.parse_known_args(list(argv))
    if args.runs_root:
        roots = [Path(args.runs_root)]
    else:
        user = default_runs_root(environ)
        roots = [SHIPPED_RUNS_ROOT, *([user] if user.is_dir() else [])]
    resolved = tuple(dict.fromkeys(p.expanduser().resolve() for p in roots))
    confine = args.confine or environ.get("TRICL_CONFINE", "").lower() in TRUE_WORDS
    return AppOptions(
        roots=resolved,
        extra_runs=tuple(Path(p).expanduser().resolve() for p in args.run),
        confine=confine,
        allowed=resolved,
    )


def env_options() -> AppOptions:
    """Options from this process's arguments and environment."""
    return parse_options(sys.argv[1:], os.environ)


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether ``path`` (resolved, so symlinks cannot leave) is one of ``roots`` or below one."""
    real = path.resolve()
    return any(real == r or r in real.parents for r in roots)


def opened_folder(opts: AppOptions, text: str) -> tuple[AppOptions, str | None]:
    """The options after the user typed ``text`` in the "Runs folder" box.

    A run directory is added to the list (and its name returned, to pick it); any other folder
    becomes the only root.

    Raises:
        RunRefused: ``confine`` is on and the folder is outside the allowed roots.
    """
    path = Path(text).expanduser().resolve()
    if opts.confine and not inside(path, opts.allowed):
        shown = ", ".join(str(r) for r in opts.allowed)
        raise RunRefused(
            f"{path} is outside the runs root ({shown}); this dashboard only opens folders "
            "inside it (it was started with --confine)"
        )
    if (path / "config.json").is_file():
        return replace(opts, extra_runs=(*opts.extra_runs, path)), path.name
    if not path.is_dir():
        raise RunRefused(f"{path} is not a folder; type a runs folder or a run directory")
    return replace(opts, roots=(path,)), None


@dataclass(frozen=True)
class RunIndex:
    """The runs the dashboard can show.

    Attributes:
        roots: the runs roots (resolved).
        runs: usable runs, by name.
        broken: folders that are not usable runs, with the reason.
    """

    roots: tuple[Path, ...]
    runs: tuple[Run, ...]
    broken: tuple[BrokenRun, ...]

    @property
    def root(self) -> Path:
        return self.roots[0]

    @property
    def where(self) -> str:
        """The roots, for messages."""
        return ", ".join(f"`{r}`" for r in self.roots)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def get(self, name: str) -> Run | None:
        return next((r for r in self.runs if r.name == name), None)


def _stamp(folders: Iterable[Path]) -> tuple:
    """Cheap fingerprint of run folders (names and file times): the index reloads when it moves."""
    out = []
    for p in folders:
        times = []
        for f in ("config.json", "model.safetensors"):
            try:
                times.append((p / f).stat().st_mtime_ns)
            except OSError:
                times.append(0)
        out.append((str(p), *times))
    return tuple(out)


def _folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_index(roots: tuple[str, ...], extra: tuple[str, ...], stamp: tuple) -> RunIndex:
    """The run index of the roots; ``stamp`` only keys the cache (Run objects keep their hashes)."""
    del stamp
    runs: list[Run] = []
    broken: list[BrokenRun] = []
    names: set[str] = set()
    found: list[Run | BrokenRun] = [item for root in roots for item in list_runs(Path(root))]
    for p in map(Path, extra):
        try:
            found.append(Run.load(p))
        except RunError as exc:
            found.append(BrokenRun(p, str(exc)))
    for item in found:
        if item.name in names:  # pages and URLs name runs by folder name: the first one wins
            if p := next((r.path for r in runs if r.name == item.name), None):
                broken.append(BrokenRun(item.path, f"a run of the same name is listed: {p}"))
            continue
        names.add(item.name)
        (runs if isinstance(item, Run) else broken).append(item)
    return RunIndex(tuple(map(Path, roots)), tuple(runs), tuple(broken))


def run_index(options: AppOptions) -> RunIndex:
    """The runs of ``options`` (reloaded when a run folder appears, vanishes or changes)."""
    folders = [f for root in options.roots for f in _folders(root)]
    stamp = _stamp([*folders, *options.extra_runs])
    roots = tuple(map(str, options.roots))
    return _load_index(roots, tuple(map(str, options.extra_runs)), stamp)


def resolve_run_name(index: RunIndex, name: str) -> Run:
    """The run a URL names, refusing anything that is not a run of the index.

    Raises:
        RunRefused: the name points outside the runs roots, is broken, or does not exist.
    """
    candidate = Path(name)
    parts_ok = len(candidate.parts) == 1 and name not in ("..", ".") and "\\" not in name
    if not parts_ok or candidate.is_absolute() or "\x00" in name:
        raise RunRefused(
            f"run {name!r} in the URL is outside the runs root ({index.where}); only runs "
            "listed in the sidebar can be opened"
        )
    run = index.get(name)
    if run is not None:
        return run
    broken = next((b for b in index.broken if b.name == name), None)
    if broken is not None:
        raise RunRefused(f"run {name!r} in the URL is broken: {broken.reason}")
    raise RunRefused(
        f"no run {name!r} in {index.where}; pick one of the runs listed in the sidebar"
    )


def options() -> AppOptions:
    """This session's options (set by ``main.py``)."""
    return st.session_state["_options"]


def index() -> RunIndex:
    """This session's run index."""
    return run_index(options())


# --------------------------------------------------------------------------- URL state


def _url_runs(idx: RunIndex, values: Sequence[str], errors: list[str]) -> list[str]:
    picked: list[str] = []
    for value in values:
        for part in filter(None, value.split(",")):
            try:
                picked.append(resolve_run_name(idx, part).name)
            except RunRefused as exc:
                errors.append(str(exc))
    return list(dict.fromkeys(picked))


def _url_feature(value: str, errors: list[str]) -> int:
    try:
        rank = int(value)
    except ValueError:
        errors.append(f"feature {value[:40]!r} in the URL is not a number; showing feature #1")
        return 1
    if rank < 1:
        errors.append(f"feature {rank} in the URL is below 1; showing feature #1")
        return 1
    return min(rank, MAX_FEATURE)


def _url_basis(value: str | None, errors: list[str]) -> str:
    if value is None or value in BASES:
        return value or BASES[0]
    errors.append(
        f"basis {value[:40]!r} in the URL is not one of {', '.join(BASES)}; showing the "
        f"{BASES[0]} basis"
    )
    return BASES[0]


def init_state(idx: RunIndex) -> None:
    """Fill the session's state from the URL once per session; refused names become errors."""
    ss = st.session_state
    if ss.get("_url_loaded"):
        return
    ss["_url_loaded"] = True
    errors: list[str] = []
    qp = st.query_params
    run_name = qp.get(URL_RUN)
    ss[URL_RUN] = None
    if run_name:
        try:
            ss[URL_RUN] = resolve_run_name(idx, run_name).name
        except RunRefused as exc:
            errors.append(str(exc))
    ss[URL_RUNS] = _url_runs(idx, qp.get_all(URL_RUNS), errors)
    ss[URL_FEATURE] = _url_feature(qp.get(URL_FEATURE, "1"), errors)
    ss[URL_ORDER] = qp.get(URL_ORDER) or None  # checked against the run's orders where used
    ss[URL_BASIS] = _url_basis(qp.get(URL_BASIS), errors)
    ss["_url_errors"] = errors


def sync_url() -> None:
    """Write the session's run, compared runs, feature, order and basis into the URL."""
    ss = st.session_state
    state: dict[str, Any] = {}
    if ss.get(URL_RUN):
        state[URL_RUN] = ss[URL_RUN]
    if ss.get(URL_RUNS):
        state[URL_RUNS] = ",".join(ss[URL_RUNS])
    if ss.get(URL_FEATURE, 1) != 1:
        state[URL_FEATURE] = str(ss[URL_FEATURE])
    if ss.get(URL_ORDER):
        state[URL_ORDER] = ss[URL_ORDER]
    if ss.get(URL_BASIS, BASES[0]) != BASES[0]:
        state[URL_BASIS] = ss[URL_BASIS]
    if {k: st.query_params.get(k) for k in st.query_params} != state:
        st.query_params.from_dict(state)


def bind(key: str, widget_key: str) -> Callable[[], None]:
    """A widget ``on_change`` callback copying the widget's value into URL state ``key``."""

    def _copy() -> None:
        st.session_state[key] = st.session_state[widget_key]

    return _copy


def seed_widget(widget_key: str, value: Any) -> None:
    """Give a widget its value from URL state before it is drawn (widgets forget when hidden)."""
    if widget_key not in st.session_state:
        st.session_state[widget_key] = value


def current_run() -> Run:
    """The run picked in the sidebar (pages call ``require_runs`` first)."""
    idx = index()
    run = idx.get(st.session_state.get(URL_RUN) or "")
    return run if run is not None else idx.runs[0]


def current_basis() -> str:
    """The basis in the URL (``trained`` or ``spectral``; checked when the URL was read)."""
    basis = st.session_state.get(URL_BASIS)
    return basis if basis in BASES else BASES[0]


def current_order(analysis: Any) -> str:
    """The importance order in the URL if the run's analysis has it, else the run's default.

    In the spectral basis the eigenvalue is the only order (the ranks are the basis's own), so
    the URL's trained-basis order is kept for later and not mentioned.
    """
    if getattr(analysis, "basis", "trained") != "trained":
        return analysis.importance.default
    order = st.session_state.get(URL_ORDER)
    orders, default = analysis.importance.orders, analysis.importance.default
    if order and order not in orders:
        st.info(
            f"This run has no importance order {str(order)[:40]!r} (it has "
            f"{', '.join(orders)}); showing {default}.",
            icon=":material/info:",
        )
    return order if order in orders else default


def current_feature(k: int) -> int:
    """The feature rank (1-based) in the URL, clamped to the run's k (saying so if it was)."""
    rank = int(max(1, st.session_state.get(URL_FEATURE, 1)))
    if rank > k:
        st.info(
            f"This run has {k} features; showing #{k} instead of #{rank}.", icon=":material/info:"
        )
        st.session_state[URL_FEATURE] = rank = k
    return rank
