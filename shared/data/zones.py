"""The TLC zone table as lookup arrays indexed by LocationID (1–265), for vectorized features."""

from __future__ import annotations

import csv
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from shared.data.files import ZONES_CSV

if TYPE_CHECKING:
    import pandas as pd

BOROUGHS = ("Manhattan", "Queens", "Brooklyn", "Bronx", "Staten Island", "EWR", "Unknown")
NEWARK, JFK, LAGUARDIA = 1, 132, 138
AIRPORT_ZONES = (NEWARK, JFK, LAGUARDIA)
UNKNOWN_ZONES = (264, 265)  # "Unknown" / "Outside of NYC" in TLC data


@lru_cache(maxsize=1)
def zone_table() -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(ZONES_CSV).set_index("LocationID")


@lru_cache(maxsize=1)
def borough_codes() -> np.ndarray:
    """``borough_codes()[zone]`` is the index of the zone's borough in :data:`BOROUGHS`."""
    codes = np.full(266, BOROUGHS.index("Unknown"), dtype=np.int8)
    with open(ZONES_CSV, newline="") as f:  # the csv module: a service reads it without pandas
        for row in csv.DictReader(f):
            if row["borough"] in BOROUGHS:
                codes[int(row["LocationID"])] = BOROUGHS.index(row["borough"])
    return codes


@lru_cache(maxsize=1)
def airport_flags() -> np.ndarray:
    flags = np.zeros(266, dtype=np.int8)
    flags[list(AIRPORT_ZONES)] = 1
    return flags


def borough_of(zones: np.ndarray) -> np.ndarray:
    """Borough names of an array of zone ids."""
    return np.asarray(BOROUGHS, dtype=object)[borough_codes()[np.asarray(zones, dtype=np.int64)]]


def jfk_manhattan(pickup_zone: np.ndarray, dropoff_zone: np.ndarray) -> np.ndarray:
    """Rides between JFK and Manhattan, either way: the meter does not run, the fare is flat."""
    pickup, dropoff = (np.asarray(zones, dtype=np.int64) for zones in (pickup_zone, dropoff_zone))
    boroughs, manhattan = borough_codes(), BOROUGHS.index("Manhattan")
    return ((pickup == JFK) & (boroughs[dropoff] == manhattan)) | ((dropoff == JFK) & (boroughs[pickup] == manhattan))
