"""Few features: accuracy with only the top-k, bottom-k or random-k features (paper, Fig. 3)."""

from __future__ import annotations

import draw
import jobs_ui
import pandas as pd
import plotly.graph_objects as go
import state
import streamlit as st
from plotly.subplots import make_subplots

from tricl.bases import get_basis
from tricl.methods import method_color, method_label
from tricl.report.features import NO_LABELS

DASH = {"top": "solid", "random": "dash", "bottom": "dot"}
PANELS = {"linear_acc": "Linear probe accuracy", "retrieval_map": "Retrieval mAP"}
ORDER_CHOICES = {
    "default": "each run's default: S for triCL, index for NeuralEF-CLR, variance for SimCLR; in "
    "the spectral basis the eigenvalue for every run",
    "variance": "variance for every run (label-free)",
    "ablation": "leave-one-out ablation for every run (uses labels)",
}


def curves_table(runs: list, found: dict, choice: str) -> pd.DataFrame:
    """Every run's curves with method and seed columns."""
    parts = []
    for r in runs:
        a = found.get(r.name)
        if a is None:
            continue
        order = None if choice == "default" else choice
        if order is not None and order not in a.importance.orders:
            continue
        df = a.curves(order)
        df.insert(0, "order", order or a.importance.default)
        df.insert(0, "seed", r.config.seed)
        df.insert(0, "method", r.config.method)
        df.insert(0, "run", r.name)
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def shown_runs(runs: list, picked) -> str:
    """One line naming the runs the curves average: methods with their seed counts, the
    dataset, and whether the run picked in the sidebar is among them."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.config.method] = counts.get(r.config.method, 0) + 1
    methods = ", ".join(f"{method_label(m)} ({n} run{'s' * (n > 1)})" for m, n in counts.items())
    dataset = runs[0].config.dataset
    where = (
        f"the picked run `{picked.name}` among them"
        if any(r.name == picked.name for r in runs)
        else f"not the picked run `{picked.name}` ({picked.config.dataset})"
    )
    return f"Runs on **{dataset}**: {methods}; {where}."


def mean_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Curves averaged over seeds per method, selection and k (std over seeds as well)."""
    g = table.groupby(["method", "selection", "k"], sort=True)
    out = g[list(PANELS)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["seeds"] = g.size()
    return out.reset_index().fillna({f"{m}_std": 0.0 for m in PANELS})


def figure(means: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(PANELS.values()))
    for col, metric in enumerate(PANELS, start=1):
        groups = means.groupby(["method", "selection"], sort=False)
        keys = sorted(groups.groups, key=lambda ms: (ms[0], list(DASH).index(ms[1])))
        for method, selection in keys:
            df = groups.get_group((method, selection))
            fig.add_trace(
                go.Scatter(
                    x=df["k"],
                    y=df[f"{metric}_mean"],
                    error_y={"type": "data", "array": df[f"{metric}_std"], "thickness": 1},
                    mode="lines+markers",
                    name=f"{method_label(method)} {selection}-k",
                    legendgroup=f"{method}-{selection}",
                    showlegend=col == 1,
                    line={"color": method_color(method), "dash": DASH.get(selection)},
                    hovertemplate=f"{method} {selection}-%{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(type="log", dtick=0.30103, title_text="k features used", row=1, col=col)
    draw.tidy(fig, height=480)
    fig.update_layout(legend={"y": -0.22, "yanchor": "top"}, margin={"b": 40})
    return fig


def main() -> None:
    draw.page_header(
        "Few features",
        "How good are the k most important features alone? For k = 1, 2, 4, … all, a linear "
        "probe and image retrieval use only the top-k (solid), random-k (dashed) or bottom-k "
        "(dotted) features. If importance is meaningful, top-k climbs fast and bottom-k lags: "
        "the paper's Fig. 3 shows this for triCL and not for SimCLR.",
    )
    idx = jobs_ui.require_runs()
    picked = state.current_run()
    datasets = sorted({r.config.dataset for r in idx.runs})
    c1, c2 = st.columns([1, 2])
    with c1:  # the picked run's dataset unless another is chosen here (keyed by the run)
        dataset = st.selectbox(
            "Dataset",
            datasets,
            index=datasets.index(picked.config.dataset),
            key=f"_w_few_dataset_{picked.name}",
            disabled=len(datasets) == 1,
            help="Curves of every run of this dataset, averaged over seeds per method; it follows"
            " the run picked in the sidebar.",
        )
    with c2:
        choice = st.radio(
            "Importance order",
            list(ORDER_CHOICES),
            horizontal=True,
            help="\n".join(f"- {k}: {v}" for k, v in ORDER_CHOICES.items()),
        )
    basis = state.current_basis()
    runs = [r for r in idx.runs if r.config.dataset == dataset]
    st.markdown(shown_runs(runs, picked))
    found = jobs_ui.analyses(runs, key=f"few_features_{dataset}_{basis}", basis=basis)
    if found and not any(a.has_labels for a in found.values()):
        st.info(NO_LABELS)  # probes and retrieval need classes: the curves are not measured
        return
    table = curves_table(runs, found, choice)
    b = get_basis(basis)
    if table.empty:
        where = f"{b.where()} (its only order is the eigenvalue: pick default)"
        st.info(
            "No run of this dataset has curves for this order"
            + (where if b.fixed_order else "")
            + "."
        )
        return
    axes = (
        f"features = {b.label} ranks, most augmentation-invariant first"
        if b.fixed_order
        else "features = trained axes"
    )
    st.caption(
        f"Order: {ORDER_CHOICES[choice]}. {axes.capitalize()}. Mean over seeds; error bars: std "
        "over seeds."
    )
    means = mean_curves(table)
    draw.show_figure(figure(means), f"few_features_{dataset}_{basis}_{choice}")
    with st.expander("Curves of every run"):
        draw.show_table(
            table,
            f"few_feature_curves_{dataset}_{basis}_{choice}",
            column_config={
                c: st.column_config.NumberColumn(format="%.3f")
                for c in table.columns
                if table[c].dtype.kind == "f"
            },
        )


if __name__ == "__main__":
    main()
