"""Data drift in a running service: each batch's features counted into its model version's
reference bins (:mod:`shared.ml.reference`), a windowed PSI per feature, and the distribution of
the predictions — on the service's ``/metrics``.

Counting happens where the feature matrix already exists: the model calls its observers with the
matrix and the predictions of each ``predict`` (:attr:`shared.ml.artifacts.Model.observers`), which
keeps them; they are counted once ``PENDING_ROWS`` wait, when the service has nothing to do, or at
a scrape — a ``searchsorted``/``bincount`` per feature and one ``bincount`` for all of them, no
loop over events, and not between a small live batch and its predictions. PSI is computed only when Prometheus scrapes (a custom collector), over a
window of ``window_s`` seconds kept as a ring of slots, so old traffic ages out in steps of a
tenth of the window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from shared.ml.artifacts import TARGETS, Model
from shared.ml.reference import CALENDAR, PREDICTION, Reference, psi, read_reference

SLOTS = 10
# rows a model's observer keeps before counting them (or until the service has nothing to do, or
# a scrape): counting a live batch of a few rows costs ~0.1 ms of numpy calls on the latency path
PENDING_ROWS = 4096
# the predictions' histogram buckets, by unit: minutes (duration models) and dollars (tip, cost)
MINUTE_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180)
USD_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100)


def prediction_buckets(model_name: str) -> tuple[float, ...]:
    return MINUTE_BUCKETS if TARGETS.get(model_name, "").endswith("_min") else USD_BUCKETS


class ModelDrift:
    """One model version's window of bin counts and its predictions' histogram."""

    def __init__(self, reference: Reference, feature_names: Iterable[str], window_s: float,
                 clock=time.monotonic):
        self.reference = reference
        names = list(feature_names)
        # (column in the feature matrix, bins) of each feature watched live; -1: the prediction
        self.columns = [(names.index(f), b) for f, b in reference.features.items() if f in names and f not in CALENDAR]
        if PREDICTION in reference.features:
            self.columns.append((-1, reference.features[PREDICTION]))
        sizes = [b.bins for _, b in self.columns]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        self._lookup_tables()
        self.slot_s = window_s / SLOTS
        self.counts = np.zeros((SLOTS, int(self.offsets[-1])), dtype=np.int64)
        self.rows = np.zeros(SLOTS, dtype=np.int64)
        self._slot = int(clock() // self.slot_s)
        self._clock = clock
        self.buckets = np.asarray(prediction_buckets(reference.name), dtype=np.float64)
        self.histogram = np.zeros(len(self.buckets) + 1, dtype=np.int64)  # the last: +Inf
        self.prediction_sum = 0.0
        self.lock = threading.Lock()
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def _advance(self) -> int:
        """The current slot, zeroing those the clock moved past (under the lock)."""
        slot = int(self._clock() // self.slot_s)
        if slot != self._slot:
            for s in range(self._slot + 1, min(slot, self._slot + SLOTS) + 1):
                self.counts[s % SLOTS] = 0
                self.rows[s % SLOTS] = 0
            self._slot = slot
        return slot % SLOTS

    def _lookup_tables(self) -> None:
        """Categorical features with small integer codes (all of ours) are binned by one table
        lookup for all of them at once: a value v of feature j is at ``base[j] + clip(v + 1)``
        of one table holding every such feature's bin numbers (slot 0 and the last: other)."""
        self.table_columns, self.searched = [], []
        bases, limits, table, used = [], [], [], 0
        for i, (column, bins) in enumerate(self.columns):
            cats = bins.edges
            small_ints = bins.kind == "categorical" and column >= 0 and (
                len(cats) == 0 or (np.all(cats == np.round(cats)) and cats.min() >= 0 and cats.max() < 4096))
            if not small_ints:
                self.searched.append(i)
                continue
            size = int(cats.max()) + 3 if len(cats) else 2
            segment = np.full(size, self.offsets[i] + len(cats), dtype=np.intp)  # other
            segment[cats.astype(np.intp) + 1] = self.offsets[i] + np.arange(len(cats))
            self.table_columns.append(column)
            bases.append(used)
            limits.append(size - 1)
            table.append(segment)
            used += size
        self.table = np.concatenate(table) if table else np.zeros(0, dtype=np.intp)
        self.bases = np.asarray(bases, dtype=np.intp)
        self.limits = np.asarray(limits, dtype=np.intp)

    def observe(self, X: np.ndarray, y: np.ndarray) -> None:
        """Keep one ``predict``'s rows to count (the model made ``X`` and ``y`` for this call and
        does not touch them again); count now once ``PENDING_ROWS`` are waiting."""
        if len(y) == 0:
            return
        with self.lock:
            self._pending.append((X, y))
            self._pending_rows += len(y)
            full = self._pending_rows >= PENDING_ROWS
        if full:
            self.count_pending()

    def count_pending(self) -> None:
        """Count the rows kept since the last count into the bins, vectorised, all at once."""
        with self.lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        X = pending[0][0] if len(pending) == 1 else np.concatenate([x for x, _ in pending])
        y = pending[0][1] if len(pending) == 1 else np.concatenate([y for _, y in pending])
        parts = []
        if self.table_columns:
            with np.errstate(invalid="ignore"):  # NaN → a negative int → the "other" slot
                codes = X[:, self.table_columns].astype(np.intp)
            codes += 1
            np.clip(codes, 0, self.limits, out=codes)
            codes += self.bases
            parts.append(self.table.take(codes).ravel())
        for i in self.searched:
            column, bins = self.columns[i]
            parts.append(bins.index(y if column < 0 else X[:, column]) + self.offsets[i])
        counts = np.bincount(np.concatenate(parts), minlength=len(self.counts[0]))
        hist = np.bincount(np.searchsorted(self.buckets, y, side="left"), minlength=len(self.histogram))
        total = float(y.sum())
        with self.lock:
            slot = self._advance()
            self.counts[slot] += counts
            self.rows[slot] += len(y)
            self.histogram += hist
            self.prediction_sum += total

    def window(self) -> tuple[int, dict[str, float]]:
        """Rows in the window and each watched feature's PSI over it."""
        self.count_pending()
        with self.lock:
            self._advance()
            counts = self.counts.sum(axis=0)
            rows = int(self.rows.sum())
        return rows, {b.name: psi(b.fractions, counts[self.offsets[i]:self.offsets[i + 1]])
                      for i, (_, b) in enumerate(self.columns)}


class DriftMonitor:
    """A service's drift: watches the model versions it serves, exports on its registry."""

    def __init__(self, service: str, registry: CollectorRegistry, window_s: float = 300.0):
        self.service = service
        self.window_s = window_s
        self.models: dict[tuple[str, str], ModelDrift] = {}
        self.trained_mae: dict[tuple[str, str], float] = {}  # every version served, reference or not
        self._missing: set[tuple[str, str]] = set()
        self._watched: list[Model] = []
        registry.register(self)

    def watch(self, models: Iterable[Model]) -> None:
        """Count the batches of each model (each version once; those without a reference are left
        out, said once in the log)."""
        for model in models:
            key = (model.name, model.version)
            mae = (model.metadata.get("metrics") or {}).get("mae")
            if mae is not None:
                self.trained_mae[key] = float(mae)
            if key in self._missing:
                continue
            drift = self.models.get(key)
            if drift is None:
                reference = read_reference(model.path)
                if reference is None:
                    self._missing.add(key)
                    continue
                drift = self.models[key] = ModelDrift(reference, model.metadata.get("features", []), self.window_s)
            if drift.observe not in model.observers:
                model.observers.append(drift.observe)
                self._watched.append(model)

    def count_pending(self) -> None:
        """Count what each model's observer kept (the service calls it when it has nothing to do)."""
        for drift in list(self.models.values()):
            drift.count_pending()

    def close(self) -> None:
        """Stop counting: detach from every model watched (a model object may outlive its runtime)."""
        for drift in self.models.values():
            self._detach(drift)

    def _detach(self, drift: ModelDrift) -> None:
        for model in list(self._watched):
            if drift.observe in model.observers:
                model.observers.remove(drift.observe)

    def collect(self):
        psi_g = GaugeMetricFamily("ridestream_feature_psi", "Population stability index of a feature over the "
                                  "drift window, against the model version's training data",
                                  labels=["service", "model", "version", "feature"])
        rows_g = GaugeMetricFamily("ridestream_drift_window_rows", "Rows the drift window holds",
                                   labels=["service", "model", "version"])
        hist = HistogramMetricFamily("ridestream_prediction_value", "The predictions' values (min or usd)",
                                     labels=["service", "model", "version"])
        for (name, version), drift in sorted(self.models.items()):
            rows, by_feature = drift.window()
            labels = [self.service, name, version]
            rows_g.add_metric(labels, rows)
            for feature, value in by_feature.items():
                psi_g.add_metric([*labels, feature], round(value, 6))
            with drift.lock:
                cumulative = np.cumsum(drift.histogram).tolist()
                total = drift.prediction_sum
            bounds = [f"{b:g}" for b in drift.buckets] + ["+Inf"]
            hist.add_metric(labels, list(zip(bounds, cumulative)), total)
        trained = GaugeMetricFamily("ridestream_model_trained_mae", "The model version's MAE on held-out trips at "
                                    "training (the online MAE alert's yardstick)", labels=["service", "model", "version"])
        for (name, version), mae in sorted(self.trained_mae.items()):
            trained.add_metric([self.service, name, version], mae)
        yield trained
        yield psi_g
        yield rows_g
        yield hist

    def describe(self):
        return []  # collected lazily: nothing to check at registration
