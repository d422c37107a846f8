"""The zone-pace step of the request-time ensembles: a scikit-learn transformer, so it lives apart
from :mod:`shared.ml.features`, which serving imports without scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from shared.ml.features import zone_pace_columns


class ZonePace(BaseEstimator, TransformerMixin):
    """Appends each ride's pickup and dropoff zone's typical pace (log minutes per mile, learnt
    from training trips and shrunk towards the city-wide median where a zone has few trips) to
    the request features. Zone ids alone carry no notion of which zones are slow; this does.

    The tables are computed by :meth:`from_trips` and travel inside the model artifact.
    """

    def __init__(self, pickup: np.ndarray | None = None, dropoff: np.ndarray | None = None):
        self.pickup = pickup
        self.dropoff = dropoff

    @classmethod
    def from_trips(cls, pickup_zone: np.ndarray, dropoff_zone: np.ndarray, distance_mi: np.ndarray,
                   duration_min: np.ndarray, shrink: float = 15.0) -> ZonePace:
        log_pace = np.log(np.asarray(duration_min, float) / np.maximum(np.asarray(distance_mi, float), 0.05))
        prior = float(np.median(log_pace))

        def table(zones: np.ndarray) -> np.ndarray:
            zones = np.asarray(zones, dtype=np.int64)
            total = np.bincount(zones, weights=log_pace, minlength=266)
            count = np.bincount(zones, minlength=266)
            return (total + shrink * prior) / (count + shrink)

        return cls(table(pickup_zone), table(dropoff_zone))

    def fit(self, X: np.ndarray, y: Any = None) -> ZonePace:
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return zone_pace_columns(X, self.pickup, self.dropoff)


# pickled under its old home (which resolves it on demand): artifacts trained now load in code from
# before the move too — an older image, a rollback — and the shipped ones keep loading here
ZonePace.__module__ = "shared.ml.features"
