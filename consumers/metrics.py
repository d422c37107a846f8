"""Prometheus metrics of one service process, served on ``/metrics`` beside ``/healthz`` and
``/readyz`` (:mod:`consumers.health`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from consumers.health import Health

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

    def forget_lag(self, partitions: Iterable[int]) -> None:
        """Stop reporting the lag of partitions that left this replica: their new owner reports
        it; a gauge left behind would show the lag as it was at the rebalance, for ever."""
        for partition in partitions:
            if self._children.pop((self.lag, str(partition)), None) is not None:
                self.lag.remove(self.service, str(partition))

    def _child(self, metric: Any, label: str) -> Any:
        key = (metric, label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.service, label)
        return child

    def serve(self, port: int, health: Health | None = None) -> ThreadingHTTPServer | None:
        """Serve /metrics (and, with ``health``, /healthz and /readyz) on ``port``; 0 turns it off."""
        return serve_http(port, self.registry, health) if port else None


Check = Callable[[], tuple[bool, str]]


def serve_http(port: int, registry: CollectorRegistry, health: Health | None = None,
               host: str = "") -> ThreadingHTTPServer:
    """/metrics of ``registry``; /healthz and /readyz answer 200 or 503 with a one-line reason.
    Without ``health`` both answer 200 once the server is up (a process with no consume loop)."""
    checks: dict[str, Check] = {"/healthz": health.alive, "/readyz": health.ready} if health else {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = checks[path]() if path in checks else (True, "ok")
                self._answer(200 if ok else 503, f"{why}\n".encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # probes every few seconds: no access log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    return server
