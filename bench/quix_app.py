"""The Quix Streams peer: the tip model applied per message through Quix Streams' documented
``Application`` → ``StreamingDataFrame.apply`` → ``to_topic`` API, validating each event with the
contract model as the naive loop does.

It runs in its own virtualenv (see :mod:`bench.quix`), with the project's root on ``sys.path``
for the contract and the model, and prints ``{"events": n, "seconds": s}``: the seconds run from
the first message taken to the application's stop (its final flush and commit included).

    python bench/quix_app.py BOOTSTRAP SOURCE SINK GROUP MAX_EVENTS MAX_SECONDS
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quixstreams import Application  # noqa: E402

from shared.contract.codec import decode_event, encode_dict  # noqa: E402
from shared.contract.events import prediction_record  # noqa: E402
from shared.ml.artifacts import load_model  # noqa: E402


def main(bootstrap: str, source: str, sink: str, group: str, max_events: int, max_seconds: float) -> None:
    model = load_model("tip")  # scikit-learn, one row per call
    app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                      auto_create_topics=False, loglevel="WARNING")
    events_in = app.topic(source, key_deserializer="bytes", value_deserializer="bytes")
    predictions_out = app.topic(sink, key_serializer="bytes", value_serializer="bytes")
    clock: dict[str, float] = {}

    def score(value: bytes) -> bytes:
        now = clock.setdefault("start", time.monotonic())
        if time.monotonic() - now > max_seconds:
            app.stop()  # bounded in time as well as in count
        event = decode_event(value)
        tip = float(model.predict_events([event])[0])
        return encode_dict(prediction_record("tip", model.version, event.ride_id, event.event_id,
                                             event.event_time, round(tip, 3), datetime.now(timezone.utc)))

    sdf = app.dataframe(events_in).apply(score)
    sdf.to_topic(predictions_out)
    app.run(count=max_events, timeout=max_seconds + 30, collect=False)
    seconds = time.monotonic() - clock["start"] if "start" in clock else 0.0
    print(json.dumps({"events": _produced(bootstrap, sink), "seconds": seconds}))


def _produced(bootstrap: str, topic: str) -> int:
    """How many predictions reached the sink topic (the high watermarks' sum; the sink is fresh)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-count"})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    consumer.close()
    return total


if __name__ == "__main__":
    b, src, dst, grp, n, s = sys.argv[1:7]
    main(b, src, dst, grp, int(n), float(s))
