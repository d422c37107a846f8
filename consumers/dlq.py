"""The dead-letter queue, read and redriven.

Every service dead-letters a bad ``rides.events`` message with its reason (DESIGN: ``error.type``,
``error.message``, ``source.*``, ``service`` headers), so one bad event usually sits there once per
service. :func:`read_dead_letters` reads the queue (from a time, or all of it); :func:`summarise`
groups it by reason. :func:`redrive` re-publishes to ``rides.events`` each source message that the
contract accepts now (a fixed producer, a widened contract), **once**: the re-published events and
their entries in a compacted ledger, ``rides.events.dlq.redriven`` (key = the source's
topic/partition/offset), are written in one Kafka transaction, and a redrive skips every source
the ledger already holds — so running it twice, or after a crash, never publishes an event twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import KafkaException, Message

from shared.contract.codec import InvalidMessage, decode_event, encode
from shared.contract.redrive import REDRIVEN_SUFFIX, RedriveRecord
from shared.contract.topics import TopicSpec, create_topics
from shared.errors import RidestreamError
from shared.kafka.clients import make_admin, make_transactional_producer, produce
from shared.kafka.reading import read_to_end
from shared.kafka.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get("error.type", "unknown")

    @property
    def source(self) -> str:
        """Where the bad message came from: ``topic/partition/offset`` (the ledger's key)."""
        h = self.headers
        return f"{h.get('source.topic', '?')}/{h.get('source.partition', '?')}/{h.get('source.offset', '?')}"

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


def _read(settings: Settings, topic: str, since: datetime | None = None, timeout: float = 60.0) -> list[Message]:
    """Every committed message of ``topic`` now (from ``since``), in order per partition."""
    return list(read_to_end(settings, topic, since, timeout, group=f"{settings.namespace}ridestream-dlq-reader"))


def read_dead_letters(settings: Settings, since: datetime | None = None) -> list[DeadLetter]:
    return [DeadLetter(m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(),
                       {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])})
            for m in _read(settings, settings.topics.dlq, since)]


@dataclass
class ReasonSummary:
    reason: str
    count: int
    services: Counter
    first: datetime
    last: datetime
    sample: str  # the latest message's error.message


def summarise(letters: list[DeadLetter]) -> list[ReasonSummary]:
    """One row per reason, the most frequent first."""
    rows: dict[str, ReasonSummary] = {}
    for letter in letters:
        row = rows.get(letter.reason)
        if row is None:
            row = rows[letter.reason] = ReasonSummary(letter.reason, 0, Counter(), letter.at, letter.at, "")
        row.count += 1
        row.services[letter.headers.get("service", "?")] += 1
        row.first, row.last = min(row.first, letter.at), max(row.last, letter.at)
        row.sample = letter.headers.get("error.message", "")
    return sorted(rows.values(), key=lambda r: (-r.count, r.reason))


@dataclass
class RedriveResult:
    redriven: int = 0
    already: int = 0  # sources the ledger holds: redriven by an earlier run
    still_invalid: Counter = field(default_factory=Counter)  # today's reason → sources
    no_body: int = 0


def ledger_topic(settings: Settings) -> str:
    return settings.topics.dlq + REDRIVEN_SUFFIX


def redrive(settings: Settings, reason: str | None = None, since: datetime | None = None,
            dry_run: bool = False) -> RedriveResult:
    """Re-publish, once, each dead-lettered source message that the contract accepts now."""
    ledger = ledger_topic(settings)
    create_topics(make_admin(settings), [TopicSpec(ledger, 1, settings.replication_factor, compacted=True)])
    done = {m.key().decode() for m in _read(settings, ledger) if m.key() is not None}
    by_source: dict[str, DeadLetter] = {}  # one bad event is dead-lettered once per service
    for letter in read_dead_letters(settings, since):
        if reason is None or letter.reason == reason:
            by_source.setdefault(letter.source, letter)
    result, chosen = RedriveResult(), {}
    for source, letter in by_source.items():
        if source in done:
            result.already += 1
        elif letter.value is None:
            result.no_body += 1
        else:
            try:
                decode_event(letter.value)
                chosen[source] = letter
            except InvalidMessage as exc:
                result.still_invalid[exc.error_type] += 1
    result.redriven = len(chosen)
    if dry_run or not chosen:
        return result
    producer = make_transactional_producer(settings, f"{settings.namespace}ridestream-dlq-redrive")
    try:
        producer.begin_transaction()
        now = datetime.now(UTC)
        for source, letter in chosen.items():
            produce(producer, settings.topics.events, letter.value, letter.key,
                    headers=[("redriven.from", source.encode())])
            record = RedriveRecord(redriven_at=now, dlq_partition=letter.partition, dlq_offset=letter.offset,
                                   reason=letter.reason)
            produce(producer, ledger, encode(record), source.encode())
        producer.commit_transaction(settings.connect_timeout_s * 3)
    except KafkaException as exc:
        error = exc.args[0]
        if hasattr(error, "txn_requires_abort") and error.txn_requires_abort():
            producer.abort_transaction(settings.connect_timeout_s * 3)
        raise RidestreamError(f"the redrive was not published (nothing of it is visible): {error.str()}") from None
    return result
