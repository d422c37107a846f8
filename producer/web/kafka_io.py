"""The replica's two Kafka clients: one consumer that follows ``rides.backend.state`` (from the
beginning) and the three prediction topics (from ``replay_s`` ago), and one producer.

The consumer runs in a thread and hands each batch to the event loop, waiting until the loop has
applied it before it fetches the next (at most one batch in hand; the broker holds the rest), so
the loop is never flooded and a slow SSE client never slows the consumer (fan-out never waits).
Writers wait for their own record to be read back (:meth:`Follower.applied`): that is how a
replica knows, after a race, whose record the log holds first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message, TopicPartition

from shared.contract.topics import SERVICES
from shared.kafka.clients import consume_ready, make_consumer, make_producer
from shared.kafka.settings import Settings

log = logging.getLogger("ridestream.web")
BATCH = 2000


@dataclass
class _Waiter:
    topic: str
    partition: int
    offset: int
    future: asyncio.Future


@dataclass
class Follower:
    """Reads the state and prediction topics; ``on_batch`` runs on the loop with each batch."""

    settings: Settings
    loop: asyncio.AbstractEventLoop
    on_batch: Callable[[list[Message]], None]
    replay_s: float = 1800.0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to read
    caught_up: bool = False
    assigned: bool = False
    broker_seen: float = 0.0  # monotonic time the broker last answered
    _waiters: list[_Waiter] = field(default_factory=list)
    _start_ends: dict[tuple[str, int], int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _meta: object | None = None  # a consumer that only reads end offsets, for sync()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        if self._meta is not None:
            self._meta.close()

    def _assign(self, consumer) -> None:
        topics = self.settings.topics
        meta = consumer.list_topics(timeout=self.settings.connect_timeout_s).topics
        parts: list[TopicPartition] = []
        state = topics.backend_state
        for p in meta[state].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(state, p), timeout=10)
            if high > low:
                self._start_ends[(state, p)] = high
            parts.append(TopicPartition(state, p, OFFSET_BEGINNING))
        since_ms = int((time.time() - self.replay_s) * 1000)
        wanted = [TopicPartition(topics.predictions(s), p, since_ms) for s in SERVICES
                  for p in meta[topics.predictions(s)].partitions]
        for tp in consumer.offsets_for_times(wanted, timeout=10):
            parts.append(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -1))  # -1: the end
        consumer.assign(parts)
        self.assigned = True
        self.broker_seen = time.monotonic()

    def _run(self) -> None:
        consumer = make_consumer(self.settings, f"{self.settings.namespace}ridestream-web-{uuid.uuid4().hex[:8]}",
                                 **{"fetch.wait.max.ms": 10, "fetch.error.backoff.ms": 50})
        try:
            while not self._stop.is_set():
                try:
                    self._assign(consumer)
                    break
                except (KafkaException, KeyError) as exc:
                    log.warning("web follower: waiting for the broker and topics (%s)", exc)
                    self._stop.wait(1.0)
            self._check_caught_up()
            last_check = time.monotonic()
            while not self._stop.is_set():
                # what has arrived, at once; librdkafka's own batch consume would wait out its
                # whole timeout for a full batch, and every SSE frame and read-back with it
                msgs = consume_ready(consumer, BATCH, 0.1)
                good = [m for m in msgs if m.error() is None]
                if good:
                    self.broker_seen = time.monotonic()
                    done = asyncio.run_coroutine_threadsafe(self._hand_over(good), self.loop)
                    while not self._stop.is_set():
                        try:
                            done.result(1.0)
                            break
                        except TimeoutError:
                            continue
                if time.monotonic() - last_check > 5:
                    last_check = time.monotonic()
                    try:
                        consumer.list_topics(self.settings.topics.backend_state, timeout=2)
                        self.broker_seen = time.monotonic()
                    except KafkaException:
                        pass
        finally:
            consumer.close()

    async def _hand_over(self, msgs: list[Message]) -> None:
        self.on_batch(msgs)
        for m in msgs:
            key = (m.topic(), m.partition())
            if m.offset() + 1 > self.positions.get(key, 0):
                self.positions[key] = m.offset() + 1
        if self._waiters:
            still = []
            for w in self._waiters:
                if self.positions.get((w.topic, w.partition), 0) > w.offset:
                    if not w.future.done():
                        w.future.set_result(None)
                else:
                    still.append(w)
            self._waiters = still
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        if not self.caught_up and self.assigned:
            self.caught_up = all(self.positions.get(k, 0) >= end for k, end in self._start_ends.items())

    async def sync(self, timeout: float = 5.0) -> None:
        """Wait until this replica has read ``rides.backend.state`` to its end as of now: after a
        ride this replica does not know, it may be one another replica has just written."""
        topic = self.settings.topics.backend_state
        ends = await asyncio.to_thread(self._state_ends, topic)
        waits = [self.applied(topic, p, end - 1, timeout) for p, end in ends.items()
                 if self.positions.get((topic, p), 0) < end]
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)

    def _state_ends(self, topic: str) -> dict[int, int]:
        if self._meta is None:
            self._meta = make_consumer(self.settings, f"{self.settings.namespace}ridestream-web-meta")
        parts = self._meta.list_topics(topic, timeout=5).topics[topic].partitions
        return {p: self._meta.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in parts}

    async def applied(self, topic: str, partition: int, offset: int, timeout: float = 10.0) -> None:
        """Wait until this replica has applied the record at ``offset``."""
        if self.positions.get((topic, partition), 0) > offset:
            return
        future = self.loop.create_future()
        self._waiters.append(_Waiter(topic, partition, offset, future))
        await asyncio.wait_for(future, timeout)


class Publisher:
    """One idempotent producer; :meth:`send` returns where the broker put the message."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.producer = make_producer(settings, **{"linger.ms": 1})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="web-producer", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    async def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> tuple[int, int]:
        """Produce and wait for the broker's acknowledgement: (partition, offset)."""
        future = self.loop.create_future()

        def delivered(err, msg) -> None:
            if err is None:
                outcome: object = (msg.partition(), msg.offset())
            else:
                outcome = KafkaException(err)
            self.loop.call_soon_threadsafe(_settle, future, outcome)

        kwargs = {"timestamp": timestamp_ms} if timestamp_ms else {}
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=delivered, **kwargs)
                break
            except BufferError:  # the local queue is full: let deliveries drain, never drop
                await asyncio.sleep(0.01)
        return await future

    def close(self) -> None:
        self.producer.flush(10)
        self._stop.set()
        self._thread.join(5)


def _settle(future: asyncio.Future, outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
