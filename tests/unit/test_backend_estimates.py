"""The backend's initial estimate is the one the duration service gives the published request."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from producer.backend import Backend
from producer.sources import simulated
from shared.contract.events import RideRequested
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_model


def test_a_live_chunk_is_estimated_for_the_time_it_is_sent():
    model = load_model("initial_duration")
    backend = Backend(Settings(), model)
    table, events = next(simulated(60, seed=4, chunk=60, id_prefix="est"))
    simulated_times = {e["ride_id"]: e["event_time"] for e in events if e["event_type"] == "ride_requested"}
    sent_at = datetime(2026, 11, 24, 22, 30, tzinfo=timezone.utc)  # 17:30 in New York, a Tuesday
    backend.stamp_initial((table, events), at=sent_at.timestamp())
    requests = [RideRequested.model_validate({**e, "event_time": sent_at}, strict=False)
                for e in events if e["event_type"] == "ride_requested"]
    stamped = np.array([r.initial_duration_min for r in requests])
    np.testing.assert_allclose(stamped, np.round(model.predict_events(requests), 2))  # what the service says
    at_simulated_times = [r.model_copy(update={"event_time": datetime.fromisoformat(simulated_times[r.ride_id])})
                          for r in requests]
    assert not np.allclose(stamped, np.round(model.predict_events(at_simulated_times), 2))  # the time matters
