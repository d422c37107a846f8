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
    """Nothing has been driven yet, so nothing new is known: the remembered initial estimate.
    Rides whose request this process never saw (a moved partition) get the dynamic model's answer
    at zero elapsed — one predict for all of them."""
    initial, distance = memory.recall([e.ride_id for e in events])
    unknown = np.isnan(initial)
    if unknown.any():
        rest = [e for e, u in zip(events, unknown) if u]
        zeros = np.zeros(len(rest))
        initial[unknown] = model.predict_events(rest, elapsed_min=zeros, distance_done_mi=zeros,
                                                distance_left_mi=distance[unknown], initial_duration_min=initial[unknown])
    return initial, initial.copy()


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
