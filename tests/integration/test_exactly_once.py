"""Exactly-once on a real broker (RIDESTREAM_PROCESSING=exactly_once): a read_committed reader sees
every expected prediction exactly once though the service is SIGKILLed mid-transaction three times,
or the broker goes away mid-stream; a process whose transactional id is taken over stops with one line."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import TopicPartition

from shared.kafka.clients import make_consumer, make_transactional_producer
from shared.kafka.reading import read_to_end
from shared.kafka.settings import Settings
from tests.integration.fleet import Fleet, dedicated_broker, fleet_env, publish, read_all, values, wait_for

EOS = {"RIDESTREAM_PROCESSING": "exactly_once"}
ANSWERED = ("ride_requested", "ride_started", "ride_progress")  # what the duration service answers


def committed_total(settings: Settings, group: str) -> int:
    """How many input offsets ``group`` has committed, over the events topic's partitions."""
    topic = settings.topics.events
    consumer = make_consumer(settings, group)
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    except Exception:  # the coordinator moving or away: not yet
        return -1
    finally:
        consumer.close()


def own_predictions(settings: Settings) -> list[dict]:
    """The duration service's committed predictions (the backend's initial estimates left out)."""
    return [p for p in values(read_all(settings, settings.topics.predictions("duration"), timeout=60))
            if not p.get("initial")]


def check_exactly_once(settings: Settings, sent: list[dict]) -> list[dict]:
    expected = {e["event_id"] for e in sent if e["event_type"] in ANSWERED}
    # a killed process's open transaction holds read_committed readers until the broker aborts it
    # (RIDESTREAM_TRANSACTION_TIMEOUT_MS): until then its partitions end early
    assert wait_for(lambda: expected <= {p["event_id"] for p in own_predictions(settings)}, timeout=120)
    preds = own_predictions(settings)
    by_id = Counter(p["prediction_id"] for p in preds)
    assert [i for i, n in by_id.items() if n > 1] == []  # 0 duplicates
    assert Counter(p["event_id"] for p in preds) == Counter(expected)  # 0 missing, none twice, nothing else
    return preds


def uncommitted_predictions(settings: Settings) -> int:
    """What a read_uncommitted reader sees: aborted transactions' records too."""
    topic = settings.topics.predictions("duration")
    return sum(1 for m in read_to_end(settings, topic, timeout=60, **{"isolation.level": "read_uncommitted"})
               if not orjson.loads(m.value()).get("initial"))


@pytest.mark.slow
def test_three_sigkills_during_100k_events_leave_every_prediction_exactly_once(kafka):
    kafka.create_contract_topics()
    settings = kafka.settings
    fleet = Fleet(fleet_env(kafka.env(), **EOS))
    group = settings.group_id("duration")
    sent: list[dict] = []
    # ~100,000 events (17.4 per ride) at 2,500 a second: the kills land mid-stream
    feeder = threading.Thread(target=lambda: sent.extend(publish(settings, rides=5750, seed=21, rate=2500)))
    feeder.start()
    try:
        for _ in range(3):
            before = committed_total(settings, group)
            proc = fleet.start("duration", "--batch-size", "500")
            # killed once it has committed transactions of its own (offsets commit within them)
            assert wait_for(lambda: committed_total(settings, group) > before + 3000, timeout=120, every=0.2), \
                fleet.output()
            fleet.kill(proc)
        proc = fleet.start("duration", "--batch-size", "500")
        feeder.join(300)
        assert len(sent) > 99_000
        preds = check_exactly_once(settings, sent)
        assert fleet.terminate(proc) == 0
    finally:
        fleet.close()
    # the kills did land inside transactions: their aborted output is in the log, unread
    assert uncommitted_predictions(settings) > len(preds)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="restarting a broker needs the local one")
def test_a_broker_restart_mid_stream_leaves_every_prediction_exactly_once(kafka, tmp_path):
    broker, settings = dedicated_broker(kafka.settings, tmp_path)
    fleet = Fleet(fleet_env({**kafka.env(), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}, **EOS))
    group = settings.group_id("duration")
    try:
        proc = fleet.start("duration", "--batch-size", "500")
        sent: list[dict] = []
        feeder = threading.Thread(target=lambda: sent.extend(publish(settings, rides=1500, seed=22, rate=1500)))
        feeder.start()
        assert wait_for(lambda: committed_total(settings, group) > 3000, timeout=120, every=0.2), fleet.output()
        broker.stop()  # mid-stream, mid-transaction
        time.sleep(5)
        broker.start()
        feeder.join(300)
        check_exactly_once(settings, sent)
        assert proc.poll() is None, fleet.output()  # it went on by itself
        assert fleet.terminate(proc) == 0
    finally:
        fleet.close()
        broker.stop()


def test_a_process_whose_transactional_id_is_taken_over_stops_with_one_line(kafka):
    kafka.create_contract_topics()
    settings = kafka.settings
    fleet = Fleet(fleet_env(kafka.env(), **EOS))
    group = settings.group_id("tip")
    try:
        proc = fleet.start("tip")
        publish(settings, rides=20, seed=23)
        assert wait_for(lambda: committed_total(settings, group) > 0, timeout=120), fleet.output()
        # a second instance under the same id (as a copied pod spec would give it) fences the first
        tid = settings.transactional_id("tip", group, f"{socket.gethostname()}:{proc.pid}")
        usurper = make_transactional_producer(settings, tid)
        publish(settings, rides=20, seed=24, id_prefix="after")
        assert proc.wait(120) == 3, fleet.output()
        out = fleet.output()
        assert "tip: stopped: fenced: another process took over transactional id" in out
        assert "Traceback" not in out
        usurper.flush(5)
    finally:
        fleet.close()
