"""The dashboard's image-text views (clip, triclip) in Streamlit's AppTest, on tiny real runs.

Two seeds each of clip and triclip trained for one epoch on mnist5k-captions (tiny encoders),
analysed on both sides and compared across seeds in both bases, plus one image-only run: the
Runs page's zero-shot columns, captions, words and the caption factor table on the Features
pages, the caption probe (against the loss's own similarity), the image-text section of Compare
seeds, and bad probe input.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from shared_runs import built_once, session_dir
from test_app_pages import APP, PAGE_FILES, app_at, app_module, open_page, texts

from tricl import serve
from tricl.analysis import analyze
from tricl.analysis.image_text import analyze_text, load_text_analysis
from tricl.analysis.image_text_compare import compare_image_text, load_image_text_comparison
from tricl.analysis.metrics import METRICS
from tricl.bases import get_basis
from tricl.config import RunConfig
from tricl.jobs import JobStore, analyze_command
from tricl.losses.common import S_PLACEMENT_FNS
from tricl.runs import Run, list_runs
from tricl.train import train

TINY = {
    "dataset": "mnist5k-captions",
    "proj_dim": 8,
    "proj_hidden_dim": 16,
    "epochs": 1,
    "batch_size": 128,
    "text_width": 16,
    "text_heads": 2,
    "text_layers": 1,
    "device": "cpu",
}
TRICLIP = "triclip_mnist5k-captions_small_cnn_k8_seed0"
CLIP = "clip_mnist5k-captions_small_cnn_k8_seed0"
IMAGE_ONLY = "simclr_digits_small_cnn_k8_seed0"
ZERO_SHOT = [
    "zero-shot acc",
    "image→text R@1",
    "image→text R@5",
    "text→image R@1",
    "text→image R@5",
]


def make_image_text_runs(root: Path) -> Path:
    """The fixture runs in ``root``, built by the first caller of the session (any xdist worker;
    see :mod:`shared_runs`) and reused by the rest."""
    with built_once(root) as todo:
        if todo:
            _build_image_text_runs(root)
    return root


def _build_image_text_runs(root: Path) -> Path:
    """Seeds 0 and 1 of clip and triclip (analysed, text side too, compared in both bases) and
    one analysed image-only run. ``root/.done`` is written last, so a second caller reuses them.
    """
    if (root / ".done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    runs = [
        train(RunConfig(method=m, seed=s, **TINY), runs_root=root, progress=False)
        for m in ("clip", "triclip")
        for s in (0, 1)
    ]
    for r in runs:
        analyze_text(r, progress=False)  # the trained image analysis first, then the text side
    ordered = sorted(runs, key=lambda r: (r.config.method, r.config.seed, r.name))
    for basis in ("trained", "spectral"):
        compare_image_text(ordered, basis=basis, progress=False)
    image_only = RunConfig(
        method="simclr", dataset="digits", proj_dim=8, proj_hidden_dim=16, epochs=1
    )
    analyze(train(image_only, runs_root=root, progress=False), progress=False)
    (root / ".done").write_text("ok")
    return root


@pytest.fixture(scope="session")
def it_root(tmp_path_factory) -> Path:
    return make_image_text_runs(session_dir(tmp_path_factory, "app_image_text_runs"))


@pytest.fixture(scope="session")
def it_runs(it_root) -> dict[str, Run]:
    return {r.name: r for r in list_runs(it_root) if isinstance(r, Run)}


def text_ui():
    """app/text_ui.py as a module, after the app modules it imports by their plain names."""
    for name in ("draw", "state", "readers", "models", "jobs_ui", "labels"):
        app_module(name)
    return app_module("text_ui")


def plotly_array(value) -> np.ndarray:
    """An array of a chart's JSON spec: a list, or plotly's ``{"dtype", "bdata", "shape"}``."""
    if not isinstance(value, dict):
        return np.asarray(value, dtype=float)
    flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
    return flat.reshape(shape)


def caption_box(at):
    return at.text_input(key=f"_w_caption_{TRICLIP}")


# --------------------------------------------------------------------------- every page


@pytest.mark.parametrize("basis", ["trained", "spectral"])
@pytest.mark.parametrize("page", PAGE_FILES)
def test_every_page_renders_for_an_image_text_run(page, basis, it_root, monkeypatch):
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP, basis=basis), page)
    assert len(at.title) == 1
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("download_button")) >= len(at.dataframe)


def test_runs_page_shows_zero_shot_and_recall_blank_for_image_only_runs(
    it_root, it_runs, monkeypatch
):
    at = open_page(app_at(it_root, monkeypatch), "runs.py")
    table = at.dataframe[0].value.set_index("run")
    assert set(ZERO_SHOT) <= set(table)
    for name, run in it_runs.items():
        if not run.image_text:
            assert table.loc[name, ZERO_SHOT].isna().all()
            continue
        got = load_text_analysis(run).zero_shot
        for column, key in zip(
            ZERO_SHOT, ("zero_shot_acc", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")
        ):
            assert table.loc[name, column] == pytest.approx(got[key])
            assert 0 <= table.loc[name, column] <= 1


def test_image_only_runs_folder_keeps_its_runs_table(it_runs, tmp_path, monkeypatch):
    src = it_runs[IMAGE_ONLY].path
    shutil.copytree(src, tmp_path / src.name)
    at = open_page(app_at(tmp_path, monkeypatch), "runs.py")
    assert not set(ZERO_SHOT) & set(at.dataframe[0].value)
    at.switch_page("views/probe.py").run()
    assert at.title[0].value == "Probe an image"
    assert "Its strongest features" in texts(at)


def test_missing_text_analysis_runs_as_a_job_and_the_page_reads_it(it_runs, tmp_path, monkeypatch):
    src = it_runs[TRICLIP].path
    shutil.copytree(src, tmp_path / src.name, ignore=shutil.ignore_patterns("text"))
    monkeypatch.setenv("PYTHONPATH", str(APP.parent))  # the job imports this checkout's tricl
    at = open_page(app_at(tmp_path, monkeypatch), "runs.py")
    assert "have no stored caption analysis yet" in texts(at)
    assert at.button(key="start_text_runs_page").label == "Analyse now"
    assert at.dataframe[0].value["zero-shot acc"].isna().all()
    assert at.dataframe[0].value["linear probe acc"].notna().all()  # the image side is there
    at.button(key="start_text_runs_page").click().run()
    store = JobStore(tmp_path / "_jobs")
    job = store.find(analyze_command([tmp_path / src.name]))
    assert job is not None, "the button starts `tricl analyze`, which computes the text side"
    deadline = time.monotonic() + 240
    while store.status(job.id).running and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.status(job.id).state == "done", store.folder(job.id)
    at.run()
    assert "no stored caption analysis" not in texts(at)
    got = at.dataframe[0].value["zero-shot acc"].iloc[0]
    assert got == pytest.approx(load_text_analysis(tmp_path / src.name).zero_shot["zero_shot_acc"])


# --------------------------------------------------------------------------- features


def test_features_page_shows_captions_words_and_the_factor_table(it_root, it_runs, monkeypatch):
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP), "features.py")
    text = load_text_analysis(it_runs[TRICLIP])
    table = at.dataframe[0].value
    tc = text.top_captions
    assert list(table["feature"]) == list(tc.feature)  # S order: the text analysis's order too
    for row, f in enumerate(tc.feature):
        first = text.features.captions[int(tc.indices[row, 0])]
        assert table["top captions"].iloc[row].startswith(first)
        words = text.tokens[text.tokens["feature"] == f]["token"]
        assert table["raised by"].iloc[row].split(" ")[0] == words.iloc[0]
    # the captions come from the text encoder, and the page says so (issue 22)
    assert "ranked by the **text encoder's** feature #i" in texts(at)
    factors = next(d.value for d in at.dataframe if "image_class" in d.value)
    assert list(factors["rank"]) == list(range(1, len(tc.feature) + 1))
    for col in ("image_thickness", "text_slant", "text_size"):
        np.testing.assert_allclose(factors[col], text.factors[col])
    assert "Caption factors by feature rank" in texts(at)
    heat = [c for c in at.get("plotly_chart") if "heatmap" in c.proto.spec]
    assert len(heat) == 1


def test_feature_detail_shows_the_features_captions_and_words(it_root, it_runs, monkeypatch):
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP, feature="2"), "feature_detail.py")
    text = load_text_analysis(it_runs[TRICLIP])
    tc = text.top_captions
    shown = next(d.value for d in at.dataframe if "caption" in d.value)
    expected = [text.features.captions[int(i)] for i in tc.indices[1]]
    assert list(shown["caption"]) == expected
    np.testing.assert_allclose(shown["value"], tc.values[1], rtol=1e-6)
    words = next(d.value for d in at.dataframe if "lift" in d.value)
    mine = text.tokens[text.tokens["rank"] == 2]
    assert list(words["token"]) == list(mine["token"])


def test_spectral_basis_points_captions_to_the_trained_axes(it_root, monkeypatch):
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP, basis="spectral"), "features.py")
    assert "switch the sidebar's basis to trained" in texts(at)


# --------------------------------------------------------------------------- the caption probe


def loss_text_to_image(image_z: np.ndarray, z: np.ndarray, s, placement: str) -> np.ndarray:
    """The loss's own text->image logits of one caption (``_clip_contrastive``'s second matrix,
    scale 1), from a batch of N images and the caption repeated N times."""
    img_n = torch.nn.functional.normalize(torch.tensor(image_z, dtype=torch.float64), dim=1)
    txt = torch.tensor(np.repeat(z[None], len(image_z), axis=0), dtype=torch.float64)
    zn = torch.cat([img_n, torch.nn.functional.normalize(txt, dim=1)])  # (2N, k)
    rows = zn if s is None else S_PLACEMENT_FNS[placement](zn, torch.tensor(s).double())
    return (rows[len(image_z) :] @ img_n.T)[0].numpy()  # (N,)


@pytest.mark.parametrize("placement", ["both", "first_view"])
@pytest.mark.parametrize("with_s", [True, False])
def test_the_probes_similarity_is_the_losses(placement, with_s):
    rng = np.random.default_rng(0)
    image_z, z = rng.normal(size=(50, 6)), rng.normal(size=6)
    s = rng.uniform(0.1, 3.0, size=6) if with_s else None
    got = text_ui().caption_scores(image_z, z, s, placement)
    np.testing.assert_allclose(got, loss_text_to_image(image_z, z, s, placement), atol=1e-12)


def test_encode_text_gives_the_stored_caption_features(it_runs):
    run = it_runs[TRICLIP]
    text = load_text_analysis(run)
    for i in (0, 7):
        got = serve.encode_text(str(run.path), run.weights_hash, text.features.captions[i])
        stored = text.features.text_z[i].astype(np.float32)  # half precision on disk
        np.testing.assert_allclose(got["z"], stored, rtol=1e-2, atol=1e-2)
        assert not got["truncated"] and "[UNK]" not in got["tokens"]
    odd = serve.encode_text(str(run.path), run.weights_hash, "a Ω handwritten 3")
    assert "[UNK]" in odd["tokens"] and "handwritten" in odd["tokens"]
    with pytest.raises(ValueError, match="empty"):
        serve.encode_text(str(run.path), run.weights_hash, "  ")


@pytest.mark.parametrize("name", [TRICLIP, CLIP])
def test_probe_retrieves_the_images_the_methods_similarity_ranks_first(
    name, it_root, it_runs, monkeypatch
):
    run = it_runs[name]
    at = open_page(app_at(it_root, monkeypatch, run=name), "probe.py")
    assert at.radio(key="_w_probe_kind").value == "A caption"
    caption = "a thick, right-slanted handwritten 7"
    at.text_input(key=f"_w_caption_{name}").set_value(caption).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Tokens read: `a` · `thick`" in texts(at)
    assert "The features it raises most" in texts(at)
    assert len(at.get("plotly_chart")) == 1  # the caption's features in importance order
    shown = at.dataframe[-1].value
    assert len(shown) == 16
    from tricl.analysis import load_analysis

    a = load_analysis(run)
    z = serve.encode_text(str(run.path), run.weights_hash, caption)["z"]
    ref = loss_text_to_image(
        a.features.z.astype(np.float64), z, a.features.s, run.config.s_placement
    )
    np.testing.assert_allclose(shown["similarity"], np.sort(ref)[::-1][:16], atol=1e-6)
    assert set(shown["image"]) == set(np.argsort(-ref, kind="stable")[:16])
    # the first card: the feature this caption raises most above the captions' usual range
    tz = load_text_analysis(run).features.text_z.astype(np.float64)  # (N, k)
    top = int(np.argmax((z - tz.mean(axis=0)) / tz.std(axis=0)))
    rank = list(a.importance.order(a.importance.default)).index(top) + 1
    cards = [m.value for m in at.markdown if "· raised by" in m.value]
    assert cards[-4].startswith(f"**Feature #{rank}: {z[top]:.2f}")


@pytest.mark.parametrize(
    ("typed", "message"),
    [("", "Type a caption"), ("   ", "Type a caption"), ("x" * 10_000, "type at most 1,000")],
)
def test_bad_caption_gives_a_message_not_an_exception(typed, message, it_root, monkeypatch):
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP), "probe.py")
    caption_box(at).set_value(typed).run()
    assert not at.exception
    assert message in texts(at)
    assert not at.get("plotly_chart")


def test_a_caption_beyond_the_context_is_cut_and_says_so(it_root, monkeypatch):
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP), "probe.py")
    caption_box(at).set_value("a thick handwritten seven " * 20).run()
    assert not at.exception and not at.error
    assert any("longer than the model's context of" in w.value for w in at.warning)
    assert len(at.dataframe[-1].value) == 16


def test_probe_can_still_probe_an_image(it_root, monkeypatch):
    at = open_page(app_at(it_root, monkeypatch, run=TRICLIP), "probe.py")
    at.radio(key="_w_probe_kind").set_value("An image").run()
    assert not at.exception and not at.error
    assert "Its strongest features" in texts(at)


# --------------------------------------------------------------------------- compare seeds


def test_compare_seeds_shows_both_sides_in_both_bases(it_root, it_runs, monkeypatch):
    at = open_page(app_at(it_root, monkeypatch), "compare_seeds.py")
    assert "Image-text runs: image and text features across seeds" in texts(at)
    table = next(d.value for d in at.dataframe if "side" in d.value)
    assert len(table) == 8  # clip and triclip x image and text x trained and pair basis
    assert set(table["method"]) == {"CLIP", "triCLIP"}
    assert set(zip(table["side"], table["basis"])) == {
        (s, get_basis(b).pair_label) for s in ("image", "text") for b in ("trained", "spectral")
    }
    runs = sorted(
        (r for r in it_runs.values() if r.image_text),
        key=lambda r: (r.config.method, r.config.seed, r.name),
    )
    comp = load_image_text_comparison(runs, basis="trained")
    pairs = comp.pairs
    clip = pairs[(pairs["run_a"].str.startswith("clip")) & pairs["run_b"].str.startswith("clip")]
    row = table[(table["method"] == "CLIP") & (table["side"] == "text")]
    row = row[row["basis"] == get_basis("trained").pair_label].iloc[0]
    label = METRICS["ordered_corr_top8"].label
    assert row[label] == pytest.approx(clip[clip["side"] == "text"]["ordered_corr_top8"].mean())
    assert any('"type":"bar"' in c.proto.spec.replace(" ", "") for c in at.get("plotly_chart"))
    # two triCLIP seeds against each other, text side, pair basis
    at.radio(key="_w_image_text_side").set_value("text").run()
    at.radio(key="_w_image_text_basis").set_value("spectral").run()
    assert not at.exception
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (heat,) = [f for f in figures if "text feature #" in str(f["layout"].get("yaxis"))]
    spectral = load_image_text_comparison(runs, basis="spectral")
    got = plotly_array(heat["data"][0]["z"])
    np.testing.assert_allclose(got, spectral.abs_corr("text", 2, 3), atol=1e-9)
    assert "Unresolved pair-basis ranks" in texts(at)


def test_missing_image_text_comparison_offers_compare_now(it_runs, tmp_path, monkeypatch):
    for r in it_runs.values():
        if r.image_text:
            shutil.copytree(r.path, tmp_path / r.name)
    at = open_page(app_at(tmp_path, monkeypatch), "compare_seeds.py")
    assert "no stored comparison of these 4 runs' image and text features" in texts(at).lower()
    key = "start_image_text_mnist5k-captions_trained"
    assert at.button(key=key).label == "Compare now"


def test_factor_summaries_name_the_strongest_rank_and_the_head_against_the_rest():
    ui = text_ui()
    factors = pd.DataFrame(
        {
            "rank": np.arange(1, 11),
            "feature": np.arange(10)[::-1],
            "image_class": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
            "text_class": [0.0] * 9 + [1.0],
            "image_size": [np.nan] * 10,
            "text_size": [0.5] * 10,
        }
    )
    assert ui.factor_names(factors) == ["class", "size"]
    verdict = ui.factor_verdict(factors)
    assert "- **class**: image #1 (0.90), text #10 (1.00)" in verdict
    assert "- **size**: text #1 (0.50)" in verdict
    head = ui.head_against_rest(factors, head=8)
    assert "- **class**: image 0.55 vs 0.05 · text 0.00 vs 0.50" in head
    assert "- **size**: text 0.50 vs 0.50" in head
    assert ui.head_against_rest(factors.head(8), head=8) == ""


def test_an_aligned_copy_of_a_triclip_run_is_shown_as_an_image_run(it_runs, tmp_path, monkeypatch):
    # `tricl align` refuses image-text runs now; copies it wrote before still load and show
    from tricl.align import _write_aligned
    from tricl.analysis.spectral import spectral_basis

    src = it_runs[TRICLIP].path
    shutil.copytree(src, tmp_path / src.name)
    parent = Run.load(tmp_path / src.name)
    child = _write_aligned(parent, spectral_basis(parent), tmp_path)
    analyze(child, progress=False)
    at = open_page(app_at(tmp_path, monkeypatch, run=child.name), "probe.py")
    assert at.title[0].value == "Probe an image" and not at.error
    at.switch_page("views/features.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "top captions" not in at.dataframe[0].value
    at.switch_page("views/runs.py").run()
    table = at.dataframe[0].value.set_index("run")
    assert np.isnan(table.loc[child.name, "zero-shot acc"])
    assert table.loc[src.name, "zero-shot acc"] >= 0
