"""Replay and backfill: the same runtime and services over a fixed range of ``rides.events``, to
another topic or a file, optionally judged against the rides' actuals."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from consumers.offsets import Position, bounds
from consumers.runtime import BatchResult, Runtime
from consumers.scoring import ServiceSpec
from consumers.sinks import Sink
from shared.contract.predictions import Predictions
from shared.kafka.clients import make_consumer
from shared.kafka.settings import Settings
from shared.ml.artifacts import Model

ACTUAL = {"duration": lambda c: c.duration_min, "tip": lambda c: c.tip_amount,
          "cost": lambda c: round(c.total_amount - c.tip_amount, 2)}


@dataclass
class Recorder:
    """Wraps a sink; with ``evaluate``, keeps what evaluation needs: each prediction, and each
    ride's actuals (without it nothing is kept, so memory stays flat over any range)."""

    inner: Sink
    service: str
    evaluate: bool = False
    predictions: list[tuple[str, str, float]] = field(default_factory=list)  # ride, version, value
    actuals: dict[str, float] = field(default_factory=dict)

    def emit(self, predictions: Predictions) -> None:
        if self.evaluate:
            for part in predictions.parts:
                self.predictions.extend(zip(part.ride_ids, repeat(part.model_version), part.values))
        self.inner.emit(predictions)

    def dead_letter(self, msg, headers) -> None:
        self.inner.dead_letter(msg, headers)

    def flush(self) -> int:
        return self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def observe(self, events: list[Any]) -> None:
        actual = ACTUAL[self.service]
        for e in events:
            if e.event_type == "ride_completed":
                self.actuals[e.ride_id] = actual(e)

    def mae_by_version(self) -> list[dict[str, Any]]:
        """MAE per model version over the predictions of rides whose completion is in range."""
        rows: dict[str, list[tuple[float, float]]] = {}
        for ride_id, version, value in self.predictions:
            if ride_id in self.actuals:
                rows.setdefault(version, []).append((value, self.actuals[ride_id]))
        report = []
        for version, pairs in sorted(rows.items()):
            pred, act = np.array(pairs).T
            report.append({"model_version": version, "predictions": len(pairs),
                           "rides": len({r for r, v, _ in self.predictions if v == version and r in self.actuals}),
                           "mae": round(float(np.mean(np.abs(pred - act))), 4)})
        return report


Ranges = dict[tuple[str, int], tuple[int, int]]


def plan(settings: Settings, start: Position, end: Position, topic: str | None = None) -> Ranges:
    """[start, end) per partition of the events topic, fixed now."""
    reader = make_consumer(settings, f"{settings.namespace}ridestream-replay-{uuid.uuid4().hex[:8]}")
    try:
        return bounds(reader, topic or settings.topics.events, start, end)
    finally:
        reader.close()


def replay(settings: Settings, spec: ServiceSpec, models: dict[str, Model], ranges: Ranges, sink: Sink,
           progress: Callable[[int], None] | None = None,
           observe: Callable[[list[Any]], None] | None = None) -> BatchResult:
    """Score the planned ranges with the service's runtime. It joins no group and commits
    nothing, so live groups never notice; it stops at the planned ends."""
    topic = next(iter(ranges))[0] if ranges else settings.topics.events
    runtime = Runtime(spec, settings, models, group_id=f"{settings.namespace}ridestream-replay-{uuid.uuid4().hex[:8]}",
                      input_topic=topic, sink=sink, bounds=ranges, progress=progress, observe=observe)
    return runtime.run()
