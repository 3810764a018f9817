"""tricl dashboard: ``streamlit run app/main.py [-- --runs-root DIR] [--run DIR ...] [--confine]``.

The router: reads the runs roots, draws the sidebar (runs folder, run picker, basis), restores the
run, compared runs, feature, importance order and basis from the URL, keeps them in the URL while
the user moves between pages, and runs the selected page (one file per page under ``views/``).

The pages live in ``views/``, not ``pages/``: Streamlit treats a ``pages/`` folder beside the
main script as a legacy (v1) multipage app until ``st.navigation`` has run once in the process, so
a first request (or every AppTest run) could execute a page file directly, without this router.
"""

from __future__ import annotations

import sys
from pathlib import Path

import labels
import state
import streamlit as st

from tricl.dashboard import bind_refusal

PAGES = [
    ("views/runs.py", "Runs", ":material/table_chart:", "runs"),
    ("views/features.py", "Features", ":material/view_list:", "features"),
    ("views/feature_detail.py", "Feature detail", ":material/center_focus_strong:", "feature"),
    ("views/compare_seeds.py", "Compare seeds", ":material/compare_arrows:", "compare"),
    ("views/embedding.py", "Embedding", ":material/scatter_plot:", "embedding"),
    ("views/few_features.py", "Few features", ":material/stacked_line_chart:", "few-features"),
    ("views/probe.py", "Probe an image", ":material/image_search:", "probe"),
    ("views/study.py", "Study results", ":material/science:", "study"),
]

# Streamlit's flag: its REPL check has run (see skip_repl_check)
REPL_CHECKED = "_use_warning_has_been_displayed"


def _set_root() -> None:
    """Sidebar path changed: a run directory is added to the list and picked; any other folder
    becomes the runs root (its runs listed, the picked ones forgotten). With ``--confine`` a
    folder outside the roots the server was started with is refused."""
    ss = st.session_state
    text = ss["_w_root"].strip()
    if not text:
        return
    opts: state.AppOptions = ss["_options"]
    ss["_url_errors"] = []
    try:
        new, picked = state.opened_folder(opts, text)
    except (ValueError, OSError) as exc:  # RunRefused, or a path the OS rejects (NUL byte)
        ss["_url_errors"] = [str(exc)]
        ss["_w_root"] = str(opts.runs_root)
        return
    ss.pop("_w_run", None)
    ss["_options"] = new
    if picked is not None:
        ss[state.URL_RUN] = picked
        ss["_picked_path"] = new.extra_runs[-1]  # its key is known once the index has it
        ss["_w_root"] = str(opts.runs_root)
        return
    ss[state.URL_RUN] = None
    ss[state.URL_RUNS] = []


def _pick_run() -> None:
    ss = st.session_state
    ss[state.URL_RUN] = ss["_w_run"]
    ss["_url_errors"] = []


def basis_picker() -> None:
    """The basis every feature page draws in (kept in the URL as ``?basis=``)."""
    state.seed_widget("_w_basis", state.current_basis())
    st.session_state["_w_basis"] = state.current_basis()
    st.radio(
        "Feature basis",
        state.BASES,
        key="_w_basis",
        format_func=lambda b: state.BASIS_LABELS[b].split(" (")[0],
        on_change=state.bind(state.URL_BASIS, "_w_basis"),
        help="trained: the features as the projector outputs them, in their importance order "
        "(S, variance or ablation). spectral: the run's features rotated onto its spectral "
        "basis (eigenvectors of the augmentation's positive-pair covariance, estimated on train "
        "pairs), most invariant first; these agree across seeds feature by feature.",
    )


def sidebar(idx: state.RunIndex) -> None:
    """Runs folder, run picker, basis picker, and a word about broken runs."""
    ss = st.session_state
    opts = state.options()
    with st.sidebar:
        state.seed_widget("_w_root", str(idx.root))
        with st.expander("Runs folder", icon=":material/folder_open:"):
            st.text_input(
                "Runs folder or run directory",
                key="_w_root",
                on_change=_set_root,
                help="A folder whose sub-folders are runs (what `tricl train` writes), or one run "
                "directory to add to the list (e.g. an imported checkpoint)."
                + (" Only folders inside the runs root are accepted." if opts.confine else ""),
            )
            st.caption(f"{len(idx.runs)} run(s), {len(idx.broken)} broken")
        if not idx.runs:
            return
        names = idx.names
        if (path := ss.pop("_picked_path", None)) is not None:  # a run directory just opened
            ss[state.URL_RUN] = next((r.name for r in idx.runs if r.path == path), None)
        if ss.get(state.URL_RUN) not in names:
            ss[state.URL_RUN] = idx.default.name
        if ss.get("_w_run") not in names:
            ss["_w_run"] = ss[state.URL_RUN]
        shown = labels.run_labels(idx.runs)
        st.selectbox(
            "Run",
            names,
            key="_w_run",
            format_func=shown.__getitem__,
            on_change=_pick_run,
            help="The run the Features, Feature detail, Embedding and Probe pages show.",
        )
        run = idx.get(ss[state.URL_RUN])
        if run is not None:
            st.caption(f"`{run.path}`")
        basis_picker()
        if idx.broken:
            st.warning(
                f"{len(idx.broken)} broken run(s): see the Runs page.", icon=":material/warning:"
            )


def skip_repl_check() -> None:
    """Spare the first page Streamlit's "is this a Python REPL?" check.

    Before the first element of a process Streamlit checks whether it runs in a REPL, to print a
    hint: ``inspect.stack()`` over the script thread, which reads every frame's source file and
    resolves the path of every module loaded (0.2 CPU s of the first page, about 1,300 modules
    loaded by then). Under a server (``streamlit run``) the hint never applies, so the check is
    marked done; run as a bare script, Streamlit still checks and warns.
    """
    from streamlit import delta_generator, runtime

    if runtime.exists() and hasattr(delta_generator, REPL_CHECKED):
        setattr(delta_generator, REPL_CHECKED, True)


def refuse_all_interfaces() -> None:
    """Serve nothing from a server listening on every interface by accident (see
    :func:`tricl.dashboard.bind_refusal`); AppTest sessions have no HTTP headers and no server."""
    refusal = bind_refusal(st.get_option("server.address"))
    if refusal is not None and st.context.headers:
        print(f"error: {refusal}", file=sys.stderr)
        st.error(refusal, icon=":material/block:")
        st.stop()


def main() -> None:
    skip_repl_check()
    st.set_page_config(
        page_title="tricl dashboard", page_icon=":material/change_history:", layout="wide"
    )
    refuse_all_interfaces()
    ss = st.session_state
    if "_options" not in ss:
        ss["_options"] = state.env_options()
    idx = state.index()
    state.init_state(idx)
    here = Path(__file__).parent
    pages = [
        st.Page(here / path, title=title, icon=icon, url_path=url, default=i == 0)
        for i, (path, title, icon, url) in enumerate(PAGES)
    ]
    page = st.navigation(pages)
    sidebar(idx)
    for msg in ss.get("_url_errors", []):
        st.error(msg, icon=":material/block:")
    state.sync_url()
    try:
        page.run()
    finally:
        state.sync_url()


if __name__ == "__main__":
    main()
