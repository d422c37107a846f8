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


Entry = tuple[float, float, float]  # initial estimate (min), planned distance (mi), request time (epoch s)


class RideMemory:
    """What a service remembers of rides in flight (the duration service: each ride's initial
    estimate and planned distance), bounded so it cannot grow without end: at most ``max_rides``,
    and, with ``ttl_s``, none whose request is older (by event time) than the newest by more.
    A ride's events share a partition, so the process that saw its request sees its progress —
    after a rebalance too, when the runtime keeps the memory on a changelog
    (:class:`consumers.state.StateStore`): then every change is also kept in :attr:`changes`
    (ride id → its entry, or None once forgotten) until the runtime takes them."""

    def __init__(self, max_rides: int = 500_000, ttl_s: float | None = None, track: bool = False):
        self.max_rides = max_rides
        self.ttl_s = ttl_s
        self._rides: OrderedDict[str, Entry] = OrderedDict()
        self._newest = float("-inf")
        self.changes: dict[str, Entry | None] | None = {} if track else None

    def remember(self, ride_ids: Sequence[str], initial: np.ndarray, distance: np.ndarray,
                 at: Sequence[float] | None = None) -> None:
        """``at``: the requests' times (epoch seconds), for the TTL."""
        times = list(at) if at is not None else [0.0] * len(ride_ids)
        changes = self.changes
        for ride_id, est, dist, t in zip(ride_ids, initial.tolist(), distance.tolist(), times):
            entry = self._rides[ride_id] = (est, dist, t)
            self._rides.move_to_end(ride_id)
            if changes is not None:
                changes[ride_id] = entry
        if times:
            self._newest = max(self._newest, max(times))
        self._expire()

    def _expire(self) -> None:
        rides, changes = self._rides, self.changes
        while len(rides) > self.max_rides:
            ride_id, _ = rides.popitem(last=False)
            if changes is not None:
                changes[ride_id] = None
        if self.ttl_s is not None:
            oldest_kept = self._newest - self.ttl_s
            while rides:
                ride_id, entry = next(iter(rides.items()))
                if entry[2] >= oldest_kept:
                    break
                del rides[ride_id]
                if changes is not None:
                    changes[ride_id] = None

    def recall(self, ride_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Initial estimates and planned distances, NaN where unknown."""
        unknown = (np.nan, np.nan, 0.0)
        triples = [self._rides.get(r, unknown) for r in ride_ids]
        arr = np.array(triples, dtype=np.float64).reshape(len(triples), 3)
        return arr[:, 0], arr[:, 1]

    def forget(self, ride_ids: Sequence[str]) -> None:
        changes = self.changes
        for ride_id in ride_ids:
            if self._rides.pop(ride_id, None) is not None and changes is not None:
                changes[ride_id] = None

    def take_changes(self) -> dict[str, Entry | None]:
        changes, self.changes = self.changes or {}, ({} if self.changes is not None else None)
        return changes

    def restore(self, ride_id: str, entry: Entry | None) -> None:
        """Set (or, with None, drop) a ride as its changelog says, recording no change."""
        if entry is None:
            self._rides.pop(ride_id, None)
        else:
            self._rides[ride_id] = entry
            self._newest = max(self._newest, entry[2])

    def drop(self, ride_ids: Sequence[str]) -> None:
        """Forget rides whose partition left this process, recording no change (not a completion)."""
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
