"""Prometheus metrics of one service process, served on ``/metrics``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class ServiceMetrics:
    """One registry per runtime, so several runtimes in one process (tests) do not collide."""

    def __init__(self, service: str):
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("ridestream_events_in", "Events consumed, by type", ["service", "event_type"], registry=r)
        self.predictions_out = Counter("ridestream_predictions_out", "Predictions produced", ["service"], registry=r)
        self.dlq = Counter("ridestream_dlq", "Messages sent to the DLQ, by error type", ["service", "error_type"], registry=r)
        self.batch_size = Histogram("ridestream_batch_size", "Messages per batch", ["service"], buckets=_BATCH_BUCKETS, registry=r)
        self.scoring_seconds = Histogram("ridestream_scoring_seconds", "Validation, features and predict per batch", ["service"], buckets=_LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("ridestream_end_to_end_seconds", "Event consumed to its prediction produced", ["service"], buckets=_LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("ridestream_consumer_lag", "Messages behind the end of the partition", ["service", "partition"], registry=r)
        self.model_info = Gauge("ridestream_model_info", "The model versions in use (value 1)", ["service", "model", "version"], registry=r)
        self.service = service
        # the runtime's per-batch updates go to these children: ``labels()`` costs ~2 µs a call
        self.predictions = self.predictions_out.labels(service)
        self.batches = self.batch_size.labels(service)
        self.scoring = self.scoring_seconds.labels(service)
        self.end_to_end = self.latency.labels(service)
        self._children: dict[tuple[Any, str], Any] = {}

    def events(self, event_type: str) -> Any:
        """The ``events_in`` counter of ``event_type`` for this service."""
        return self._child(self.events_in, event_type)

    def dead_letters(self, error_type: str) -> Any:
        """The ``dlq`` counter of ``error_type`` for this service."""
        return self._child(self.dlq, error_type)

    def lag_of(self, partition: int) -> Any:
        """The ``lag`` gauge of ``partition`` for this service."""
        return self._child(self.lag, str(partition))

    def _child(self, metric: Any, label: str) -> Any:
        key = (metric, label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.service, label)
        return child

    def serve(self, port: int) -> None:
        """Serve /metrics on ``port``; 0 turns it off."""
        if port:
            start_http_server(port, registry=self.registry)
