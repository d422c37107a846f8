"""Real NYC TLC trip records: reading yellow and green files (CSV or Parquet, ``tpep_*`` or
``lpep_*`` columns) into one normalised table, and mapping trips onto contract events.

It lives in ``shared`` because both the backend (replaying TLC files as live rides) and training
read trip files, and those two never import each other.
"""

from __future__ import annotations

from datetime import timezone
from pathlib import Path

import numpy as np
import pandas as pd

from shared.events import RideCompleted, RideEvent, RideRequested, RideStarted

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLE_TRIPS = DATA_DIR / "tlc_trips_2019_03_sample.csv"
ZONES = DATA_DIR / "taxi_zones.csv"

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


def read_trip_file(path: Path) -> pd.DataFrame:
    """One TLC file (``.csv``, ``.csv.gz`` or ``.parquet``) as the normalised trip table, uncleaned.

    The service (yellow/green) comes from a ``color`` column when there is one, else from the
    column prefix (``lpep_`` is green) or the file name.
    """
    name = path.name.lower()
    if name.endswith(".parquet"):
        raw = pd.read_parquet(path)
    elif name.endswith((".csv", ".csv.gz")):
        raw = pd.read_csv(path, low_memory=False)
    else:
        raise ValueError(f"{path}: not a TLC trip file (expected .csv, .csv.gz or .parquet)")
    out = {}
    for target, sources in _COLUMNS.items():
        source = next((c for c in sources if c in raw.columns), None)
        if source is None:
            raise ValueError(f"{path}: missing TLC column {' or '.join(sources)}")
        out[target] = raw[source]
    trips = pd.DataFrame(out)
    for col in ("pickup_time", "dropoff_time"):
        trips[col] = pd.to_datetime(trips[col], errors="coerce")
    if "color" in raw.columns:
        trips["service"] = raw["color"].astype(str).str.lower()
    elif "lpep_pickup_datetime" in raw.columns or "green" in name:
        trips["service"] = "green"
    else:
        trips["service"] = "yellow"
    return trips


def trip_events(trips: pd.DataFrame, id_prefix: str = "tlc") -> list[list[RideEvent]]:
    """Each trip as its ride lifecycle on the contract: requested → started → completed.

    Trip records carry no in-ride progress; the simulator adds that. Rows that break the contract
    (a refund's negative amount, an out-of-range zone) raise pydantic's ValidationError — clean
    them first (training's loader does).
    """
    rides = []
    for i, t in enumerate(trips.itertuples(index=False)):
        ride_id = f"{id_prefix}-{i:07d}"
        start = t.pickup_time.to_pydatetime().replace(tzinfo=timezone.utc)
        end = t.dropoff_time.to_pydatetime().replace(tzinfo=timezone.utc)
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
