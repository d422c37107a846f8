"""The Kafka sink counts what the broker never acknowledged (the runtime rewinds on it); the file
sink streams its rows and keeps the bad messages beside them."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import orjson
import pytest
from confluent_kafka import Message

from broker.local import free_port
from consumers.sinks import FileSink, KafkaSink, OutputError, read_predictions
from shared.contract.predictions import PredictionColumns, Predictions
from shared.kafka.settings import Settings


def test_deliveries_that_never_reach_a_broker_are_counted_as_failed():
    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}",  # nothing listens there
                        kafka_extra={"message.timeout.ms": "300"})
    sink = KafkaSink(settings, "predictions.tip", dlq_topic=None)
    at = datetime(2019, 3, 1, tzinfo=timezone.utc)
    sink.emit(Predictions([PredictionColumns("tip", "v1", ["r1", "r2", "r3"], ["e1", "e2", "e3"], [at] * 3,
                                             [1.0, 2.0, 3.0], at)]))
    assert sink.settled() is None  # still outstanding
    assert sink.settled(0.01) is None  # a short flush does not wait for them either
    assert sink.flush() == 3
    assert sink.flush() == 0  # each failure is reported once


def _batch(n: int, start: int = 0) -> Predictions:
    at = datetime(2019, 3, 1, tzinfo=timezone.utc)
    ids = [f"r{i}" for i in range(start, start + n)]
    return Predictions([PredictionColumns("tip", "v1", ids, [f"{r}-req" for r in ids], [at] * n,
                                          [float(i) for i in range(n)], at)])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_file_sink_streams_its_rows_in_groups_and_reads_back_whole(tmp_path, suffix):
    sink = FileSink(tmp_path / f"out{suffix}", group_rows=10)
    for k in range(5):
        sink.emit(_batch(4, start=4 * k))
    assert sink.rows == 12 and sink.pending_rows == 8  # a group of 12 written, the rest waits for its group
    if suffix != ".parquet":  # readable up to the last group, before the end (even after a SIGKILL)
        assert len(read_predictions(sink.path)) == 12
    sink.close()
    rows = read_predictions(sink.path)
    assert [r["ride_id"] for r in rows] == [f"r{i}" for i in range(20)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_an_empty_replay_still_leaves_a_readable_file(tmp_path, suffix):
    sink = FileSink(tmp_path / f"empty{suffix}")
    sink.close()
    assert read_predictions(sink.path) == []


def test_bad_messages_of_a_file_replay_are_kept_beside_it_with_their_reasons(tmp_path):
    (tmp_path / "out.jsonl.dlq.jsonl").write_text("a stale line of an earlier run\n")
    sink = FileSink(tmp_path / "out.jsonl")
    sink.dead_letter(Message(topic="rides.events", partition=2, offset=7, key=None, value=b"\xff{"),
                     [("error.type", b"decode"), ("error.message", b"invalid UTF-8")])
    sink.emit(_batch(3))
    sink.close()
    (line,) = sink.dlq_path.read_bytes().splitlines()
    record = orjson.loads(line)
    assert (record["topic"], record["partition"], record["offset"]) == ("rides.events", 2, 7)
    assert base64.b64decode(record["value_b64"]) == b"\xff{" and record["key_b64"] is None
    assert record["headers"] == {"error.type": "decode", "error.message": "invalid UTF-8"}
    assert sink.dead_letters == 1 and len(read_predictions(sink.path)) == 3
    clean = FileSink(tmp_path / "out.jsonl")  # a rerun without bad messages removes the old side file
    clean.close()
    assert not clean.dlq_path.exists()


def test_an_output_of_another_format_is_refused_in_one_line(tmp_path):
    with pytest.raises(OutputError, match=r"x\.xlsx: the output must end in \.parquet, \.csv, \.jsonl"):
        FileSink(tmp_path / "x.xlsx")
