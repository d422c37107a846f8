"""The three services, each a small declaration on the one runtime."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from consumers.scoring import Answer, RideMemory, Rule, ServiceSpec
from shared.contract.topics import Service
from shared.errors import RidestreamError
from shared.kafka.settings import Settings
from shared.ml.artifacts import Model, load_model, resolve


def _initial_estimate(model: Model, events: Sequence[Any], memory: RideMemory) -> Answer:
    """The expected total duration at request time; remembered for the ride's progress."""
    values = model.predict_events(events)
    memory.remember([e.ride_id for e in events], values, np.array([e.trip_distance_mi for e in events]),
                    at=[e.event_time.timestamp() for e in events])
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


def pick_models(spec: ServiceSpec, choices: list[str] | None, settings: Settings | None = None) -> dict[str, Model]:
    """The service's models (for `consume` and `replay`): the current ones, except those a
    choice names (:func:`choose_versions`); with ``settings``, served from their cached serving
    forms where there are any (:func:`serving_load`)."""
    versions = choose_versions(spec, choices)
    load = serving_load(settings) if settings is not None else load_model
    return {name: load(name, versions.get(name)) for name in spec.model_names}


def serving_load(settings: Settings) -> Callable[..., Model]:
    """:func:`shared.ml.artifacts.load_model` as a service loads: from the model's serving form in
    the compiled-trees cache when it is there and checks out — no scikit-learn in the process —
    unless ``native_models`` is off."""
    if not settings.native_models:
        return load_model
    return partial(load_model, native_cache=settings.compiled_dir, threads=settings.predict_threads)


def choose_versions(spec: ServiceSpec, choices: list[str] | None) -> dict[str, str]:
    """Model name → version (or artifact folder) for each choice: ``NAME=VERSION``, a bare
    version id of one of the service's models, or an artifact folder."""
    versions: dict[str, str] = {}
    for choice in choices or []:
        name, sep, version = choice.partition("=")
        if sep:
            if name not in spec.model_names:
                raise RidestreamError(f"{name} is not a model of the {spec.name} service "
                                      f"({', '.join(spec.model_names)})")
            versions[name] = version
            continue
        metadata = Path(choice) / "metadata.json"
        if metadata.is_file():
            name = json.loads(metadata.read_text()).get("name")
            if name not in spec.model_names:
                raise RidestreamError(f"{choice} holds a {name} model, not one of the {spec.name} service's "
                                      f"({', '.join(spec.model_names)})")
            versions[name] = choice
            continue
        if "/" in choice:
            raise RidestreamError(f"{choice}: no model artifact there (a folder with metadata.json and "
                                  "model.joblib, as `ridestream train` writes)")
        owners = [n for n in spec.model_names if _has_version(n, choice)]
        if len(owners) != 1:
            raise RidestreamError(f"no single {spec.name} model has version {choice!r}: "
                                  f"use NAME=VERSION with NAME one of {', '.join(spec.model_names)}")
        versions[owners[0]] = choice
    return versions


def _has_version(name: str, version: str) -> bool:
    try:
        resolve(name, version)
        return True
    except RidestreamError:
        return False
