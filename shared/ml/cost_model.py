"""The cost model's shape: the taxi meter applied to the ride's expected duration.

A ride's cost is mostly its meter fare — a flag drop, about $2.50 a mile and $0.50 a slow
minute — so once its distance is known, what is left to guess is how long it will take. Given
the real duration, boosted trees predict the cost of a held-out trip within ~$0.85; predicting
the cost straight from the request features leaves the duration implicit and each cost tree
relearns it from 4k trips. :class:`CostFromDuration` instead asks a duration model for the
ride's median duration, applies the meter's rule to it, and lets ``fare`` learn the rest
(surcharges, tolls, flat fares, the meter's deviations) from the request features, the
duration and the meter's estimate. The cost rises with the duration, so the cost at the median
duration is the median cost: the right answer for the absolute error we are judged by.

Training needs both targets (``fit(X, cost, duration_min=…)``); the fitted duration model is a
part of the artifact, so the cost service needs nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

from shared.ml.features import cost_from_parts, meter_columns

__all__ = ["CostFromDuration", "meter_columns"]


class CostFromDuration(RegressorMixin, BaseEstimator):
    """cost = meter(distance, median duration) + ``fare``'s correction; see the module docstring.

    ``duration`` predicts minutes from the request features; ``fare`` predicts the cost minus the
    meter's estimate from :func:`meter_columns` (the features plus duration, slow minutes, meter).
    """

    def __init__(self, duration: Any = None, fare: Any = None):
        self.duration = duration
        self.fare = fare

    def fit(self, X: np.ndarray, y: np.ndarray, duration_min: np.ndarray | None = None) -> CostFromDuration:
        if duration_min is None:
            raise TypeError("CostFromDuration.fit needs the trips' real durations: duration_min=…")
        X = np.asarray(X, dtype=np.float64)
        self.duration_ = clone(self.duration).fit(X, duration_min)
        # the fare part learns from the real durations; at prediction time it gets the median
        features = meter_columns(X, duration_min)
        self.fare_ = clone(self.fare).fit(features, np.asarray(y, dtype=np.float64) - features[:, -1])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.combine(X, self.duration_.predict, self.fare_.predict)

    @staticmethod
    def combine(X: np.ndarray, duration: Any, fare: Any) -> np.ndarray:
        """The prediction from the two parts' ``predict`` functions (also the compiled ones)."""
        return cost_from_parts(X, duration, fare)
