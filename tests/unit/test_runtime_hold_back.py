"""A large batch's output is held back and produced while the next batch is scored; a small one's
at once; whatever is held back goes out as soon as nothing else is waiting. Offsets wait for it."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from bench.loops import ride_requests
from consumers.runtime import HOLD_BACK_FROM, Runtime
from consumers.services import TIP
from shared.contract.codec import encode_dict
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_model


class Recording:
    def __init__(self):
        self.emitted: list[str] = []

    def emit(self, predictions):
        self.emitted.extend(p["event_id"] for p in predictions)

    def dead_letter(self, msg, headers):
        self.emitted.append(f"dlq@{msg.offset()}")

    def flush(self) -> int:
        return 0

    def settled(self, within_s: float = 0.0) -> int:
        return 0

    def close(self) -> None:
        pass


class IdleConsumer:
    """Nothing more to consume; commits are recorded."""

    def __init__(self):
        self.commits: list[dict[int, int]] = []

    def consume(self, num_messages=1, timeout=-1):
        return []

    def get_watermark_offsets(self, tp, cached=False):
        return 0, 10**6

    def commit(self, offsets, asynchronous=True):
        self.commits.append({tp.partition: tp.offset for tp in offsets})


def messages(n: int, first_offset: int, seed: int) -> list[Message]:
    return [Message(topic="events", partition=0, offset=first_offset + i, key=e["ride_id"].encode(),
                    value=encode_dict(e), error=None) for i, e in enumerate(ride_requests(n, seed=seed))]


def runtime() -> tuple[Runtime, Recording, IdleConsumer]:
    sink, consumer = Recording(), IdleConsumer()
    rt = Runtime(TIP, Settings(commit_interval_ms=0), {"tip": load_model("tip")}, sink=sink, input_topic="events")
    rt.consumer = consumer
    return rt, sink, consumer


def test_a_small_batch_is_produced_and_committed_at_once():
    rt, sink, consumer = runtime()
    small = messages(10, 0, seed=1)
    rt.process(small + [Message(topic="events", partition=0, offset=10, key=b"x", value=b"{", error=None)])
    assert sink.emitted[0] == "dlq@10" and len(sink.emitted) == 11
    assert consumer.commits == [{0: 11}]


def test_a_large_batch_is_produced_while_the_next_is_scored_and_at_once_when_none_waits():
    rt, sink, consumer = runtime()
    first, second = messages(HOLD_BACK_FROM, 0, seed=2), messages(HOLD_BACK_FROM, HOLD_BACK_FROM, seed=3)
    rt.process(first)
    assert sink.emitted == [] and consumer.commits == [] and rt.totals.predictions == 0  # held back
    rt.process(second)
    assert len(sink.emitted) == HOLD_BACK_FROM and sink.emitted[0].startswith("b2-")  # the first, in order
    assert consumer.commits == [{0: HOLD_BACK_FROM}]  # only what was produced
    assert rt._next_batch() == []  # nothing else waits: the second goes out before any waiting
    assert len(sink.emitted) == 2 * HOLD_BACK_FROM and sink.emitted[-1].startswith("b3-")
    assert consumer.commits[-1] == {0: 2 * HOLD_BACK_FROM} and rt.totals.predictions == 2 * HOLD_BACK_FROM


def test_each_partition_of_a_batch_commits_past_its_last_message_and_bad_ones_are_sorted_out():
    """Partitions interleaved, a consumer error and a message keyed wrongly among valid ones: the
    batch is read message by message, the bad one dead-lettered, the rest scored in order."""
    rt, sink, consumer = runtime()
    batch = []
    for i, e in enumerate(ride_requests(30, seed=4)):
        partition, offset = i % 3, 100 * (i % 3) + i // 3
        key = b"someone-else" if i == 13 else e["ride_id"].encode()
        batch.append(Message(topic="events", partition=partition, offset=offset, key=key, value=encode_dict(e), error=None))
    batch.insert(7, Message(topic="events", partition=2, error=KafkaError(KafkaError._TRANSPORT)))
    rt.process(batch)
    assert sink.emitted[0] == "dlq@104"  # message 13: partition 1, offset 100 + 4
    assert sink.emitted[1:] == [f"b4-{i}-req" for i in range(30) if i != 13]
    assert consumer.commits == [{0: 10, 1: 110, 2: 210}]
    assert rt.totals.dead_letters == 1 and rt.totals.predictions == 29
