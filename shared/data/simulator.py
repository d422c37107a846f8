"""A seeded, vectorized ride simulator whose distributions are fitted to real TLC trips.

What is fitted, from cleaned trips (:func:`shared.data.tlc.clean_trips`):

* the trip mix — zone pair, distance, passengers, payment type, service and the trip's other
  charges (taxes, surcharges, tolls) — by resampling real trips, with the distance jittered;
* when rides are requested — the hour-of-day and weekday profile;
* how fast they go — log speed regressed on log distance, hour of day and weekend, and the spread
  around it, which becomes each ride's traffic factor (its realised speed drifts from the expected
  one);
* the fare — the NYC meter ($2.50 flag drop, then about $2.50 a mile and $0.50 a slow minute, in
  50-cent steps; the two rates fitted within the meter's bounds), and JFK's flat fare;
* tips — card tips as a share of the fare resampled from real card trips; cash and the rest tip 0
  (the TLC records no cash tips).

Within a ride, the distance covered minute by minute varies around the ride's own speed, so the
first progress events already show whether the ride runs ahead or behind its expected duration.
Lives in ``shared`` because both the backend and training use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.data import meter
from shared.data.tlc import NYC_TZ, epoch_seconds, local_hour_weekday
from shared.data.zones import JFK

MINUTE_SPEED_SIGMA = 0.35  # minute-to-minute variation of speed within a ride (log scale)


@dataclass(frozen=True)
class Calibration:
    templates: pd.DataFrame  # real trips: zones, distance, passengers, payment, service, other charges
    hour_weights: np.ndarray  # 24
    weekday_weights: np.ndarray  # 7
    speed_coef: np.ndarray  # intercept, log distance, weekend, 24 hour effects (log mph)
    speed_sigma: float
    per_mile: float  # $ a mile (the meter: $2.50)
    per_slow_minute: float  # $ a minute of slow traffic (the meter: $0.50)
    card_tip_share: np.ndarray  # tip / (fare + other) of real card trips


def _speed_design(log_dist: np.ndarray, hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    hours = np.zeros((len(hour), 24))
    hours[np.arange(len(hour)), hour] = 1.0
    return np.column_stack([np.ones_like(log_dist), log_dist, weekend, hours[:, 1:]])


def fit(trips: pd.DataFrame) -> Calibration:
    """Fit the simulator to cleaned real trips."""
    pickup_s = epoch_seconds(trips["pickup_utc"])
    hour, weekday = local_hour_weekday(pickup_s)
    dist = trips["trip_distance_mi"].to_numpy(float)
    dur = trips["duration_min"].to_numpy(float)
    speed = dist / (dur / 60.0)
    X = _speed_design(np.log(dist), hour, (weekday >= 5).astype(float))
    coef, *_ = np.linalg.lstsq(X, np.log(speed), rcond=None)
    sigma = float(np.std(np.log(speed) - X @ coef))

    other = (trips["total_amount"] - trips["tip_amount"] - trips["fare_amount"]).clip(lower=0)
    metered = ~(trips["pickup_zone"].eq(JFK) | trips["dropoff_zone"].eq(JFK)).to_numpy()
    (per_mile, per_slow_min), *_ = np.linalg.lstsq(
        np.column_stack([dist, meter.slow_minutes(dist, dur)])[metered],
        trips["fare_amount"].to_numpy(float)[metered] - meter.FLAG_DROP, rcond=None)

    card = trips[trips["payment_type"] == 1]
    share = (card["tip_amount"] / (card["fare_amount"] + other[card.index]).clip(lower=1.0)).clip(0, 1)
    templates = trips[["pickup_zone", "dropoff_zone", "trip_distance_mi", "passenger_count",
                       "payment_type", "service"]].assign(other_amount=other.round(2), hour=hour).reset_index(drop=True)
    return Calibration(
        templates=templates,
        hour_weights=np.bincount(hour, minlength=24) / len(hour),
        weekday_weights=np.bincount(weekday, minlength=7) / len(weekday),
        speed_coef=coef, speed_sigma=sigma,
        per_mile=float(np.clip(per_mile, 2.0, 3.0)), per_slow_minute=float(np.clip(per_slow_min, 0.0, 1.0)),
        card_tip_share=share.to_numpy(float),
    )


def expected_speed_mph(cal: Calibration, distance: np.ndarray, epoch_s: np.ndarray) -> np.ndarray:
    hour, weekday = local_hour_weekday(epoch_s)
    X = _speed_design(np.log(np.maximum(distance, 0.05)), hour, (weekday >= 5).astype(float))
    return np.exp(X @ cal.speed_coef)


def meter_fare(cal: Calibration, distance: np.ndarray, duration_min: np.ndarray,
               pickup_zone: np.ndarray, dropoff_zone: np.ndarray) -> np.ndarray:
    """The TLC's fare at the fitted rates, in the meter's 50-cent steps."""
    fare = meter.meter_fare(distance, duration_min, pickup_zone, dropoff_zone, cal.per_mile, cal.per_slow_minute)
    return np.round(fare * 2) / 2


NIGHT_HOURS = (22, 23, 0, 1, 2, 3, 4)
AIRPORTS = (1, 132, 138)  # Newark, JFK, LaGuardia
# the drift knob: how each scenario reweights the real trips the simulator draws from
DRIFTS: dict[str, str] = {
    "airport-surge": "rides to and from the airports (Newark, JFK, LaGuardia) ~30× as often: most of the traffic",
    "long-trips": "trips in the longest fifth ~15× as often: distances, fares and durations grow",
    "night": "the night's mix (rides requested 22:00–05:00 ~20× as often, and requests at night hours)",
    "cash": "riders paying cash ~10× as often: the tip model sees far more zero-tip payments",
}


def drift_weights(templates: pd.DataFrame, drift: str) -> np.ndarray:
    """How often each real trip is drawn under a drift scenario (:data:`DRIFTS`), normalised."""
    if drift == "airport-surge":
        w = np.where(templates["pickup_zone"].isin(AIRPORTS) | templates["dropoff_zone"].isin(AIRPORTS), 30.0, 1.0)
    elif drift == "long-trips":
        dist = templates["trip_distance_mi"].to_numpy(float)
        w = np.where(dist >= np.quantile(dist, 0.8), 15.0, 1.0)
    elif drift == "night":
        w = np.where(templates["hour"].isin(NIGHT_HOURS), 20.0, 1.0)
    elif drift == "cash":
        w = np.where(templates["payment_type"] == 2, 10.0, 1.0)
    else:
        raise ValueError(f"unknown drift {drift!r}: choose from {', '.join(DRIFTS)}")
    return w / w.sum()


def simulate(cal: Calibration, n: int, seed: int = 0, start: pd.Timestamp | str = "2019-03-04",
             days: int = 7, drift: str | None = None) -> pd.DataFrame:
    """``n`` rides as one table, with actuals. Deterministic for a given seed.

    ``start`` is a local (NYC) date or time; requests spread over ``days`` days following the
    fitted hour-of-day and weekday profile. ``drift`` shifts the mix (:data:`DRIFTS`); without
    it the draws are exactly those of before the knob existed.
    """
    rng = np.random.default_rng(seed)
    if drift is None:
        drawn = rng.integers(0, len(cal.templates), n)
    else:
        drawn = rng.choice(len(cal.templates), size=n, p=drift_weights(cal.templates, drift))
    t = cal.templates.iloc[drawn].reset_index(drop=True)
    distance = np.round(t["trip_distance_mi"].to_numpy() * rng.lognormal(0.0, 0.1, n), 2).clip(0.05)

    start_ts = pd.Timestamp(start)
    start_local = start_ts.tz_localize(NYC_TZ) if start_ts.tzinfo is None else start_ts.tz_convert(NYC_TZ)
    day_weights = cal.weekday_weights[(start_local.day_of_week + np.arange(days)) % 7]
    day = rng.choice(days, size=n, p=day_weights / day_weights.sum())
    hour_weights = cal.hour_weights
    if drift == "night":
        hour_weights = np.where(np.isin(np.arange(24), NIGHT_HOURS), hour_weights, 0.0)
        hour_weights = hour_weights / hour_weights.sum()
    hour = rng.choice(24, size=n, p=hour_weights)
    offset_s = day * 86400.0 + hour * 3600.0 + rng.uniform(0, 3600, n)
    requested_s = start_local.normalize().timestamp() + offset_s
    wait_min = rng.gamma(2.0, 2.0, n).clip(0.5, 20)
    started_s = requested_s + wait_min * 60

    expected = expected_speed_mph(cal, distance, started_s)
    traffic = rng.lognormal(0.0, cal.speed_sigma, n)
    duration = np.clip(distance / (expected * traffic) * 60.0, 1.0, 180.0)

    pickup = t["pickup_zone"].to_numpy()
    dropoff = t["dropoff_zone"].to_numpy()
    fare = meter_fare(cal, distance, duration, pickup, dropoff)
    other = t["other_amount"].to_numpy()
    payment = t["payment_type"].to_numpy()
    share = cal.card_tip_share[rng.integers(0, len(cal.card_tip_share), n)]
    tip = np.where(payment == 1, np.round((fare + other) * share, 2), 0.0)
    cost = np.round(fare + other, 2)
    # who rides: a pool of a quarter as many riders as rides, some riding far more often than others;
    # drawn from a generator of its own so the rides themselves are what they were before riders
    riders = max(n // 4, 1)
    rider = np.minimum((riders * np.random.default_rng([seed, 1]).random(n) ** 2).astype(np.int64), riders - 1)
    return pd.DataFrame({
        "ride_index": np.arange(n), "rider_index": rider,
        "requested_s": requested_s, "started_s": started_s,
        "pickup_zone": pickup, "dropoff_zone": dropoff, "trip_distance_mi": distance,
        "passenger_count": t["passenger_count"].to_numpy(), "payment_type": payment,
        "service": t["service"].to_numpy(),
        "expected_speed_mph": expected, "duration_min": np.round(duration, 3),
        "fare_amount": fare, "tip_amount": tip, "cost_amount": cost, "total_amount": np.round(cost + tip, 2),
    })


def minute_increments(rng: np.random.Generator, duration_min: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per ride, the relative distance covered in each of its minutes (flat array) and each
    ride's offset into it. A ride of 12.4 minutes has 13 increments."""
    minutes = np.ceil(duration_min).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(minutes)])
    inc = rng.lognormal(0.0, MINUTE_SPEED_SIGMA, offsets[-1])
    # the last, partial minute covers only its fraction
    last = offsets[1:] - 1
    inc[last] *= duration_min - (minutes - 1)
    return inc, offsets


def distance_done_at(distance: np.ndarray, duration_min: np.ndarray, elapsed_min: np.ndarray,
                     ride: np.ndarray, inc: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Distance covered after ``elapsed_min`` by ride number ``ride`` (arrays of equal length),
    following that ride's minute increments."""
    cum = np.concatenate([[0.0], np.cumsum(inc)])
    total = cum[offsets[1:]] - cum[offsets[:-1]]
    whole = np.floor(elapsed_min).astype(np.int64)
    start = offsets[ride]
    idx = np.minimum(start + whole, offsets[ride + 1] - 1)
    covered = cum[start + whole] - cum[start]
    partial = (elapsed_min - whole) * inc[idx]
    frac = np.clip((covered + partial) / total[ride], 0.0, 1.0)
    return distance[ride] * frac


def progress(rides: pd.DataFrame, seed: int = 0, every_min: float = 1.0) -> pd.DataFrame:
    """The in-ride progress of each ride: one row every ``every_min`` minutes of the ride."""
    rng = np.random.default_rng(seed + 1)
    duration = rides["duration_min"].to_numpy()
    distance = rides["trip_distance_mi"].to_numpy()
    inc, offsets = minute_increments(rng, duration)
    counts = np.maximum(np.ceil(duration / every_min).astype(np.int64) - 1, 0)
    ride = np.repeat(np.arange(len(rides)), counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    elapsed = step * every_min
    done = distance_done_at(distance, duration, elapsed, ride, inc, offsets)
    return pd.DataFrame({
        "ride_index": ride, "elapsed_min": elapsed,
        "distance_done_mi": np.round(done, 3), "distance_left_mi": np.round(distance[ride] - done, 3),
        "remaining_min": duration[ride] - elapsed,
    })


def progress_at_fractions(distance: np.ndarray, duration_min: np.ndarray, fractions: np.ndarray,
                          seed: int = 0) -> pd.DataFrame:
    """Progress of given rides (e.g. real trips) at given fractions of their duration — how the
    dynamic model is evaluated on real trips, whose records have no in-ride progress."""
    rng = np.random.default_rng(seed)
    inc, offsets = minute_increments(rng, duration_min)
    n = len(distance)
    ride = np.repeat(np.arange(n), len(fractions))
    frac = np.tile(fractions, n)
    elapsed = duration_min[ride] * frac
    done = distance_done_at(distance, duration_min, elapsed, ride, inc, offsets)
    return pd.DataFrame({
        "ride_index": ride, "fraction": frac, "elapsed_min": elapsed,
        "distance_done_mi": done, "distance_left_mi": distance[ride] - done,
        "remaining_min": duration_min[ride] - elapsed,
    })


def lifecycle_events(rides: pd.DataFrame, prog: pd.DataFrame, id_prefix: str = "sim") -> list[dict]:
    """The rides as contract events (plain dicts, ready for :func:`shared.contract.codec.encode_dict`), in
    event-time order: ``ride_requested`` → ``ride_started`` → ``ride_progress``… →
    ``ride_completed`` with the actuals, each with the ride's ``rider_id``. ``initial_duration_min``
    is left for the backend to stamp.
    """
    def iso(seconds: np.ndarray) -> np.ndarray:
        return np.datetime_as_string((seconds * 1000).astype("datetime64[ms]"), unit="ms", timezone="UTC")

    ride_ids = np.char.add(f"{id_prefix}-", rides["ride_index"].to_numpy().astype(str))
    # the backend stamps the rider on every event of the ride (A/B cohorts stick to riders)
    rider_ids = (np.char.add(f"{id_prefix}-rider-", rides["rider_index"].to_numpy().astype(str)).tolist()
                 if "rider_index" in rides else None)
    started = rides["started_s"].to_numpy()
    ended = started + rides["duration_min"].to_numpy() * 60
    times: list[np.ndarray] = []
    events: list[dict] = []

    def add(kind: str, ride: np.ndarray, seconds: np.ndarray, suffix: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        columns = {name: values.tolist() for name, values in fields.items()}  # Python numbers
        for i, (r, t, s) in enumerate(zip(ride_ids[ride].tolist(), iso(seconds).tolist(), suffix.tolist())):
            event = {"schema_version": 1, "event_id": f"{r}-{s}", "event_type": kind, "ride_id": r,
                     "event_time": t}
            if rider_ids is not None:
                event["rider_id"] = rider_ids[ride[i]]
            for name, values in columns.items():
                event[name] = values[i]
            events.append(event)
        times.append(seconds)

    every = np.arange(len(rides))
    add("ride_requested", every, rides["requested_s"].to_numpy(), np.full(len(rides), "req"), {
        c: rides[c].to_numpy() for c in ("pickup_zone", "dropoff_zone", "trip_distance_mi",
                                          "passenger_count", "payment_type", "service")})
    add("ride_started", every, started, np.full(len(rides), "start"), {})
    ride = prog["ride_index"].to_numpy()
    add("ride_progress", ride, started[ride] + prog["elapsed_min"].to_numpy() * 60,
        np.char.add("p", prog["elapsed_min"].to_numpy().astype(np.int64).astype(str)), {
            c: prog[c].to_numpy() for c in ("elapsed_min", "distance_done_mi", "distance_left_mi")})
    add("ride_completed", every, ended, np.full(len(rides), "done"), {
        "duration_min": rides["duration_min"].to_numpy(), "fare_amount": rides["fare_amount"].to_numpy(),
        "tip_amount": rides["tip_amount"].to_numpy(), "total_amount": rides["total_amount"].to_numpy()})
    order = np.argsort(np.concatenate(times), kind="stable")
    return [events[i] for i in order]
