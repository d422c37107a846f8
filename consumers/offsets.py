"""Positions in a topic and consumer-group offsets, from Python (like Kafka's consumer-groups tool).

A position is ``earliest``, ``latest``, an ISO 8601 time (resolved per partition with the broker's
offsets-for-times) or an explicit ``partition:offset[,partition:offset…]`` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from shared.errors import RidestreamError

Position = str | datetime | dict[int, int]


class OffsetsError(RidestreamError):
    """A position that cannot be parsed or a group that cannot be changed now."""


def parse_position(text: str) -> Position:
    text = text.strip()
    if text in ("earliest", "latest"):
        return text
    if ":" in text and all(part.count(":") == 1 and part.replace(":", "").isdigit() for part in text.split(",")):
        return {int(p): int(o) for p, o in (part.split(":") for part in text.split(","))}
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise OffsetsError(
            f"{text!r} is not a position: use earliest, latest, an ISO 8601 time "
            "(2019-03-05T13:00:00Z) or partition:offset[,partition:offset…]"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def partitions(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        raise OffsetsError(f"no topic {topic}: run `ridestream topics create`")
    return sorted(meta.partitions)


def watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions(consumer, topic)}


def resolve(consumer: Consumer, topic: str, position: Position,
            marks: dict[int, tuple[int, int]] | None = None) -> dict[int, int]:
    """Partition → offset for a position. A time gives each partition's first offset at or after
    it (the end, where there is none); an explicit list names only its own partitions.
    ``marks`` (the watermarks read once) makes several positions agree on what "latest" is."""
    marks = marks or watermarks(consumer, topic)
    parts = sorted(marks)
    if position == "earliest":
        return {p: low for p, (low, _) in marks.items()}
    if position == "latest":
        return {p: high for p, (_, high) in marks.items()}
    if isinstance(position, dict):
        unknown = sorted(set(position) - set(parts))
        if unknown:
            raise OffsetsError(f"{topic} has no partition {', '.join(map(str, unknown))}")
        return {p: min(max(o, marks[p][0]), marks[p][1]) for p, o in position.items()}
    ms = int(position.timestamp() * 1000)
    found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout=10)
    return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found}


def bounds(consumer: Consumer, topic: str, start: Position, end: Position) -> dict[tuple[str, int], tuple[int, int]]:
    """[start, end) per partition, fixed now: a replay over them always stops by itself."""
    marks = watermarks(consumer, topic)  # one reading: "latest" means the same on both sides
    first = resolve(consumer, topic, start, marks)
    last = resolve(consumer, topic, end, marks)
    # an explicit partition:offset list on either side limits the replay to its partitions
    return {(topic, p): (first[p], max(last[p], first[p])) for p in sorted(set(first) & set(last))}


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


def group_offsets(consumer: Consumer, group: str, topic: str) -> list[PartitionOffsets]:
    """Committed offset, end offset and lag per partition of ``topic`` for ``group``.

    ``consumer`` must have ``group.id`` = ``group``; it only reads, it never joins the group."""
    parts = [TopicPartition(topic, p) for p in partitions(consumer, topic)]
    committed = consumer.committed(parts, timeout=10)
    rows = []
    for tp in committed:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        rows.append(PartitionOffsets(tp.partition, tp.offset if tp.offset >= 0 else None, high))
    return rows


def active_members(admin: AdminClient, group: str) -> int:
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return len(desc.members)


def reset_group(admin: AdminClient, consumer: Consumer, group: str, topic: str, position: Position) -> dict[int, int]:
    """Move ``group``'s committed offsets on ``topic`` to ``position``. Refused while the group
    has active members: they would overwrite the new offsets with their own."""
    members = active_members(admin, group)
    if members:
        raise OffsetsError(
            f"group {group} has {members} active member(s): stop its processes first "
            "(offsets of a running group cannot be reset)"
        )
    target = resolve(consumer, topic, position)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in target.items()])
    try:
        admin.alter_consumer_group_offsets([request])[group].result(timeout=10)
    except KafkaException as exc:
        raise OffsetsError(f"cannot reset {group}: {exc.args[0].str()}") from None
    return target
