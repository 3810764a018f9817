"""The Features table of a wide encoder (a ResNet-50's 2,048 features) comes in pages of rows."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app")


def _table(app: str, n: int) -> None:
    import sys

    sys.path.insert(0, app)
    import pandas as pd
    import streamlit as st
    from views import features

    shown = pd.DataFrame({"#": range(1, n + 1), "_raw": range(n - 1, -1, -1)})
    page = features.page_of(shown, "t")
    st.write(f"ranks {page['#'].iloc[0]}-{page['#'].iloc[-1]}, {len(page)} rows")


def _drawn(n: int) -> AppTest:
    at = AppTest.from_function(_table, args=(APP, n), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_table_wider_than_a_page_draws_one_page_at_a_time():
    at = _drawn(300)
    (pager,) = at.selectbox
    assert pager.options == ["1-128 of 300", "129-256 of 300", "257-300 of 300"]
    assert at.markdown[0].value == "ranks 1-128, 128 rows"
    pager.set_value(128).run()
    assert at.markdown[0].value == "ranks 129-256, 128 rows"
    at.selectbox[0].set_value(256).run()
    assert at.markdown[0].value == "ranks 257-300, 44 rows"


def test_a_table_of_one_page_has_no_pager():
    at = _drawn(128)
    assert not at.selectbox
    assert at.markdown[0].value == "ranks 1-128, 128 rows"
