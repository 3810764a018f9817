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


class ListedRun(Run):
    """A run as the dashboard lists it: ``name`` is its key (root + folder name), unique among
    the listed runs, and what pages, tables and the URL (``?run=``) call it.

    A run of the first root keeps its folder name (``tricl_mnist5k_small_cnn_k64_seed0``: the
    shipped runs by default, so their URLs never change); a run of another root is
    ``<root>/<folder>`` (``runs/tricl_mnist5k_small_cnn_k64_seed0``, the path it was trained
    into), so the user's runs and the shipped runs can share folder names and both open.
    """

    def __init__(self, run: Run, key: str) -> None:
        super().__init__(run.path, run.config, run.info)
        self.key = key

    @property
    def name(self) -> str:
        return self.key

    @property
    def folder(self) -> str:
        """The run directory's own name."""
        return self.path.name


# Methods the dashboard opens on when the URL names no run, most wanted first: the paper's
# subject (triCL) first, then its closed-form variant and the baseline, on the embedded default
# dataset (DEFAULT_DATASET) before any other.
DEFAULT_METHODS = ("tricl", "tri-eigen", "simclr")
DEFAULT_DATASET = "mnist5k"


def default_run(runs: Sequence[Run]) -> Run:
    """The run shown when none is picked: the most wanted method of :data:`DEFAULT_METHODS`,
    preferring the default dataset, then the lowest seed, then the listing order (the user's
    runs are listed first); any run if none of those methods is listed.

    Raises:
        ValueError: ``runs`` is empty.
    """
    if not runs:
        raise ValueError("no runs to pick from")

    def rank(item: tuple[int, Run]) -> tuple[int, int, int, int]:
        i, r = item
        method = r.config.method
        m = DEFAULT_METHODS.index(method) if method in DEFAULT_METHODS else len(DEFAULT_METHODS)
        return (r.config.dataset != DEFAULT_DATASET, m, r.config.seed, i)

    return min(enumerate(runs), key=rank)[1]


def root_labels(roots: Sequence[Path]) -> dict[Path, str]:
    """How a run key names each root: its path relative to the working folder if inside it
    (``runs``), else its folder name; the full path where two would read alike."""
    here = Path.cwd().resolve()
    out: dict[Path, str] = {}
    for root in roots:
        label = str(root.relative_to(here)) if here in root.parents else root.name
        out[root] = label if label and label not in out.values() else str(root)
    return out


@dataclass(frozen=True)
class RunIndex:
    """The runs the dashboard can show.

    Attributes:
        roots: the runs roots (resolved).
        runs: usable runs, listed as :class:`ListedRun` (``name`` = key): the runs of the other
            roots (the user's) first, then those of the first root, then runs passed by path.
        broken: folders that are not usable runs, with the reason.
        broken_keys: the key each broken folder would have, in the order of ``broken``.
    """

    roots: tuple[Path, ...]
    runs: tuple[Run, ...]
    broken: tuple[BrokenRun, ...]
    broken_keys: tuple[str, ...] = ()

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

    def find(self, name: str) -> Run | None:
        """The run a URL or a user names: its key, ``<root>/<folder>`` for a run of the first
        root too, or a bare folder name that only one listed run has."""
        if (run := self.get(name)) is not None:
            return run
        labels = root_labels(self.roots)
        for r in self.runs:
            if r.path.parent in labels and name == f"{labels[r.path.parent]}/{r.path.name}":
                return r
        same = [r for r in self.runs if r.path.name == name]
        return same[0] if len(same) == 1 else None

    @property
    def default(self) -> Run:
        """The run shown when none is picked (:func:`default_run`)."""
        return default_run(self.runs)


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
    paths = [Path(r) for r in roots]
    labels = root_labels(paths)
    # the other roots (the user's runs) are listed first, keyed <root>/<folder>; the first
    # root's runs keep their folder names (the URLs of the shipped runs never change)
    found: list[tuple[str, Run | BrokenRun]] = [
        (f"{labels[root]}/{item.name}" if i else item.name, item)
        for i, root in sorted(enumerate(paths), key=lambda ir: ir[0] == 0)
        for item in list_runs(root)
    ]
    taken = {key for key, _ in found}
    for p in map(Path, extra):
        try:
            item: Run | BrokenRun = Run.load(p)
        except RunError as exc:
            item = BrokenRun(p, str(exc))
        key = item.name if item.name not in taken else str(p)
        if key in taken:  # the same folder passed twice, or also listed under a root
            continue
        taken.add(key)
        found.append((key, item))
    runs = [ListedRun(item, key) for key, item in found if isinstance(item, Run)]
    broken = [(key, item) for key, item in found if isinstance(item, BrokenRun)]
    return RunIndex(
        tuple(paths), tuple(runs), tuple(b for _, b in broken), tuple(k for k, _ in broken)
    )


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
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") for p in parts) or "\\" in name or "\x00" in name:
        raise RunRefused(
            f"run {name!r} in the URL is outside the runs root ({index.where}); only runs "
            "listed in the sidebar can be opened"
        )
    run = index.find(name)  # only listed runs: a name is looked up, never opened as a path
    if run is not None:
        return run
    broken = next((b for b, k in zip(index.broken, index.broken_keys) if name in (k, b.name)), None)
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
    return run if run is not None else idx.default


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
