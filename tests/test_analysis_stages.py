"""The stage registries and their runner: order, freshness, versions, the format-2 migration."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from tricl.analysis import load_analysis, load_comparison
from tricl.analysis.comparison import COMPARE_STAGES, compare
from tricl.analysis.pipeline import ANALYSIS_STAGES, STAGES
from tricl.analysis.spectral import load_spectral_basis
from tricl.analysis.stages import Output, Stage, Target, register_stage, resolve, run_stages
from tricl.runs import Run

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
TRICL_SEEDS = [f"tricl_mnist5k_small_cnn_k64_seed{s}" for s in range(3)]


@pytest.fixture
def shipped_copy(tmp_path) -> Path:
    """The three shipped triCL runs and their comparison, copied (artifacts as shipped)."""
    for name in TRICL_SEEDS:
        shutil.copytree(SHIPPED / name, tmp_path / name)
    shutil.copytree(SHIPPED / "_compare", tmp_path / "_compare")
    return tmp_path


def _toy_registry(calls: list[str]) -> dict[str, Stage]:
    """a -> b -> c, and d on its own; each stage stores the sum of its inputs plus one."""

    def make(name: str, needs: tuple[str, ...]) -> Stage:
        def compute(ctx, inputs):
            calls.append(name)
            return Output({"v": np.array(1 + sum(inputs.values()))})

        return Stage(
            name, f"{name}.npz", compute, lambda arrays, meta, ctx: int(arrays["v"]), needs
        )

    reg: dict[str, Stage] = {}
    for name, needs in (("a", ()), ("b", ("a",)), ("c", ("b",)), ("d", ()), ("e", ("c", "d"))):
        register_stage(reg, make(name, needs))
    return reg


def test_runner_orders_stages_and_bumping_one_recomputes_it_and_its_dependants(tmp_path):
    calls: list[str] = []
    reg = _toy_registry(calls)
    target = Target(tmp_path, {"weights_hash": "x"}, None)
    assert resolve(reg, ["c"]) == ["a", "b", "c"]
    first = run_stages(reg, ["e"], target)
    assert first.recomputed == ("a", "b", "c", "d", "e") and first.values["e"] == 5
    assert run_stages(reg, ["e"], target).recomputed == ()
    reg["b"] = dataclasses.replace(reg["b"], version=2)
    assert run_stages(reg, ["e"], target).recomputed == ("b", "c", "e")
    assert run_stages(reg, ["d"], target).recomputed == ()
    with pytest.raises(ValueError, match="register those first"):
        register_stage({}, reg["b"])


def test_shipped_run_loads_without_computing(shipped_copy):
    before = {p: p.stat().st_mtime_ns for p in shipped_copy.rglob("*") if p.is_file()}
    run = Run.load(shipped_copy / TRICL_SEEDS[0])
    analysis = load_analysis(run)
    assert analysis is not None and analysis.recomputed == ()
    assert tuple(analysis.params) == STAGES
    assert load_spectral_basis(run) is not None
    comp = load_comparison([shipped_copy / n for n in TRICL_SEEDS])
    assert comp is not None and comp.recomputed == ()
    after = {p: p.stat().st_mtime_ns for p in shipped_copy.rglob("*") if p.is_file()}
    assert after == before  # nothing written


def test_bumping_an_analysis_stage_recomputes_only_it(shipped_copy, monkeypatch):
    from tricl.analysis import analyze

    run = shipped_copy / TRICL_SEEDS[0]
    stats = ANALYSIS_STAGES["stats"]
    monkeypatch.setitem(ANALYSIS_STAGES, "stats", dataclasses.replace(stats, version=2))
    assert load_analysis(run) is None  # stale: the dashboard would ask for a job
    assert analyze(run, progress=False).recomputed == ("stats",)
    assert load_analysis(run).recomputed == ()


def test_bumping_a_comparison_stage_recomputes_it_and_its_dependants(shipped_copy, monkeypatch):
    runs = [shipped_copy / n for n in TRICL_SEEDS]
    monkeypatch.setitem(
        COMPARE_STAGES, "corr", dataclasses.replace(COMPARE_STAGES["corr"], version=2)
    )
    comp = compare(runs, progress=False)
    assert comp.recomputed == ("corr", "matches")  # pairs do not need corr: kept
    assert load_comparison(runs).recomputed == ()


def test_compare_json_prints_every_metric_of_every_pair(shipped_copy, capsys):
    import json

    from tricl.analysis.comparison import pair_columns
    from tricl.cli import main

    runs = [str(shipped_copy / n) for n in TRICL_SEEDS]
    capsys.readouterr()
    assert main(["compare", *runs, "--json", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(list(r) == pair_columns(spectral=True) for r in rows)
    assert (rows[0]["run_a"], rows[0]["run_b"]) == tuple(TRICL_SEEDS[:2])
    assert all(0 <= r["procrustes_corr"] <= 1 for r in rows)
    # the table: the same columns, derived from the registry
    assert main(["compare", *runs, "--no-progress", "--no-spectral"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == pair_columns(spectral=False)


def test_registering_a_metric_recomputes_the_pairs_only(shipped_copy, monkeypatch):
    from tricl.analysis.metrics import METRICS, Metric

    runs = [shipped_copy / n for n in TRICL_SEEDS]
    toy = Metric("top1_corr", "top-1 corr", "|corr| of feature #1 with feature #1", True,
                 lambda a, b, corr: float(abs(corr[0, 0])))  # fmt: skip
    monkeypatch.setitem(METRICS, toy.name, toy)
    assert load_comparison(runs) is None  # the cached pairs lack the new column
    comp = compare(runs, progress=False)
    assert comp.recomputed == ("pairs",)
    np.testing.assert_allclose(
        comp.pairs["top1_corr"], [abs(c[0, 0]) for c in comp.corr.values()], rtol=1e-5
    )


def test_a_registered_comparison_stage_is_computed_and_stored_comparisons_stay_readable(
    shipped_copy,
):
    """A new comparison stage is its registration: ``compare`` computes only it, its value is in
    ``Comparison.values``, and a comparison stored before it existed still reads."""
    from tricl.analysis.compare_stages import register_compare_stage

    def compute(job, inputs):  # |corr| of feature #1 with feature #1, per pair
        corr, _ = inputs["corr"]
        return Output({"v": np.array([abs(float(c[0, 0])) for c in corr.values()])})

    stage = Stage("first_match", "first_match.npz", compute, lambda a, meta, job: a["v"], ("corr",))
    runs = [shipped_copy / n for n in TRICL_SEEDS]
    register_compare_stage(stage)
    try:
        stored = load_comparison(runs)
        assert stored is not None and "first_match" not in stored.values  # readable without it
        assert {"corr", "matches", "pairs"} <= set(stored.values)
        comp = compare(runs, progress=False)
        assert comp.recomputed == ("first_match",)  # the others are fresh
        want = [abs(c[0, 0]) for c in comp.corr.values()]
        np.testing.assert_allclose(comp.values["first_match"], want, rtol=1e-6)
        again = load_comparison(runs)
        np.testing.assert_allclose(again.values["first_match"], want, rtol=1e-6)
        assert len(list((shipped_copy / "_compare").rglob("first_match.npz"))) == 1
    finally:
        del COMPARE_STAGES["first_match"]
