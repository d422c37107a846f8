"""The committed JSON Schema files match the models; regenerate with `ridestream schema export`."""

import json

import jsonschema
import orjson

from ridestream.schema_cmd import SCHEMA_DIR, contract_schemas


def test_committed_schemas_are_up_to_date():
    for filename, text in contract_schemas().items():
        committed = SCHEMA_DIR / filename
        assert committed.is_file(), f"{committed} is missing: run `ridestream schema export`"
        assert committed.read_text() == text, f"{committed} is stale: run `ridestream schema export`"


def test_schema_accepts_and_rejects_like_the_models():
    schema = json.loads((SCHEMA_DIR / "ride_event.schema.json").read_text())
    event = {
        "schema_version": 1, "event_id": "e", "event_type": "ride_progress", "ride_id": "r",
        "event_time": "2019-03-01T08:15:00Z", "elapsed_min": 3.0, "distance_done_mi": 1.0,
        "distance_left_mi": 0.5,
    }
    jsonschema.validate(orjson.loads(orjson.dumps(event)), schema)
    for bad in ({**event, "event_type": "ride_teleported"}, {**event, "elapsed_min": -1},
                {k: v for k, v in event.items() if k != "schema_version"}):
        try:
            jsonschema.validate(bad, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")
