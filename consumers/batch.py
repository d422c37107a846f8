"""Batch scoring, the periodic job: TLC trips (files, or a table of a database) scored by every
service's request-time model, in large vectorized batches, into a results database (SQLite by
default, any SQLAlchemy URL: PostgreSQL in production).

Rerunning a run id replaces that run's rows in one transaction: never duplicates. Runs with
different ids may write at the same time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError

from shared.data.tlc import (
    NYC_TZ,
    PICKUP_COLUMNS,
    clean_trips,
    expand_paths,
    local_hour_weekday,
    normalise_trips,
    read_trip_file,
)
from shared.data.zones import borough_of
from shared.errors import DataError
from shared.ml.artifacts import Model, load_model
from shared.ml.features import request_columns

# the model each service answers a ride request with, and the actual it is judged against
BATCH_MODELS = {"duration": "initial_duration", "tip": "tip", "cost": "cost"}
ACTUALS = {"duration": "duration_min", "tip": "tip_amount", "cost": "cost_amount"}

metadata = MetaData()
runs = Table(
    "runs", metadata,
    Column("run_id", String(128), primary_key=True),
    Column("input", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("model_versions", Text, nullable=False),
    Column("trips", Integer, nullable=False),
    Column("cleaning", Text, nullable=False),
)
predictions = Table(
    "predictions", metadata,
    Column("run_id", String(128), primary_key=True),
    Column("trip", Integer, primary_key=True),
    Column("service", String(16), primary_key=True),
    Column("model_version", String(64), nullable=False),
    Column("value", Float, nullable=False),
    Column("actual", Float, nullable=False),
    Column("pickup_time", DateTime(timezone=True), nullable=False),
    Column("hour", Integer, nullable=False),
    Column("pickup_borough", String(32), nullable=False),
    Column("dropoff_borough", String(32), nullable=False),
    Column("distance_mi", Float, nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
)


def shown(url: str) -> str:
    """A database URL as it may be printed or stored: its password masked."""
    return make_url(url).render_as_string(hide_password=True)


def engine_for(url: str) -> Engine:
    """The results database, its tables created if missing. On PostgreSQL two jobs starting at
    once would both try to create them (one fails on the catalog's unique index), so creation
    holds a transaction-scoped advisory lock."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = connect(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('ridestream.results'))"))
            metadata.create_all(conn)
    except SQLAlchemyError as exc:
        raise DataError(f"cannot use the results database {shown(url)}: {_reason(exc)}") from None
    return engine


def connect(url: str) -> Engine:
    """An engine for ``url``, or a one-line error naming what is wrong with the URL."""
    try:
        return create_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DataError(f"{_safe(url)} is not a database URL ridestream can open ({_reason(exc)}): use "
                        "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB") from None


def _safe(url: str) -> str:
    try:
        return shown(url)
    except ArgumentError:  # not even a URL: it holds no password we could mask, but say nothing of it
        return "the URL given"


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def read_trip_table(url: str, table: str, since: datetime | None = None) -> pd.DataFrame:
    """TLC trips from a database table (the TLC's column names), uncleaned; with ``since``, only
    the trips picked up at or after it. TLC times are New York wall-clock times without a zone: a
    naive ``since`` is one too, an aware one is converted to New York time first."""
    engine = connect(url)
    try:
        trips = Table(table, MetaData(), autoload_with=engine)
        query = select(trips)
        if since is not None:
            column = next((trips.c[c] for c in PICKUP_COLUMNS if c in trips.c), None)
            if column is None:
                raise DataError(f"{shown(url)} table {table}: missing TLC column {' or '.join(PICKUP_COLUMNS)}")
            if since.tzinfo is not None:
                since = since.astimezone(ZoneInfo(NYC_TZ)).replace(tzinfo=None)
            query = query.where(column >= since)
        with engine.connect() as conn:
            raw = pd.read_sql(query, conn)
    except NoSuchTableError:
        names = ", ".join(inspect(engine).get_table_names()) or "none"
        raise DataError(f"{shown(url)} has no table {table} (tables: {names})") from None
    except SQLAlchemyError as exc:
        raise DataError(f"cannot read trips from {shown(url)}: {_reason(exc)}") from None
    finally:
        engine.dispose()
    return normalise_trips(raw, f"{shown(url)} table {table}", green_hint="green" in table.lower())


@dataclass
class BatchRun:
    run_id: str
    trips: int
    rows: int
    model_versions: dict[str, str]


def score_batch_files(inputs: list[str | Path], url: str, run_id: str | None = None, chunk: int = 100_000,
                      models: dict[str, Model] | None = None, step: Callable[[int], None] | None = None) -> BatchRun:
    """Score every trip of ``inputs`` (files, folders, globs) with each service into ``url``."""
    files = expand_paths(list(inputs))
    raw = pd.concat([read_trip_file(p) for p in files], ignore_index=True)
    return score_batch_trips(raw, ", ".join(str(p) for p in files), url, run_id, chunk, models, step)


def score_batch_trips(raw: pd.DataFrame, source: str, url: str, run_id: str | None = None, chunk: int = 100_000,
                      models: dict[str, Model] | None = None, step: Callable[[int], None] | None = None) -> BatchRun:
    """Score every trip of the normalised table ``raw`` with each service and store the results
    under ``run_id``; ``source`` says where the trips came from (kept in the run's row)."""
    started = datetime.now(timezone.utc)
    run_id = run_id or started.strftime("run-%Y%m%dT%H%M%SZ")
    models = models or {s: load_model(name) for s, name in BATCH_MODELS.items()}
    trips, report = clean_trips(raw)
    frames = []
    for lo in range(0, len(trips), chunk):
        part = trips.iloc[lo:lo + chunk]
        cols = request_columns(part)
        hour, _ = local_hour_weekday(cols["event_time"])
        common = {
            "trip": np.arange(lo, lo + len(part)), "pickup_time": part["pickup_utc"].to_numpy(),
            "hour": hour, "pickup_borough": borough_of(part["pickup_zone"].to_numpy()),
            "dropoff_borough": borough_of(part["dropoff_zone"].to_numpy()),
            "distance_mi": part["trip_distance_mi"].to_numpy(float),
        }
        for service, model in models.items():  # one predict per service per chunk
            frames.append(pd.DataFrame({
                **common, "service": service, "model_version": model.version,
                "value": np.round(model.predict_columns(cols), 3),
                "actual": part[ACTUALS[service]].to_numpy(float),
            }))
        if step:
            step(len(part))
    scored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[c.name for c in predictions.c])
    scored = scored.assign(run_id=run_id, scored_at=started)
    versions = {s: m.version for s, m in models.items()}
    engine = engine_for(url)
    with engine.begin() as conn:  # one transaction: a rerun replaces, never duplicates
        conn.execute(delete(predictions).where(predictions.c.run_id == run_id))
        conn.execute(delete(runs).where(runs.c.run_id == run_id))
        conn.execute(insert(runs), [{
            "run_id": run_id, "input": source, "started_at": started,
            "finished_at": datetime.now(timezone.utc), "model_versions": json.dumps(versions),
            "trips": len(trips), "cleaning": report.summary(),
        }])
        scored.to_sql("predictions", conn, if_exists="append", index=False, chunksize=50_000)
    engine.dispose()
    return BatchRun(run_id, len(trips), len(scored), versions)
