"""The three services, each a small declaration on the one runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from consumers.scoring import Answer, RideMemory, Rule, ServiceSpec
from shared.artifacts import Model
from shared.topics import Service


def _initial_estimate(model: Model, events: Sequence[Any], memory: RideMemory) -> Answer:
    """The expected total duration at request time; remembered for the ride's progress."""
    values = model.predict_events(events)
    memory.remember([e.ride_id for e in events], values, np.array([e.trip_distance_mi for e in events]))
    return values, None


def _at_start(model: Model, events: Sequence[Any], memory: RideMemory) -> Answer:
    """At the start nothing has been driven yet: the dynamic model at zero elapsed, from the
    remembered estimate and distance (NaN when this process never saw the request)."""
    initial, distance = memory.recall([e.ride_id for e in events])
    zeros = np.zeros(len(events))
    remaining = model.predict_events(events, elapsed_min=zeros, distance_done_mi=zeros,
                                     distance_left_mi=distance, initial_duration_min=initial)
    return remaining, remaining


def _in_progress(model: Model, events: Sequence[Any], memory: RideMemory) -> Answer:
    """Expected total = elapsed + the minutes the dynamic model expects are left."""
    initial, _ = memory.recall([e.ride_id for e in events])
    remaining = model.predict_events(events, initial_duration_min=initial)
    elapsed = np.array([e.elapsed_min for e in events], dtype=np.float64)
    return elapsed + remaining, remaining


DURATION = ServiceSpec(
    name="duration",
    rules=(
        Rule("ride_requested", "initial_duration", _initial_estimate),
        Rule("ride_started", "dynamic_duration", _at_start),
        Rule("ride_progress", "dynamic_duration", _in_progress),
    ),
    forget_on="ride_completed",
)
TIP = ServiceSpec(name="tip", rules=(Rule("ride_requested", "tip"),))
COST = ServiceSpec(name="cost", rules=(Rule("ride_requested", "cost"),))

SERVICE_SPECS: dict[Service, ServiceSpec] = {s.name: s for s in (DURATION, TIP, COST)}
