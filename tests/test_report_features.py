"""The Features and Feature detail pages' view-models, without Streamlit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tricl.report import features


def _analysis(class_means, top_class, share, mean=0.0, basis="trained"):
    stats = SimpleNamespace(
        class_means=np.asarray([class_means]),
        mean=np.asarray([mean]),
        dominant_class=np.asarray([top_class]),
        dominant_share=np.asarray([share]),
    )
    return SimpleNamespace(stats=stats, basis=basis, classes=list(range(len(class_means))))


def test_the_class_a_feature_separates_is_its_most_extreme_mean_not_its_top_images():
    """A trained triCL feature: class-8 mean about 0, class 1 far below, top images 18% class 8
    (near the 10% chance): no 'dominant class 8'."""
    means = [0.1, -0.9, 0.2, 0.0, 0.1, 0.2, 0.1, 0.0, 0.01, 0.2]
    a = _analysis(means, top_class=8, share=0.18)
    facts = features.class_facts(a, 0)
    assert facts.strongest == 1 and facts.strongest_mean == -0.9
    assert not facts.selective
    assert features.top_class_label(facts, a.classes) == "none"
    caption = features.class_facts_caption(facts, a.classes)
    assert "no class dominates" in caption and "class 1 (mean -0.90)" in caption


def test_a_class_detector_names_its_class():
    means = [0.0] * 10
    means[3] = 1.5
    a = _analysis(means, top_class=3, share=0.9)
    facts = features.class_facts(a, 0)
    assert facts.selective and facts.strongest == 3
    assert features.top_class_label(facts, a.classes) == "3"
    assert "also has the most extreme mean" in features.class_facts_caption(facts, a.classes)


def test_feature_numbers_name_their_basis():
    assert features.basis_note(SimpleNamespace(basis="trained"), "S") == "trained axes, S order"
    assert features.basis_note(SimpleNamespace(basis="spectral"), "eigenvalue") == "spectral basis"
    assert features.ranges_label([0, 1, 2, 5]) == "#1-#3, #6"


def test_same_rank_corrs_read_the_stored_matrix_either_way_round():
    corr = {(0, 1): np.array([[0.9, 0.1], [0.2, -0.8]]), (0, 2): np.array([[0.5]])}
    comp = SimpleNamespace(runs=["a", "b", "c"], corr=corr)
    assert features.same_rank_corrs(comp, "a", ["b", "c"], 2) == {"b": -0.8}
    assert features.same_rank_corrs(comp, "b", ["a"], 1) == {"a": 0.9}


def test_a_feature_table_is_tall_enough_for_every_row():
    """64 features with their caption rows: all on the page (the old cap showed 14)."""
    height = features.table_height(64, 96)
    assert height >= features.TABLE_HEADER_PX + 64 * 96
