"""Feature detail's feature visualisation in Streamlit's AppTest: the stored image in both bases,
and for a feature without one, the button whose background job makes it."""

from __future__ import annotations

import time

import pytest
from test_analysis_featvis import RUN, featvis_root  # noqa: F401 (the shared fixture)
from test_app_pages import APP, app_at, open_page, texts

from tricl.analysis import load_analysis
from tricl.analysis.optvis import visualize
from tricl.bases import BASIS_NAMES
from tricl.jobs import JobStore, visualize_command


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_feature_detail_shows_the_stored_visualisation(featvis_root, monkeypatch, basis):  # noqa: F811
    a = load_analysis(featvis_root / RUN, basis=basis)
    feature = int(a.importance.order(a.importance.default)[0])  # the page opens on #1
    vis = visualize(featvis_root / RUN, feature, basis)
    at = open_page(app_at(featvis_root, monkeypatch, run=RUN, basis=basis), "feature_detail.py")
    text = texts(at)
    assert "Feature visualisation" in text and "At 28-32 px it is low-fidelity" in text
    assert f"On this image the feature reaches {vis.activation:.2f}" in text
    captions = [c for img in at.get("image") for c in img.captions]
    assert f"optimised (seed 0): activation {vis.activation:.2f}" in captions
    assert "has no visualisation yet" not in text


def test_a_missing_visualisation_is_made_by_a_job_the_page_starts(featvis_root, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PYTHONPATH", str(APP.parent))  # the job imports this checkout's tricl
    at = open_page(app_at(featvis_root, monkeypatch, run=RUN, feature="2"), "feature_detail.py")
    a = load_analysis(featvis_root / RUN)
    feature = int(a.importance.order(a.importance.default)[1])
    key = f"start_featvis_trained_{feature}"
    assert "Feature #2 has no visualisation yet." in texts(at)
    assert at.button(key=key).label == "Visualise"
    at.button(key=key).click().run()
    assert not at.exception
    store = JobStore(featvis_root / "_jobs")
    job = store.find(visualize_command(featvis_root / RUN, feature))
    assert job is not None and job.running, "the click started the job"
    deadline = time.monotonic() + 240
    while store.status(job.id).running and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.status(job.id).state == "done"
    at.run()
    assert "has no visualisation yet" not in texts(at)
    assert "On this image the feature reaches" in texts(at)
