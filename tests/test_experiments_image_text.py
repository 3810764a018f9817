"""The image-text section of the study, on the shipped clip and triclip runs (never retrained)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tricl.analysis.image_text import load_text_analysis
from tricl.experiments.image_text import (
    ACCURACY_KEYS,
    image_text_markdown,
    main,
    replace_section,
    run_image_text_study,
)
from tricl.runs import SHIPPED_RUNS_ROOT, Run, list_runs

SHIPPED = [r for r in list_runs(SHIPPED_RUNS_ROOT) if isinstance(r, Run) and r.image_text]


@pytest.mark.skipif(len(SHIPPED) < 6, reason="the shipped clip / triclip runs are not here")
def test_the_section_reuses_the_shipped_runs_and_reports_their_numbers(tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in SHIPPED_RUNS_ROOT.rglob("*") if p.is_file()}
    study = run_image_text_study([0, 1, 2], tmp_path / "runs", reuse=SHIPPED_RUNS_ROOT)
    assert not (tmp_path / "runs").exists()  # nothing trained
    after = {p: p.stat().st_mtime_ns for p in SHIPPED_RUNS_ROOT.rglob("*") if p.is_file()}
    assert after == before  # nothing recomputed into checkpoints/

    # every accuracy is the stored one of its run
    by_name = {r.name: r for r in SHIPPED}
    for row in study.accuracy.itertuples():
        name = f"{row.method}_mnist5k-captions_small_cnn_k64_seed{row.seed}"
        stored = load_text_analysis(by_name[name]).zero_shot
        for key in ACCURACY_KEYS:
            assert getattr(row, key) == pytest.approx(stored[key])

    # the factor table is the mean over seeds of the runs' own tables
    triclip = [load_text_analysis(r) for r in SHIPPED if r.config.method == "triclip"]
    want = np.mean([t.factors["text_slant"].to_numpy()[:8] for t in triclip], axis=0)
    row = study.factors.query("method == 'triclip' and side == 'text' and factor == 'slant'")
    np.testing.assert_allclose(row[[str(r) for r in range(1, 9)]].to_numpy()[0], want)

    # both sides and both bases, 3 seed pairs each
    ident = study.identifiability
    assert len(ident) == 8 and set(ident["n_pairs"]) == {3}
    assert set(zip(ident["side"], ident["basis"])) == {
        (s, b) for s in ("image", "text") for b in ("trained", "spectral")
    }

    lines = image_text_markdown(study, tmp_path / "figures")
    text = "\n".join(lines)
    assert "## Image-text" in text and "| triclip  | text   | spectral |" in text
    assert (tmp_path / "figures" / "image_text_factors.png").stat().st_size > 10_000


def test_replace_section_swaps_only_the_image_text_section() -> None:
    doc = "# R\n\n## mnist5k\nA\n\n## Image-text: old\nold line\n\n## Known-answer\nB\n"
    out = replace_section(doc, ["## Image-text: new", "new line", ""])
    assert out == "# R\n\n## mnist5k\nA\n\n## Image-text: new\nnew line\n\n## Known-answer\nB\n"
    assert replace_section("# R\n", ["## Image-text", "x"]) == "# R\n\n## Image-text\nx"


@pytest.mark.skipif(len(SHIPPED) < 6, reason="the shipped clip / triclip runs are not here")
def test_main_writes_the_section_into_results_in_place(tmp_path: Path, capsys) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## mnist5k\nkept\n")
    main(["--runs-root", str(tmp_path / "runs"), "--results", str(results), "--no-progress"])
    text = results.read_text()
    assert text.startswith("# Results\n\n## mnist5k\nkept\n\n## Image-text")
    assert (tmp_path / "figures" / "image_text_factors.png").exists()
    assert "wrote the image-text section" in capsys.readouterr().out
