"""Replay, backfill and offsets on a real broker."""

from __future__ import annotations

import re
import subprocess
import threading
from datetime import datetime, timedelta, timezone

import pytest

from consumers.offsets import group_offsets
from consumers.sinks import read_predictions
from shared.contract.codec import encode_dict
from shared.kafka.clients import make_consumer, make_producer
from tests.integration.fleet import RIDESTREAM, Fleet, fleet_env, publish, read_all, values, wait_for

T0 = datetime(2019, 3, 5, 13, 0, tzinfo=timezone.utc)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def constructed_rides(kafka, n: int = 60) -> dict[str, dict]:
    """Ride i is requested at T0 + i minutes and completes 15 minutes later, published in event-time
    order as the backend does; message timestamps are the event times; keys spread the rides over
    the partitions."""
    producer = make_producer(kafka.settings)
    rides, outbox = {}, []
    for i in range(n):
        rid = f"ride-{i:03d}"
        requested = {"schema_version": 1, "event_id": f"{rid}-req", "event_type": "ride_requested", "ride_id": rid,
                     "event_time": iso(T0 + timedelta(minutes=i)), "pickup_zone": 142 + i % 20, "dropoff_zone": 236,
                     "trip_distance_mi": 1.0 + i % 7, "passenger_count": 1, "payment_type": 1, "service": "yellow"}
        completed = {"schema_version": 1, "event_id": f"{rid}-done", "event_type": "ride_completed", "ride_id": rid,
                     "event_time": iso(T0 + timedelta(minutes=i + 15)), "duration_min": 15.0, "fare_amount": 12.0,
                     "tip_amount": round(0.5 * (i % 6), 2), "total_amount": 16.0 + round(0.5 * (i % 6), 2)}
        outbox += [(i, rid, requested), (i + 15, rid, completed)]
        rides[rid] = {"requested": requested, "completed": completed}
    for minutes, rid, event in sorted(outbox, key=lambda o: o[0]):
        ts = int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
        producer.produce(kafka.settings.topics.events, key=rid.encode(), value=encode_dict(event), timestamp=ts)
    assert producer.flush(30) == 0
    return rides


def replay(kafka, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([*RIDESTREAM, "replay", *args], env={**kafka.env(), "COLUMNS": "160"},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_time_window_scores_exactly_the_events_inside_it_and_twice_gives_the_same_ids(kafka, tmp_path):
    kafka.create_contract_topics()
    constructed_rides(kafka)
    window = ("--from", iso(T0 + timedelta(minutes=10)), "--to", iso(T0 + timedelta(minutes=40)))
    replay(kafka, "tip", *window, "--output", str(tmp_path / "a.jsonl"))
    replay(kafka, "tip", *window, "--output", str(tmp_path / "b.parquet"))
    a, b = read_predictions(tmp_path / "a.jsonl"), read_predictions(tmp_path / "b.parquet")
    assert sorted(p["ride_id"] for p in a) == [f"ride-{i:03d}" for i in range(10, 40)]
    assert sorted((p["event_id"], p["prediction_id"]) for p in a) == sorted((p["event_id"], p["prediction_id"]) for p in b)
    assert {p["service"] for p in a} == {"tip"} and all(p["value"] >= 0 for p in a)
    # the partitions really were several
    parts = {m.partition() for m in read_all(kafka.settings, kafka.settings.topics.events)}
    assert len(parts) == 3


def test_explicit_partition_offsets_and_csv(kafka, tmp_path):
    kafka.create_contract_topics()
    constructed_rides(kafka, n=20)
    replay(kafka, "cost", "--from", "0:0", "--to", "0:2", "--output", str(tmp_path / "p0.csv"))
    rows = read_predictions(tmp_path / "p0.csv")
    in_p0 = [m for m in read_all(kafka.settings, kafka.settings.topics.events) if m.partition() == 0][:2]
    expected = [m.key().decode() for m in in_p0 if b"ride_requested" in m.value()]
    assert sorted(r["ride_id"] for r in rows) == sorted(expected)


def test_bad_messages_of_a_file_replay_are_kept_beside_the_output(kafka, tmp_path):
    kafka.create_contract_topics()
    constructed_rides(kafka, n=5)
    producer = make_producer(kafka.settings)
    producer.produce(kafka.settings.topics.events, key=b"ride-bad", value=b"\xff not json")
    assert producer.flush(30) == 0
    proc = replay(kafka, "tip", "--output", str(tmp_path / "all.jsonl"))
    assert "1 invalid → " in proc.stderr and "all.jsonl.dlq.jsonl" in proc.stderr
    assert len(read_predictions(tmp_path / "all.jsonl")) == 5
    (bad,) = (tmp_path / "all.jsonl.dlq.jsonl").read_bytes().splitlines()
    assert b"ride-bad" not in bad and b'"error.type"' in bad  # the key is in base64, the reason in clear


def test_an_empty_range_stops_at_once_even_while_the_backend_produces(kafka, tmp_path):
    kafka.create_contract_topics()
    # ~30 s of events: both replays must end while it still runs (20 s once did not, beside a busy worker)
    feeding = threading.Thread(target=publish, args=(kafka.settings,), kwargs={"rides": 2500, "rate": 1500, "seed": 3})
    feeding.start()
    try:
        empty = replay(kafka, "tip", "--from", "latest", "--to", "latest", "--output", str(tmp_path / "e.jsonl"))
        assert "scored 0 events" in empty.stderr and read_predictions(tmp_path / "e.jsonl") == []
        whole = replay(kafka, "tip", "--output", str(tmp_path / "w.jsonl"))  # earliest → latest, fixed at start
        assert feeding.is_alive()  # it stopped by itself while events kept coming
        assert re.search(r"scored [\d,]+ events", whole.stderr)
    finally:
        feeding.join(120)


def test_replay_leaves_the_live_groups_alone_and_backfills_to_its_own_topic(kafka):
    kafka.create_contract_topics()
    publish(kafka.settings, rides=50, seed=4)
    fleet = Fleet(fleet_env(kafka.env()))
    try:
        proc = fleet.start("tip")
        group = kafka.settings.group_id("tip")
        requests = 50
        assert wait_for(lambda: len([p for p in values(read_all(kafka.settings, kafka.settings.topics.predictions("tip")))]) >= requests)
        assert fleet.terminate(proc) == 0
    finally:
        fleet.close()
    reader = make_consumer(kafka.settings, group)
    before = group_offsets(reader, group, kafka.settings.topics.events)
    replay(kafka, "tip")  # default: the backfill topic
    after = group_offsets(reader, group, kafka.settings.topics.events)
    reader.close()
    assert before == after and all(r.lag == 0 for r in after)
    backfill = values(read_all(kafka.settings, kafka.settings.topics.predictions("tip") + ".backfill"))
    live = values(read_all(kafka.settings, kafka.settings.topics.predictions("tip")))
    assert sorted(p["prediction_id"] for p in backfill) == sorted(p["prediction_id"] for p in live)  # same ids


def test_evaluate_reports_the_mae_per_model_version(kafka, tmp_path):
    kafka.create_contract_topics()
    rides = constructed_rides(kafka, n=40)
    proc = replay(kafka, "tip", "--evaluate", "--output", str(tmp_path / "t.jsonl"))
    preds = read_predictions(tmp_path / "t.jsonl")
    errors = [abs(p["value"] - rides[p["ride_id"]]["completed"]["tip_amount"]) for p in preds]
    expected = sum(errors) / len(errors)
    row = re.search(r"│\s*(v[0-9a-f]{10})\s*│\s*40\s*│\s*40\s*│\s*([\d.]+)\s*│", proc.stdout)
    assert row, proc.stdout
    assert row.group(1) == preds[0]["model_version"]
    assert float(row.group(2)) == pytest.approx(expected, abs=0.0006)


def test_offset_reset_is_refused_while_the_group_is_active(kafka):
    kafka.create_contract_topics()
    publish(kafka.settings, rides=20, seed=5)
    env = {**kafka.env(), "COLUMNS": "160"}
    group = kafka.settings.group_id("tip")
    fleet = Fleet(fleet_env(kafka.env()))
    try:
        proc = fleet.start("tip")
        assert wait_for(lambda: len(read_all(kafka.settings, kafka.settings.topics.predictions("tip"))) >= 20)
        refused = subprocess.run([*RIDESTREAM, "offsets", "reset", group, "--to-earliest"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert "active member" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert fleet.terminate(proc) == 0
    finally:
        fleet.close()
    shown = subprocess.run([*RIDESTREAM, "offsets", "show", group], env=env, capture_output=True, text=True, timeout=60)
    assert re.search(r"all\s*│\s*│\s*[\d,]+\s*│\s*0\s*│", shown.stdout), shown.stdout  # caught up
    done = subprocess.run([*RIDESTREAM, "offsets", "reset", group, "--to-earliest"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    reader = make_consumer(kafka.settings, group)
    rows = group_offsets(reader, group, kafka.settings.topics.events)
    reader.close()
    assert all(r.committed == 0 for r in rows) and sum(r.lag for r in rows) == sum(r.end for r in rows)
