"""How a service turns a batch of validated events into predictions — pure, no Kafka.

A service is a declaration (:class:`ServiceSpec`): which event types it answers, with which model,
and how a model's output becomes the prediction's value. :func:`score_batch` groups a batch by
event type and makes exactly one ``predict`` call per rule per batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from shared.contract.events import UNITS
from shared.contract.predictions import PredictionColumns, Predictions
from shared.contract.topics import Service
from shared.ml.artifacts import Model

Answer = tuple[np.ndarray, np.ndarray | None]  # values, remaining minutes (or None)


class RideMemory:
    """What a service remembers of rides in flight (the duration service: each ride's initial
    estimate and planned distance), bounded so it cannot grow without end. A ride's events share
    a partition, so the process that saw its request sees its progress — until a rebalance moves
    the partition; then the models fall back to what the progress events alone say."""

    def __init__(self, max_rides: int = 500_000):
        self.max_rides = max_rides
        self._rides: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def remember(self, ride_ids: Sequence[str], initial: np.ndarray, distance: np.ndarray) -> None:
        for ride_id, est, dist in zip(ride_ids, initial.tolist(), distance.tolist()):
            self._rides[ride_id] = (est, dist)
        while len(self._rides) > self.max_rides:
            self._rides.popitem(last=False)

    def recall(self, ride_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Initial estimates and planned distances, NaN where unknown."""
        unknown = (np.nan, np.nan)
        pairs = [self._rides.get(r, unknown) for r in ride_ids]
        arr = np.array(pairs, dtype=np.float64).reshape(len(pairs), 2)
        return arr[:, 0], arr[:, 1]

    def forget(self, ride_ids: Sequence[str]) -> None:
        for ride_id in ride_ids:
            self._rides.pop(ride_id, None)

    def __len__(self) -> int:
        return len(self._rides)


AnswerFn = Callable[[Model, Sequence[Any], RideMemory], Answer]


def predict_value(model: Model, events: Sequence[Any], memory: RideMemory) -> Answer:
    return model.predict_events(events), None


@dataclass(frozen=True)
class Rule:
    """Answer events of ``event_type`` with model ``model``."""

    event_type: str
    model: str
    answer: AnswerFn = predict_value


@dataclass(frozen=True)
class ServiceSpec:
    name: Service
    rules: tuple[Rule, ...]
    forget_on: str | None = None  # the event type after which a ride is forgotten
    memory_size: int = field(default=500_000)

    @property
    def unit(self) -> str:
        return UNITS[self.name]

    @property
    def model_names(self) -> list[str]:
        return sorted({r.model for r in self.rules})


def by_event_type(events: Sequence[Any]) -> dict[str, list[Any]]:
    """A batch's events grouped by type, each group in the batch's order."""
    groups: dict[str, list[Any]] = {}
    for event in events:
        groups.setdefault(event.event_type, []).append(event)
    return groups


def score_batch(spec: ServiceSpec, models: dict[str, Model], memory: RideMemory,
                events: Sequence[Any], scored_at: datetime) -> Predictions:
    """The predictions (in the batch's order per rule) for one batch of events."""
    return score_groups(spec, models, memory, by_event_type(events), scored_at)


def score_groups(spec: ServiceSpec, models: dict[str, Model], memory: RideMemory,
                 by_type: dict[str, list[Any]], scored_at: datetime, variant: str | None = None) -> Predictions:
    """:func:`score_batch` for events already grouped by :func:`by_event_type`; ``variant`` is
    stamped on every prediction (while a deployment plan is in force)."""
    parts = []
    for rule in spec.rules:
        batch = by_type.get(rule.event_type)
        if not batch:
            continue
        model = models[rule.model]
        values, remaining = rule.answer(model, batch, memory)
        parts.append(PredictionColumns(
            spec.name, model.version, [e.ride_id for e in batch], [e.event_id for e in batch],
            [e.event_time for e in batch], np.round(values, 3).tolist(), scored_at,
            remaining_min=None if remaining is None else np.round(remaining, 3).tolist(), variant=variant,
        ))
    if spec.forget_on and spec.forget_on in by_type:
        memory.forget([e.ride_id for e in by_type[spec.forget_on]])
    return Predictions(parts)
