"""The fleet on a real broker: end to end, scaling, crashes, drains, poison, a broker restart."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

import consumers.runtime as runtime_module
from broker.local import free_port
from consumers.runtime import Runtime
from consumers.services import TIP
from shared.contract.codec import decode_event
from shared.contract.events import Prediction
from shared.contract.topics import create_topics
from shared.kafka.clients import make_admin, make_consumer, make_producer
from shared.ml.artifacts import Model, load_model
from tests.integration.fleet import Fleet, dedicated_broker, fleet_env, publish, read_all, values, wait_for


@pytest.fixture
def fleet(kafka):
    kafka.create_contract_topics()
    f = Fleet(fleet_env(kafka.env()))
    yield f
    f.close()


def service_predictions(kafka, service: str) -> list[dict]:
    """Predictions of the service itself (not the backend's initial estimates)."""
    return [p for p in values(read_all(kafka.settings, kafka.settings.topics.predictions(service)))
            if not p.get("initial")]


def answered(kafka, service: str, event_ids: set[str]) -> bool:
    return event_ids <= {p["event_id"] for p in service_predictions(kafka, service)}


def of_type(events: list[dict], kind: str) -> set[str]:
    return {e["event_id"] for e in events if e["event_type"] == kind}


def test_end_to_end_every_event_gets_its_predictions(kafka, fleet):
    procs = {s: fleet.start(s) for s in ("duration", "tip", "cost")}
    sent = publish(kafka.settings, rides=120, seed=1)
    requests = of_type(sent, "ride_requested")
    duration_events = requests | of_type(sent, "ride_started") | of_type(sent, "ride_progress")
    assert wait_for(lambda: answered(kafka, "tip", requests) and answered(kafka, "cost", requests)
                    and answered(kafka, "duration", duration_events))
    by_id = {e["event_id"]: e for e in sent}
    for service, expected in (("tip", requests), ("cost", requests), ("duration", duration_events)):
        msgs = read_all(kafka.settings, kafka.settings.topics.predictions(service))
        preds = []
        for m in msgs:
            p = Prediction.model_validate_json(m.value())  # the contract, strictly
            assert m.key() == p.ride_id.encode()
            preds.append(p)
        own = [p for p in preds if not p.initial]
        assert Counter(p.event_id for p in own) == Counter(expected)  # one each, none missing
        for p in own:
            source = by_id[p.event_id]
            assert p.ride_id == source["ride_id"] and p.service == service
            assert p.unit == ("min" if service == "duration" else "usd")
            assert p.event_time.isoformat().replace("+00:00", "Z")[:19] == source["event_time"].isoformat()[:19]
            if source["event_type"] == "ride_progress":
                assert p.remaining_min is not None
                assert p.value == pytest.approx(source["elapsed_min"] + p.remaining_min, abs=0.002)
    initial = [p for p in service_predictions_all(kafka) if p.get("initial")]
    assert {p["event_id"] for p in initial} == requests  # the backend's estimate, at once
    for proc in procs.values():
        assert fleet.terminate(proc) == 0


def service_predictions_all(kafka) -> list[dict]:
    return values(read_all(kafka.settings, kafka.settings.topics.predictions("duration")))


def test_poison_messages_go_to_the_dlq_and_the_rest_is_scored(kafka, fleet):
    good = publish(kafka.settings, rides=20, seed=2)
    request = next(e for e in good if e["event_type"] == "ride_requested")
    base = {**request, "event_time": "2019-03-01T08:00:00Z"}

    def variant(**changes) -> bytes:
        return orjson.dumps({**base, "event_id": f"bad-{len(changes)}-{sorted(changes)}", **changes})

    poison = {
        "json": (b"r-x", b"{not json"),
        "wrong_type": (b"r-x", variant(ride_id="r-x", pickup_zone="142")),
        "unknown_event_type": (b"r-x", variant(ride_id="r-x", event_type="ride_teleported")),
        "zone_999": (b"r-x", variant(ride_id="r-x", pickup_zone=999)),
        "nan": (b"r-x", variant(ride_id="r-x").replace(b'"trip_distance_mi":', b'"trip_distance_mi":NaN,"x":')),
        "empty": (b"r-x", b""),
        "missing_key": (None, variant(ride_id="r-y")),
        "one_megabyte": (b"r-x", b'{"pad":"' + b"x" * 1_000_000 + b'"}'),
    }
    producer = make_producer(kafka.settings, **{"message.max.bytes": 2_097_152})
    for key, value in poison.values():
        producer.produce(kafka.settings.topics.events, key=key, value=value)
    assert producer.flush(30) == 0
    more = publish(kafka.settings, rides=20, seed=3, id_prefix="after")
    proc = fleet.start("tip")
    requests = of_type(good + more, "ride_requested")
    assert wait_for(lambda: answered(kafka, "tip", requests))
    assert wait_for(lambda: len([m for m in read_all(kafka.settings, kafka.settings.topics.dlq)]) >= len(poison))
    dlq = read_all(kafka.settings, kafka.settings.topics.dlq)
    assert len(dlq) == len(poison)
    originals = {value: key for key, value in poison.values()}
    reasons = Counter()
    for m in dlq:
        headers = {k: v.decode() for k, v in m.headers()}
        assert set(headers) == {"error.type", "error.message", "source.topic", "source.partition",
                                "source.offset", "service"}
        assert headers["service"] == "tip" and headers["source.topic"] == kafka.settings.topics.events
        assert (m.value() or b"") in originals and m.key() == originals[m.value() or b""]  # untouched
        assert headers["error.message"] and "\n" not in headers["error.message"]
        reasons[headers["error.type"]] += 1
    assert reasons == Counter({"schema": 4, "json": 1, "unknown_event_type": 1, "empty": 1, "missing_key": 1})
    assert proc.poll() is None  # never died
    assert fleet.terminate(proc) == 0


def test_sigkill_mid_stream_loses_nothing_and_repeats_keep_their_ids(kafka, fleet):
    sent = publish(kafka.settings, rides=100, seed=4)
    # then a stream for the kills to land in (a backlog alone is scored in well under a second)
    feeding = threading.Thread(target=lambda: sent.extend(
        publish(kafka.settings, rides=1200, seed=7, rate=700, id_prefix="stream")))
    feeding.start()
    env_batch = ("--batch-size", "200")
    group = kafka.settings.group_id("tip")
    for _ in range(3):
        proc = fleet.start("tip", *env_batch)
        count = len(service_predictions(kafka, "tip"))
        assert wait_for(lambda: len(service_predictions(kafka, "tip")) > count + 20, timeout=60, every=0.05)
        fleet.kill(proc)
    feeding.join(120)
    requests = of_type(sent, "ride_requested")
    # the killed members' sessions expire (6 s), so that a member seen below is the new process:
    # the killed ones may have answered everything already, and a SIGTERM sent while the new one
    # is still importing would meet no handler yet
    assert wait_for(lambda: members(kafka, group) == 0, timeout=60)
    proc = fleet.start("tip", *env_batch)
    assert wait_for(lambda: answered(kafka, "tip", requests))
    assert wait_for(lambda: members(kafka, group) == 1, timeout=60, every=0.1)
    preds = service_predictions(kafka, "tip")
    ids_by_event: dict[str, set[str]] = {}
    for p in preds:
        ids_by_event.setdefault(p["event_id"], set()).add(p["prediction_id"])
    assert set(ids_by_event) == requests
    assert all(len(ids) == 1 for ids in ids_by_event.values())  # a repeat carries the same id
    assert fleet.terminate(proc) == 0


def test_sigterm_drains_so_a_restart_repeats_nothing(kafka, fleet):
    sent = publish(kafka.settings, rides=100, seed=5)
    # then a stream, not only a backlog: a service scores 400 rides in well under a second
    feeding = threading.Thread(target=lambda: sent.extend(
        publish(kafka.settings, rides=400, seed=6, rate=700, id_prefix="stream")))
    feeding.start()
    group = kafka.settings.group_id("tip")

    def up() -> bool:  # in the group, so well past start-up and its SIGTERM handler
        return members(kafka, group) == 1

    for _ in range(3):
        proc = fleet.start("tip", "--batch-size", "200")
        count = len(service_predictions(kafka, "tip"))
        assert wait_for(up, timeout=60, every=0.1)
        wait_for(lambda: len(service_predictions(kafka, "tip")) > count + 20, timeout=20, every=0.05)
        assert fleet.terminate(proc) == 0
    proc = fleet.start("tip", "--batch-size", "200")
    feeding.join(120)
    requests = of_type(sent, "ride_requested")
    assert wait_for(lambda: answered(kafka, "tip", requests))
    assert wait_for(up, timeout=60, every=0.1)
    preds = service_predictions(kafka, "tip")
    assert Counter(p["event_id"] for p in preds) == Counter(requests)  # exactly once each
    assert fleet.terminate(proc) == 0


def members(kafka, group: str) -> int | None:
    """How many members ``group`` has (None while it cannot be described yet)."""
    try:
        return len(group_assignment(kafka, group))
    except KafkaException:  # no group yet, or its coordinator is still loading
        return None


def group_assignment(kafka, group: str) -> list[list[int]]:
    admin: AdminClient = make_admin(kafka.settings)
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return [sorted(tp.partition for tp in m.assignment.topic_partitions) for m in desc.members]


@pytest.mark.slow
def test_scaling_out_and_in_while_events_flow(kafka, fleet):
    group = kafka.settings.group_id("tip")
    sent: list[dict] = []
    stop = threading.Event()

    def backend() -> None:
        seed = 100
        while not stop.is_set():
            sent.extend(publish(kafka.settings, rides=60, seed=seed, rate=1500, id_prefix=f"s{seed}"))
            seed += 1

    first = fleet.start("tip")
    feeder = threading.Thread(target=backend, daemon=True)
    feeder.start()
    try:
        assert wait_for(lambda: len(group_assignment(kafka, group)) == 1)
        more = [fleet.start("tip"), fleet.start("tip")]
        assert wait_for(lambda: len(group_assignment(kafka, group)) == 3)
        assert wait_for(lambda: all(len(a) == 1 for a in group_assignment(kafka, group)))  # 3 partitions, 1 each
        for proc in more:
            assert fleet.terminate(proc) == 0
        assert wait_for(lambda: group_assignment(kafka, group) == [[0, 1, 2]])
    finally:
        stop.set()
        feeder.join(60)
    requests = of_type(sent, "ride_requested")
    assert wait_for(lambda: answered(kafka, "tip", requests))
    assert fleet.terminate(first) == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="restarting a broker needs the local one")
def test_services_recover_by_themselves_when_the_broker_comes_back(kafka, tmp_path):
    broker, settings = dedicated_broker(kafka.settings, tmp_path)
    f = Fleet(fleet_env({**kafka.env(), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}))
    try:
        proc = f.start("tip")
        sent: list[dict] = []
        feeder = threading.Thread(target=lambda: sent.extend(publish(settings, rides=300, seed=7, rate=600)))
        feeder.start()
        # mid-stream: once the service is scoring (a service that cannot reach a broker when it
        # starts stops with one line, by design; on a loaded machine its start-up can take seconds)
        assert wait_for(lambda: read_all(settings, settings.topics.predictions("tip"), timeout=5), timeout=120), f.output()
        broker.stop()
        time.sleep(5)
        broker.start()
        feeder.join(180)
        requests = of_type(sent, "ride_requested")
        assert len(requests) == 300
        env = type(kafka)(settings)
        assert wait_for(lambda: answered(env, "tip", requests), timeout=180), f.output()
        assert proc.poll() is None
        assert f.terminate(proc) == 0
    finally:
        f.close()
        broker.stop()


def test_predict_is_called_once_per_batch_not_per_message(kafka):
    kafka.create_contract_topics()
    sent = publish(kafka.settings, rides=300, seed=8)
    requests = of_type(sent, "ride_requested")
    calls: list[int] = []

    class CountingEstimator:
        def __init__(self, inner):
            self.inner = inner

        def predict(self, X):
            calls.append(len(X))
            return self.inner.predict(X)

    real = load_model("tip")
    counting = Model(real.name, real.version, CountingEstimator(real.estimator), real.metadata, real.path)
    settings = kafka.settings.model_copy(update={"batch_size": 500})
    runtime = Runtime(TIP, settings, {"tip": counting})
    batches_with_requests: list[int] = []
    process = runtime.process

    def counted(msgs):
        batches_with_requests.append(sum(b'"ride_requested"' in (m.value() or b"") for m in msgs))
        return process(msgs)

    runtime.process = counted
    worker = threading.Thread(target=runtime.run)
    worker.start()
    try:
        assert wait_for(lambda: runtime.totals.predictions >= len(requests))
    finally:
        runtime.stop()
        worker.join(60)
    assert sum(calls) == len(requests)
    assert calls == [n for n in batches_with_requests if n]  # one call per batch, the batch's size
    assert len(calls) < len(requests) / 10


def test_backend_replays_a_real_tlc_file_with_progress_and_initial_estimates(kafka, tmp_path):
    import pandas as pd

    from shared.data.tlc import SAMPLE_TRIPS
    from tests.integration.fleet import RIDESTREAM

    kafka.create_contract_topics()
    sample = tmp_path / "yellow_tripdata_2019-03.csv"
    pd.read_csv(SAMPLE_TRIPS).head(40).to_csv(sample, index=False)
    proc = subprocess.run([*RIDESTREAM, "produce", "--from-tlc", str(sample), "--speedup", "0", "--rate", "0", "--quiet"],
                          env=kafka.env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = [decode_event(m.value()) for m in read_all(kafka.settings, kafka.settings.topics.events)]
    kinds = Counter(e.event_type for e in events)
    rides = kinds["ride_requested"]
    assert 35 <= rides <= 40 and kinds["ride_started"] == kinds["ride_completed"] == rides  # a few rows cleaned away
    assert kinds["ride_progress"] > rides  # progress laid along the real trips
    assert all(e.event_time.year == 2019 for e in events)  # the trips' own times
    assert all(e.initial_duration_min is not None for e in events if e.event_type == "ride_requested")
    initial = [p for p in values(read_all(kafka.settings, kafka.settings.topics.predictions("duration"))) if p.get("initial")]
    assert len(initial) == rides
    assert f"sent {len(events)} events of {rides} rides" in proc.stderr
    assert "warning" not in proc.stderr  # the test's topics keep messages forever


def test_the_backend_warns_when_the_trips_are_older_than_the_topics_keep_them(kafka, tmp_path):
    """A 7-day retention and trips of 2019: the broker would delete them at its next retention check."""
    import pandas as pd

    from shared.data.tlc import SAMPLE_TRIPS
    from shared.kafka.clients import make_admin
    from tests.integration.fleet import RIDESTREAM

    week = kafka.settings.model_copy(update={"retention_hours": 168})
    create_topics(make_admin(week), week.topic_specs())
    sample = tmp_path / "yellow_tripdata_2019-03.csv"
    pd.read_csv(SAMPLE_TRIPS).head(5).to_csv(sample, index=False)
    proc = subprocess.run([*RIDESTREAM, "produce", "--from-tlc", str(sample), "--speedup", "0", "--rate", "0", "--quiet"],
                          env={**kafka.env(), "COLUMNS": "300"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"and {week.topics.events} keeps messages 168 h" in proc.stderr
    assert "RIDESTREAM_RETENTION_HOURS=0" in proc.stderr


def test_metrics_endpoint_counts_what_the_service_did(kafka, fleet):
    import urllib.request

    port = free_port()
    proc = fleet.start("tip", "--metrics-port", str(port))
    sent = publish(kafka.settings, rides=30, seed=9)
    requests = of_type(sent, "ride_requested")
    assert wait_for(lambda: answered(kafka, "tip", requests))

    def metrics() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    assert wait_for(lambda: f'ridestream_predictions_out_total{{service="tip"}} {len(requests)}.0' in metrics())
    text = metrics()
    assert f'ridestream_events_in_total{{event_type="ride_requested",service="tip"}} {len(requests)}.0' in text
    for name in ("ridestream_batch_size_bucket", "ridestream_scoring_seconds_bucket", "ridestream_end_to_end_seconds_bucket",
                 "ridestream_consumer_lag{", 'ridestream_model_info{model="tip"'):
        assert name in text
    assert fleet.terminate(proc) == 0


def test_a_failed_delivery_rewinds_to_the_oldest_unacknowledged_batch_and_commits_only_after(kafka, monkeypatch):
    """Batches are produced without waiting for the previous one's acknowledgements; a failure
    reported for any of them must score them again (same ids) and commit nothing before that —
    neither the batches produced before the failure nor the one already scored behind them."""
    from confluent_kafka import TopicPartition

    from consumers.sinks import KafkaSink

    kafka.create_contract_topics()
    sent = publish(kafka.settings, rides=200, seed=9)
    requests = of_type(sent, "ride_requested")
    # batches that span partitions; settled only by `settled()` below or when the input runs dry
    settings = kafka.settings.model_copy(update={"batch_size": 120, "commit_interval_ms": 600_000})
    monkeypatch.setattr(runtime_module, "HOLD_BACK_FROM", 1)  # every batch is held back, however small
    topic = settings.topics.events
    where = {}  # request event_id → (partition, offset)
    for msg in read_all(settings, topic):
        event = orjson.loads(msg.value())
        if event["event_type"] == "ride_requested":
            where[event["event_id"]] = (msg.partition(), msg.offset())
    commits: list[tuple[int, dict]] = []  # (messages consumed so far, offsets being committed)
    failed_at: list[int] = []  # messages consumed when the failure was reported
    acknowledged: set[str] = set()  # requests whose prediction was produced, then reported durable
    uncovered: list[tuple[str, tuple[int, int], int]] = []  # committed past a request not acknowledged

    def held_back_reads_more() -> bool:
        """The runtime holds a scored batch back that read a partition the batches waiting for
        acknowledgements did not: the failure is injected then (its rewind must cover it too)."""
        held = runtime._deferred
        return held is not None and bool(set(held.first_offsets) - set(runtime._rewind))

    class FailsOnce(KafkaSink):
        """A real sink that reports one failed delivery (see above) and keeps track of which
        requests' predictions it has reported durable."""
        injected = False
        produced: set[str] = set()

        def emit(self, predictions):
            super().emit(predictions)
            FailsOnce.produced.update(p["event_id"] for p in predictions)

        def _report(self, failed: int | None) -> int | None:
            if failed is not None and FailsOnce.injected:
                if not failed:
                    acknowledged.update(FailsOnce.produced)
                FailsOnce.produced = set()
            if failed is None or FailsOnce.injected or not held_back_reads_more():
                return failed
            FailsOnce.injected = True
            FailsOnce.produced = set()  # reported lost
            failed_at.append(runtime.totals.consumed)
            return failed + 1

        def settled(self, within_s: float = 0.0) -> int | None:
            if not FailsOnce.injected:
                if held_back_reads_more():
                    return self._report(super().flush())  # once: wait, so that the failure lands now
                return None  # until then, as if deliveries were outstanding: nothing settles earlier
            return self._report(super().settled(within_s))

        def flush(self) -> int:
            return self._report(super().flush())

    sink = FailsOnce(settings, settings.topics.predictions("tip"), settings.topics.dlq)
    runtime = Runtime(TIP, settings, {"tip": load_model("tip")}, sink=sink)
    commit = runtime._commit_pending

    def recorded(only=None, sync=False):
        commits.append((runtime.totals.consumed, dict(runtime._pending)))
        for (_, partition), offset in runtime._pending.items():
            uncovered.extend((event_id, at, offset) for event_id, at in where.items()
                             if at[0] == partition and at[1] < offset and event_id not in acknowledged)
        return commit(only, sync=sync)

    runtime._commit_pending = recorded
    worker = threading.Thread(target=runtime.run)
    worker.start()
    try:  # the failure is reported when batches first settle (at the latest when the input runs dry)
        assert wait_for(lambda: FailsOnce.injected and len(service_predictions(kafka, "tip")) > len(requests))
    finally:
        runtime.stop()
        worker.join(60)
    predictions = service_predictions(kafka, "tip")
    by_event: dict[str, set[str]] = {}
    for p in predictions:
        by_event.setdefault(p["event_id"], set()).add(p["prediction_id"])
    assert set(by_event) == requests and all(len(ids) == 1 for ids in by_event.values())  # same ids
    assert len(predictions) > len(requests)  # the rewound batches were scored again
    # the failure came before any commit, and what was unsettled then was not committed with it
    assert failed_at and all(consumed > failed_at[0] for consumed, offsets in commits if offsets)
    assert not uncovered, f"committed past requests whose predictions were not durable: {uncovered[:3]}"
    consumer = make_consumer(kafka.settings, settings.group_id("tip"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    consumer.close()
    assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == {p: e for p, e in ends.items() if e > 0}
