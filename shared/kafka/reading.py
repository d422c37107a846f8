"""Reading a topic to its end: the one helper for every "what does this topic hold now" question
(the control plane's plans and audit, the DLQ and its redrive ledger, the tests' reads).

A partition is read when the broker says its end is reached (``enable.partition.eof``) or when the
reader's position has passed the high watermark the partition had when reading began. Either
alone falls short: a reader at ``read_committed`` (every client of the factory) never receives a
transaction's commit marker nor an aborted transaction's records, so it may never *receive* the
message at the watermark (its position still moves past them); and librdkafka reports the end only
from a fetch that comes back empty, which never happens while a writer appends faster than the
fetch wait (the evaluator publishes every 0.3 s in a test). Under ``read_committed`` the end the
broker reports is the last stable offset: a transaction still open is not waited for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from shared.errors import RidestreamError
from shared.kafka.clients import make_consumer
from shared.kafka.settings import Settings


class ReadTimeout(RidestreamError):
    """A topic could not be read to its end in time."""


def read_to_end(settings: Settings, topic: str, since: datetime | None = None, timeout: float = 60.0,
                group: str | None = None, partitions: Iterable[int] | None = None,
                **overrides: Any) -> Iterator[Message]:
    """Every committed message of ``topic`` now (from ``since``, by message time), in order per
    partition (of ``partitions`` only, if given); nothing if the topic does not exist. Raises
    :class:`ReadTimeout` after ``timeout`` seconds. ``group`` only names the reader (it joins no
    group and commits nothing). ``overrides``: consumer settings (``isolation.level``)."""
    # a short fetch wait: the end of a partition is seen from a fetch that came back empty
    consumer = make_consumer(settings, group or f"{settings.namespace}ridestream-reader",
                             **{"enable.partition.eof": True, "fetch.wait.max.ms": 20, **overrides})
    try:
        try:
            meta = consumer.list_topics(topic, timeout=settings.connect_timeout_s).topics.get(topic)
        except KafkaException:
            return
        if meta is None or meta.error is not None or not meta.partitions:
            return
        chosen = sorted(meta.partitions) if partitions is None else sorted(set(partitions) & set(meta.partitions))
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in chosen]
        if since is not None:
            ms = int(since.timestamp() * 1000)
            parts = consumer.offsets_for_times([TopicPartition(topic, p.partition, ms) for p in parts],
                                               timeout=settings.connect_timeout_s)
            parts = [tp for tp in parts if tp.offset >= 0]  # -1: nothing at or after the time there
        if not parts:
            return
        # before assigning: once fetches are in flight, each watermark request waits behind one on
        # the broker's connection (up to fetch.wait.max.ms) — 2 s for a changelog's six partitions
        ends = {tp.partition: _high_watermark(consumer, tp, settings.connect_timeout_s) for tp in parts}
        consumer.assign(parts)
        open_parts = {tp.partition for tp in parts
                      if ends[tp.partition] is None or ends[tp.partition] > max(tp.offset, 0)}
        deadline = time.monotonic() + timeout
        while open_parts:
            if time.monotonic() > deadline:
                raise ReadTimeout(f"could not read {topic} to its end within {timeout:.0f}s "
                                  f"(partitions {sorted(open_parts)}): is the broker busy?")
            for msg in consumer.consume(1000, timeout=0.1):  # the end is seen between two calls
                err = msg.error()
                if err is None:
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(msg.partition())
            if open_parts:
                positions = consumer.position([TopicPartition(topic, p) for p in open_parts])
                open_parts -= {tp.partition for tp in positions
                               if ends[tp.partition] is not None and tp.offset >= ends[tp.partition]}
    finally:
        consumer.close()


def _high_watermark(consumer: Any, tp: TopicPartition, timeout: float) -> int | None:
    """The partition's high watermark now; None if the broker cannot say yet (a leader moving):
    then the broker's end-of-partition alone ends the read."""
    try:
        return consumer.get_watermark_offsets(tp, timeout=timeout)[1]
    except KafkaException:
        return None
