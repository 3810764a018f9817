"""The extension points a kind of run plugs into: page sections (app/sections.py) in Streamlit's
AppTest, and the extra stage families of ``tricl analyze`` / ``tricl compare``, on one tiny real
run each (no analysis: the pages reach their extension points before they need one)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import pytest
import streamlit as st
from test_app_pages import app_at, app_module, open_page, texts

from tricl.analysis import extra_families
from tricl.analysis.extra_families import ExtraFamily
from tricl.cli import _analyze_extras
from tricl.cli.compare import _compare_extras
from tricl.config import RunConfig
from tricl.runs import Run
from tricl.train import train

TINY = {"dataset": "digits", "proj_dim": 8, "proj_hidden_dim": 16, "epochs": 1, "batch_size": 128}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> tuple[Path, list[Run]]:
    root = tmp_path_factory.mktemp("sections_runs")
    runs = [
        train(RunConfig(method=m, seed=s, **TINY), runs_root=root, progress=False)
        for m, s in (("simclr", 0), ("tricl", 0), ("tricl", 1))
    ]
    return root, runs


@contextlib.contextmanager
def registered(point: str, name: str, applies, draw, **kw):
    sections = app_module("sections")
    sections.register_section(point, name, applies, draw, **kw)
    try:
        yield
    finally:
        sections.SECTIONS[point].pop(name)


def _is(method: str):
    return lambda ctx: ctx.run is not None and ctx.run.config.method == method


def _probe_dummy(ctx) -> None:
    st.markdown(f"dummy probe of {ctx.run.name}")


@pytest.mark.parametrize("method", ["simclr", "tricl"])
def test_a_probe_section_is_offered_only_where_it_applies(method, tiny_runs, monkeypatch):
    root, runs = tiny_runs
    run = next(r for r in runs if r.config.method == method)  # the first of its method
    with registered("probe.kinds", "dummy", _is("tricl"), _probe_dummy, label="a dummy", doc="D."):
        at = open_page(app_at(root, monkeypatch, run=run.name), "probe.py")
    shown = texts(at)
    if method == "tricl":
        assert at.title[0].value == "Probe a dummy or an image"
        assert at.radio(key="_w_probe_kind").value == "A dummy"
        assert f"dummy probe of {run.name}" in shown
    else:
        assert at.title[0].value == "Probe an image"
        assert "dummy probe" not in shown
        assert not [r for r in at.radio if r.key == "_w_probe_kind"]


def _runs_column(ctx):
    sections = app_module("sections")
    return sections.Columns(values=lambda rows: {"dummy": [r.name.upper() for r in rows]})


@pytest.mark.parametrize("present", [True, False])
def test_a_runs_table_column_is_added_only_where_it_applies(present, tiny_runs, monkeypatch):
    root, runs = tiny_runs
    wanted = "tricl" if present else "vicreg"  # no vicreg run here: the section does not apply
    applies = lambda ctx: any(r.config.method == wanted for r in ctx.runs)  # noqa: E731
    with registered("runs.table", "dummy", applies, _runs_column):
        at = open_page(app_at(root, monkeypatch), "runs.py")
    table = at.dataframe[0].value
    assert ("dummy" in table) == present
    if present:
        assert sorted(table["dummy"]) == sorted(r.name.upper() for r in runs)


class _Done:
    def __init__(self, what: str) -> None:
        self.what = what

    def summary(self) -> str:
        return f"dummy {self.what}"


@pytest.fixture()
def dummy_family():
    calls: list[tuple[str, list[str]]] = []
    extra = ExtraFamily(
        name="dummy",
        families=(),
        applies=lambda runs: all(r.config.method == "tricl" for r in runs),
        analyze=lambda run, split, **kw: calls.append(("analyze", [Path(run).name])) or _Done("a"),
        words=lambda got, basis: None,
        compare=lambda runs, split, **kw: calls.append(("compare", [r.name for r in runs])),
        load=lambda runs, split, **kw: None,
        rows=lambda got: None,
        report=lambda got: "dummy report",
        not_compared="dummy not compared ({names})",
    )
    extra_families.register_extra_family(extra)
    try:
        yield calls
    finally:
        extra_families.EXTRA_FAMILIES.pop("dummy")


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(split="test", force=False, no_progress=True, device="cpu", **kw)


def test_an_extra_family_runs_only_where_it_applies(dummy_family, tiny_runs, capsys):
    _, runs = tiny_runs
    simclr, tricl0, tricl1 = runs
    assert [e.name for e, _ in _analyze_extras(tricl0.path, _args(dataset=None))] == ["dummy"]
    assert _analyze_extras(simclr.path, _args(dataset=None)) == []
    assert _analyze_extras(tricl0.path, _args(dataset="digits")) == []  # the run's own data only
    assert dummy_family == [("analyze", [tricl0.name])]
    assert f"{tricl0.path}: dummy a" in capsys.readouterr().out
    mixed = _args(runs=[simclr.path, tricl0.path], basis="trained")
    assert _compare_extras(mixed, False, None) == []
    assert f"note: dummy not compared ({simclr.name})" in capsys.readouterr().err
    assert dummy_family == [("analyze", [tricl0.name])]
    same = _args(runs=[tricl0.path, tricl1.path], basis="trained")
    assert [e.name for e, _ in _compare_extras(same, False, None)] == ["dummy"]
    assert dummy_family[-1] == ("compare", [tricl0.name, tricl1.name])
    assert "note:" not in capsys.readouterr().err
