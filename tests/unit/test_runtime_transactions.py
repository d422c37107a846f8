"""Exactly-once without a broker: one transaction per commit interval holding the batches' output
and input offsets; an abortable error aborts and rewinds to the committed offsets (the held-back
batch dropped); a retriable one is retried; a fenced producer stops the process, committing nothing."""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from consumers.runtime import HOLD_BACK_FROM, Runtime
from consumers.services import TIP
from consumers.transactions import Fenced, Transactions
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_model
from tests.unit.test_runtime_hold_back import IdleConsumer, Recording, messages


class FakeProducer:
    """Records the transaction calls; ``fail[name]`` is a list of errors the next calls raise."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.fail: dict[str, list[KafkaError]] = {}

    def _call(self, name: str, *args) -> None:
        self.calls.append((name, *args))
        errors = self.fail.get(name)
        if errors:
            raise KafkaException(errors.pop(0))

    def begin_transaction(self):
        self._call("begin")

    def send_offsets_to_transaction(self, positions, group_metadata, timeout=None):
        self._call("offsets", {(tp.topic, tp.partition): tp.offset for tp in positions}, group_metadata)

    def commit_transaction(self, timeout=None):
        self._call("commit")

    def abort_transaction(self, timeout=None):
        self._call("abort")

    def purge(self):
        self.calls.append(("purge",))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


class GroupConsumer(IdleConsumer):
    """Partition 0 of ``events`` assigned, committed at ``committed_at``; seeks recorded."""

    def __init__(self, committed_at: int = 5):
        super().__init__()
        self.committed_at = committed_at
        self.seeks: list[tuple[int, int]] = []

    def consumer_group_metadata(self):
        return "group-metadata"

    def assignment(self):
        return [TopicPartition("events", 0)]

    def committed(self, partitions, timeout=None):
        return [TopicPartition(tp.topic, tp.partition, self.committed_at) for tp in partitions]

    def seek(self, tp):
        self.seeks.append((tp.partition, tp.offset))

    def close(self):
        pass


def runtime(interval_ms: int = 60_000) -> tuple[Runtime, FakeProducer, GroupConsumer, Recording]:
    settings = Settings(commit_interval_ms=interval_ms, processing="exactly_once", drift=False, _env_file=None)
    sink, consumer, producer = Recording(), GroupConsumer(), FakeProducer()
    rt = Runtime(TIP, settings, {"tip": load_model("tip")}, sink=sink, input_topic="events")
    rt.consumer = consumer
    rt.txn = Transactions(producer, "ridestream-tip-tx.test", timeout_s=1)
    return rt, producer, consumer, sink


def error(code: int, **kind: bool) -> KafkaError:
    return KafkaError(code, "injected", **kind)


def test_one_transaction_holds_every_batch_of_the_interval_with_its_offsets():
    rt, producer, consumer, sink = runtime()
    rt.process(messages(10, 0, seed=1))
    rt.process(messages(10, 10, seed=2))
    assert producer.names() == ["begin"] and len(sink.emitted) == 20  # one transaction, still open
    rt.txn.since -= 60  # the interval passes
    rt._settle_if_due()
    assert producer.calls[1:] == [("offsets", {("events", 0): 20}, "group-metadata"), ("commit",)]
    assert consumer.commits == []  # offsets go only through the transaction
    rt.process(messages(10, 20, seed=3))
    assert producer.names()[-1] == "begin"  # the next batch opens the next transaction


def test_commit_interval_zero_commits_a_transaction_per_batch():
    rt, producer, _, _ = runtime(interval_ms=0)
    rt.process(messages(10, 0, seed=1))
    rt.process(messages(10, 10, seed=2))
    assert producer.names() == ["begin", "offsets", "commit"] * 2


def test_an_abortable_error_aborts_and_rewinds_to_the_committed_offsets():
    rt, producer, consumer, _ = runtime()
    rt.process(messages(10, 0, seed=1))
    rt.process(messages(HOLD_BACK_FROM, 10, seed=2))  # held back: read after, dropped by the rewind
    assert rt._deferred is not None
    producer.fail["commit"] = [error(KafkaError._INCONSISTENT, txn_requires_abort=True)]
    rt.txn.since -= 60
    rt._settle_if_due()
    assert producer.names() == ["begin", "offsets", "commit", "abort"]
    assert consumer.seeks == [(0, 5)] and rt._deferred is None and not rt.txn.open
    assert rt.txn.aborted == 1 and rt.txn.committed == 0
    rt.process(messages(10, 5, seed=1))  # read again from the commit: a new transaction
    assert producer.names()[-1] == "begin"


def test_a_partition_never_committed_rewinds_to_its_beginning():
    rt, producer, consumer, _ = runtime()
    consumer.committed_at = -1001  # OFFSET_INVALID: no commit yet
    rt.process(messages(10, 0, seed=1))
    producer.fail["offsets"] = [error(KafkaError.ILLEGAL_GENERATION, txn_requires_abort=True)]
    rt.txn.since -= 60
    rt._settle_if_due()
    assert producer.names() == ["begin", "offsets", "abort"] and consumer.seeks == [(0, OFFSET_BEGINNING)]


def test_a_failed_produce_aborts_instead_of_committing():
    rt, producer, consumer, sink = runtime()

    def refuses(predictions):
        raise KafkaException(error(KafkaError._STATE, txn_requires_abort=True))

    sink.emit = refuses
    rt.process(messages(10, 0, seed=1))
    # aborted as the batch settles (no commit of it), and read again from the committed offsets
    assert producer.names() == ["begin", "abort"] and consumer.seeks == [(0, 5)] and not rt._abort_pending


def test_a_retriable_error_is_retried():
    rt, producer, _, _ = runtime()
    rt.process(messages(10, 0, seed=1))
    producer.fail["commit"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    rt.txn.since -= 60
    rt._settle_if_due()
    assert producer.names() == ["begin", "offsets", "commit", "commit"] and rt.txn.committed == 1


def test_a_fenced_producer_stops_the_process_and_commits_nothing_more():
    rt, producer, consumer, sink = runtime(interval_ms=1000)
    rt.sink.producer = producer
    rt.process(messages(10, 0, seed=1))
    producer.fail["offsets"] = [error(KafkaError._FENCED, fatal=True)]
    rt.txn.since -= 2  # the interval passes; the transaction is younger than its timeout (10 s)
    with pytest.raises(Fenced, match="fenced: another process took over transactional id 'ridestream-tip-tx.test'"):
        rt._settle_if_due()
    rt._close()
    assert producer.names() == ["begin", "offsets", "purge"]  # no commit, no abort: the new owner aborts it
    assert consumer.seeks == [] and consumer.commits == []


def test_partitions_lost_abort_the_transaction_and_the_rest_rewinds():
    rt, producer, consumer, _ = runtime()
    rt.process(messages(10, 0, seed=1))
    rt._on_lost(consumer, [TopicPartition("events", 0)])
    assert producer.names() == ["begin", "abort"]
    assert consumer.seeks == []  # the only partition was lost: nothing of ours to rewind


def test_a_transactional_id_names_namespace_service_group_and_process():
    s = Settings(namespace="t1.", _env_file=None)
    assert s.transactional_id("tip", s.group_id("tip"), "host:42") == "t1.ridestream-tip-tx.t1.ridestream-tip.host:42"
    assert not Settings(_env_file=None).exactly_once
    assert Settings(processing="exactly_once", _env_file=None).exactly_once


def test_a_transaction_the_broker_timed_out_gets_a_new_producer_and_rewinds():
    """A fatal error in a transaction older than transaction.timeout.ms: the coordinator aborted it
    and bumped the epoch (the process stalled), not another instance — go on, as Kafka Streams does."""
    rt, producer, consumer, sink = runtime()
    fresh = FakeProducer()
    sink.renew = lambda purge=True: fresh
    rt.process(messages(10, 0, seed=1))
    producer.fail["offsets"] = [error(KafkaError.PRODUCER_FENCED, fatal=True)]
    rt.txn.since -= 60  # longer than the transaction timeout
    rt._settle_if_due()
    assert producer.names() == ["begin", "offsets"] and rt.txn.producer is fresh and not rt._fenced
    assert consumer.seeks == [(0, 5)]
    rt.process(messages(10, 5, seed=1))
    assert fresh.names() == ["begin"]


def test_a_call_that_never_returns_abandons_the_producer_for_a_new_one(monkeypatch):
    """librdkafka's send_offsets_to_transaction can block past its timeout after the coordinator
    went away (confluentinc/librdkafka#5456): the runtime must not hang with it."""
    import threading

    import consumers.transactions as transactions

    monkeypatch.setattr(transactions, "STUCK_MARGIN_S", 0.2)
    rt, producer, consumer, sink = runtime()
    rt.txn.timeout_s = 0.1
    released = threading.Event()
    producer.send_offsets_to_transaction = lambda *a, **k: released.wait(30)
    fresh = FakeProducer()
    renewed: list[bool] = []
    sink.renew = lambda purge=True: renewed.append(purge) or fresh
    rt.process(messages(10, 0, seed=1))
    rt.txn.since -= 60
    rt._settle_if_due()
    assert renewed == [False] and rt.txn.producer is fresh and rt.txn.abandoned == [producer]
    assert consumer.seeks == [(0, 5)] and not rt._fenced
    released.set()
