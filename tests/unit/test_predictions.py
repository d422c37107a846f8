"""The column-wise prediction bytes are exactly what encoding each record gives."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from shared.contract.codec import decode_event, encode_dict
from shared.contract.events import _PREDICTION_NAMESPACE, Prediction, prediction_id_bytes, prediction_ids
from shared.contract.predictions import PredictionColumns, Predictions

UTC = timezone.utc
AWKWARD_IDS = ["r-1", 'quo"te', "back\\slash", 'a","b', "comma,", "tab\tnew\nline", "\x00\x1f", "üñí©ødé", "🚕",
               "%s%b%%", "x" * 120, "end\\", '"', ","]


def columns(n: int, remaining: bool, version: str = "20260101-abc", service: str = "duration") -> PredictionColumns:
    ids = [AWKWARD_IDS[i % len(AWKWARD_IDS)] + str(i) for i in range(n)]
    base = datetime(2019, 3, 1, 8, 15, tzinfo=UTC)
    times = [base + timedelta(microseconds=137 * i * i) for i in range(n)]  # with and without microseconds
    times[:2] = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    values = [0.0, 0.001, 1.5, 12.345, 123456.789, 1e16, 3e-3, 7.0, 99999999.999][: n] + [i / 7 for i in range(max(n - 9, 0))]
    return PredictionColumns(service, version, ids[::-1], ids, times, values[:n],
                             datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=UTC),
                             remaining_min=[round(v / 3, 3) for v in values[:n]] if remaining else None)


@pytest.mark.parametrize("variant", [None, "candidate"])
@pytest.mark.parametrize("remaining", [False, True])
def test_encoded_bytes_equal_encoding_each_record(remaining, variant):
    part = columns(60, remaining)
    part.variant = variant
    records = part.records()
    assert all(r.get("variant") == variant for r in records)
    assert part.encoded() == [encode_dict(r) for r in records]
    for value, record in zip(part.encoded(), records):
        assert Prediction.model_validate_json(value).prediction_id == record["prediction_id"]
    assert part.keys() == [r["ride_id"].encode() for r in records]


def test_constants_with_percent_signs_and_quotes_are_literal():
    part = columns(5, False, version='v%s"1')
    assert part.encoded() == [encode_dict(r) for r in part.records()]


def test_prediction_ids_are_uuid5_computed_for_the_whole_batch():
    event_ids = AWKWARD_IDS + [f"e-{i}" for i in range(500)]
    got = prediction_id_bytes("tip", "v3", event_ids)
    want = [str(uuid.uuid5(_PREDICTION_NAMESPACE, f"tip\x1fv3\x1f{e}")) for e in event_ids]
    assert [g.decode() for g in got] == want == prediction_ids("tip", "v3", event_ids)
    assert prediction_id_bytes("tip", "v3", []) == []
    for few in range(1, 30):  # small batches take another path to the same ids
        assert prediction_id_bytes("tip", "v3", event_ids[:few]) == got[:few]


def test_predictions_read_as_records_across_parts_and_skip_empty_parts():
    a, b, empty = columns(3, False), columns(4, True, service="duration"), columns(0, False)
    preds = Predictions([a, empty, b])
    assert len(preds) == 7 and len(preds.parts) == 2
    assert list(preds) == a.records() + b.records() and preds[3] == b.records()[0]
    assert Predictions([]).parts == [] and len(Predictions()) == 0


def test_event_times_from_decoded_events_encode_the_same():
    event = decode_event(b'{"schema_version":1,"event_id":"e","ride_id":"r","event_type":"ride_started",'
                         b'"event_time":"2019-03-01T08:15:00.5+00:00"}')
    part = PredictionColumns("tip", "v1", ["r"], ["e"], [event.event_time], [1.0], event.event_time)
    assert part.encoded() == [encode_dict(r) for r in part.records()]
    assert b'"event_time":"2019-03-01T08:15:00.500000Z"' in part.encoded()[0]
