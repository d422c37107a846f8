"""Training data: real TLC trips, cleaned, with a reproducible held-out split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.tlc import SAMPLE_TRIPS, CleaningReport, clean_trips, epoch_seconds, expand_paths, read_trip_file

DEFAULT_DATA = [SAMPLE_TRIPS]


@dataclass
class Dataset:
    files: list[Path]
    fingerprint: str
    report: CleaningReport
    train: pd.DataFrame
    test: pd.DataFrame


def fingerprint(files: list[Path]) -> str:
    """sha256 over the files' bytes: two trainings on the same data share it."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_dataset(data: list[str | Path] | None = None, seed: int = 42, test_fraction: float = 0.2) -> Dataset:
    """Read and clean TLC files (default: the shipped real sample) and split off ``test_fraction``
    of the trips, chosen by ``seed``, that no model sees in training."""
    files = expand_paths(list(data or DEFAULT_DATA))
    raw = pd.concat([read_trip_file(p) for p in files], ignore_index=True)
    trips, report = clean_trips(raw)
    if len(trips) < 50:
        raise ValueError(f"only {len(trips)} usable trips after cleaning ({report.summary()}): need at least 50")
    order = np.random.default_rng(seed).permutation(len(trips))
    n_test = int(round(len(trips) * test_fraction))
    test = trips.iloc[np.sort(order[:n_test])].reset_index(drop=True)
    train = trips.iloc[np.sort(order[n_test:])].reset_index(drop=True)
    return Dataset(files, fingerprint(files), report, train, test)


def request_columns(trips: pd.DataFrame) -> dict[str, np.ndarray]:
    """The request-time columns of real trips (requested at pickup) or simulated rides."""
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
