"""The services' fast decode path (msgspec) gives the contract's verdict (pydantic) exactly: the
same events with the same values, the same DLQ reasons, and the same prediction bytes."""

from __future__ import annotations

import typing
from datetime import datetime, timezone

import msgspec
import orjson
import pytest

from consumers.scoring import RideMemory, score_batch
from consumers.services import DURATION, TIP
from shared.contract import events as contract
from shared.contract import fast_events
from shared.contract.codec import InvalidMessage, decode_event, read_event, read_events
from shared.ml.artifacts import load_model

T = "2019-03-05T13:00:00.250Z"
VALID = {
    "ride_requested": {"schema_version": 1, "event_type": "ride_requested", "event_id": "e1", "ride_id": "r1",
                       "event_time": T, "pickup_zone": 142, "dropoff_zone": 236, "trip_distance_mi": 2.5,
                       "passenger_count": 1, "payment_type": 1, "service": "yellow", "initial_duration_min": 12.5},
    "ride_started": {"schema_version": 1, "event_type": "ride_started", "event_id": "e2", "ride_id": "r1",
                     "event_time": T},
    "ride_progress": {"schema_version": 1, "event_type": "ride_progress", "event_id": "e3", "ride_id": "r1",
                      "event_time": T, "elapsed_min": 3.0, "distance_done_mi": 0.5, "distance_left_mi": 2},
    "ride_completed": {"schema_version": 1, "event_type": "ride_completed", "event_id": "e4", "ride_id": "r1",
                       "event_time": T, "duration_min": 14.0, "fare_amount": 11.5, "tip_amount": 0,
                       "total_amount": 15.3},
}
RAW = "@@raw@@"  # a value written into the JSON as is (numbers Python cannot encode)
VALUES = [None, True, False, 0, -1, 1, 1.0, 1.5, 6, 7, 9, 10, 265, 266, -0.0, 1e308, RAW + "1e999", RAW + "-1e999",
          RAW + "1E2", RAW + "2.50e0", 2**63, "3", "", "x" * 128, "x" * 129, "é" * 128, "é" * 129, [], {}, "yellow",
          "green", "YELLOW", "ride_started", "2019-03-05T13:00:00Z", "2019-03-05T13:00:00+00:00",
          "2019-03-05T13:00:00-00:00", "2019-03-05T14:00:00+01:00", "2019-03-05T13:00:00", "2019-03-05 13:00:00Z",
          "2019-03-05t13:00:00z", "2019-03-05T13:00Z", "2019-03-05T13:00:00.123456Z", "2019-03-05",
          "2019-03-05T24:00:00Z", "2019-02-29T13:00:00Z", "2019-03-05T13:00:60Z", "0001-01-01T00:00:00Z",
          "9999-12-31T23:59:59.999999Z", 1551790800]


def raw(payload: dict) -> bytes:
    """``payload`` as JSON, RAW-marked strings written as bare tokens."""
    parts = []
    for k, v in payload.items():
        token = v[len(RAW):] if isinstance(v, str) and v.startswith(RAW) else orjson.dumps(v).decode()
        parts.append(f"{orjson.dumps(k).decode()}:{token}")
    return ("{" + ",".join(parts) + "}").encode()


def mutations() -> list[bytes]:
    out = [raw(v) for v in VALID.values()]
    for base in VALID.values():
        for field in [*base, "unknown_extra"]:
            out.append(raw({k: v for k, v in base.items() if k != field}))
            out += [raw({**base, field: value}) for value in VALUES]
    first = raw(VALID["ride_started"])
    out += [b"", b" ", b"null", b"[]", b"3", b'"ride_started"', b"{", first + b" x", b" " + first + b"\n",
            b"\xff" + first, first.replace(b'"e2"', b'"\\ud800"'), first.replace(b'"e2"', b'"\xc3\x28"'),
            first.replace(b'"event_id":"e2"', b'"event_id":"e2","event_id":""'),
            first.replace(b'"event_id":"e2"', b'"event_id":"","event_id":"e2"'),
            first.replace(b'"event_type":"ride_started"', b'"event_type":"ride_started","event_type":"ride_x"')]
    return out


def verdict(decode, value: bytes):
    try:
        return decode(value), None
    except InvalidMessage as exc:
        return None, (exc.error_type, exc.message)


def fields(event) -> dict:
    if isinstance(event, contract.WireModel):
        return event.model_dump()
    return {**msgspec.structs.asdict(event), "event_type": event.event_type}


def test_the_structs_mirror_the_contract_models_field_for_field():
    models = typing.get_args(typing.get_args(contract.RideEvent)[0])
    assert len(models) == len(fast_events.FAST_EVENTS)
    for model, struct in zip(models, fast_events.FAST_EVENTS):
        info = msgspec.structs.fields(struct)
        assert struct.event_type == model.model_fields["event_type"].default == struct.__struct_config__.tag
        wire = {n: f for n, f in model.model_fields.items() if n != "event_type"}
        assert {f.name for f in info} == set(wire), struct
        for f in info:
            if f.name == "schema_version":  # required on the fast path (codec's key count); pydantic defaults it
                assert f.required and not wire[f.name].is_required(), struct
                continue
            assert f.required == wire[f.name].is_required(), (struct, f.name)
            if not f.required:
                assert f.default == wire[f.name].default, (struct, f.name)


def test_the_fast_path_gives_the_contracts_verdict_on_every_mutation():
    fast_taken = 0
    for value in mutations():
        slow, slow_reason = verdict(decode_event, value)
        fast, fast_reason = verdict(read_event, value)
        assert fast_reason == slow_reason, value
        if slow is not None:
            assert fields(fast) == fields(slow), value
            fast_taken += isinstance(fast, fast_events.FAST_EVENTS)
    assert fast_taken > 100  # the fast path really decides most of the valid ones


def test_valid_events_take_the_fast_path_and_non_utc_times_do_not():
    for payload in VALID.values():
        assert isinstance(read_event(raw(payload)), fast_events.FAST_EVENTS)
    with pytest.raises(InvalidMessage, match="UTC"):
        read_event(raw({**VALID["ride_started"], "event_time": "2019-03-05T14:00:00+01:00"}))


def test_a_batch_is_read_in_one_pass_only_when_every_value_would_take_the_fast_path():
    values = [raw({**payload, "event_id": f"e{i}"}) for i, payload in enumerate(VALID.values())]
    one_pass = read_events(values)
    assert one_pass is not None and [fields(e) for e in one_pass] == [fields(read_event(v)) for v in values]
    assert read_events([]) == []
    for odd in mutations():  # any value that one alone would not decide sends the batch one by one
        try:
            alone = read_event(odd)
        except InvalidMessage:
            alone = None
        together = read_events([values[0], odd, values[1]])
        if isinstance(alone, fast_events.FAST_EVENTS):
            assert together is not None and fields(together[1]) == fields(alone), odd
        else:
            assert together is None, odd
    assert read_events([values[0], None]) is None


@pytest.mark.parametrize("spec", [TIP, DURATION], ids=lambda s: s.name)
def test_predictions_are_byte_identical_whichever_path_decoded_the_events(spec):
    models = {name: load_model(name) for name in spec.model_names}
    values = [raw({**VALID[kind], "event_id": f"{kind}-{i}", "ride_id": f"r{i}",
                   "event_time": f"2019-03-05T13:{i % 60:02d}:0{i % 10}.{i:03d}Z"})
              for i in range(120) for kind in ("ride_requested", "ride_progress")]
    at = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    fast = score_batch(spec, models, RideMemory(1000), [read_event(v) for v in values], at)
    slow = score_batch(spec, models, RideMemory(1000), [decode_event(v) for v in values], at)
    assert [b for p in fast.parts for b in p.encoded()] == [b for p in slow.parts for b in p.encoded()]
    assert len(fast) > 0


def _twice(payload: dict, key: str, spaced: bool = False) -> bytes:
    """``payload`` with ``key`` written a second time (another value), last, as a hostile producer would."""
    text = raw(payload)[:-1] + (b', "%s" : ' if spaced else b',"%s":') % key.encode()
    return text + orjson.dumps(payload[key] if key in ("event_time", "schema_version") else "other") + b"}"


@pytest.mark.parametrize("spaced", [False, True])
def test_a_key_named_twice_is_bad_json_whichever_path_reads_it(spaced):
    for payload in VALID.values():
        for key in ("ride_id", "event_id", "event_time", "rider_id"):
            value = _twice({**payload, "rider_id": "rider-1"}, key, spaced)
            for read in (decode_event, read_event):
                with pytest.raises(InvalidMessage, match=f"not valid JSON: the key '{key}' appears twice"):
                    read(value)
            assert read_events([raw(VALID["ride_started"]), value]) is None  # the batch goes one by one


def test_a_key_named_twice_is_found_whatever_valid_values_share_its_batch():
    """The batch counts colons for all its values together: no valid value may make up for another's
    duplicate key (an event without schema_version once did, under a live service's larger batches)."""
    valid = []
    for value in mutations():
        try:
            valid.append(value) if decode_event(value) else None
        except InvalidMessage:
            pass
    twice = [_twice({**p, "rider_id": "rider-1"}, key) for p in VALID.values()
             for key in ("ride_id", "event_id", "event_time", "rider_id", "schema_version")]
    assert len(valid) > 100
    for value in twice:
        with pytest.raises(InvalidMessage, match="appears twice"):
            read_event(value)
        for other in valid:
            assert read_events([other, value]) is None, (other, value)


def test_the_batch_check_keeps_the_fast_path_for_ordinary_batches_and_is_exact_on_odd_ones():
    ordinary = [raw({**p, "event_id": f"e{i}", "rider_id": f"rider-{i % 2}" if i % 3 else None})
                for i, p in enumerate([*VALID.values()] * 3)]
    ordinary = [v.replace(b',"rider_id":null', b"") for v in ordinary]  # absent, as the backend writes it
    assert read_events(ordinary) is not None
    # a colon inside an id, an explicit null, an offset instead of Z: valid, read one by one
    for odd in ({**VALID["ride_started"], "event_id": "a:b"}, {**VALID["ride_started"], "rider_id": None},
                {**VALID["ride_started"], "event_time": "2019-03-05T13:00:00+00:00"}):
        assert read_events([*ordinary, raw(odd)]) is None
        assert read_event(raw(odd)).ride_id == "r1"


@pytest.mark.parametrize("value", [b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[" * 100_000 + b"]" * 100_000])
def test_nesting_deeper_than_the_parsers_follow_is_bad_json_not_a_crash(value):
    assert read_events([raw(VALID["ride_started"]), value]) is None
    with pytest.raises(InvalidMessage, match="not valid JSON: recursion limit exceeded"):
        read_event(value)
