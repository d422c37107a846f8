"""The wire contract's models: valid messages pass, every kind of invalid one is rejected with
its reason."""

from __future__ import annotations

import math

import orjson
import pytest

from shared.contract.codec import InvalidMessage, decode_event, encode
from shared.contract.events import (
    Prediction,
    RideCompleted,
    RideProgress,
    RideRequested,
    RideStarted,
    prediction_id,
)

REQUESTED = {
    "schema_version": 1,
    "event_id": "e-1",
    "event_type": "ride_requested",
    "ride_id": "r-1",
    "event_time": "2019-03-01T08:15:00Z",
    "pickup_zone": 142,
    "dropoff_zone": 236,
    "trip_distance_mi": 2.16,
    "passenger_count": 3,
    "payment_type": 1,
    "service": "yellow",
    "initial_duration_min": 11.5,
}
COMMON = {k: REQUESTED[k] for k in ("schema_version", "event_id", "ride_id", "event_time")}


def raw(**changes) -> bytes:
    return orjson.dumps({**REQUESTED, **changes})


def test_each_event_type_decodes_to_its_model():
    cases = {
        RideRequested: REQUESTED,
        RideStarted: {**COMMON, "event_type": "ride_started"},
        RideProgress: {**COMMON, "event_type": "ride_progress", "elapsed_min": 3.0,
                       "distance_done_mi": 0.8, "distance_left_mi": 1.36},
        RideCompleted: {**COMMON, "event_type": "ride_completed", "duration_min": 10.05,
                        "fare_amount": 10.0, "tip_amount": 2.0, "total_amount": 15.8},
    }
    for model, payload in cases.items():
        event = decode_event(orjson.dumps(payload))
        assert type(event) is model
        assert event.ride_id == "r-1"
        assert event.event_time.isoformat() == "2019-03-01T08:15:00+00:00"


def test_encode_then_decode_is_identity_and_times_are_utc_z():
    event = decode_event(raw())
    data = encode(event)
    assert b'"event_time":"2019-03-01T08:15:00Z"' in data
    assert decode_event(data) == event


def test_initial_duration_may_be_absent_or_null():
    payload = {k: v for k, v in REQUESTED.items() if k != "initial_duration_min"}
    assert decode_event(orjson.dumps(payload)).initial_duration_min is None
    assert decode_event(raw(initial_duration_min=None)).initial_duration_min is None
    assert b"initial_duration_min" not in encode(decode_event(raw(initial_duration_min=None)))


def test_unknown_optional_fields_are_ignored_for_forward_compatibility():
    assert decode_event(raw(surge_multiplier=1.4)).pickup_zone == 142


@pytest.mark.parametrize(
    ("value", "error_type", "fragment"),
    [
        (b"", "empty", "empty"),
        (None, "empty", "empty"),
        (b"not json", "json", "not valid JSON"),
        (b"[1, 2]", "schema", "JSON object"),
        (b'"text"', "schema", "JSON object"),
        (raw(event_type="ride_teleported"), "unknown_event_type", "ride_requested"),
        (orjson.dumps({k: v for k, v in REQUESTED.items() if k != "event_type"}), "schema", "event_type is missing"),
        (raw(pickup_zone=999), "schema", "pickup_zone"),
        (raw(pickup_zone=0), "schema", "pickup_zone"),
        (raw(dropoff_zone="236"), "schema", "dropoff_zone"),
        (raw(pickup_zone=142.0), "schema", "pickup_zone"),
        (raw(trip_distance_mi=-0.1), "schema", "trip_distance_mi"),
        (raw(trip_distance_mi="2.1"), "schema", "trip_distance_mi"),
        (raw(passenger_count=10), "schema", "passenger_count"),
        (raw(payment_type=0), "schema", "payment_type"),
        (raw(payment_type=7), "schema", "payment_type"),
        (raw(service="black"), "schema", "service"),
        (raw(schema_version=2), "schema", "schema_version"),
        (raw(event_time="2019-03-01T08:15:00"), "schema", "event_time"),
        (raw(event_time="2019-03-01T08:15:00+01:00"), "schema", "UTC"),
        (raw(event_time="yesterday"), "schema", "event_time"),
        (raw(event_time=1551428100), "schema", "event_time"),
        (raw(ride_id=""), "schema", "ride_id"),
        (raw(ride_id=17), "schema", "ride_id"),
        (raw(initial_duration_min=-3), "schema", "initial_duration_min"),
        (raw().replace(b'"trip_distance_mi":2.16', b'"trip_distance_mi":NaN'), "schema", "trip_distance_mi"),
        (raw().replace(b'"trip_distance_mi":2.16', b'"trip_distance_mi":1e999'), "schema", "trip_distance_mi"),
    ],
)
def test_invalid_messages_are_rejected_with_their_reason(value, error_type, fragment):
    with pytest.raises(InvalidMessage) as info:
        decode_event(value)
    assert info.value.error_type == error_type
    assert fragment in info.value.message
    assert "\n" not in info.value.message


def test_nan_and_infinity_are_rejected_when_building_models_too():
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            RideProgress(**COMMON, elapsed_min=bad, distance_done_mi=1.0, distance_left_mi=1.0)


def test_prediction_round_trip_and_deterministic_ids():
    pid = prediction_id("tip", "v3", "e-1")
    assert pid == prediction_id("tip", "v3", "e-1")
    assert len({pid, prediction_id("tip", "v4", "e-1"), prediction_id("cost", "v3", "e-1"),
                prediction_id("tip", "v3", "e-2")}) == 4
    p = Prediction.model_validate_json(orjson.dumps({
        "schema_version": 1, "prediction_id": pid, "ride_id": "r-1", "event_id": "e-1",
        "service": "tip", "model_version": "v3", "value": 2.35, "unit": "usd",
        "event_time": "2019-03-01T08:15:00Z", "scored_at": "2019-03-01T08:15:00.120Z",
    }))
    assert Prediction.model_validate_json(encode(p)) == p
    with pytest.raises(ValueError):
        Prediction.model_validate_json(encode(p).replace(b'"usd"', b'"eur"'))


def test_prediction_ids_are_uuid5():
    import uuid

    from shared.contract.events import _PREDICTION_NAMESPACE

    for args in (("tip", "v1", "e-1"), ("duration.initial", "v61c22783c0", "sim-123-req"), ("cost", "é", "ü")):
        assert prediction_id(*args) == str(uuid.uuid5(_PREDICTION_NAMESPACE, "\x1f".join(args)))
