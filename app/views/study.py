"""Study results: the reproduction study's tables and figures (``docs/RESULTS.md``) in the app."""

from __future__ import annotations

import re
from pathlib import Path

import draw
import state
import streamlit as st

from tricl.report import verdicts
from tricl.report.study import lead_sentence, spectral_exceptions, study_verdicts

RESULTS = state.REPO_ROOT / "docs" / "RESULTS.md"
SUMMARY_HEADING = "## What the study shows"


def verdict_table(text: str) -> None:
    """Every identifiability table of the study read with the dashboard's verdicts."""
    table = study_verdicts(text)
    if table.empty:
        return
    with st.expander("The verdicts, in the words of Compare seeds and `tricl compare`", True):
        st.markdown(
            "The study's identifiability scores (mean ± spread over seed pairs) read with the "
            "same rule, basis by basis:\n\n" + verdicts.rule_markdown()
        )
        st.caption(verdicts.CKA_WHITENED_NOTE)
        draw.show_table(table, "study_verdicts")
        if note := spectral_exceptions(table):
            st.markdown(note)


def render(path: Path) -> None:
    if not path.is_file():
        st.info(
            f"No study results at `{path}`: run `python -m tricl.experiments.reproduce` "
            "(about 40 minutes on 2 CPU cores) to write them.",
            icon=":material/info:",
        )
        return
    if lead := lead_sentence(path.read_text()):  # the answer first, then how it was measured
        st.info(lead, icon=":material/lightbulb:")
    verdict_table(path.read_text())
    # the findings first: the tables they summarise follow
    text = draw.section_first(path.read_text(), SUMMARY_HEADING)
    for kind, value in draw.markdown_blocks(text):
        if kind == "md":
            # one page title: the document's headings move one level down
            st.markdown(re.sub(r"^(#{1,5}) ", r"#\1 ", value, flags=re.M))
        elif (found := draw.local_image(path.parent, value)) is not None:
            st.image(str(found))
        else:
            st.warning(f"figure `{value}` is missing; rerun the study to redraw it")


st.title("Study results")
st.caption(
    "The reproduction study of the paper's claims (SimCLR, triCL, NeuralEF-CLR, tri-eigen and "
    "variants, 3 seeds each, on mnist5k and a CIFAR-10 subset), as written by "
    "`python -m tricl.experiments.reproduce`: first its identifiability scores read with the "
    "verdicts of the Compare seeds page, then what it shows, identifiability across seeds, "
    "few-feature curves, full-feature accuracy, training length, the rotation drive that "
    "explains why learned axes are not identifiable, the known-answer check and the "
    "investigation. The other pages show the same measures for any runs you pick."
)
render(RESULTS)
