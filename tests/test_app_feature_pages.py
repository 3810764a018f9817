"""A wide encoder (a ResNet-50's 2,048 features) on the pages: the Features table comes in pages of
rows, and an image's activations are drawn against one band of the usual range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app")


def _table(app: str, n: int) -> None:
    import sys

    sys.path.insert(0, app)
    import pandas as pd
    import streamlit as st
    from views import features

    shown = pd.DataFrame(
        {"#": range(1, n + 1), "_raw": range(n - 1, -1, -1), "std": [(i * 7) % n for i in range(n)]}
    )
    page = features.page_of(shown, "t")
    st.write(f"ranks {page['#'].iloc[0]}-{page['#'].iloc[-1]}, {len(page)} rows")
    st.write(f"std {page['std'].iloc[0]}")


def _drawn(n: int) -> AppTest:
    at = AppTest.from_function(_table, args=(APP, n), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_table_wider_than_a_page_draws_one_page_at_a_time():
    at = _drawn(300)
    sort, pager = at.selectbox
    assert sort.options == ["#", "std"] and sort.value == "#"
    assert pager.options == ["1-128 of 300", "129-256 of 300", "257-300 of 300"]
    assert at.markdown[0].value == "ranks 1-128, 128 rows"
    pager.set_value(128).run()
    assert at.markdown[0].value == "ranks 129-256, 128 rows"
    at.selectbox[1].set_value(256).run()
    assert at.markdown[0].value == "ranks 257-300, 44 rows"


def test_a_paged_table_is_sorted_across_pages_not_within_one():
    at = _drawn(300)
    at.selectbox[0].set_value("std").run()
    at.selectbox[1].set_value(0).run()
    assert at.markdown[1].value == "std 299"  # the largest of all 300 rows leads page 1
    at.selectbox[1].set_value(128).run()
    assert at.markdown[1].value == "std 171"  # page 2 goes on where page 1 stopped


def test_a_table_of_one_page_has_no_pager():
    at = _drawn(128)
    assert not at.selectbox  # one page: no pager, and a header click sorts every row
    assert at.markdown[0].value == "ranks 1-128, 128 rows"


def _draw():
    import sys

    sys.path.insert(0, APP)
    import draw

    return draw


def test_a_wide_encoders_usual_range_is_one_band_not_an_error_bar_per_feature():
    draw = _draw()
    rng = np.random.default_rng(0)
    for k, band in ((64, False), (draw.WIDE_BARS + 1, True)):
        order = rng.permutation(k)
        z, mean, std = rng.normal(size=(3, k))
        fig = draw.feature_bars(
            order, z, (mean, np.abs(std)), "trained axes", "#1f77b4",
            what="this image", usual_name="dataset mean ± std", y_title="z",
        )  # fmt: skip
        bars, *usual = fig.data
        np.testing.assert_allclose(bars.y, z[order])
        if band:  # upper edge, then the lower one filled up to it
            upper, lower = usual
            assert lower.fill == "tonexty" and upper.error_y.array is None
            np.testing.assert_allclose(upper.y - lower.y, 2 * np.abs(std[order]))
        else:
            (markers,) = usual
            np.testing.assert_allclose(markers.error_y.array, np.abs(std[order]))
