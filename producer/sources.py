"""Where the backend's rides come from: the simulator, or a real TLC trip file replayed.

Each source yields chunks: a rides table (one row per ride, columnar) and the rides' contract
events as dicts in event-time order. The table lets the backend estimate every request of a chunk
with one vectorized ``predict``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from shared.data import simulator
from shared.data.tlc import clean_trips, epoch_seconds, read_trip_file, sample_trips

Chunk = tuple[pd.DataFrame, list[dict]]


def _calibration() -> simulator.Calibration:
    return simulator.fit(sample_trips())


def simulated(rides: int | None, seed: int = 0, chunk: int = 2000, id_prefix: str | None = None,
              drift: str | None = None) -> Iterator[Chunk]:
    """Simulated rides, ``rides`` in all or without end, a simulated day per chunk (the backend
    stamps live events with the time it sends them); ``drift`` shifts the mix
    (:data:`shared.data.simulator.DRIFTS`). Without ``id_prefix``, ride ids start with the second and a
    random tag: two backends started in the same second must not publish the same ride ids."""
    cal = _calibration()
    prefix = id_prefix or f"sim{int(time.time())}{secrets.token_hex(2)}"
    made, i = 0, 0
    while rides is None or made < rides:
        n = chunk if rides is None else min(chunk, rides - made)
        table = simulator.simulate(cal, n, seed=seed + i, days=1, drift=drift)
        table["ride_index"] += made
        events = simulator.lifecycle_events(table, simulator.progress(table, seed=seed + i), prefix)
        yield table, events
        made += n
        i += 1


def tlc_replay(path: Path, seed: int = 0, chunk: int = 2000, id_prefix: str = "tlc") -> Iterator[Chunk]:
    """A real TLC trip file, cleaned, as ride lifecycles at the trips' own times (the request at
    pickup), with in-ride progress laid along each trip's real duration and distance."""
    trips, _ = clean_trips(read_trip_file(Path(path)))
    trips = trips.sort_values("pickup_utc", kind="stable").reset_index(drop=True)
    for start in range(0, len(trips), chunk):
        part = trips.iloc[start:start + chunk]
        pickup = epoch_seconds(part["pickup_utc"])
        table = pd.DataFrame({
            "ride_index": np.arange(start, start + len(part)),
            "requested_s": pickup, "started_s": pickup,
            **{c: part[c].to_numpy() for c in ("pickup_zone", "dropoff_zone", "trip_distance_mi",
                                                "passenger_count", "payment_type", "service",
                                                "duration_min", "fare_amount", "tip_amount", "total_amount")},
        })
        yield table, simulator.lifecycle_events(table, simulator.progress(table, seed=seed + start), id_prefix)
