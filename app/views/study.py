"""Study results: the reproduction study's tables and figures (``docs/RESULTS.md``) in the app."""

from __future__ import annotations

import re
from pathlib import Path

import draw
import state
import streamlit as st

RESULTS = state.REPO_ROOT / "docs" / "RESULTS.md"
SUMMARY_HEADING = "## What the study shows"


def render(path: Path) -> None:
    if not path.is_file():
        st.info(
            f"No study results at `{path}`: run `python -m tricl.experiments.reproduce` "
            "(about 40 minutes on 2 CPU cores) to write them.",
            icon=":material/info:",
        )
        return
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
    "`python -m tricl.experiments.reproduce`: what it shows first, then identifiability across "
    "seeds, few-feature curves, full-feature accuracy, training length, the rotation drive that "
    "explains why learned axes are not identifiable, the known-answer check and the "
    "investigation. The other pages show the same measures for any runs you pick."
)
render(RESULTS)
