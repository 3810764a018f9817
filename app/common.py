"""What every dashboard page shares: the runs root, URL state, cached artifacts, images, tables.

Layering (DESIGN.md): pages call :func:`analyses` / :func:`comparison`, which read the artifacts of
:mod:`tricl.analysis` (computed once per run on first open, with a visible message, then cached on
disk by the backend and in memory here). Pages never train and never sweep a dataset; the only
model calls they make are per-image (saliency maps, probing an uploaded image).

Caching: :func:`st.cache_resource` holds the run index, analyses, comparisons, datasets and
encoders. They are read-only objects shared by every session, so the cache hands out the same
object instead of unpickling a copy on every rerun (``st.cache_data`` would copy the arrays each
time). Rendered images (strips, grids, saliency overlays) are ``st.cache_data``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tricl.analysis import STAGES, Analysis, AnalysisError, Comparison, analyze, compare
from tricl.runs import BrokenRun, Run, RunError, list_runs

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS_ROOT = REPO_ROOT / "checkpoints"
EVAL_SPLIT = "test"

METHOD_LABELS = {
    "simclr": "SimCLR",
    "tricl": "triCL",
    "spectral": "Spectral",
    "tri-spectral": "tri-Spectral",
}
# One colour per method on every chart of every page.
METHOD_COLORS = {
    "simclr": "#4C78A8",
    "tricl": "#E4572E",
    "spectral": "#54A24B",
    "tri-spectral": "#B279A2",
}
ORDER_LABELS = {
    "S": "learned importance S = softplus(s)",
    "variance": "variance of the normalised feature",
    "ablation": "leave-one-out linear-probe accuracy drop",
}
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
TRAIN_HINT = """\
```bash
tricl train --method tricl  --dataset mnist5k --seed 0
tricl train --method simclr --dataset mnist5k --seed 0
```
Each command writes a run directory under the runs folder; reload this page afterwards. Another
folder: `streamlit run app/main.py -- --runs-root DIR` or `TRICL_RUNS=DIR`."""

# Keys of st.session_state that mirror the URL (st.query_params).
URL_RUN, URL_RUNS, URL_FEATURE, URL_ORDER = "run", "runs", "feature", "order"


class RunRefused(ValueError):
    """A run named in the URL is not a run of the runs root; the message names the fix."""


# --------------------------------------------------------------------------- options, run index


@dataclass(frozen=True)
class AppOptions:
    """Where the dashboard looks for runs.

    Attributes:
        runs_root: folder whose sub-folders are runs.
        extra_runs: run directories passed by path (``--run DIR``), listed beside the root's.
    """

    runs_root: Path
    extra_runs: tuple[Path, ...] = ()


def parse_options(argv: Sequence[str], environ: Mapping[str, str]) -> AppOptions:
    """Options from ``streamlit run app/main.py -- [--runs-root DIR] [--run RUN_DIR ...]``.

    The root is ``--runs-root``, else ``$TRICL_RUNS``, else the repository's ``checkpoints/``
    (found from this file, so the app works from any working directory). Unknown arguments are
    ignored, so the module can be imported under pytest.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs-root", default=None)
    parser.add_argument("--run", action="append", default=[])
    args, _ = parser.parse_known_args(list(argv))
    root = args.runs_root or environ.get("TRICL_RUNS") or DEFAULT_RUNS_ROOT
    return AppOptions(
        runs_root=Path(root).expanduser().resolve(),
        extra_runs=tuple(Path(p).expanduser().resolve() for p in args.run),
    )


@dataclass(frozen=True)
class RunIndex:
    """The runs the dashboard can show.

    Attributes:
        root: the runs root (resolved).
        runs: usable runs, by name.
        broken: folders that are not usable runs, with the reason.
    """

    root: Path
    runs: tuple[Run, ...]
    broken: tuple[BrokenRun, ...]

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
def _load_index(root: str, extra: tuple[str, ...], stamp: tuple) -> RunIndex:
    """The run index of a root; ``stamp`` only keys the cache (Run objects keep their hashes)."""
    del stamp
    runs: list[Run] = []
    broken: list[BrokenRun] = []
    for item in list_runs(Path(root)):
        (runs if isinstance(item, Run) else broken).append(item)
    names = {r.name for r in runs} | {b.name for b in broken}
    for p in map(Path, extra):
        try:
            run = Run.load(p)
        except RunError as exc:
            broken.append(BrokenRun(p, str(exc)))
            continue
        if run.name not in names:
            runs.append(run)
            names.add(run.name)
    return RunIndex(Path(root), tuple(runs), tuple(broken))


def run_index(options: AppOptions) -> RunIndex:
    """The runs of ``options`` (reloaded when a run folder appears, vanishes or changes)."""
    root = options.runs_root
    stamp = _stamp([*_folders(root), *options.extra_runs])
    return _load_index(str(root), tuple(map(str, options.extra_runs)), stamp)


def resolve_run_name(index: RunIndex, name: str) -> Run:
    """The run a URL names, refusing anything that is not a run of the index.

    Raises:
        RunRefused: the name points outside the runs root, is broken, or does not exist.
    """
    root = index.root.resolve()
    candidate = Path(name)
    parts_ok = len(candidate.parts) == 1 and name != ".." and "\\" not in name
    if not parts_ok or candidate.is_absolute():
        raise RunRefused(
            f"run {name!r} in the URL is outside the runs root {root}; only runs listed in the"
            " sidebar can be opened"
        )
    run = index.get(name)
    if run is not None:
        return run
    broken = next((b for b in index.broken if b.name == name), None)
    if broken is not None:
        raise RunRefused(f"run {name!r} in the URL is broken: {broken.reason}")
    raise RunRefused(f"no run {name!r} in {root}; pick one of the runs listed in the sidebar")


def options() -> AppOptions:
    """This session's options (set by ``main.py``)."""
    return st.session_state["_options"]


def index() -> RunIndex:
    """This session's run index."""
    return run_index(options())


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method, "#7F7F7F")


def run_label(run: Run) -> str:
    """Short label: ``triCL · mnist5k · k64 · seed 0``."""
    c = run.config
    return f"{method_label(c.method)} · {c.dataset} · k{c.proj_dim} · seed {c.seed}"


def run_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Run name -> short label, falling back to the folder name where labels collide."""
    labels = {r.name: run_label(r) for r in runs}
    counts = pd.Series(list(labels.values())).value_counts()
    return {n: (lab if counts[lab] == 1 else n) for n, lab in labels.items()}


def config_key(run: Run) -> str:
    """The run's configuration without seed, name and device: runs sharing it differ by seed."""
    cfg = run.config.to_dict()
    for k in ("seed", "name", "device", "extra"):
        cfg.pop(k, None)
    return json.dumps(cfg, sort_keys=True, default=str)


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs grouped by configuration (each group: the same settings, several seeds)."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(config_key(r), []).append(r)
    return [sorted(g, key=lambda r: r.config.seed) for g in groups.values()]


# Recipe knobs worth naming in a label when they differ from the defaults.
RECIPE_FIELDS = (
    "decorrelation",
    "tau",
    "s_lr_mult",
    "s_init",
    "s_param",
    "s_placement",
    "s_frozen",
    "temperature",
    "optimizer",
)


def recipe_changes(run: Run) -> str:
    """Non-default recipe settings, e.g. ``decorrelation=whiten, s_lr_mult=10.0`` ('' if none)."""
    defaults = type(run.config)()
    return ", ".join(
        f"{f}={getattr(run.config, f)}"
        for f in RECIPE_FIELDS
        if getattr(run.config, f) != getattr(defaults, f)
    )


def group_label(group: Sequence[Run]) -> str:
    c = group[0].config
    seeds = ", ".join(str(r.config.seed) for r in group)
    changes = recipe_changes(group[0])
    return (
        f"{method_label(c.method)} · {c.dataset} · {c.backbone} · k{c.proj_dim} · "
        f"{c.epochs} ep · seeds {seeds}" + (f" · {changes}" if changes else "")
    )


def same_config_runs(run: Run, runs: Sequence[Run]) -> list[Run]:
    """The run's seed group (itself first)."""
    key = config_key(run)
    others = [r for r in runs if r.name != run.name and config_key(r) == key]
    return [run, *sorted(others, key=lambda r: r.config.seed)]


# --------------------------------------------------------------------------- URL state


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
    picked: list[str] = []
    for name in qp.get_all(URL_RUNS):
        for part in filter(None, name.split(",")):
            try:
                picked.append(resolve_run_name(idx, part).name)
            except RunRefused as exc:
                errors.append(str(exc))
    ss[URL_RUNS] = list(dict.fromkeys(picked))
    feature = qp.get(URL_FEATURE, "1")
    try:
        ss[URL_FEATURE] = max(1, int(feature))
    except ValueError:
        errors.append(f"feature {feature!r} in the URL is not a number; showing feature #1")
        ss[URL_FEATURE] = 1
    ss[URL_ORDER] = qp.get(URL_ORDER) or None
    ss["_url_errors"] = errors


def sync_url() -> None:
    """Write the session's run, compared runs, feature and order into the URL."""
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
    """The run picked in the sidebar (pages call :func:`require_runs` first)."""
    idx = index()
    run = idx.get(st.session_state.get(URL_RUN) or "")
    return run if run is not None else idx.runs[0]


def current_order(analysis: Analysis) -> str:
    """The importance order in the URL if the run has it, else the run's default."""
    order = st.session_state.get(URL_ORDER)
    return order if order in analysis.importance.orders else analysis.importance.default


def current_feature(k: int) -> int:
    """The feature rank (1-based) in the URL, clamped to the run's k."""
    return int(min(max(1, st.session_state.get(URL_FEATURE, 1)), k))


# --------------------------------------------------------------------------- page furniture


def page_header(title: str, explanation: str) -> None:
    """Title plus one or two sentences saying what the page shows and how to read it."""
    st.title(title)
    st.caption(explanation)


def show_train_hint(root: Path) -> None:
    st.info(f"No runs in `{root}` yet. Train one (a few minutes on a laptop CPU):")
    st.markdown(TRAIN_HINT)


def require_runs() -> RunIndex:
    """The run index; a page with nothing to show explains how to train a run and stops."""
    idx = index()
    if not idx.runs:
        show_train_hint(idx.root)
        st.stop()
    return idx


def _csv_bytes(df: pd.DataFrame) -> Callable[[], bytes]:
    return lambda: df.to_csv(index=False).encode()


def show_table(
    df: pd.DataFrame,
    name: str,
    *,
    csv: pd.DataFrame | None = None,
    key: str | None = None,
    **kwargs: Any,
) -> Any:
    """A dataframe with a "Download CSV" button under it.

    Args:
        df: what to draw.
        name: file name stem of the CSV (and key prefix).
        csv: what the CSV holds, if not ``df`` (e.g. without image columns).
        key: widget key of the dataframe (needed with ``on_select``).
        **kwargs: passed to ``st.dataframe``.

    Returns:
        What ``st.dataframe`` returns (the selection event with ``on_select``).
    """
    kwargs.setdefault("hide_index", True)
    kwargs.setdefault("width", "stretch")
    event = st.dataframe(df, key=key, **kwargs)
    st.download_button(
        "Download CSV",
        data=_csv_bytes(df if csv is None else csv),
        file_name=f"{name}.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        key=f"csv_{name}",
    )
    return event


def show_figure(fig: go.Figure, name: str, **kwargs: Any) -> Any:
    """A Plotly chart whose toolbar keeps "Download plot as PNG" (file named after the chart)."""
    config = {**PLOT_CONFIG, "toImageButtonOptions": {**PLOT_CONFIG["toImageButtonOptions"]}}
    config["toImageButtonOptions"]["filename"] = name
    kwargs.setdefault("width", "stretch")
    return st.plotly_chart(fig, config=config, **kwargs)


def tidy(fig: go.Figure, height: int = 360, **layout: Any) -> go.Figure:
    """The dashboard's common figure layout."""
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        **layout,
    )
    return fig


# --------------------------------------------------------------------------- analyses


def analysis_present(run: Run) -> bool:
    """Whether every artifact file of the run's evaluation split exists (fresh or not)."""
    folder = run.path / "analysis" / EVAL_SPLIT
    names = [f"{s}.npz" for s in STAGES if s != "downstream"] + ["downstream.csv"]
    return all((folder / n).is_file() for n in names)


def _features_file(path: str | Path) -> Path:
    return Path(path) / "analysis" / EVAL_SPLIT / "features.npz"


def _stamp_of(path: str | Path) -> int:
    """Modification time of the run's features artifact (0 if none): a re-analysis moves it."""
    try:
        return _features_file(path).stat().st_mtime_ns
    except OSError:
        return 0


AnalysisKey = tuple[str, str, int]


def analysis_key(run: Run) -> AnalysisKey:
    """Cache key of a run's analysis: folder, weights hash, and artifact time."""
    return (str(run.path), run.weights_hash, _stamp_of(run.path))


@st.cache_resource(show_spinner=False, max_entries=64)
def _analysis(path: str, weights_hash: str, stamp: int) -> Analysis:
    """Cached artifacts if any fit these weights (whatever their parameters), else computed."""
    del weights_hash, stamp  # cache keys: a retrained or re-analysed run gets a new entry
    from tricl.analysis import load_analysis

    found = load_analysis(path, split=EVAL_SPLIT)
    return found if found is not None else analyze(path, split=EVAL_SPLIT, progress=False)


@st.cache_resource(show_spinner=False)
def _loaded_keys() -> set[AnalysisKey]:
    """Analyses this server process already holds (no message needed for those)."""
    return set()


def analyses(runs: Sequence[Run]) -> dict[str, Analysis]:
    """The analysis of every run, computing missing artifacts with a visible progress message.

    A run whose analysis fails is reported with ``st.error`` and left out.
    """
    loaded = _loaded_keys()
    keys = {r.name: analysis_key(r) for r in runs}
    todo = [r for r in runs if keys[r.name] not in loaded and not analysis_present(r)]
    out: dict[str, Analysis] = {}
    errors: dict[str, str] = {}
    if todo:
        label = (
            f"Analysing {todo[0].name} (first open only)..."
            if len(todo) == 1
            else f"Analysing {len(todo)} runs (first open only)..."
        )
        with st.status(label, expanded=True) as status:
            bar = st.progress(0.0)
            for i, r in enumerate(todo):
                bar.progress(i / len(todo), text=f"{r.name}: features, importance, UMAP, probes")
                t0 = time.perf_counter()
                try:
                    out[r.name] = _analysis(*keys[r.name])
                    loaded.add(keys[r.name])
                    st.write(f"{r.name}: done in {time.perf_counter() - t0:.0f} s")
                except (AnalysisError, RunError, OSError) as exc:
                    errors[r.name] = str(exc)
            bar.progress(1.0, text="done")
            status.update(
                label=f"Analysed {len(todo)} run(s); cached in each run's analysis/ folder",
                state="error" if errors else "complete",
                expanded=False,
            )
    for r in runs:
        if r.name in out or r.name in errors:
            continue
        try:
            out[r.name] = _analysis(*keys[r.name])
            loaded.add(keys[r.name])
        except (AnalysisError, RunError, OSError) as exc:
            errors[r.name] = str(exc)
    for name, msg in errors.items():
        st.error(f"{name} cannot be analysed: {msg}")
    return {r.name: out[r.name] for r in runs if r.name in out}


def analysis_of(run: Run) -> Analysis:
    """One run's analysis; stops the page with the error if it cannot be computed."""
    got = analyses([run])
    if run.name not in got:
        st.stop()
    check_images(run, got[run.name])
    return got[run.name]


@st.cache_resource(show_spinner=False, max_entries=32)
def _comparison(keys: tuple[AnalysisKey, ...]) -> Comparison:
    """The comparison of the runs, recomputed if a run was re-analysed after it was stored."""
    paths = [k[0] for k in keys]
    comp = compare(paths, split=EVAL_SPLIT, progress=False)
    newest = max(_stamp_of(p) for p in paths)
    if (comp.path / "pairs.csv").stat().st_mtime_ns < newest:
        comp = compare(paths, split=EVAL_SPLIT, progress=False, force=True)
    return comp


def comparison(runs: Sequence[Run]) -> Comparison | None:
    """Identifiability between the runs (in this order); None with an error if impossible."""
    got = analyses(runs)
    if len(got) < len(runs):
        return None
    try:
        return _comparison(tuple(analysis_key(r) for r in runs))
    except (AnalysisError, OSError) as exc:
        st.error(f"cannot compare {', '.join(r.name for r in runs)}: {exc}")
        return None


# --------------------------------------------------------------------------- data and models


@st.cache_resource(show_spinner="Loading the dataset...", max_entries=4)
def _dataset(spec: str, image_size: int) -> Any:
    from tricl.data import load_dataset

    return load_dataset(spec, image_size=image_size, download=False)


def dataset_of(run: Run, analysis: Analysis | None = None) -> Any:
    """The run's dataset (:class:`tricl.data.ImageData`), loaded once per server."""
    from tricl.data import DatasetError

    spec = analysis.dataset if analysis is not None else run.config.dataset
    try:
        return _dataset(spec, run.config.image_size)
    except DatasetError as exc:
        st.error(f"cannot load the images of {run.name}: {exc}")
        st.stop()


@st.cache_resource(show_spinner=False, max_entries=16)
def _split_hash(spec: str, image_size: int, split: str) -> str:
    from tricl.analysis.features import images_hash

    x, y = _dataset(spec, image_size).split(split)
    return images_hash(x, y)


def _reanalyse(run: Run) -> None:
    with st.status(f"Analysing {run.name} again...", expanded=True):
        try:
            analyze(run.path, split=EVAL_SPLIT, force=True, progress=False)
        except (AnalysisError, RunError, OSError) as exc:
            st.error(f"{run.name} cannot be analysed: {exc}")
            return
    st.rerun()


def check_images(run: Run, analysis: Analysis) -> None:
    """Warn (with a button to analyse again) if the dataset no longer holds the analysed images.

    That happens when the dataset's files or loading code changed after the analysis; the
    artifacts then describe other images than the ones the pages would show.
    """
    dataset_of(run, analysis)
    if _split_hash(analysis.dataset, run.config.image_size, analysis.split) != (
        analysis.features.images_hash
    ):
        st.warning(
            f"The {analysis.dataset} {analysis.split} images changed since {run.name} was "
            "analysed, so its pictures may not match its numbers; analyse it again.",
            icon=":material/sync_problem:",
        )
        if st.button(f"Analyse {run.name} again", key=f"reanalyse_{run.name}"):
            _reanalyse(run)


def eval_images(run: Run, analysis: Analysis) -> np.ndarray:
    """The evaluation split's uint8 images. Shape: (N, C, H, W)."""
    x, _ = dataset_of(run, analysis).split(analysis.split)
    return x.numpy()


@st.cache_resource(show_spinner=False, max_entries=16)
def _encoder(path: str, weights_hash: str) -> Any:
    del weights_hash
    return Run.load(path).encoder("cpu")


def encoder_of(run: Run) -> Any:
    """The run's encoder in eval mode on the CPU, loaded once per server."""
    return _encoder(str(run.path), run.weights_hash)


# --------------------------------------------------------------------------- images


def upscale(h: int, target: int = 56) -> int:
    """Integer nearest-neighbour factor that brings an image side of ``h`` pixels near target."""
    return max(1, round(target / h))


def to_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 images (B, C, H, W) with C in {1, 3} -> (B, H, W, 3)."""
    x = np.asarray(images)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)  # (B, 1, H, W) -> (B, 3, H, W)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (B, H, W, 3)


def grid(
    images: np.ndarray, cols: int, *, scale: int | None = None, pad: int = 2, pad_value: int = 255
) -> np.ndarray:
    """One image tiling a batch, for a single fast ``st.image`` call.

    Args:
        images: uint8 RGB images. Shape: (B, H, W, 3).
        cols: images per row.
        scale: nearest-neighbour upscaling factor (default: :func:`upscale` of H).
        pad: pixels between tiles.
        pad_value: colour of the padding.

    Returns:
        The tiled image. Shape: (rows * (H' + pad) - pad, cols * (W' + pad) - pad, 3).
    """
    b, h, w, _ = images.shape
    s = upscale(h) if scale is None else scale
    x = images.repeat(s, axis=1).repeat(s, axis=2)  # (B, H*s, W*s, 3)
    hs, ws = h * s, w * s
    cols = max(1, min(cols, b))
    rows = -(-b // cols)
    out = np.full((rows * (hs + pad) - pad, cols * (ws + pad) - pad, 3), pad_value, np.uint8)
    for i in range(b):
        r, c = divmod(i, cols)
        out[r * (hs + pad) : r * (hs + pad) + hs, c * (ws + pad) : c * (ws + pad) + ws] = x[i]
    return out


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of a uint8 image (H, W, 3)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def data_uri(image: np.ndarray) -> str:
    """A PNG data URI (for image columns of tables)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def overlay(image: np.ndarray, heat: np.ndarray, *, strength: float = 0.85) -> np.ndarray:
    """A heat map drawn over an image, opaque where the map is strong.

    Args:
        image: uint8 RGB image. Shape: (H, W, 3).
        heat: map in [0, 1]. Shape: (H, W).
        strength: opacity of the map where it is 1.

    Returns:
        uint8 RGB image. Shape: (H, W, 3).
    """
    from matplotlib import colormaps

    color = colormaps["inferno"](heat)[..., :3] * 255.0  # (H, W, 3)
    gray = image.astype(np.float32).mean(axis=2, keepdims=True) * 0.6  # (H, W, 1), dimmed
    alpha = strength * heat[..., None]  # (H, W, 1)
    return np.clip(gray * (1 - alpha) + color * alpha, 0, 255).astype(np.uint8)


def activation_caption(values: np.ndarray) -> str:
    return f"activations {float(values[0]):.2f} … {float(values[-1]):.2f} (left to right, by row)"


def _overlays(
    path: str,
    weights_hash: str,
    dataset: str,
    batch: Any,
    features: Sequence[int],
    method: str,
    smoothgrad: bool,
) -> tuple[list[np.ndarray], list[float]]:
    """Saliency overlays of features[i] on image i of a uint8 batch (B, C, H, W)."""
    import torch

    from tricl.analysis.saliency import saliency_maps

    enc = _encoder(path, weights_hash)
    data = _dataset(dataset, Run.load(path).config.image_size)
    pre = data.preprocess(batch)  # (B, C, H, W) float
    rgb = to_rgb(batch.numpy())  # (B, H, W, 3)
    tiles, acts = [], []
    with torch.enable_grad():
        for i, f in enumerate(features):
            m = saliency_maps(enc, pre[i], int(f), (method,), smoothgrad=smoothgrad)
            tiles.append(overlay(rgb[i], m.maps[method]))
            acts.append(m.activation)
    return tiles, acts


@st.cache_data(show_spinner=False, max_entries=256)
def saliency_grid(
    path: str,
    weights_hash: str,
    dataset: str,
    split: str,
    indices: tuple[int, ...],
    feature: int,
    method: str,
    smoothgrad: bool,
    cols: int,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Saliency overlays of one feature on some evaluation images, tiled.

    Args:
        path: run folder.
        weights_hash: the run's weights hash (cache key).
        dataset: dataset spec of the analysis.
        split: evaluation split.
        indices: dataset indices of the images.
        feature: raw feature index.
        method: a key of :data:`tricl.analysis.saliency.SALIENCY_METHODS`.
        smoothgrad: average over noisy copies.
        cols: tiles per row.

    Returns:
        ``(grid, activations)``: the tiled overlays (H', W', 3) and z_feature of each image.
    """
    x, _ = _dataset(dataset, Run.load(path).config.image_size).split(split)
    batch = x[list(indices)]  # (B, C, H, W) uint8
    tiles, acts = _overlays(
        path, weights_hash, dataset, batch, [feature] * len(indices), method, smoothgrad
    )
    side = tiles[0].shape[0]
    return grid(np.stack(tiles), cols, scale=upscale(side, 84)), tuple(acts)


@st.cache_data(show_spinner=False, max_entries=64)
def image_saliency(
    path: str,
    weights_hash: str,
    dataset: str,
    image: np.ndarray,
    features: tuple[int, ...],
    method: str,
) -> tuple[list[np.ndarray], list[float]]:
    """Saliency overlays of several features on one uint8 image (C, H, W), one tile each."""
    import torch

    batch = torch.from_numpy(np.repeat(image[None], len(features), axis=0))  # (F, C, H, W)
    return _overlays(path, weights_hash, dataset, batch, features, method, False)


def feature_strip(images: np.ndarray, indices: np.ndarray, n: int = 8) -> np.ndarray:
    """The first n images of ``indices`` side by side. images: (N, C, H, W) -> (H', W', 3)."""
    return grid(to_rgb(images[np.asarray(indices[:n])]), cols=n, pad=1)


def order_caption(analysis: Analysis, order: str) -> str:
    what = ORDER_LABELS.get(order, order)
    note = ""
    if order != "S" and "S" not in analysis.importance.orders:
        note = " (this run has no learned S, so the dashboard orders its features by variance)"
    return f"Features ordered by **{order}**: {what}{note}."


def top8_accuracy(analysis: Analysis, order: str | None = None) -> float:
    """Linear-probe accuracy with the 8 most important features (fewer if k < 8)."""
    curves = analysis.curves(order)
    top = curves[curves["selection"] == "top"]
    k = min(8, analysis.k)
    row = top[top["k"] == k]
    if row.empty:  # k = 8 is always a curve point when k >= 8; otherwise take the largest k <= 8
        row = top[top["k"] <= k].sort_values("k").tail(1)
    return float(row["linear_acc"].iloc[0]) if not row.empty else float("nan")


def env_options() -> AppOptions:
    """Options from this process's arguments and environment."""
    return parse_options(sys.argv[1:], os.environ)


_IMAGE_LINE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)\s*$")


def markdown_blocks(text: str) -> list[tuple[str, str]]:
    """Splits Markdown into ("md", text) and ("img", relative path) blocks, in order.

    Images are drawn with ``st.image`` from local files (``st.markdown`` cannot read them).
    """
    out: list[tuple[str, str]] = []
    buf: list[str] = []
    for line in text.splitlines():
        m = _IMAGE_LINE.match(line.strip())
        if m:
            if buf:
                out.append(("md", "\n".join(buf)))
                buf = []
            out.append(("img", m["src"]))
        else:
            buf.append(line)
    if buf:
        out.append(("md", "\n".join(buf)))
    return out
