"""Feature building, one code path for training and serving (no train/serve skew).

Both work on *columns*: a mapping of field name → numpy array. Training takes the columns from a
trips table; the services pull them out of a batch of validated events with
:func:`columns_from_events` — the only per-event Python work — and everything after is vectorized.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.data.clock import epoch_seconds, local_hour_weekday
from shared.data.meter import NEWARK_SURCHARGE, meter_fare, slow_minutes
from shared.data.zones import NEWARK, airport_flags, borough_codes

if TYPE_CHECKING:
    import pandas as pd

Columns = Mapping[str, np.ndarray]

REQUEST_FIELDS = ("trip_distance_mi", "pickup_zone", "dropoff_zone", "passenger_count",
                  "payment_type", "service", "event_time")
REQUEST_FEATURES = ("distance_mi", "pickup_zone", "dropoff_zone", "pickup_borough", "dropoff_borough",
                    "pickup_airport", "dropoff_airport", "same_zone", "hour", "weekday",
                    "passenger_count", "payment_type", "green")
# indexes of categorical features (HistGradientBoosting's categorical_features)
REQUEST_CATEGORICAL = tuple(REQUEST_FEATURES.index(f) for f in ("pickup_borough", "dropoff_borough", "payment_type"))

PROGRESS_FIELDS = ("elapsed_min", "distance_done_mi", "distance_left_mi", "initial_duration_min", "event_time")
PROGRESS_FEATURES = ("elapsed_min", "distance_done_mi", "distance_left_mi", "fraction_done",
                     "speed_so_far_mph", "naive_remaining_min", "initial_duration_min",
                     "initial_remaining_min", "hour")


def columns_from_events(events: Sequence[Any], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Pull ``fields`` out of validated events into arrays. ``event_time`` becomes epoch seconds,
    ``service`` a bool ``green``, and missing optional values NaN."""
    n = len(events)
    cols: dict[str, np.ndarray] = {}
    numeric = [f for f in fields if f not in ("event_time", "service")]
    if numeric:  # one pass over the events for all of them (a pass per field cost twice as much)
        try:
            rows = list(map(attrgetter(*numeric), events))
        except AttributeError:  # a field some of these events do not carry
            rows = [tuple(getattr(e, f, None) for f in numeric) for e in events]
        table = np.array(rows, dtype=np.float64).reshape(n, len(numeric))
        cols.update((f, table[:, i]) for i, f in enumerate(numeric))
    if "event_time" in fields:
        cols["event_time"] = np.fromiter((e.event_time.timestamp() for e in events), np.float64, n)
    if "service" in fields:
        cols["service"] = np.fromiter((e.service == "green" for e in events), np.bool_, n)
    return {f: cols[f] for f in fields}


def request_columns(trips: pd.DataFrame) -> dict[str, np.ndarray]:
    """The request-time columns of a table of real trips (requested at pickup) or simulated rides."""
    times = trips["requested_s"].to_numpy() if "requested_s" in trips else epoch_seconds(trips["pickup_utc"])
    return {
        "trip_distance_mi": trips["trip_distance_mi"].to_numpy(float),
        "pickup_zone": trips["pickup_zone"].to_numpy(),
        "dropoff_zone": trips["dropoff_zone"].to_numpy(),
        "passenger_count": trips["passenger_count"].to_numpy(float),
        "payment_type": trips["payment_type"].to_numpy(float),
        "service": trips["service"].to_numpy() == "green",
        "event_time": times,
    }


def request_features(cols: Columns) -> np.ndarray:
    """Features known when a ride is requested, for the initial duration, tip and cost models."""
    pu = np.asarray(cols["pickup_zone"], dtype=np.int64)
    do = np.asarray(cols["dropoff_zone"], dtype=np.int64)
    hour, weekday = local_hour_weekday(cols["event_time"])
    boroughs, airports = borough_codes(), airport_flags()
    service = np.asarray(cols["service"])
    green = service if service.dtype == np.bool_ else service == "green"
    columns = (cols["trip_distance_mi"], pu, do, boroughs[pu], boroughs[do], airports[pu], airports[do],
               pu == do, hour, weekday, cols["passenger_count"], cols["payment_type"], green)
    X = np.empty((len(pu), len(REQUEST_FEATURES)))  # filled in place: column_stack + astype copied twice
    for i, column in enumerate(columns):
        X[:, i] = column
    return X


def progress_features(cols: Columns) -> np.ndarray:
    """Features of a ride in progress, for the dynamic duration model (target: remaining minutes).

    ``initial_duration_min`` may be NaN (unknown); the gradient-boosting models handle that.
    """
    elapsed = np.asarray(cols["elapsed_min"], dtype=np.float64)
    done = np.asarray(cols["distance_done_mi"], dtype=np.float64)
    left = np.asarray(cols["distance_left_mi"], dtype=np.float64)
    initial = np.asarray(cols["initial_duration_min"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(done + left > 0, done / (done + left), 0.0)
        speed = np.where(elapsed > 0, done / (elapsed / 60.0), np.nan)
        naive = np.where(speed > 0, left / speed * 60.0, np.nan)
    hour, _ = local_hour_weekday(cols["event_time"])
    return np.column_stack([
        elapsed, done, left, fraction, speed, np.minimum(naive, 600.0), initial,
        np.maximum(initial - elapsed, 0.0), hour,
    ])


def zone_pace_columns(X: np.ndarray, pickup: np.ndarray, dropoff: np.ndarray) -> np.ndarray:
    """Request features with each ride's pickup and dropoff zone's typical pace appended (the
    tables of :class:`shared.ml.zone_pace.ZonePace`, the step that learns them)."""
    pu = X[:, REQUEST_FEATURES.index("pickup_zone")].astype(np.int64)
    do = X[:, REQUEST_FEATURES.index("dropoff_zone")].astype(np.int64)
    return np.column_stack([X, pickup[pu], dropoff[do]])


_DISTANCE, _PICKUP, _DROPOFF = (REQUEST_FEATURES.index(f) for f in ("distance_mi", "pickup_zone", "dropoff_zone"))


def meter_columns(X: np.ndarray, duration_min: np.ndarray) -> np.ndarray:
    """``X`` with the duration, the slow minutes and the cost by the TLC's rules (the fare plus
    Newark's surcharge) appended: the cost model's features (:mod:`shared.ml.cost_model`)."""
    duration = np.asarray(duration_min, dtype=np.float64)
    distance, pickup, dropoff = X[:, _DISTANCE], X[:, _PICKUP], X[:, _DROPOFF]
    by_rules = meter_fare(distance, duration, pickup, dropoff) + NEWARK_SURCHARGE * (dropoff == NEWARK)
    return np.column_stack([X, duration, slow_minutes(distance, duration), by_rules])


def cost_from_parts(X: np.ndarray, duration: Any, fare: Any) -> np.ndarray:
    """The cost model's prediction from its two parts' ``predict`` functions: the meter at the
    predicted duration plus the fare part's correction."""
    features = meter_columns(np.asarray(X, dtype=np.float64), np.maximum(duration(X), 0.0))
    return fare(features) + features[:, -1]


def __getattr__(name: str) -> Any:
    """``ZonePace`` lived here: the shipped artifacts' pickles name it ``shared.ml.features.ZonePace``.
    Imported on demand, so serving from compiled trees never loads scikit-learn."""
    if name == "ZonePace":
        from shared.ml.zone_pace import ZonePace

        return ZonePace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

