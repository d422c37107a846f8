"""Hostile input through a running service on the real broker: hypothesis writes 10,000 malformed
and adversarial messages — bytes that are not UTF-8, deep nesting, huge strings and integers, NaN
and Infinity, keys named twice, wrong types, missing and extra fields, odd headers, null and wrong
keys — between valid events. The service must not crash; every message the contract refuses must
reach the DLQ with the contract's reason, and every valid event must be scored."""

from __future__ import annotations

import json
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contract.codec import InvalidMessage, decode_event
from shared.kafka.clients import make_producer
from tests.integration.fleet import Fleet, fleet_env, read_all, wait_for

pytestmark = pytest.mark.slow

BATCHES, PER_BATCH = 500, 20  # 10,000 hostile messages (few draws per example: hypothesis stays fast)
HUGE = (900_000, 2_040_000)  # about 1 MiB; and a value the events topic takes but the DLQ cannot (2 MiB)

zones, ids = st.integers(1, 265), st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


@st.composite
def valid_request(draw, n: int) -> dict:
    return {"schema_version": 1, "event_type": "ride_requested", "event_id": f"ok-{n}-{draw(ids)}",
            "ride_id": f"ride-{n}", "event_time": "2026-11-30T08:00:00.250Z", "pickup_zone": draw(zones),
            "dropoff_zone": draw(zones), "trip_distance_mi": draw(st.floats(0, 60)),
            "passenger_count": draw(st.integers(0, 9)), "payment_type": draw(st.integers(1, 6)),
            "service": draw(st.sampled_from(["yellow", "green"]))}


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True),
                 st.text(max_size=20), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                             st.integers(), max_size=2))


@st.composite
def hostile(draw, n: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of one message, hostile or — one time in five — valid with odd headers."""
    event = draw(valid_request(n))
    key = event["ride_id"].encode()
    kind = draw(st.sampled_from(["bytes", "bytes", "deep", "huge_int", "nan", "duplicate", "wrong_type",
                                 "wrong_type", "missing", "extra", "null_key", "wrong_key", "valid", "valid",
                                 "not_an_object", "empty"]))
    headers = [(draw(st.text(max_size=8)), draw(st.binary(max_size=8)))] if draw(st.booleans()) else []
    if kind == "bytes":
        return key, draw(st.binary(min_size=1, max_size=300)), headers
    if kind == "deep":
        depth = draw(st.integers(50, 5_000))
        return key, b'{"a":' * depth + b"1" + b"}" * depth, headers
    if kind == "huge_int":
        return key, orjson.dumps(event).replace(b'"pickup_zone":', b'"pickup_zone":1' + b"0" * 500 + b",\"x\":"), headers
    if kind == "nan":
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
        return key, orjson.dumps(event).replace(b'"trip_distance_mi":', b'"trip_distance_mi":' + token + b",\"y\":"), headers
    if kind == "duplicate":
        field = draw(st.sampled_from(["ride_id", "event_id", "pickup_zone", "event_type"]))
        return key, orjson.dumps(event)[:-1] + b',"' + field.encode() + b'":' + orjson.dumps(event[field]) + b"}", headers
    if kind == "wrong_type":
        field = draw(st.sampled_from(sorted(event)))
        return key, json.dumps({**event, field: draw(JUNK)}).encode(), headers
    if kind == "missing":
        field = draw(st.sampled_from(sorted(event)))
        return key, orjson.dumps({k: v for k, v in event.items() if k != field}), headers
    if kind == "extra":  # unknown extra fields are ignored: still valid
        return key, orjson.dumps({**event, "x_" + draw(st.text(max_size=10)): draw(st.text(max_size=20))}), headers
    if kind == "null_key":
        return None, orjson.dumps(event), headers
    if kind == "wrong_key":
        return b"someone-else", orjson.dumps(event), headers
    if kind == "not_an_object":
        return key, json.dumps(draw(JUNK)).encode(), headers
    if kind == "empty":
        return key, b"", headers
    return key, orjson.dumps(event), [*headers, ("odd-header-ü", b"\xff\xfe")]


def verdict(key: bytes | None, value: bytes | None) -> str | None:
    """The contract's reason for refusing a message, as the services write it in error.type (None: valid)."""
    try:
        event = decode_event(value)
    except InvalidMessage as exc:
        return exc.error_type
    if key is None:
        return "missing_key"
    if key != event.ride_id.encode():
        return "key_mismatch"
    return None


def unaccounted(settings, topics) -> str:
    """For a failure's message: the refused messages with no dead letter (partition/offset, the
    contract's reason, the value's first bytes) and the sources dead-lettered more than once —
    a lost dead letter and a short read of the DLQ look alike by their counts only."""
    letters = Counter()
    for m in read_all(settings, topics.dlq, timeout=60):
        h = {k: v for k, v in m.headers() or []}
        letters[(int(h.get("source.partition", b"-1")), int(h.get("source.offset", b"-1")))] += 1
    missing = []
    for m in read_all(settings, topics.events, timeout=60):
        reason = verdict(m.key(), m.value())
        if reason is not None and (m.partition(), m.offset()) not in letters:
            missing.append(f"{m.partition()}/{m.offset()} {reason} {(m.value() or b'')[:60]!r}")
    twice = [f"{p}/{o}" for (p, o), n in letters.items() if n > 1]
    return f"no dead letter for {missing[:20]}; dead-lettered more than once: {twice[:20]}"


def test_ten_thousand_hostile_messages_through_a_running_service(kafka):
    kafka.create_contract_topics()
    topics = kafka.settings.topics
    producer = make_producer(kafka.settings, **{"message.max.bytes": kafka.settings.max_message_bytes})
    expected_reasons: Counter = Counter()
    valid_requests: set[str] = set()
    sent = [0]

    @settings(max_examples=BATCHES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def send_a_batch(data):
        for _ in range(PER_BATCH):
            key, value, headers = data.draw(hostile(sent[0]))
            sent[0] += 1
            producer.produce(topics.events, key=key, value=value, headers=headers)
            producer.poll(0)
            reason = verdict(key, value)
            if reason is None:
                valid_requests.add(orjson.loads(value)["event_id"])
            else:
                expected_reasons[reason] += 1

    fleet = Fleet(fleet_env(kafka.env()))
    try:
        service = fleet.start("tip")
        send_a_batch()
        for i, size in enumerate(HUGE * 5):  # and a few huge strings, not drawn: 10 MB of them is plenty
            huge = orjson.dumps({"schema_version": 1, "event_type": "ride_started", "event_id": "x" * size,
                                 "ride_id": f"huge-{i}", "event_time": "2026-11-30T08:00:00Z"})
            producer.produce(topics.events, key=f"huge-{i}".encode(), value=huge)
            expected_reasons[verdict(f"huge-{i}".encode(), huge)] += 1
            sent[0] += 1
        assert producer.flush(60) == 0
        assert sent[0] >= BATCHES * PER_BATCH
        bad = sum(expected_reasons.values())

        def done() -> bool:
            return (len(read_all(kafka.settings, topics.dlq, timeout=60)) >= bad
                    and len(read_all(kafka.settings, topics.predictions("tip"), timeout=60)) >= len(valid_requests))

        assert wait_for(done, timeout=300, every=3), (
            f"the service did not get through the hostile traffic: {bad} bad, {len(valid_requests)} valid sent; "
            f"{len(read_all(kafka.settings, topics.dlq))} dead letters, "
            f"{len(read_all(kafka.settings, topics.predictions('tip')))} predictions; "
            f"{unaccounted(kafka.settings, topics)}; {fleet.output()}")
        assert service.poll() is None, "the service died"
        log = (fleet.logs / "tip-1.log").read_text()
    finally:
        fleet.close()
    assert "Traceback" not in log
    dead = read_all(kafka.settings, topics.dlq, timeout=60)
    reasons = Counter(dict(m.headers())["error.type"].decode() for m in dead)
    assert reasons == expected_reasons  # every refused message, once, with the contract's reason
    bodiless = [m for m in dead if m.value() is None]
    assert len(bodiless) == 5 and all(dict(m.headers())["dlq.body"].startswith(b"omitted: 2,04") for m in bodiless)
    answered = {orjson.loads(m.value())["event_id"] for m in read_all(kafka.settings, topics.predictions("tip"))}
    assert answered == valid_requests  # every valid event scored, nothing else
    assert len(valid_requests) > 500 and len(expected_reasons) >= 6  # the mix was really mixed
