"""Drawing helpers every page shares: titles, tables with CSV, charts with PNG, image grids.

Pure drawing: nothing here reads a run or computes an analysis.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tricl.methods import METHODS

ORDER_LABELS = {
    "S": "learned importance S = softplus(s)",
    "variance": "variance of the normalised feature",
    "ablation": "leave-one-out linear-probe accuracy drop",
    "index": "the feature's own position (NeuralEF-CLR: feature 0 is the first eigenfunction)",
    "eigenvalue": "eigenvalue of the run's spectral basis (augmentation invariance, 1 = unchanged "
    "by every augmentation), estimated on train pairs",
}
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
TRAIN_HINT = """\
```bash
tricl train --method tricl  --dataset mnist5k --seed 0
tricl train --method simclr --dataset mnist5k --seed 0
```
Each command writes a run directory under the runs folder; reload this page afterwards. Another
folder: `streamlit run app/main.py -- --runs-root DIR` or `TRICL_RUNS=DIR`."""
_IMAGE_LINE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)\s*$")


def page_header(title: str, explanation: str) -> None:
    """Title plus one or two sentences saying what the page shows and how to read it."""
    st.title(title)
    st.caption(explanation)


def show_train_hint(where: str) -> None:
    """What to do when no runs are found in ``where`` (the roots, already formatted)."""
    st.info(f"No runs in {where} yet. Train one (a few minutes on a laptop CPU):")
    st.markdown(TRAIN_HINT)


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


def number_columns(df: pd.DataFrame, fmt: str = "%.3f") -> dict:
    """Column config showing every float column of ``df`` with ``fmt``."""
    return {
        c: st.column_config.NumberColumn(format=fmt) for c in df.columns if df[c].dtype.kind == "f"
    }


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


def order_caption(analysis: Any, order: str) -> str:
    """One sentence naming the importance order the page uses, and why if it is a fallback."""
    what = ORDER_LABELS.get(order, order)
    spec = METHODS.get(getattr(analysis, "method", ""))
    if order == "S" and spec is not None and spec.head:  # S solved from statistics, not learned
        what = "importance S = eigenvalues solved by the run's head (cross-view correlation)"
    note = ""
    orders = analysis.importance.orders
    # the fallback note only where variance stands in for a missing S (not for an index order)
    if analysis.basis == "trained" and order == "variance" and not {"S", "index"} & set(orders):
        note = " (this run has no learned S, so the dashboard orders its features by variance)"
    return f"Features ordered by **{order}**: {what}{note}."


def basis_note(analysis: Any, order: str) -> str:
    """Which axes a feature number refers to: ``spectral basis`` or ``trained axes, S order``."""
    if analysis.basis == "spectral":
        return "spectral basis"
    return f"trained axes, {order} order"


def feature_name(analysis: Any, rank: int, order: str) -> str:
    """``feature #3 (spectral basis)`` or ``feature #3 (trained axes, S order)``."""
    return f"feature #{rank} ({basis_note(analysis, order)})"


def group_label(group: tuple[int, int]) -> str:
    """A 0-based inclusive rank range as pages name it: ``(2, 4)`` -> ``#3-#5``.

    The same words as ``tricl.analysis.spectral.group_label``, which the server cannot import
    (its module imports torch).
    """
    return f"#{group[0] + 1}-#{group[1] + 1}"


def group_of(groups: Any, rank: int) -> tuple[int, int] | None:
    """The unresolved group holding 0-based ``rank``, or None."""
    return next((g for g in groups if g[0] <= rank <= g[1]), None)


def ranges_label(ranks: Any) -> str:
    """Sorted 0-based ranks as 1-based ranges: ``[0, 1, 2, 5]`` -> ``#1-#3, #6``."""
    parts, run = [], []
    for r in sorted(int(r) for r in ranks):
        if run and r != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(r)
    if run:
        parts.append(run)
    return ", ".join(f"#{p[0] + 1}" if len(p) == 1 else group_label((p[0], p[-1])) for p in parts)


def groups_markdown(groups: Any, k: int) -> str:
    """The unresolved groups of a spectral basis, and the ranks safe to compare across seeds."""
    if not groups:
        return (
            f"Every eigenvalue gap is larger than its estimation noise: all {k} ranks are "
            "identifiable from the data and safe to compare across seeds."
        )
    lines = [f"- **{group_label(g)}**: order not identifiable from the data" for g in groups]
    grouped = {r for g in groups for r in range(g[0], g[1] + 1)}
    safe = [r for r in range(k) if r not in grouped]
    return (
        "Neighbouring eigenvalues closer than their split-half estimation noise form one "
        "unresolved group: inside it the order (and the single features) may differ between "
        "seeds, only the group's span is defined.\n\n"
        + "\n".join(lines)
        + f"\n\n**Safe to compare across seeds:** {ranges_label(safe) or 'none'}."
    )


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
    """``activations 2.31 … 1.87`` for a row of images, first and last value."""
    return f"activations {float(values[0]):.2f} … {float(values[-1]):.2f} (left to right, by row)"


def feature_strip(images: np.ndarray, indices: np.ndarray, n: int = 8) -> np.ndarray:
    """The first n images of ``indices`` side by side. images: (N, C, H, W) -> (H', W', 3)."""
    return grid(to_rgb(images[np.asarray(indices[:n])]), cols=n, pad=1)


def section_first(text: str, heading: str) -> str:
    """``text`` with its ``## `` section whose heading starts with ``heading`` moved up to just
    after the preamble (the title and what precedes the first ``## ``); unchanged if absent."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    found = next((i for i in starts if lines[i].startswith(heading)), None)
    if found is None:
        return text
    end = next((i for i in starts if i > found), len(lines))
    first = starts[0]
    section = lines[found:end]
    rest = lines[first:found] + lines[end:]
    return "\n".join(lines[:first] + section + rest)


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


def local_image(folder: Path, relative: str) -> Path | None:
    """``folder/relative`` if it is a file inside ``folder`` (no ``..`` escapes), else None."""
    path = (folder / relative).resolve()
    return path if path.is_file() and folder.resolve() in path.parents else None
