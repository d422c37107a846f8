"""Real NYC TLC trip records: reading yellow and green files (CSV or Parquet, ``tpep_*`` or
``lpep_*`` columns) into one normalised table, and mapping trips onto contract events.

It lives in ``shared`` because both the backend (replaying TLC files as live rides) and training
read trip files, and those two never import each other.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from shared.contract.events import RideCompleted, RideEvent, RideRequested, RideStarted
from shared.data.clock import NYC_TZ, epoch_seconds, local_hour_weekday
from shared.data.files import DATA_DIR, SAMPLE_TRIPS, ZONES_CSV
from shared.errors import DataError

__all__ = ["DATA_DIR", "NYC_TZ", "SAMPLE_TRIPS", "ZONES", "epoch_seconds", "local_hour_weekday"]

ZONES = ZONES_CSV

# normalised name ← TLC column name(s); the first one present wins
_COLUMNS: dict[str, tuple[str, ...]] = {
    "pickup_time": ("tpep_pickup_datetime", "lpep_pickup_datetime"),
    "dropoff_time": ("tpep_dropoff_datetime", "lpep_dropoff_datetime"),
    "pickup_zone": ("PULocationID",),
    "dropoff_zone": ("DOLocationID",),
    "trip_distance_mi": ("trip_distance",),
    "passenger_count": ("passenger_count",),
    "payment_type": ("payment_type",),
    "fare_amount": ("fare_amount",),
    "tip_amount": ("tip_amount",),
    "total_amount": ("total_amount",),
}
TRIP_COLUMNS = [*_COLUMNS, "service"]
PICKUP_COLUMNS = _COLUMNS["pickup_time"]


def read_trip_file(path: Path) -> pd.DataFrame:
    """One TLC file (``.csv``, ``.csv.gz`` or ``.parquet``) as the normalised trip table, uncleaned.

    The service (yellow/green) comes from a ``color`` column when there is one, else from the
    column prefix (``lpep_`` is green) or the file name.
    """
    name = path.name.lower()
    if not name.endswith((".parquet", ".csv", ".csv.gz")):
        raise DataError(f"{path}: not a TLC trip file (expected .csv, .csv.gz or .parquet)")
    try:
        raw = pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path, low_memory=False)
    except Exception as exc:  # unreadable, truncated, not what its name says
        raise DataError(f"{path}: cannot read it as a TLC trip file ({type(exc).__name__}: {exc})") from None
    return normalise_trips(raw, str(path), green_hint="green" in name)


def normalise_trips(raw: pd.DataFrame, where: str, green_hint: bool = False) -> pd.DataFrame:
    """TLC columns (from a file or a database table) as the normalised trip table, uncleaned.
    ``where`` names the source in errors; ``green_hint`` marks a source named green."""
    out = {}
    for target, sources in _COLUMNS.items():
        source = next((c for c in sources if c in raw.columns), None)
        if source is None:
            raise DataError(f"{where}: missing TLC column {' or '.join(sources)}")
        out[target] = raw[source]
    trips = pd.DataFrame(out)
    for col in ("pickup_time", "dropoff_time"):
        trips[col] = pd.to_datetime(trips[col], errors="coerce")
    if "color" in raw.columns:
        trips["service"] = raw["color"].astype(str).str.lower()
    elif "lpep_pickup_datetime" in raw.columns or green_hint:
        trips["service"] = "green"
    else:
        trips["service"] = "yellow"
    return trips


def expand_paths(specs: list[str | Path]) -> list[Path]:
    """Files named by paths, folders (every TLC file inside) or glob patterns, sorted."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = [p for p in sorted(path.iterdir()) if p.name.lower().endswith((".parquet", ".csv", ".csv.gz"))]
        elif any(ch in str(spec) for ch in "*?["):
            found = [Path(p) for p in sorted(glob.glob(str(spec)))]
        elif path.is_file():
            found = [path]
        else:
            raise DataError(f"{spec}: no such file or folder")
        if not found:
            raise DataError(f"{spec}: no TLC trip files (.parquet, .csv) there")
        files.extend(found)
    return files


def read_trips(specs: list[str | Path]) -> pd.DataFrame:
    """Every TLC file named by ``specs`` (files, folders, globs) as one normalised table, uncleaned."""
    frames = [read_trip_file(p) for p in expand_paths(specs)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


@dataclass
class CleaningReport:
    rows_in: int
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v)
        return f"{self.rows_out} of {self.rows_in} trips kept" + (f" (dropped: {reasons})" if reasons else "")


def sample_trips() -> pd.DataFrame:
    """The shipped real sample, cleaned (a fresh copy: callers may change it)."""
    return _clean_sample().copy()


@lru_cache(maxsize=1)
def _clean_sample() -> pd.DataFrame:
    return clean_trips(read_trip_file(SAMPLE_TRIPS))[0]


def clean_trips(trips: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop what real TLC files contain but no rider ever experienced, rule by rule (each row is
    counted under the first rule it breaks), and add the derived columns training uses:
    ``duration_min``, ``cost_amount`` (total − tip), ``pickup_utc`` and ``dropoff_utc``."""
    report = CleaningReport(rows_in=len(trips))
    t = trips.copy()
    t["duration_min"] = (t["dropoff_time"] - t["pickup_time"]).dt.total_seconds() / 60.0
    money = ["fare_amount", "tip_amount", "total_amount"]
    rules: list[tuple[str, pd.Series]] = [
        ("missing_values", t[[c for c in TRIP_COLUMNS if c != "service"]].isna().any(axis=1)),
        ("unknown_service", ~t["service"].isin(["yellow", "green"])),
        ("negative_amount", (t[money] < 0).any(axis=1)),  # refunds and voids
        ("zero_distance", t["trip_distance_mi"] <= 0),
        ("duration_out_of_range", ~t["duration_min"].between(1, 180)),
        ("unknown_zone", ~t["pickup_zone"].between(1, 263) | ~t["dropoff_zone"].between(1, 263)),
        ("bad_passenger_count", ~t["passenger_count"].between(0, 9)),
        ("bad_payment_type", ~t["payment_type"].between(1, 6)),
        ("implausible_speed", t["trip_distance_mi"] / (t["duration_min"] / 60.0) > 80),
        ("tip_exceeds_total", t["tip_amount"] > t["total_amount"]),
    ]
    keep = pd.Series(True, index=t.index)
    for name, bad in rules:
        hit = keep & bad.fillna(True)
        report.dropped[name] = int(hit.sum())
        keep &= ~hit
    t = t[keep].reset_index(drop=True)
    for col in ("pickup_zone", "dropoff_zone", "passenger_count", "payment_type"):
        t[col] = t[col].astype(np.int64)
    t["cost_amount"] = (t["total_amount"] - t["tip_amount"]).round(2)
    for col in ("pickup", "dropoff"):
        local = t[f"{col}_time"].dt.tz_localize(NYC_TZ, ambiguous="NaT", nonexistent="shift_forward")
        t[f"{col}_utc"] = local.dt.tz_convert("UTC")
    t = t.dropna(subset=["pickup_utc", "dropoff_utc"]).reset_index(drop=True)
    report.rows_out = len(t)
    return t, report


def trip_events(trips: pd.DataFrame, id_prefix: str = "tlc") -> list[list[RideEvent]]:
    """Each trip as its ride lifecycle on the contract: requested → started → completed, with the
    TLC's local times converted to UTC.

    Trip records carry no in-ride progress; the simulator adds that. Rows that break the contract
    (a refund's negative amount, an out-of-range zone) raise pydantic's ValidationError — clean
    them first with :func:`clean_trips`.
    """
    rides = []
    starts = _utc(trips["pickup_time"])
    ends = _utc(trips["dropoff_time"])
    for i, (t, start, end) in enumerate(zip(trips.itertuples(index=False), starts, ends)):
        ride_id = f"{id_prefix}-{i:07d}"
        passengers = 0 if pd.isna(t.passenger_count) else int(t.passenger_count)
        rides.append([
            RideRequested(
                event_id=f"{ride_id}-req", ride_id=ride_id, event_time=start,
                pickup_zone=int(t.pickup_zone), dropoff_zone=int(t.dropoff_zone),
                trip_distance_mi=float(t.trip_distance_mi), passenger_count=passengers,
                payment_type=int(t.payment_type), service=t.service,
            ),
            RideStarted(event_id=f"{ride_id}-start", ride_id=ride_id, event_time=start),
            RideCompleted(
                event_id=f"{ride_id}-done", ride_id=ride_id, event_time=end,
                duration_min=float(np.round((end - start).total_seconds() / 60, 3)),
                fare_amount=float(t.fare_amount), tip_amount=float(t.tip_amount),
                total_amount=float(t.total_amount),
            ),
        ])
    return rides


def _utc(local: pd.Series) -> list:
    """TLC local wall-clock times as UTC datetimes (the DST gap shifts forward)."""
    aware = local.dt.tz_localize(NYC_TZ, ambiguous=True, nonexistent="shift_forward").dt.tz_convert("UTC")
    return [ts.to_pydatetime() for ts in aware]
