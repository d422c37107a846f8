"""Batch scoring into SQLite and the HTML dashboard (rendered in headless Chromium)."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from consumers.batch import engine_for, score_batch_files
from consumers.report import load_results, render
from shared.data.tlc import SAMPLE_TRIPS, clean_trips, read_trip_file
from shared.errors import DataError
from tests.browser import screenshot


def counts(url: str) -> pd.DataFrame:
    engine = create_engine(url)
    with engine.connect() as conn:
        frame = pd.read_sql(text("SELECT run_id, service, COUNT(*) AS n, COUNT(DISTINCT trip) AS trips "
                                 "FROM predictions GROUP BY run_id, service ORDER BY run_id, service"), conn)
    engine.dispose()
    return frame


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('results') / 'results.db'}"
    run = score_batch_files([SAMPLE_TRIPS], url, run_id="march")
    return url, run


def test_every_real_trip_lands_once_per_service(scored):
    url, run = scored
    trips = len(clean_trips(read_trip_file(SAMPLE_TRIPS))[0])
    assert run.trips == trips and run.rows == 3 * trips
    c = counts(url)
    assert list(c.service) == ["cost", "duration", "tip"]
    assert (c.n == trips).all() and (c.trips == trips).all()


def test_rerunning_a_run_id_replaces_its_rows(scored, tmp_path):
    url, _ = scored
    score_batch_files([SAMPLE_TRIPS], url, run_id="march")
    assert counts(url).n.tolist() == [counts(url).n.iloc[0]] * 3  # still once each
    score_batch_files([SAMPLE_TRIPS], url, run_id="april")
    assert counts(url).run_id.value_counts().to_dict() == {"april": 3, "march": 3}


def test_the_dashboard_renders_in_headless_chromium(scored):
    url, _ = scored
    runs, preds = load_results(url, "march")
    page = render(runs, preds)
    for fragment in ("predicted vs actual", "error by hour", "error by pickup borough", "Per model version"):
        assert fragment in page
    for external in ("<script", "<link", 'src="http', "url(http", '<img'):
        assert external not in page  # self-contained: everything inline
    shot = screenshot(page, "dashboard")
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert len(np.unique(pixels)) > 20  # text, lines and dots, not a blank page


def test_an_empty_database_gives_a_page_that_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(DataError, match="no results database at .*empty.db: run `ridestream score-batch` first"):
        load_results(url)  # and it made no file
    engine_for(url).dispose()  # a database with the tables and no run yet
    runs, preds = load_results(url)
    assert "ridestream score-batch" in render(runs, preds)
    with pytest.raises(DataError, match="no run 'april' in sqlite:///.*empty.db"):
        load_results(url, "april")
