"""Service declarations on the runtime, without a broker: what each service answers, with one
predict per rule per batch, and what the duration service remembers."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from consumers.scoring import RideMemory, score_batch
from consumers.services import COST, DURATION, SERVICE_SPECS, TIP
from shared.contract.codec import decode_event, encode_dict
from shared.contract.events import Prediction, prediction_id
from shared.ml.artifacts import Model, load_model

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


class Counting:
    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def predict(self, X):
        self.calls.append(len(X))
        return self.inner.predict(X)


@pytest.fixture(scope="module")
def models():
    return {name: load_model(name) for name in ("initial_duration", "dynamic_duration", "tip", "cost")}


def counted(models):
    return {n: Model(m.name, m.version, Counting(m.estimator), m.metadata, m.path) for n, m in models.items()}


def ride(i: int, progress: int = 2) -> list:
    rid, t = f"r{i}", "2019-03-05T13:00:00Z"
    common = {"schema_version": 1, "ride_id": rid, "event_time": t}
    events = [
        {**common, "event_id": f"{rid}-req", "event_type": "ride_requested", "pickup_zone": 142, "dropoff_zone": 236,
         "trip_distance_mi": 2.0 + i % 5, "passenger_count": 1, "payment_type": 1 + i % 2, "service": "yellow"},
        {**common, "event_id": f"{rid}-start", "event_type": "ride_started"},
    ]
    for k in range(1, progress + 1):
        events.append({**common, "event_id": f"{rid}-p{k}", "event_type": "ride_progress", "elapsed_min": float(k),
                       "distance_done_mi": 0.3 * k, "distance_left_mi": 2.0 - 0.3 * k})
    events.append({**common, "event_id": f"{rid}-done", "event_type": "ride_completed", "duration_min": 11.0,
                   "fare_amount": 10.0, "tip_amount": 2.0, "total_amount": 15.8})
    return [decode_event(encode_dict(e)) for e in events]


def test_each_service_answers_its_event_types_with_one_predict_per_rule(models):
    batch = [e for i in range(40) for e in ride(i)]
    for spec, expected in ((TIP, {"ride_requested": 40}), (COST, {"ride_requested": 40}),
                           (DURATION, {"ride_requested": 40, "ride_started": 40, "ride_progress": 80})):
        m = counted(models)
        preds = score_batch(spec, m, RideMemory(), batch, NOW)
        kinds = {e.event_id: e.event_type for e in batch}
        got: dict[str, int] = {}
        for p in preds:
            got[kinds[p["event_id"]]] = got.get(kinds[p["event_id"]], 0) + 1
            Prediction.model_validate_json(encode_dict(p))
            assert p["prediction_id"] == prediction_id(spec.name, p["model_version"], p["event_id"])
        assert got == expected
        calls = [c for model in m.values() for c in model.estimator.calls]
        # one predict per rule, for the whole group (ride_started reuses the remembered estimate)
        assert sorted(calls) == sorted(n for kind, n in expected.items() if kind != "ride_started")


def test_rides_started_elsewhere_cost_one_predict_for_all_of_them(models):
    started = [e for i in range(30) for e in ride(i) if e.event_type == "ride_started"]
    m = counted(models)
    preds = score_batch(DURATION, m, RideMemory(), started, NOW)
    assert len(preds) == 30 and m["dynamic_duration"].estimator.calls == [30]


def test_duration_uses_the_remembered_initial_estimate_and_forgets_completed_rides(models):
    memory = RideMemory()
    events = ride(1, progress=3)
    request, started, *progress, done = events
    first = score_batch(DURATION, models, memory, [request, started], NOW)
    initial = first[0]["value"]
    assert len(memory) == 1 and first[1]["value"] == initial  # nothing driven yet: nothing new
    later = score_batch(DURATION, models, memory, progress, NOW)
    for p, e in zip(later, progress):
        assert p["value"] == pytest.approx(e.elapsed_min + p["remaining_min"], abs=0.002)
    score_batch(DURATION, models, memory, [done], NOW)
    assert len(memory) == 0


def test_progress_without_a_remembered_request_is_still_answered(models):
    _, _, *progress, _ = ride(2)
    preds = score_batch(DURATION, models, RideMemory(), progress, NOW)
    assert len(preds) == 2 and all(np.isfinite(p["value"]) for p in preds)


def test_memory_is_bounded():
    memory = RideMemory(max_rides=3)
    memory.remember([f"r{i}" for i in range(5)], np.arange(5.0), np.ones(5))
    assert len(memory) == 3
    initial, _ = memory.recall(["r0", "r4"])
    assert np.isnan(initial[0]) and initial[1] == 4.0


def test_every_contract_service_is_declared():
    assert set(SERVICE_SPECS) == {"duration", "tip", "cost"}
    assert {s.unit for s in SERVICE_SPECS.values()} == {"min", "usd"}
