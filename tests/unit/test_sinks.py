"""The Kafka sink counts what the broker never acknowledged (the runtime rewinds on it)."""

from __future__ import annotations

from datetime import datetime, timezone

from broker.local import free_port
from consumers.sinks import KafkaSink
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
    assert sink.flush() == 3
    assert sink.flush() == 0  # each failure is reported once
