"""Drift reference bins of a model version, and the distances drift is measured with — pure numpy.

A model version's reference is what its training data looked like, feature by feature, in the
columns the model really sees (its feature matrix), plus its own predictions on that data:

* a numeric feature: the edges of its deciles (ties merged), the share of training rows in each
  bin, a missing-value bin (NaN), and 101 quantiles for the Wasserstein distance;
* a categorical feature: the share of each category (zones: those with ≥ 0.5 % of the rows, at
  most 40) and of everything else.

The bins are fixed per version, so the drift of two replicas, or of a replay and the live fleet,
is measured against the same thing. It lives in ``reference.json`` beside ``model.joblib`` (the
model's bytes and checksum stay as they were): ``ridestream train`` writes it with each new
version, ``ridestream models reference`` computes it for versions trained before it existed.
:class:`Binner` turns a batch's feature matrix into bin counts with a handful of numpy calls per
feature, never a loop over rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILE = "reference.json"
PREDICTION = "prediction"  # the model's own output, binned like a numeric feature
CATEGORICAL = frozenset({"pickup_zone", "dropoff_zone", "pickup_borough", "dropoff_borough", "pickup_airport",
                         "dropoff_airport", "same_zone", "hour", "weekday", "passenger_count", "payment_type",
                         "green"})
# Features of the clock: a live window of minutes always holds one hour of one weekday, so their
# windowed PSI says what time it is, not that the traffic changed. Left out of the live gauge;
# the offline report (a range of hours or days) shows them.
CALENDAR = frozenset({"hour", "weekday"})
ZONE_FEATURES = frozenset({"pickup_zone", "dropoff_zone"})
DECILES = np.linspace(0.1, 0.9, 9)
QUANTILES = np.linspace(0.0, 1.0, 101)
EPSILON = 1e-4  # the share an empty bin is given, so PSI stays finite
log = logging.getLogger("ridestream.drift")


@dataclass(frozen=True)
class FeatureBins:
    name: str
    kind: str  # "numeric" or "categorical"
    edges: np.ndarray  # numeric: bin edges; categorical: the categories kept, sorted
    fractions: np.ndarray  # the training share of each bin (numeric: + NaN; categorical: + other)
    quantiles: np.ndarray | None = None  # numeric: QUANTILES of the training values (Wasserstein)
    scale: float = 1.0  # numeric: the training values' standard deviation (a distance's unit)

    @property
    def bins(self) -> int:
        return len(self.edges) + (2 if self.kind == "numeric" else 1)

    def labels(self) -> list[str]:
        """A readable name per bin."""
        if self.kind == "categorical":
            return [f"{c:g}" for c in self.edges] + ["other"]
        e = [f"{x:.3g}" for x in self.edges]
        return ([f"< {e[0]}"] if e else []) + [f"{a}–{b}" for a, b in pairwise(e)] + \
            ([f"≥ {e[-1]}"] if e else ["all"]) + ["missing"]

    def index(self, values: np.ndarray) -> np.ndarray:
        """Each value's bin, vectorised."""
        x = np.asarray(values, dtype=np.float64)
        if self.kind == "numeric":
            idx = np.searchsorted(self.edges, x, side="right")
            idx[np.isnan(x)] = len(self.edges) + 1
            return idx
        if len(self.edges) == 0:
            return np.zeros(len(x), dtype=np.intp)
        pos = np.searchsorted(self.edges, x)
        found = self.edges[np.minimum(pos, len(self.edges) - 1)] == x
        return np.where(found, pos, len(self.edges))

    def as_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, "edges": _floats(self.edges), "fractions": _floats(self.fractions)}
        if self.quantiles is not None:
            out.update(quantiles=_floats(self.quantiles), scale=round(self.scale, 6))  # as stable as the rest
        return out

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> FeatureBins:
        q = data.get("quantiles")
        return cls(name, data["kind"], np.asarray(data["edges"], float), np.asarray(data["fractions"], float),
                   None if q is None else np.asarray(q, float), float(data.get("scale", 1.0)))


def _floats(a: np.ndarray) -> list[float]:
    return [round(float(x), 6) for x in a]


def weighted_quantiles(x: np.ndarray, q: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Quantiles ``q`` of ``x``, each value counting ``weights`` times (None: once)."""
    if weights is None:
        return np.quantile(x, q)
    order = np.argsort(x)
    cum = np.cumsum(weights[order])
    return np.interp(q, (cum - 0.5 * weights[order]) / cum[-1], x[order])


def _shares(idx: np.ndarray, bins: int, weights: np.ndarray | None) -> np.ndarray:
    counts = np.bincount(idx, weights=weights, minlength=bins)
    return counts / max(counts.sum(), 1e-12)


def numeric_bins(name: str, values: np.ndarray, weights: np.ndarray | None = None) -> FeatureBins:
    x = np.asarray(values, dtype=np.float64)
    missing = np.isnan(x)
    present, w = x[~missing], None if weights is None else weights[~missing]
    if len(present) == 0:
        present, w = np.zeros(1), None
    edges = np.unique(weighted_quantiles(present, DECILES, w))
    bins = FeatureBins(name, "numeric", edges, np.zeros(len(edges) + 2))
    scale = float(np.std(present)) or 1.0
    return FeatureBins(name, "numeric", edges, _shares(bins.index(x), bins.bins, weights),
                       weighted_quantiles(present, QUANTILES, w), scale)


def categorical_bins(name: str, values: np.ndarray, weights: np.ndarray | None = None) -> FeatureBins:
    x = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(x)
    cats, where = np.unique(x[present], return_inverse=True)
    counts = np.bincount(where, weights=None if weights is None else weights[present], minlength=len(cats))
    if name in ZONE_FEATURES:  # 265 zones: the busy ones, the rest together
        keep = counts >= 0.005 * counts.sum()
        top = np.sort(np.argsort(-counts)[:40])
        cats = cats[np.intersect1d(np.flatnonzero(keep), top)]
    bins = FeatureBins(name, "categorical", np.sort(cats), np.zeros(len(cats) + 1))
    return FeatureBins(name, "categorical", bins.edges, _shares(bins.index(x), bins.bins, weights))


@dataclass(frozen=True)
class Reference:
    """A model version's reference bins: one :class:`FeatureBins` per feature and the prediction."""

    name: str
    version: str
    rows: int
    features: dict[str, FeatureBins]
    source: str = ""

    @classmethod
    def build(cls, name: str, version: str, feature_names: Sequence[str], X: np.ndarray,
              predictions: np.ndarray | None, source: str = "", weights: np.ndarray | None = None) -> Reference:
        """The reference of a model trained on ``X`` (rows × ``feature_names``), with its
        ``predictions`` on it; ``weights``: how often the service sees each row's kind of event."""
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        bins = {f: (categorical_bins if f in CATEGORICAL else numeric_bins)(f, X[:, i], w)
                for i, f in enumerate(feature_names)}
        if predictions is not None:
            bins[PREDICTION] = numeric_bins(PREDICTION, predictions, w)
        return cls(name, version, len(X), bins, source)

    def as_json(self) -> dict[str, Any]:
        return {"schema": 1, "name": self.name, "version": self.version, "rows": self.rows, "source": self.source,
                "features": {f: b.as_json() for f, b in self.features.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reference:
        return cls(data["name"], data["version"], int(data["rows"]),
                   {f: FeatureBins.from_json(f, b) for f, b in data["features"].items()}, data.get("source", ""))

    def write(self, folder: Path) -> Path:
        path = Path(folder) / REFERENCE_FILE
        path.write_text(json.dumps(self.as_json(), indent=1) + "\n")
        return path


def read_reference(folder: Path) -> Reference | None:
    """The reference beside a model artifact, or None (with one log line) if it has none or it
    cannot be read: drift is then off for that model, nothing else changes."""
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        log.info("no %s in %s: drift is off for this model (`ridestream models reference` computes it)",
                 REFERENCE_FILE, folder)
        return None
    try:
        return Reference.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s): drift is off for this model", path, exc)
        return None


def psi(reference: np.ndarray, counts: np.ndarray) -> float:
    """Population stability index of observed bin ``counts`` against reference shares:
    Σ (a − e)·ln(a / e), empty bins at :data:`EPSILON`. 0.1–0.25: moderate, > 0.25: a shift."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    e = np.maximum(reference, EPSILON)
    a = np.maximum(counts / total, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def wasserstein(bins: FeatureBins, values: np.ndarray) -> float | None:
    """Wasserstein-1 distance between the values and the training distribution, on the quantile
    functions (the mean gap between the QUANTILES of each), in units of the training standard
    deviation; None for a categorical feature or no values."""
    if bins.quantiles is None:
        return None
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return None
    return float(np.mean(np.abs(np.quantile(x, QUANTILES) - bins.quantiles)) / bins.scale)
