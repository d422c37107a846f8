"""Offsets: settled without waiting for acknowledgements (overdue: asked for in a short flush, waited
for only when long overdue), committed every
interval without waiting for the coordinator, a failed commit retried, a rebalance and shutdown
committing synchronously — including what is still in flight."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, TopicPartition

from consumers.runtime import FLUSH_SLICE_S, LAG_EVERY_S, OVERDUE_INTERVALS, OVERDUE_WAIT_INTERVALS, Runtime
from consumers.services import TIP
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_model
from tests.unit.test_runtime_hold_back import IdleConsumer, Recording, messages

P0 = ("events", 0)


class Outstanding(Recording):
    """A sink whose deliveries stay outstanding until ``acknowledged`` is set (or, with
    ``answers_within``, until a bounded flush asks); flushes and bounded flushes recorded."""

    def __init__(self):
        super().__init__()
        self.acknowledged = False
        self.answers_within = False
        self.flushes = 0
        self.asked: list[float] = []

    def settled(self, within_s: float = 0.0) -> int | None:
        if within_s:
            self.asked.append(within_s)
            self.acknowledged = self.acknowledged or self.answers_within
        return 0 if self.acknowledged else None

    def flush(self) -> int:
        self.flushes += 1
        self.acknowledged = True
        return 0


class Committing(IdleConsumer):
    def commit(self, offsets, asynchronous=True):
        self.commits.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous))


def runtime(interval_ms: int = 60_000) -> tuple[Runtime, Outstanding, Committing]:
    """A long interval: only the test moves time on (:func:`interval_passes`), however slow the
    machine — output is overdue after minutes, not after a busy machine's half second."""
    sink, consumer = Outstanding(), Committing()
    rt = Runtime(TIP, Settings(commit_interval_ms=interval_ms), {"tip": load_model("tip")}, sink=sink,
                 input_topic="events")
    rt.consumer = consumer
    return rt, sink, consumer


def interval_passes(rt: Runtime) -> None:
    rt._last_commit = time.monotonic() - rt.settings.commit_interval_ms / 1000


def scored_and_committed(rt: Runtime, n: int, first_offset: int, seed: int) -> None:
    """A batch scored (its output acknowledged) and its offsets' commit sent, not yet answered."""
    rt.process(messages(n, first_offset, seed=seed))
    interval_passes(rt)
    rt._settle_if_due()


def test_a_batch_settles_when_acknowledged_without_waiting_and_commits_asynchronously():
    rt, sink, consumer = runtime()
    rt.process(messages(10, 0, seed=1))
    assert sink.flushes == 0 and consumer.commits == []  # outstanding: neither waited for nor committed
    sink.acknowledged = True
    rt._settle_if_due()  # the interval has not passed since the (empty) first commit
    assert consumer.commits == [] and rt._pending == {P0: 10}
    interval_passes(rt)
    rt._settle_if_due()
    assert consumer.commits == [({P0: 10}, True)] and sink.flushes == 0
    assert rt._pending == {} and rt._committing == {P0: 10}
    rt._on_commit(None, [TopicPartition("events", 0, 10)])
    assert rt._committing == {}


def overdue(rt: Runtime, intervals: int) -> None:
    rt._unsettled_since = time.monotonic() - rt.settings.commit_interval_ms / 1000 * intervals


def test_overdue_output_is_asked_for_in_a_short_flush_once_an_interval_and_waited_for_only_long_after():
    rt, sink, consumer = runtime()
    rt.process(messages(10, 0, seed=1))
    overdue(rt, OVERDUE_INTERVALS)
    interval_passes(rt)
    rt._settle_if_due()
    assert sink.asked == [FLUSH_SLICE_S] and sink.flushes == 0 and consumer.commits == []  # the stream goes on
    rt._settle_if_due()
    assert sink.asked == [FLUSH_SLICE_S]  # not again within the interval
    rt._asked_at -= rt.settings.commit_interval_ms / 1000
    rt._settle_if_due()
    assert sink.asked == [FLUSH_SLICE_S] * 2 and consumer.commits == []
    overdue(rt, OVERDUE_WAIT_INTERVALS)  # long overdue: a whole flush, however long it takes
    interval_passes(rt)
    rt._settle_if_due()
    assert sink.flushes == 1 and consumer.commits == [({P0: 10}, True)]


def test_overdue_output_the_broker_acknowledges_within_the_short_flush_settles():
    rt, sink, consumer = runtime()
    sink.answers_within = True
    rt.process(messages(10, 0, seed=1))
    overdue(rt, OVERDUE_INTERVALS)
    interval_passes(rt)
    rt._settle_if_due()
    assert sink.asked == [FLUSH_SLICE_S] and sink.flushes == 0 and consumer.commits == [({P0: 10}, True)]


def test_a_failed_commit_is_retried_unless_a_later_one_covers_it():
    rt, sink, consumer = runtime()
    sink.acknowledged = True
    scored_and_committed(rt, 10, 0, seed=1)
    scored_and_committed(rt, 10, 10, seed=2)
    assert [c for c, _ in consumer.commits] == [{P0: 10}, {P0: 20}]
    failed = KafkaError(KafkaError.REQUEST_TIMED_OUT)
    rt._on_commit(failed, [TopicPartition("events", 0, 10)])  # superseded: the commit of 20 is in flight
    assert rt._pending == {} and rt._committing == {P0: 20}
    rt._on_commit(failed, [TopicPartition("events", 0, 20)])
    assert rt._pending == {P0: 20} and rt._committing == {}
    interval_passes(rt)
    rt._settle_if_due()
    assert consumer.commits[-1] == ({P0: 20}, True)


def test_a_revoked_partition_is_committed_synchronously_with_its_commit_in_flight():
    rt, sink, consumer = runtime()
    sink.acknowledged = True
    scored_and_committed(rt, 10, 0, seed=1)  # {P0: 10} in flight
    rt.process(messages(5, 10, seed=2))  # settled, not yet committed: {P0: 15}
    rt._on_revoke(consumer, [TopicPartition("events", 0)])
    assert consumer.commits[-1] == ({P0: 15}, False)
    assert rt._pending == {} and rt._committing == {}
    rt._on_commit(None, [TopicPartition("events", 0, 10)])  # the old answer arrives: nothing changes
    assert rt._pending == {} and rt._committing == {}


def test_shutdown_commits_what_is_in_flight_synchronously():
    rt, sink, consumer = runtime()
    sink.acknowledged = True
    scored_and_committed(rt, 10, 0, seed=1)
    rt.consumer.close = lambda: None
    rt._close()
    assert consumer.commits[-1] == ({P0: 10}, False)


def test_without_an_interval_every_batch_waits_and_commits_synchronously():
    rt, sink, consumer = runtime(interval_ms=0)
    rt.process(messages(10, 0, seed=1))
    assert sink.flushes == 1 and consumer.commits == [({P0: 10}, False)]


def test_the_lag_gauge_is_refreshed_at_most_every_half_second_and_when_the_stream_goes_quiet():
    rt, sink, consumer = runtime()
    sink.acknowledged = True
    lag = rt.metrics.lag_of(0)
    rt.process(messages(10, 0, seed=1))
    assert lag._value.get() == 10**6 - 10  # the IdleConsumer's end offset is 10**6
    rt.process(messages(10, 10, seed=2))
    assert lag._value.get() == 10**6 - 10  # within LAG_EVERY_S of the last refresh
    rt._quiet()
    assert lag._value.get() == 10**6 - 20
    rt._lag_at = time.monotonic() - LAG_EVERY_S
    rt.process(messages(10, 20, seed=3))
    assert lag._value.get() == 10**6 - 30


def lag_samples(rt: Runtime) -> dict[str, float]:
    return {s.labels["partition"]: s.value for m in rt.metrics.registry.collect() for s in m.samples
            if s.name == "ridestream_consumer_lag"}


def test_a_partition_that_leaves_stops_reporting_its_lag():
    rt, sink, consumer = runtime()
    sink.acknowledged = True
    rt.process(messages(10, 0, seed=1))
    assert lag_samples(rt) == {"0": 10**6 - 10}
    rt._on_revoke(consumer, [TopicPartition("events", 0)])  # its new owner reports it now
    assert lag_samples(rt) == {}
    rt._lag_at = time.monotonic() - LAG_EVERY_S
    rt.process(messages(10, 0, seed=2))  # back again later: reported again
    assert lag_samples(rt) == {"0": 10**6 - 10}
    rt._on_lost(consumer, [TopicPartition("events", 0)])
    assert lag_samples(rt) == {}
