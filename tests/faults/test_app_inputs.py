"""Bad input to the dashboard, through Streamlit's AppTest on tiny real runs.

The URL matrix (run, runs, feature, order: traversal, absolute paths, unknown names, huge and
negative numbers, junk), bad uploads on "Probe an image", the runs folder box outside a confined
root, and one run with corrupt analysis files: every page renders without an exception and says
what was wrong.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_runs import session_dir
from test_app_pages import PAGE_FILES, app_at, make_fixture_runs, texts

GOOD = "tricl_digits_small_cnn_k16_seed0"

# (query parameters, a phrase the page must show); None: accepted quietly (e.g. clamped).
URL_CASES = {
    "run_traversal": ({"run": "../../etc"}, "outside the runs root"),
    "run_absolute": ({"run": "/etc/passwd"}, "outside the runs root"),
    "run_backslash": ({"run": "..\\..\\x"}, "outside the runs root"),
    "run_nul": ({"run": "a\x00b"}, "outside the runs root"),
    "run_unknown": ({"run": "no_such_run"}, "no run 'no_such_run'"),
    "run_huge_name": ({"run": "x" * 5000}, "no run"),
    "runs_mixed": ({"runs": f"{GOOD},../up,/abs,nope"}, "outside the runs root"),
    "runs_only_commas": ({"runs": ",,,"}, None),
    "feature_negative": ({"feature": "-5"}, "below 1"),
    "feature_zero": ({"feature": "0"}, "below 1"),
    "feature_huge": ({"run": GOOD, "feature": "99999999999999999999999"}, "features; showing"),
    "feature_float": ({"feature": "1e309"}, "not a number"),
    "feature_junk": ({"feature": "<script>alert(1)</script>"}, "not a number"),
    "order_unknown": ({"run": GOOD, "order": "../../etc"}, "no importance order"),
    "order_junk": ({"run": GOOD, "order": "S' OR 1=1 --"}, "no importance order"),
    "basis_junk": ({"basis": "junk"}, "is not one of trained, spectral"),
    "basis_traversal": ({"basis": "../../etc"}, "is not one of trained, spectral"),
    "basis_spectral_with_order": ({"run": GOOD, "basis": "spectral", "order": "S"}, None),
}


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return make_fixture_runs(session_dir(tmp_path_factory, "app_runs"))


def _every_page(at) -> dict[str, str]:
    """Runs the app, then every page; the text each page shows. Fails on any exception."""
    shown = {}
    at.run()
    for page in PAGE_FILES:
        at.switch_page(f"views/{page}").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.title, f"{page} drew nothing"
        shown[page] = texts(at) + "\n".join(str(w.value) for w in at.warning)
    return shown


@pytest.mark.parametrize("case", list(URL_CASES))
def test_bad_url_parameters_leave_every_page_working(case, runs_root, monkeypatch):
    query, phrase = URL_CASES[case]
    at = app_at(runs_root, monkeypatch, **query)
    shown = _every_page(at)
    if phrase is not None:
        assert any(phrase in text for text in shown.values()), (case, shown)
    assert at.selectbox(key="_w_run").value in {p.name for p in runs_root.iterdir()}


# --------------------------------------------------------------------------- uploads


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1×1 grey PNG whose header claims ``width`` × ``height`` pixels."""
    data = bytearray(_png(Image.new("L", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _noise_png(side: int = 64) -> bytes:
    """An RGB PNG of noise (it does not compress, so a cut lands inside the pixel data)."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return _png(Image.fromarray(pixels))


def _encoded(mode: str, fmt: str, size: tuple[int, int] = (24, 20)) -> bytes:
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I"):
        image = Image.fromarray(rng.integers(0, 60000, size[::-1]).astype(np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random(size[::-1]).astype(np.float32) * 1e6)
    else:
        image = Image.new(mode, size, 128 if mode in ("L", "P", "1") else None)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


# name -> (file name, bytes, phrase of the error, or None if the image must be probed)
UPLOADS = {
    "text": ("notes.txt", b"these are not pixels", "is not an image"),
    "empty": ("empty.png", b"", "is not an image"),
    "truncated_png": ("cut.png", _noise_png()[:400], "is not an image"),
    "huge_header": ("bomb.png", _png_claiming(100_000, 100_000), "at most 8192 pixels"),
    "wide": ("wide.png", _png_claiming(9000, 2), "at most 8192 pixels"),
    "at_the_side_limit": ("line.png", _png(Image.new("L", (8192, 1), 90)), None),
    "one_pixel_over": ("longer.png", _png(Image.new("L", (1, 8193), 90)), "at most 8192 pixels"),
    "rgba": ("rgba.png", _encoded("RGBA", "PNG"), None),
    "palette": ("pal.gif", _encoded("P", "GIF"), None),
    "bilevel": ("one.bmp", _encoded("1", "BMP"), None),
    "grey16": ("deep.png", _encoded("I;16", "PNG"), None),
    "float_tiff": ("float.tif", _encoded("F", "TIFF"), None),
    "cmyk": ("cmyk.jpg", _encoded("CMYK", "JPEG"), None),
    "tiny": ("dot.png", _png(Image.new("RGB", (1, 1), (255, 255, 255))), None),
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_bad_uploads_on_probe_get_a_clear_message(case, runs_root, monkeypatch):
    name, data, phrase = UPLOADS[case]
    at = app_at(runs_root, monkeypatch)
    at.run()
    at.switch_page("views/probe.py").run()
    at.radio[0].set_value("Upload").run()
    at.file_uploader[0].set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    if phrase is None:
        assert not errors, errors
        assert at.get("plotly_chart"), "the image was probed"
    else:
        assert any(name in e and phrase in e for e in errors), errors
        assert not at.get("plotly_chart")


# --------------------------------------------------------------------------- folders, files


@pytest.mark.parametrize("outside", ["/etc", "..", "/", "~"])
def test_confined_runs_folder_box_refuses_folders_outside_the_root(outside, runs_root, monkeypatch):
    at = app_at(runs_root, monkeypatch, "--confine")
    at.run()
    before = at.selectbox(key="_w_run").options
    at.text_input(key="_w_root").set_value(str(runs_root / outside) if outside == ".." else outside)
    at.run()
    assert not at.exception
    assert any("outside the runs root" in e.value for e in at.error), [e.value for e in at.error]
    assert at.selectbox(key="_w_run").options == before
    at.switch_page("views/features.py").run()
    assert not at.exception and at.dataframe


def test_corrupt_analysis_of_one_run_leaves_the_others_working(runs_root, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(runs_root, root)
    bad = "simclr_digits_small_cnn_k16_seed0"
    (root / bad / "analysis" / "test" / "downstream.csv.json").write_text("[]")
    for other in ("simclr_digits_small_cnn_k16_seed1", GOOD):
        at = app_at(root, monkeypatch, run=other)
        _every_page(at)  # no exception on any page
        at.switch_page("views/features.py").run()
        assert len(at.dataframe[0].value) == 16, "the other run's features are listed"
    at = app_at(root, monkeypatch, run=bad)
    shown = _every_page(at)
    assert any(bad in t for t in shown.values())
    at.switch_page("views/runs.py").run()
    table = at.dataframe[0].value
    assert table.set_index("run")["linear probe acc"].drop(bad).between(0, 1).all()
