"""Tests for tricl.text.captions: factor measurement on constructed digits, terciles, the
mnist5k-captions generator (determinism, words match factors) and the caption CSV reader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tricl.data import DatasetError
from tricl.text.captions import (
    DIGIT_WORDS,
    FACTORS,
    LEVEL_WORDS,
    SLANT_PHRASES,
    TEMPLATES,
    load_image_text,
    measure_factors,
    render_caption,
    template_index,
    tercile_levels,
    tercile_thresholds,
)

THICKNESS, SLANT, SIZE = range(3)


def _bar(width: int, shear: float = 0.0, rows: tuple[int, int] = (4, 24)) -> np.ndarray:
    """A 28x28 vertical stroke of ``width`` pixels, its top shifted right by ``shear`` per row."""
    img = np.zeros((28, 28), dtype=np.uint8)
    for r in range(*rows):
        left = round(12 + shear * (rows[1] - 1 - r))  # rows grow downwards: the top moves most
        img[r, left : left + width] = 255
    return img


# ---------------------------------------------------------------- factor measurement


def test_thickness_is_about_the_stroke_width():
    values = measure_factors(np.stack([_bar(1), _bar(3), _bar(5)]))
    thickness = values[:, THICKNESS]
    assert thickness[0] < thickness[1] < thickness[2]
    # 2 * area / boundary of a w x 20 bar = 2 * 20w / (2 * (20 + w))
    assert thickness == pytest.approx([20 / 21, 60 / 23, 100 / 25])


def test_slant_sign_follows_the_shear():
    values = measure_factors(np.stack([_bar(2, 0.4), _bar(2, 0.0), _bar(2, -0.4)]))
    right, upright, left = values[:, SLANT]
    assert right > 0.3 and left < -0.3
    assert upright == pytest.approx(0.0, abs=1e-9)
    assert right == pytest.approx(-left, rel=1e-6)


def test_size_is_the_ink_bounding_box_area():
    small = np.zeros((28, 28), dtype=np.uint8)
    small[10:15, 10:14] = 200
    large = np.zeros((28, 28), dtype=np.uint8)
    large[2:26, 5:20] = 200
    large[10:12, 8:10] = 100  # faint pixels below the ink threshold do not count
    values = measure_factors(np.stack([small, large, np.zeros((28, 28), np.uint8)]))
    assert values[:, SIZE].tolist() == [20.0, 24.0 * 15.0, 0.0]
    assert values[2].tolist() == [0.0, 0.0, 0.0]  # no ink: zeros, not NaN


def test_terciles_are_within_class_and_thresholds_come_from_train():
    train = np.array([[1.0], [2.0], [3.0], [10.0], [20.0], [30.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    thresholds = tercile_thresholds(train, labels, 2)  # (2, 1, 2)
    assert tercile_levels(train, labels, thresholds)[:, 0].tolist() == [0, 1, 2, 0, 1, 2]
    test = np.array([[2.5], [2.5], [100.0]])
    assert tercile_levels(test, np.array([0, 1, 1]), thresholds)[:, 0].tolist() == [2, 0, 2]


def test_render_caption_names_digit_and_every_factor():
    for template in range(len(TEMPLATES)):
        caption = render_caption(7, (2, 0, 1), template)
        assert "7" in caption or "seven" in caption
        assert "thick" in caption and "medium" in caption
        assert "left-slanted" in caption or SLANT_PHRASES[0] in caption


# ---------------------------------------------------------------- mnist5k-captions


@pytest.fixture(scope="module")
def mnist_captions():
    return load_image_text("mnist5k-captions")


def test_generator_is_deterministic(mnist_captions):
    again = load_image_text("mnist5k-captions")
    assert again.train_captions == mnist_captions.train_captions
    assert again.test_captions == mnist_captions.test_captions
    for split in ("train_factors", "test_factors"):
        a, b = getattr(again, split), getattr(mnist_captions, split)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.levels, b.levels)
    assert template_index("train", 5) == template_index("train", 5)


def test_captions_carry_label_and_factor_levels(mnist_captions):
    data = mnist_captions
    x, y, captions = data.split("train")
    assert (len(captions), len(data.test_captions)) == (4000, 1000)
    assert x.shape == (4000, 1, 28, 28)
    factors = data.train_factors
    assert factors.names == FACTORS and factors.values.shape == factors.levels.shape == (4000, 3)
    for i in range(0, 4000, 97):
        caption, label, levels = captions[i], int(y[i]), factors.levels[i]
        assert str(label) in caption or DIGIT_WORDS[label] in caption
        assert LEVEL_WORDS["thickness"][levels[0]] in caption
        assert LEVEL_WORDS["size"][levels[2]] in caption
        for name, level in (("thickness", levels[0]), ("size", levels[2])):
            others = [w for j, w in enumerate(LEVEL_WORDS[name]) if j != level]
            assert not any(f" {w}" in caption for w in others), caption
        assert LEVEL_WORDS["slant"][levels[1]] in caption or SLANT_PHRASES[levels[1]] in caption
    assert len(TEMPLATES) >= 4 and set(factors.template.tolist()) == set(range(len(TEMPLATES)))


def test_factor_values_match_the_pixels_and_terciles_balance(mnist_captions):
    data = mnist_captions
    x, _, _ = data.split("test")
    np.testing.assert_allclose(data.test_factors.values, measure_factors(x[:, 0].numpy()))
    values, levels = data.train_factors.values, data.train_factors.levels
    labels = data.images.train_y.numpy()
    assert values[labels == 1, SIZE].mean() < 0.7 * values[labels == 0, SIZE].mean()  # ones: narrow
    for c in range(10):
        for f in (THICKNESS, SLANT):  # continuous factors: each tercile holds about a third
            share = np.bincount(levels[labels == c, f], minlength=3) / (labels == c).sum()
            assert share.min() > 0.25


# ---------------------------------------------------------------- caption CSV


def _png(path, value: int) -> str:
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    return path.name


def _write_csv(tmp_path, rows, header=("filepath", "title", "label"), sep="\t"):
    (tmp_path / "img").mkdir(exist_ok=True)
    lines = [sep.join(header)]
    for i, (caption, label) in enumerate(rows):
        name = _png(tmp_path / "img" / f"{i}.png", 10 * i)
        lines.append(sep.join((f"img/{name}", caption, label)))
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


ROWS = [(f"a picture number {i}", "cat" if i % 2 else "dog") for i in range(10)]


def test_csv_reads_open_clip_defaults_and_splits_per_label(tmp_path):
    path = _write_csv(tmp_path, ROWS)
    data = load_image_text(f"captions:{path}", label_column="label")
    assert data.has_labels and data.images.classes == ["cat", "dog"]
    assert len(data.train_captions) == 8 and len(data.test_captions) == 2
    x, y, captions = data.split("train")
    assert x.shape == (8, 1, 8, 8)
    by_caption = dict(ROWS)
    for xi, yi, caption in zip(x, y, captions, strict=True):
        i = int(caption.rsplit(" ", 1)[1])
        assert int(xi[0, 0, 0]) == 10 * i  # the caption stays with its own image
        assert data.images.classes[int(yi)] == by_caption[caption]
    assert set(data.images.test_y.tolist()) == {0, 1}  # every label in both splits
    again = load_image_text(f"captions:{path}", label_column="label")
    assert again.train_captions == data.train_captions  # the split is fixed


def test_csv_options_and_no_labels(tmp_path):
    path = _write_csv(tmp_path, ROWS, header=("image", "text", "y"), sep=",")
    data = load_image_text(
        f"captions:{path}", csv_separator=",", image_column="image", caption_column="text"
    )
    assert not data.has_labels and data.images.classes == [] and not data.images.labelled
    assert (data.images.train_y == -1).all() and (data.images.test_y == -1).all()
    assert len(data.train_captions) + len(data.test_captions) == 10


@pytest.mark.parametrize(
    ("mutate", "options", "message"),
    [
        (lambda p: None, {"caption_column": "caption"}, "no column 'caption'"),
        (
            lambda p: p.write_text(p.read_text().replace("a picture number 3", " ")),
            {},
            "line 5: empty caption",
        ),
        (
            lambda p: (p.parent / "img" / "4.png").write_bytes(b"not a png"),
            {},
            "line 6: cannot read image",
        ),
        (lambda p: (p.parent / "img" / "2.png").unlink(), {}, "line 4: image .* does not exist"),
        (
            lambda p: p.write_text(p.read_text() + "img/0.png\n"),
            {},
            "line 12: wrong number of fields",
        ),
    ],
)
def test_bad_csv_input_fails_with_one_line_naming_file_and_line(tmp_path, mutate, options, message):
    path = _write_csv(tmp_path, ROWS)
    mutate(path)
    with pytest.raises(DatasetError, match=message) as info:
        load_image_text(f"captions:{path}", **options)
    assert "\n" not in str(info.value) and "pairs.csv" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("captions", {}, "needs a path"),
        ("mnist5k-captions:x", {}, "takes no argument"),
        ("flickr", {}, "unknown caption dataset"),
        ("mnist5k-captions", {"csv_separator": ","}, "takes no CSV options"),
    ],
)
def test_bad_specs(spec, options, message):
    with pytest.raises(DatasetError, match=message):
        load_image_text(spec, **options)
