"""Where the runtime's output goes: Kafka topics (live, or a backfill topic) or a file (replay).

The runtime calls ``emit`` with each batch's predictions (:class:`shared.contract.predictions.Predictions`)
and ``dead_letter`` for each bad message; then ``settled``, which says without waiting whether
everything so far is durable (None while not) and how many writes failed, or ``flush``, which
waits for it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import orjson
from confluent_kafka import KafkaError, Message, Producer

from shared.contract.predictions import PredictionColumns, Predictions
from shared.errors import RidestreamError
from shared.kafka.clients import flush_all, make_producer, make_transactional_producer, produce
from shared.kafka.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

FILE_FORMATS = (".parquet", ".csv", ".jsonl")


class Sink(Protocol):
    def emit(self, predictions: Predictions, topic: str | None = None) -> None: ...
    def dead_letter(self, msg: Message, headers: list[tuple[str, bytes]]) -> None: ...
    def flush(self) -> int: ...
    def settled(self, within_s: float = 0.0) -> int | None: ...
    def close(self) -> None: ...


DLQ_HEADROOM = 64 * 1024  # the headers and the batch's framing, beside the value


def _without_body(headers: list[tuple[str, bytes]] | None, value: bytes) -> list[tuple[str, bytes]]:
    note = f"omitted: {len(value):,} bytes, more than the DLQ takes; the original is at source.offset"
    return [*(headers or []), ("dlq.body", note.encode())]


def _source(headers: list[tuple[str, bytes]] | None) -> tuple[str, int, int]:
    h = {k: (v or b"").decode() for k, v in headers or []}
    return h.get("source.topic", ""), int(h.get("source.partition", -1)), int(h.get("source.offset", -1))


class KafkaSink:
    """Predictions to ``topic`` keyed by ride_id; bad messages to ``dlq_topic`` (None: counted
    only, as a replay does — the live services already dead-lettered them)."""

    def __init__(self, settings: Settings, topic: str, dlq_topic: str | None,
                 transactional_id: str | None = None):
        """With ``transactional_id``, a transactional producer (exactly-once: the runtime begins
        and commits its transactions, :mod:`consumers.transactions`). Its own producer: room for a
        large event in the DLQ, and delivery reports for failures only (a Python callback per
        delivered message is a cost we need not pay). The callback is the producer's default
        rather than an argument of each ``produce`` call: passing it there cost ~1 µs per message
        (10k calls 26 → 14 ms measured)."""
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.failed = 0
        self.dlq_body_limit = settings.max_message_bytes - DLQ_HEADROOM
        self.too_large: set[tuple[str, int, int]] = set()  # sources the DLQ refused with their body
        self._settings, self._transactional_id = settings, transactional_id
        self.producer = self._new_producer()
        self.transactional = transactional_id is not None

    def _new_producer(self) -> Producer:
        conf = {"message.max.bytes": self._settings.max_message_bytes, "delivery.report.only.error": True,
                "on_delivery": self._on_delivery}
        if self._transactional_id is None:
            return make_producer(self._settings, **conf)
        return make_transactional_producer(self._settings, self._transactional_id, **conf)

    def renew(self, purge: bool = True) -> Producer:
        """A new transactional producer under the same id, for one the broker fenced after a
        transaction timed out, or one stuck in a call (:class:`consumers.transactions.TimedOut`);
        what the old one held is dropped (``purge``: not for a stuck one, whose locks are held)."""
        if purge:
            self.producer.purge()
        self.failed = 0
        self.producer = self._new_producer()
        return self.producer

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # the producer is made with delivery.report.only.error: only failures call back
        if err is None:
            return
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and msg.topic() == self.dlq_topic and msg.value():
            # the DLQ topic takes less than the settings said: record it without its body instead
            if self.transactional:  # the transaction aborts; when the batch comes again, without its body
                self.too_large.add(_source(msg.headers()))
                self.failed += 1
                return
            produce(self.producer, msg.topic(), None, msg.key(), headers=_without_body(msg.headers(), msg.value()))
            return
        self.failed += 1

    def emit(self, predictions: Predictions, topic: str | None = None) -> None:
        """``topic``: another than the sink's (a shadow candidate's predictions)."""
        produce_one, topic = self.producer.produce, topic or self.topic
        for part in predictions.parts:  # wire bytes built column-wise, no dicts
            for key, value in zip(part.keys(), part.encoded()):
                try:
                    produce_one(topic, value, key)
                except BufferError:  # the local queue is full: wait for room, never drop
                    produce(self.producer, topic, value, key)

    def records(self, topic: str, records: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        """Keyed records to given partitions of ``topic`` (a state changelog)."""
        for partition, key, value in records:
            produce(self.producer, topic, value, key, partition=partition)

    def dead_letter(self, msg: Message, headers: list[tuple[str, bytes]]) -> None:
        """The bad message as it came; one too large for the DLQ without its value, with a
        ``dlq.body`` header saying so (DESIGN) — the original stays on its source topic."""
        if self.dlq_topic:
            value = msg.value()
            if value is not None and (len(value) + len(msg.key() or b"") > self.dlq_body_limit
                                      or (msg.topic(), msg.partition(), msg.offset()) in self.too_large):
                value, headers = None, _without_body(headers, value)
            produce(self.producer, self.dlq_topic, value, msg.key(), headers=headers)

    def flush(self) -> int:
        """Wait until everything produced so far is acknowledged; how many deliveries failed."""
        flush_all(self.producer)
        failed, self.failed = self.failed, 0
        return failed

    def settled(self, within_s: float = 0.0) -> int | None:
        """Like :meth:`flush`, waiting at most ``within_s`` (by default not at all): None while any
        delivery is still outstanding. (The producer's length counts queued and in-flight messages
        and unserved delivery reports; a flush also sends what lingers at once.)"""
        if within_s > 0:
            self.producer.flush(within_s)
        else:
            self.producer.poll(0)
        return None if len(self.producer) else self.flush()  # nothing outstanding: flush returns at once

    def close(self) -> None:
        self.flush()


class OutputError(RidestreamError):
    """An output file the replay cannot write."""


class FileSink:
    """Predictions to a Parquet, CSV or JSON Lines file (the suffix picks), streamed: the rows are
    written in groups of ``group_rows`` as they come, so memory stays flat whatever the range.
    JSON Lines and CSV are readable up to the last group written at any moment (even after a
    SIGKILL); Parquet once the sink is closed, which a stop by signal or error still does.

    Bad messages are not dropped: each goes to ``PATH.dlq.jsonl`` beside the output (its bytes in
    base64, with the DLQ headers), and :attr:`dead_letters` counts them."""

    def __init__(self, path: Path, group_rows: int = 50_000):
        self.path = Path(path)
        if self.path.suffix not in FILE_FORMATS:
            raise OutputError(f"{path}: the output must end in {', '.join(FILE_FORMATS)}")
        self.dlq_path = self.path.with_name(self.path.name + ".dlq.jsonl")
        self.group_rows = group_rows
        self.pending: list[PredictionColumns] = []
        self.pending_rows = 0
        self.rows = 0
        self.dead_letters = 0
        self._file: BinaryIO | None = None  # opened by the first group
        self._writer: Any = None  # pq.ParquetWriter or pacsv.CSVWriter on it; None for JSON Lines
        self._dlq: BinaryIO | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, predictions: Predictions, topic: str | None = None) -> None:
        if topic is not None:  # a replay follows no plan, so it has no shadow output
            return
        self.pending.extend(predictions.parts)
        self.pending_rows += len(predictions)
        if self.pending_rows >= self.group_rows:
            self._write_pending()

    def _write_pending(self) -> None:
        if not self.pending:
            return
        parts, self.pending, self.pending_rows = self.pending, [], 0
        if self._file is None:
            self._file = open(self.path, "wb")
            if self.path.suffix == ".parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self._file, _schema())
            elif self.path.suffix == ".csv":
                import pyarrow.csv as pacsv

                self._writer = pacsv.CSVWriter(self._file, _schema())
        if self._writer is None:  # JSON Lines: the wire bytes, built column-wise
            for part in parts:
                self._file.writelines(line + b"\n" for line in part.encoded())
        else:
            self._writer.write_table(predictions_table(Predictions(parts)))
        self._file.flush()  # what is written is on disk up to here (Parquet: its footer comes on close)
        self.rows += sum(len(p) for p in parts)

    def dead_letter(self, msg: Message, headers: list[tuple[str, bytes]]) -> None:
        if self._dlq is None:
            self._dlq = open(self.dlq_path, "wb")
        key, value = msg.key(), msg.value()
        self._dlq.write(orjson.dumps({
            "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
            "key_b64": None if key is None else base64.b64encode(key).decode(),
            "value_b64": None if value is None else base64.b64encode(value).decode(),
            "headers": {name: raw.decode("utf-8", "replace") for name, raw in headers},
        }) + b"\n")
        self.dead_letters += 1

    def flush(self) -> int:
        """Nothing to acknowledge: a replay commits no offsets. Rows still pending wait for their
        group (row groups of a few rows would make a slow Parquet file)."""
        if self._dlq is not None:
            self._dlq.flush()
        return 0

    def settled(self, within_s: float = 0.0) -> int | None:
        return 0

    def close(self) -> None:
        self._write_pending()
        if self._file is None:  # nothing scored: still a valid, empty file
            if self.path.suffix == ".jsonl":
                self.path.touch()
            elif self.path.suffix == ".parquet":
                import pyarrow.parquet as pq

                pq.write_table(_schema().empty_table(), self.path)
            else:
                import pyarrow.csv as pacsv

                pacsv.write_csv(_schema().empty_table(), self.path)
        else:
            if self._writer is not None:
                self._writer.close()
            self._file.close()
        if self._dlq is not None:
            self._dlq.close()
        else:  # a rerun must not leave the last run's bad messages behind
            self.dlq_path.unlink(missing_ok=True)


@cache
def _schema() -> pa.Schema:
    """The files' columns (pyarrow is imported by a replay to a file, not by a live service)."""
    import pyarrow as pa

    return pa.schema([
        ("schema_version", pa.int32()), ("prediction_id", pa.string()), ("ride_id", pa.string()),
        ("event_id", pa.string()), ("service", pa.string()), ("model_version", pa.string()),
        ("value", pa.float64()), ("unit", pa.string()), ("event_time", pa.timestamp("us", tz="UTC")),
        ("scored_at", pa.timestamp("us", tz="UTC")), ("remaining_min", pa.float64()),
    ])


def predictions_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    schema = _schema()
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Read back a file a FileSink wrote."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    return table.to_pylist()
