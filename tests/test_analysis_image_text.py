"""The text side of the analysis (tricl.analysis.image_text) on real tiny clip / triclip runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_image_text_train import tiny as train_tiny
from test_image_text_train import write_caption_csv

from tricl.analysis import AnalysisError, analyze, load_analysis
from tricl.analysis.image_text import (
    TEXT_FOLDER,
    TEXT_STAGES,
    TextFeatures,
    abs_correlation,
    analyze_text,
    anchor_weights,
    caption_words,
    class_embeddings,
    correlation_ratio,
    factor_table,
    load_text_analysis,
    load_text_features,
    recall_at,
    similarity,
    text_features,
    token_lift,
    top_captions,
    zero_shot_predictions,
)
from tricl.analysis.store import analysis_dir, load_npz, save_npz
from tricl.cli import main
from tricl.config import RunConfig
from tricl.losses import S_PLACEMENTS, build_image_text_loss
from tricl.runs import Run
from tricl.text.prompts import LABEL_TEMPLATES, class_prompts
from tricl.train import train


def write_csv(root: Path, *, labels: bool, n: int = 48, size: int = 16) -> Path:
    """``n`` PNGs of 4 shapes in 2 sizes, a caption each and (if ``labels``) the shape as label."""
    return write_caption_csv(root, n, size, labels=labels)


def tiny(csv: Path, method: str, **kw) -> RunConfig:
    """The training tests' tiny caption run, 2 epochs, named by method and labelling."""
    labelled = "labelled" if "unlabelled" not in str(csv) else "unlabelled"
    return train_tiny(csv, **({"method": method, "epochs": 2, "name": f"{method}-{labelled}"} | kw))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("itx")


@pytest.fixture(scope="module")
def labelled_csv(root) -> Path:
    return write_csv(root / "labelled", labels=True)


@pytest.fixture(scope="module")
def runs(root, labelled_csv) -> dict[str, Run]:
    return {
        m: train(tiny(labelled_csv, m), runs_root=root / "runs", progress=False)
        for m in ("clip", "triclip")
    }


@pytest.fixture(scope="module")
def analyses(runs):
    return {m: analyze_text(r, progress=False) for m, r in runs.items()}


# --------------------------------------------------------------------------- the measures


def test_similarity_is_the_one_the_loss_trains_with():
    """CE over our image->text and text->image similarities is the loss's contrastive term."""
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    s = torch.rand(4, generator=gen) + 0.5
    scale = torch.tensor(2.5).log()
    target = torch.arange(6)
    for placement in S_PLACEMENTS:
        loss = build_image_text_loss("triclip", tau=0.0, s_placement=placement)
        want = loss(img, txt, s, scale).contrastive
        i2t = similarity(img.numpy(), txt.numpy(), anchor_weights(s.numpy(), placement, "image"))
        t2i = similarity(txt.numpy(), img.numpy(), anchor_weights(s.numpy(), placement, "text"))
        ce = torch.nn.functional.cross_entropy
        got = (ce(2.5 * torch.tensor(i2t), target) + ce(2.5 * torch.tensor(t2i), target)) / 2
        assert float(got) == pytest.approx(float(want), rel=1e-5), placement
    want = build_image_text_loss("clip")(img, txt, None, scale).contrastive
    i2t = similarity(img.numpy(), txt.numpy(), anchor_weights(None, "both", "image"))
    got = (ce(2.5 * torch.tensor(i2t), target) + ce(2.5 * torch.tensor(i2t.T), target)) / 2
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_zero_shot_and_recall_on_a_handmade_example():
    # two features; an image leaning to feature 0 but S weights feature 1 four times as much
    images = np.array([[1.0, 0.6], [0.2, 1.0], [1.0, 0.0]])
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert zero_shot_predictions(images, classes, None).tolist() == [0, 1, 0]
    assert zero_shot_predictions(images, classes, np.array([1.0, 4.0])).tolist() == [1, 1, 0]
    # class embeddings: the normalised mean of normalised prompts
    prompts = np.array([[[3.0, 0.0], [0.0, 1.0]]])  # (C=1, T=2, k=2)
    np.testing.assert_allclose(class_embeddings(prompts), [[2**-0.5, 2**-0.5]])
    # captions 0 and 2 have the same text: image 2 retrieving caption 0 is a hit
    texts = np.array([0, 1, 0])
    captions = np.array([[1.0, 0.1], [0.0, 1.0], [0.5, 1.0]])
    r = recall_at(images[[0, 1, 2]], captions, None, texts, texts, ks=(1, 2))
    # image 0 -> caption 0 (hit); image 1 -> caption 1 (hit); image 2 -> caption 0 (same text)
    assert r == {1: 1.0, 2: 1.0}
    r = recall_at(captions, images, None, texts, np.array([0, 1, 2]), ks=(1, 3))
    # caption 0 -> image 2 ([1,0]) whose text id is 2, not 0; caption 2 -> image 1 (text 1)
    assert r == {1: pytest.approx(1 / 3), 3: 1.0}


def test_token_lift_on_a_handmade_case():
    captions = ["red big"] * 5 + ["blue big"] * 5 + ["red"] + ["green"] * 4
    z = np.zeros((15, 2))
    z[:5, 0] = 2.0  # red big
    z[10, 0] = 1.0  # red alone
    z[5:10, 1] = 1.0  # blue big
    table = token_lift(z, captions, np.array([1, 0]), min_count=5, per_rank=5)
    assert list(table.columns) == ["rank", "feature", "token", "lift", "count"]
    # "green" (4 captions) is too rare; every kept word raises its feature
    assert set(table["token"]) <= {"red", "big", "blue"} and (table["lift"] > 0).all()
    for (_rank, feature), rows in table.groupby(["rank", "feature"]):
        for row in rows.itertuples():
            has = np.array([row.token in caption_words(c) for c in captions])
            col = z[:, feature]
            want = (col[has].mean() - col[~has].mean()) / col.std()
            assert row.lift == pytest.approx(want) and row.count == has.sum()
        assert rows["lift"].is_monotonic_decreasing
    assert table[table["rank"] == 1]["token"].tolist()[0] == "blue"  # feature 1 is rank 1
    assert table[table["rank"] == 2]["token"].tolist()[0] == "red"


def test_factor_scores_against_numpy():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 3))
    x[:, 0] += np.array([0.0, 3.0, 0.0])[labels]  # separates class 1 from both others
    y = rng.normal(size=60)
    for j in range(3):
        col = x[:, j]
        between = sum(
            (labels == c).sum() * (col[labels == c].mean() - col.mean()) ** 2 for c in range(3)
        )
        eta = np.sqrt(between / ((col - col.mean()) ** 2).sum())
        assert correlation_ratio(x, labels)[j] == pytest.approx(eta)
        assert abs_correlation(x, y)[j] == pytest.approx(abs(np.corrcoef(col, y)[0, 1]))
    # non-monotonic in the class index: |corr| with it is ~0 but eta is high
    assert abs_correlation(x[:, :1], labels)[0] < 0.1 < 0.6 < correlation_ratio(x, labels)[0]
    assert np.isnan(correlation_ratio(np.ones((4, 1)), np.array([0, 0, 1, 1])))[0]
    f = TextFeatures(
        image_z=x,
        text_z=-x,
        train_image_z=x,
        train_text_z=x,
        labels=labels,
        captions=("c",) * 60,
        class_names=("a", "b", "c"),
        order=np.array([2, 0, 1]),
        importance=None,
        images_hash="h",
        factors={"size": y},
    )
    table = factor_table(f)
    assert list(table.columns) == [
        "rank",
        "feature",
        "image_class",
        "text_class",
        "image_size",
        "text_size",
    ]
    assert table["feature"].tolist() == [2, 0, 1] and table["rank"].tolist() == [1, 2, 3]
    assert table["image_class"][1] == pytest.approx(correlation_ratio(x, labels)[0])
    assert table["text_size"][0] == pytest.approx(abs_correlation(x, y)[2])


def test_top_captions_are_distinct_texts_in_rank_order():
    captions = ["a", "b", "a", "c", "b"]
    z = np.array([[1.0, 0.0], [2.0, 1.0], [1.0, 0.0], [0.0, 5.0], [2.0, 1.0]])
    top = top_captions(z, captions, np.array([1, 0]), n=5)
    assert top.indices.shape == (2, 3)  # 3 distinct texts
    assert top.feature.tolist() == [1, 0]
    assert [captions[i] for i in top.indices[0]] == ["c", "b", "a"]
    assert [captions[i] for i in top.indices[1]] == ["b", "a", "c"]
    assert top.counts[1].tolist() == [2, 2, 1] and top.values[0].tolist() == [5.0, 1.0, 0.0]


# --------------------------------------------------------------------------- on trained runs


def _brute_force(f: TextFeatures, run: Run) -> dict[str, float]:
    """Zero-shot accuracy and recall@1/5 with loops, float64, from the stored features."""
    s = None if f.importance is None else f.importance.astype(np.float64)
    unit = lambda v: np.asarray(v, np.float64) / np.linalg.norm(v)  # noqa: E731
    sim = lambda a, b: float((unit(a) * (1 if s is None else s)) @ unit(b))  # noqa: E731
    prompts = class_prompts("captions", f.class_names)
    encoder, tokenizer = run.text_encoder(), run.tokenizer()
    class_z = []
    for ps in prompts:
        with torch.no_grad():
            zs = [encoder(tokenizer.encode([p]).ids)[0].numpy() for p in ps]
        class_z.append(unit(np.mean([unit(z) for z in zs], axis=0)))
    correct = [
        int(np.argmax([sim(img, c) for c in class_z])) == y
        for img, y in zip(f.image_z, f.labels, strict=True)
    ]
    out = {"zero_shot_acc": float(np.mean(correct))}
    n = len(f.captions)
    for name, queries, keys in (("i2t", f.image_z, f.text_z), ("t2i", f.text_z, f.image_z)):
        for k in (1, 5):
            hits = 0
            for i in range(n):
                ranked = sorted(range(n), key=lambda j: -sim(queries[i], keys[j]))  # stable
                hits += any(f.captions[j] == f.captions[i] for j in ranked[:k])
            out[f"{name}_r{k}"] = hits / n
    return out


@pytest.mark.parametrize("method", ["clip", "triclip"])
def test_trained_run_matches_the_brute_force_reference(runs, analyses, method):
    run, a = runs[method], analyses[method]
    f = a.features
    data = run.load_image_text()
    _, y, captions = data.split("test")
    assert f.captions == tuple(captions) and f.labels.tolist() == y.tolist()
    assert f.class_names == ("cross", "dot", "square", "stripes")
    assert (f.importance is not None) == (method == "triclip")
    # the caption features are the text encoder's outputs (stored in half precision)
    with torch.no_grad():
        z = run.text_encoder()(run.tokenizer().encode(list(captions)).ids).numpy()
    np.testing.assert_allclose(f.text_z, z, rtol=2e-3, atol=2e-3)
    # the image features and order are the trained image analysis's
    trained = load_analysis(run)
    np.testing.assert_array_equal(f.image_z, trained.features.z)
    np.testing.assert_array_equal(f.order, trained.importance.order())
    assert f.train_text_z.shape == (len(data.train_captions), 8)
    want = _brute_force(f, run)
    for key, value in want.items():
        assert a.zero_shot[key] == pytest.approx(value), key
    assert a.zero_shot["n_prompts_per_class"] == len(LABEL_TEMPLATES)
    assert len(a.prompts) == 4 and a.prompts[0] == ("a photo of a cross", "cross")
    assert a.factors.columns.tolist() == ["rank", "feature", "image_class", "text_class"]
    distinct = len(set(captions))
    assert a.top_captions.indices.shape == (8, min(10, distinct))  # each text listed once
    assert "zero-shot" in a.summary() and "R@5" in a.summary()


def test_cache_reads_and_a_torn_file_is_recomputed(runs, analyses):
    run = runs["triclip"]
    again = analyze_text(run, progress=False)
    assert again.recomputed == ()
    assert again.zero_shot == analyses["triclip"].zero_shot
    folder = analysis_dir(run.path, "test") / TEXT_FOLDER
    assert {p.name for p in folder.iterdir()} >= {s.file for s in TEXT_STAGES.values()}
    (folder / "zero_shot.npz").write_bytes((folder / "zero_shot.npz").read_bytes()[:100])
    (folder / "tokens.csv").write_text("garbage")
    torn = analyze_text(run, progress=False)
    assert set(torn.recomputed) == {"zero_shot", "tokens"}
    assert torn.zero_shot == analyses["triclip"].zero_shot
    pd.testing.assert_frame_equal(torn.tokens, analyses["triclip"].tokens)
    forced = analyze_text(run, progress=False, force=True)
    assert forced.recomputed == tuple(TEXT_STAGES)
    # text_features alone
    f = text_features(run, progress=False)
    np.testing.assert_array_equal(f.text_z, analyses["triclip"].features.text_z)


@pytest.mark.parametrize("stage", list(TEXT_STAGES))
def test_every_damaged_file_reads_as_missing_and_only_it_is_recomputed(runs, analyses, stage):
    run = runs["triclip"]
    analyze_text(run, progress=False)
    path = analysis_dir(run.path, "test") / TEXT_FOLDER / TEXT_STAGES[stage].file
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # torn
    got = load_text_analysis(run)
    if stage == "interventions":  # optional on the read path: the rest stays readable
        assert got is not None and got.interventions is None
    else:
        assert got is None
    again = analyze_text(run, progress=False)
    assert again.recomputed == (stage,)
    assert again.zero_shot == analyses["triclip"].zero_shot
    np.testing.assert_array_equal(
        again.top_captions.indices, analyses["triclip"].top_captions.indices
    )


def test_other_images_than_the_trained_analysis_are_encoded_again(runs, tmp_path):
    copy = Run.load(shutil.copytree(runs["clip"].path, tmp_path / "copy"))
    trained = analyze(copy, progress=False)
    features = analysis_dir(copy.path, "test") / "features.npz"
    arrays, meta = load_npz(features)
    save_npz(features, arrays, {**meta, "images_hash": "other images"})
    assert load_analysis(copy) is not None
    f = analyze_text(copy, progress=False, force=True).features
    stored, _ = load_npz(analysis_dir(copy.path, "test") / TEXT_FOLDER / "text_features.npz")
    assert {"image_z", "train_image_z"} <= set(stored)
    np.testing.assert_allclose(f.image_z, trained.features.z, atol=2e-3)
    assert f.images_hash == trained.features.images_hash  # the captions' images, re-hashed


def test_the_train_split(runs):
    a = analyze_text(runs["triclip"], "train", progress=False)
    f = a.features
    assert len(f.captions) == len(runs["triclip"].load_image_text().train_captions)
    np.testing.assert_array_equal(f.text_z, f.train_text_z)
    assert 0 <= a.zero_shot["zero_shot_acc"] <= 1


def test_prompts_per_dataset():
    assert class_prompts("mnist5k-captions", ["3"])[0][:2] == ["a handwritten 3", "the number 3"]
    assert "the number three" in class_prompts("mnist5k-captions", ["3"])[0]
    assert class_prompts("captions", ["cat"]) == [["a photo of a cat", "cat"]]
    with pytest.raises(ValueError, match="no zero-shot prompts"):
        class_prompts("folder", ["cat"])


def test_loading_never_computes_and_never_imports_torch(root, labelled_csv):
    run = train(
        tiny(labelled_csv, "clip", name="clip-load"), runs_root=root / "load", progress=False
    )
    assert load_text_analysis(run) is None and load_text_features(run) is None
    analyze(run, progress=False)
    assert load_text_analysis(run) is None  # the image analysis alone is not enough
    assert not (analysis_dir(run.path, "test") / TEXT_FOLDER).exists()
    analyze_text(run, progress=False)
    code = (
        "import sys\n"
        "from tricl.analysis.image_text import load_text_analysis, load_text_features\n"
        f"a = load_text_analysis({str(run.path)!r})\n"
        f"f = load_text_features({str(run.path)!r})\n"
        "assert a is not None and f is not None and a.recomputed == ()\n"
        "print(a.summary())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "zero-shot" in out.stdout


def test_cli_prints_the_text_summary(runs, capsys):
    assert main(["analyze", str(runs["clip"].path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "zero-shot" in lines[0] and "image->text R@1" in lines[0]
    # then the first features described, with the words that raise each (the caption side)
    assert "features (trained axes, " in lines[1] and lines[1].endswith("order), described:")
    assert lines[2].startswith("  #1: ") and "top-" in lines[2]
    assert "linear probe" in lines[-1]  # the summary last: a job shows its last line
    assert len([ln for ln in lines if ln.startswith("  #")]) == min(
        8, load_analysis(runs["clip"]).k
    )


def test_unlabelled_csv_analyzes(root):
    csv = write_csv(root / "unlabelled", labels=False)
    run = train(tiny(csv, "triclip"), runs_root=root / "runs-unlabelled", progress=False)
    assert main(["analyze", str(run.path), "--no-progress"]) == 0
    a = load_analysis(run)
    assert a is not None and np.isnan(a.linear_acc) and np.isnan(a.knn_acc)
    t = load_text_analysis(run)
    assert t is not None and "zero_shot_acc" not in t.zero_shot
    assert (t.features.labels == -1).all() and t.features.class_names == ()
    assert t.factors.columns.tolist() == ["rank", "feature"] and len(t.factors) == 8
    assert "n/a (no class labels)" in t.summary()
    assert 0 <= t.zero_shot["i2t_r1"] <= t.zero_shot["i2t_r5"] <= 1


def test_an_image_only_run_is_unaffected(tmp_path, capsys):
    run = train(
        RunConfig(method="simclr", dataset="digits", proj_dim=8, proj_hidden_dim=16, epochs=1),
        runs_root=tmp_path,
        progress=False,
    )
    assert main(["analyze", str(run.path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "described:" in lines[0] and "linear probe" in lines[-1]
    assert not any("zero-shot" in ln or "words:" in ln for ln in lines)  # no caption side
    assert not (analysis_dir(run.path, "test") / TEXT_FOLDER).exists()
    assert load_text_analysis(run) is None and load_text_features(run) is None
    with pytest.raises(AnalysisError, match="images only"):
        analyze_text(run, progress=False)
