"""The latency floor: a separate process that moves each event to another topic as it comes —
the same bytes, no decoding, no model — with the service's client settings and its way of taking
batches (:func:`shared.kafka.clients.consume_ready`). Its latency, beside the service's in the same run,
is what the broker, the clients and the machine cost by themselves.

Run as ``python -m bench.echo SOURCE SINK`` with the service's environment; SIGTERM stops it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from confluent_kafka import TopicPartition

from shared.kafka.clients import consume_ready, flush_all, make_consumer, make_producer, produce
from shared.kafka.settings import load_settings


def echo(source: str, sink: str, stop: threading.Event) -> int:
    """Move messages from ``source`` to ``sink`` until ``stop``; how many it moved."""
    settings = load_settings()
    consumer = make_consumer(settings, f"{settings.namespace}bench-echo-{time.monotonic_ns()}")
    producer = make_producer(settings)
    consumer.subscribe([source])
    moved, last_commit, offsets = 0, time.monotonic(), {}
    try:
        while not stop.is_set():
            for msg in consume_ready(consumer, settings.batch_size, settings.batch_max_wait_ms / 1000):
                if msg.error() is None:
                    produce(producer, sink, msg.value(), msg.key())
                    offsets[msg.partition()] = msg.offset() + 1
                    moved += 1
            producer.poll(0)
            if offsets and time.monotonic() - last_commit >= settings.commit_interval_ms / 1000:
                consumer.commit(offsets=[TopicPartition(source, p, o) for p, o in offsets.items()],
                                asynchronous=True)
                offsets, last_commit = {}, time.monotonic()
    finally:
        flush_all(producer)
        consumer.close()
    return moved


def main() -> None:
    source, sink = sys.argv[1:3]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    echo(source, sink, stop)


if __name__ == "__main__":
    main()
