"""The NYC taxi meter's rule of 2019: a flag drop, a rate per mile, and a rate per minute spent
slower than 12 mph, or the flat fare between JFK and Manhattan. The simulator fits its rates to
real trips with it; the cost model applies it to a predicted duration."""

from __future__ import annotations

import numpy as np

from shared.data.zones import jfk_manhattan

# the TLC's rates of 2019
FLAG_DROP, PER_MILE, PER_SLOW_MINUTE = 2.5, 2.5, 0.5
MINUTES_PER_MILE_AT_12_MPH = 5.0  # slower than this, the meter counts time instead of distance
FLAT_FARE_JFK = 52.0  # JFK ↔ Manhattan, either way
NEWARK_SURCHARGE = 17.5  # on the meter, rides to Newark airport


def slow_minutes(distance: np.ndarray, duration_min: np.ndarray) -> np.ndarray:
    """Minutes beyond what the distance takes at 12 mph: the ones the meter charges by time."""
    return np.maximum(np.asarray(duration_min, dtype=np.float64) - distance * MINUTES_PER_MILE_AT_12_MPH, 0.0)


def meter_fare(distance: np.ndarray, duration_min: np.ndarray, pickup_zone: np.ndarray, dropoff_zone: np.ndarray,
               per_mile: float = PER_MILE, per_slow_minute: float = PER_SLOW_MINUTE) -> np.ndarray:
    """The fare (before surcharges and tolls): the flag drop, the miles and the slow minutes on the
    meter, or JFK ↔ Manhattan's flat fare. The simulator passes its fitted rates."""
    metered = FLAG_DROP + per_mile * distance + per_slow_minute * slow_minutes(distance, duration_min)
    return np.where(jfk_manhattan(pickup_zone, dropoff_zone), FLAT_FARE_JFK, metered)
