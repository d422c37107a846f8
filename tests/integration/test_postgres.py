"""The periodic batch job on a real PostgreSQL server: trips from a file or from a table, a rerun
that replaces its rows, two runs at once, the report read back — and no password in any output."""

from __future__ import annotations

import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from shared.data.tlc import SAMPLE_TRIPS, clean_trips, read_trip_file
from tests.integration.fleet import RIDESTREAM
from tests.integration.postgres import PASSWORD, LocalPostgres, missing_reason

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")


@pytest.fixture(scope="module")
def server():
    pg = LocalPostgres()
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
def db(server) -> str:
    """A database of this test's own."""
    name = f"t{uuid.uuid4().hex[:10]}"
    engine = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server.url(name)


def ridestream(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RIDESTREAM_")}, "COLUMNS": "200"}
    proc = subprocess.run([*RIDESTREAM, *args], capture_output=True, text=True, timeout=300, env=env)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr  # the URL is shown with its password masked
    return proc


def per_run(url: str) -> dict[str, dict[str, int]]:
    """run id → service → (rows, distinct trips), read back from the server."""
    engine = create_engine(url)
    with engine.connect() as conn:
        frame = pd.read_sql(text("SELECT run_id, service, COUNT(*) AS n, COUNT(DISTINCT trip) AS trips "
                                 "FROM predictions GROUP BY run_id, service"), conn)
    engine.dispose()
    out: dict[str, dict[str, int]] = {}
    for row in frame.itertuples():
        assert row.n == row.trips  # once per trip and service
        out.setdefault(row.run_id, {})[row.service] = int(row.n)
    return out


TRIPS = len(clean_trips(read_trip_file(SAMPLE_TRIPS))[0])
ALL = {"cost": TRIPS, "duration": TRIPS, "tip": TRIPS}


def test_a_run_then_a_rerun_replaces_its_rows_and_the_report_reads_them_back(db, tmp_path):
    first = ridestream("score-batch", "--input", str(SAMPLE_TRIPS), "--db", db, "--run-id", "march")
    assert f"{TRIPS:,} trips" in first.stdout and "postgresql+psycopg://ridestream:***@" in first.stdout
    ridestream("score-batch", "--input", str(SAMPLE_TRIPS), "--db", db, "--run-id", "march")
    assert per_run(db) == {"march": ALL}
    page = tmp_path / "report.html"
    ridestream("report", "--db", db, "--run-id", "march", "--out", str(page))
    html = page.read_text()
    assert "predicted vs actual" in html and "march" in html


def test_two_runs_with_different_ids_at_the_same_time(db):
    """Both start on an empty database: both create the tables (one waits for the other's lock)
    and write their rows in their own transactions."""
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda rid: ridestream("score-batch", "--input", str(SAMPLE_TRIPS), "--db", db,
                                                    "--run-id", rid), ["a", "b"]))
    assert all(r.returncode == 0 for r in runs)
    assert per_run(db) == {"a": ALL, "b": ALL}


def test_trips_from_a_table_since_a_time(db):
    raw = pd.read_csv(SAMPLE_TRIPS, parse_dates=["tpep_pickup_datetime", "tpep_dropoff_datetime"])
    engine = create_engine(db)
    raw.to_sql("yellow_trips", engine, index=False)
    engine.dispose()
    since = datetime(2019, 3, 15, 12, 0)
    ridestream("score-batch", "--input-db", db, "--table", "yellow_trips", "--since", since.isoformat(),
               "--db", db, "--run-id", "since-noon")
    cleaned = clean_trips(read_trip_file(SAMPLE_TRIPS))[0]
    expected = int((cleaned["pickup_time"] >= since).sum())
    assert 0 < expected < TRIPS
    assert per_run(db)["since-noon"] == {"cost": expected, "duration": expected, "tip": expected}
    engine = create_engine(db)
    with engine.connect() as conn:
        source = conn.execute(text("SELECT input FROM runs WHERE run_id = 'since-noon'")).scalar_one()
    engine.dispose()
    assert "table yellow_trips since 2019-03-15T12:00:00" in source and PASSWORD not in source


def test_a_missing_table_or_a_wrong_password_is_one_line(db):
    missing = ridestream("score-batch", "--input-db", db, "--table", "nope", "--db", db, ok=False)
    assert "has no table nope" in missing.stderr and "Traceback" not in missing.stderr
    wrong = db.replace(PASSWORD, "wrong-password")
    refused = ridestream("score-batch", "--input-db", wrong, "--table", "trips", "--db", db, ok=False)
    assert "cannot read trips from" in refused.stderr and "password authentication failed" in refused.stderr
    assert "wrong-password" not in refused.stderr and "Traceback" not in refused.stderr
