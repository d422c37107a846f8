"""Training data: real TLC trips, cleaned, with a reproducible held-out split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.data.tlc import SAMPLE_TRIPS, CleaningReport, clean_trips, expand_paths, read_trip_file
from shared.errors import DataError

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
        raise DataError(f"only {len(trips)} usable trips after cleaning ({report.summary()}): need at least 50")
    order = np.random.default_rng(seed).permutation(len(trips))
    n_test = int(round(len(trips) * test_fraction))
    test = trips.iloc[np.sort(order[:n_test])].reset_index(drop=True)
    train = trips.iloc[np.sort(order[n_test:])].reset_index(drop=True)
    return Dataset(files, fingerprint(files), report, train, test)
