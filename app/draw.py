"""Drawing helpers every page shares: titles, tables with CSV, charts with PNG, image grids.

Pure drawing: nothing here reads a run or computes an analysis.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from tricl.report.features import (  # noqa: F401  (the pages' names for them)
    ORDER_LABELS,
    basis_note,
    feature_name,
    group_label,
    group_of,
    groups_markdown,
    order_caption,
    ranges_label,
)

if TYPE_CHECKING:  # pandas is imported by the pages that build frames (not the Runs page)
    import pandas as pd
    import pyarrow as pa

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


def _csv_bytes(df: pd.DataFrame | pa.Table) -> Callable[[], bytes]:
    """The CSV of a frame or an Arrow table, written when the button is clicked."""
    if hasattr(df, "to_csv"):
        return lambda: df.to_csv(index=False).encode()
    return lambda: _arrow_csv(df)


def _arrow_csv(table: pa.Table) -> bytes:
    """An Arrow table's CSV as pandas writes a frame's (missing values blank)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    writer.writerows(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    return out.getvalue().encode()


def arrow_table(columns: dict[str, list[Any]]) -> pa.Table:
    """An Arrow table of plain Python columns, as Streamlit draws a pandas frame of them:
    strings, integers or floats per column, None and NaN missing (drawn blank).

    Built from buffers because ``pyarrow.array`` imports pandas (0.45 CPU s of a fresh server's
    first page, the Runs page, which needs no pandas otherwise).
    """
    import pyarrow as pa

    return pa.Table.from_arrays([_arrow_column(v) for v in columns.values()], names=list(columns))


def _arrow_column(values: list[Any]) -> pa.Array:
    import pyarrow as pa

    valid = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in values])
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    present = [v for v, ok in zip(values, valid, strict=True) if ok]
    if all(isinstance(v, str) for v in present):
        data = [v.encode() if ok else b"" for v, ok in zip(values, valid, strict=True)]
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in data])]).astype(np.int32)
        buffers = [bitmap, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(data))]
        return pa.Array.from_buffers(pa.string(), len(values), buffers)
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in present):
        kind, dtype = pa.int64(), np.int64
    else:
        kind, dtype = pa.float64(), np.float64
    filled = np.array([v if ok else 0 for v, ok in zip(values, valid, strict=True)], dtype=dtype)
    return pa.Array.from_buffers(kind, len(values), [bitmap, pa.py_buffer(filled.tobytes())])


def show_table(
    df: pd.DataFrame | pa.Table,
    name: str,
    *,
    csv: pd.DataFrame | pa.Table | None = None,
    key: str | None = None,
    **kwargs: Any,
) -> Any:
    """A dataframe with a "Download CSV" button under it.

    Args:
        df: what to draw (a pandas frame or an Arrow table).
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


def feature_strip(
    images: np.ndarray, indices: np.ndarray, n: int = 8, cols: int | None = None
) -> np.ndarray:
    """The first n images of ``indices``, ``cols`` a row (default: all side by side).
    images: (N, C, H, W) -> (H', W', 3)."""
    return grid(to_rgb(images[np.asarray(indices[:n])]), cols=cols or n, pad=1)


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


# --------------------------------------------------------------------------- comparison charts


def corr_heatmap(corr: np.ndarray, x_title: str, y_title: str, height: int = 540) -> go.Figure:
    """|corr| of two runs' features: rows one run's feature #, columns the other's.

    Args:
        corr: absolute correlations. Shape: (k_rows, k_cols).
    """
    fig = go.Figure(
        go.Heatmap(
            z=corr,
            x=np.arange(1, corr.shape[1] + 1),
            y=np.arange(1, corr.shape[0] + 1),
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar={"title": "|corr|"},
            hovertemplate="#%{y} vs #%{x}: |corr| %{z:.2f}<extra></extra>",
        )
    )
    return tidy(
        fig,
        height=height,
        xaxis={"title": x_title, "constrain": "domain"},
        yaxis={"title": y_title, "autorange": "reversed", "scaleanchor": "x"},
    )


def score_bars(bars: list[dict], y_title: str, line: float | None = None) -> go.Figure:
    """Grouped bars of scores up to 1 with their spread, one trace per entry of ``bars``
    (keys ``x``, ``y``, ``error``, ``name``, ``color``); ``line``: a dotted threshold. The axis
    starts at 0 unless a score is below it (a held-out R² can be)."""
    ys = [float(y) for b in bars for y in b["y"] if y is not None and np.isfinite(y)]
    low = min([0.0, *ys])
    fig = go.Figure()
    for b in bars:
        fig.add_trace(
            go.Bar(
                x=b["x"],
                y=b["y"],
                error_y={"type": "data", "array": b["error"]},
                name=b["name"],
                marker_color=b["color"],
            )
        )
    if line is not None:
        fig.add_hline(y=line, line_dash="dot", line_color="gray")
    return tidy(
        fig, height=340, barmode="group", yaxis={"range": [low * 1.05, 1.05], "title": y_title}
    )


# --------------------------------------------------------------------------- one feature's classes

# the highlighted class (the one with the most extreme mean) stands out on the class charts
HIGHLIGHT_COLOR, BASE_COLOR = "#E4572E", "#4C78A8"


def class_figures(
    z: np.ndarray, labels: np.ndarray, classes: Any, means: np.ndarray, highlight: int
) -> tuple[go.Figure, go.Figure]:
    """A feature's activation distribution by class, and its class-mean bars.

    Args:
        z: the feature on the evaluation images. Shape: (N,).
        labels: their class indices. Shape: (N,).
        classes: class names, by index.
        means: the feature's mean per class. Shape: (C,).
        highlight: class index drawn in the highlight colour.
    """
    colors = [HIGHLIGHT_COLOR if c == highlight else BASE_COLOR for c in range(len(classes))]
    dist = go.Figure()
    for c, name in enumerate(classes):
        dist.add_trace(
            go.Violin(
                y=z[labels == c],
                name=str(name),
                box_visible=True,
                meanline_visible=True,
                points=False,
                line={"color": colors[c]},
                showlegend=False,
            )
        )
    tidy(dist, height=320, xaxis_title="class", yaxis_title="activation z")
    bars = go.Figure(
        go.Bar(
            x=[str(c) for c in classes],
            y=means,
            marker_color=colors,
            hovertemplate="class %{x}: mean %{y:.3f}<extra></extra>",
        )
    )
    tidy(bars, height=320, xaxis_title="class", yaxis_title="mean activation")
    return dist, bars


def image_block(title: str, images: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    """A titled grid of images with the range of their activations."""
    st.markdown(f"**{title}**")
    st.image(grid(to_rgb(images[indices]), cols=8), width="content")
    st.caption(activation_caption(values))


WIDE_BARS = 256  # above this many features the usual range is a band, not one error bar each


def feature_bars(
    order: np.ndarray,
    z: np.ndarray,
    usual: tuple[np.ndarray, np.ndarray] | None,
    note: str,
    color,
    *,
    what: str,
    usual_name: str,
    y_title: str,
) -> go.Figure:
    """Bars of one input's features in importance order, with the dataset's usual range.

    Args:
        order: raw feature indices, most important first. Shape: (k,).
        z: the input's features, raw index order. Shape: (k,).
        usual: mean and std of the evaluation set's features (raw order), or None.
        note: which axes and order (for the axis title).
        color: the method's colour.
        what: legend name of the bars (``this image``, ``this caption``).
        usual_name: legend name of the usual range.
        y_title: the y axis title.
    """
    ranks = np.arange(1, len(order) + 1)
    fig = go.Figure(
        go.Bar(
            x=ranks,
            y=z[order],
            name=what,
            marker_color=color,
            customdata=order,
            hovertemplate="#%{x} (z[%{customdata}]): %{y:.3f}<extra></extra>",
        )
    )
    if usual is not None and len(order) > WIDE_BARS:  # a band: two paths, not k error bars
        mean, std = (np.asarray(a)[order] for a in usual)
        line = {"color": "rgba(68, 68, 68, 0.5)", "width": 0.5}
        fig.add_trace(go.Scatter(x=ranks, y=mean + std, mode="lines", line=line, hoverinfo="skip",
                                 showlegend=False))  # fmt: skip
        fig.add_trace(go.Scatter(x=ranks, y=mean - std, mode="lines", line=line, fill="tonexty",
                                 fillcolor="rgba(68, 68, 68, 0.2)", name=usual_name))  # fmt: skip
    elif usual is not None:
        mean, std = usual
        fig.add_trace(
            go.Scatter(
                x=ranks,
                y=mean[order],
                error_y={"type": "data", "array": std[order], "thickness": 1},
                mode="markers",
                name=usual_name,
                marker={"color": "#444", "size": 4},
            )
        )
    return tidy(fig, height=320, xaxis_title=f"feature # ({note})", yaxis_title=y_title)
