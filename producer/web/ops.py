"""The operator's figures, read from the broker every few seconds while someone watches: topic
rates, each service's consumer lag, the DLQ's size."""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from shared.contract.topics import SERVICES
from shared.kafka.clients import make_consumer
from shared.kafka.settings import Settings

EVERY_S = 2.0
WATCHED_FOR_S = 15.0  # figures are refreshed this long after the last request for them


class OpsReader:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.figures: dict[str, Any] = {}
        self._asked = 0.0
        self._last: dict[str, tuple[float, int]] = {}
        self._consumers: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-ops", daemon=True)
        self._thread.start()

    def ask(self) -> dict[str, Any]:
        self._asked = time.monotonic()
        return self.figures

    def _consumer(self, group: str):
        if group not in self._consumers:
            self._consumers[group] = make_consumer(self.settings, group)
        return self._consumers[group]

    def _ends(self, topic: str) -> tuple[list[TopicPartition], list[int], int]:
        c = self._consumer(f"{self.settings.namespace}ridestream-web-ops")
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=5).topics[topic].partitions]
        marks = [c.get_watermark_offsets(tp, timeout=5) for tp in parts]
        return parts, [h for _, h in marks], sum(h - lo for lo, h in marks)

    def _rate(self, topic: str, total: int) -> float:
        now = time.monotonic()
        before = self._last.get(topic)
        self._last[topic] = (now, total)
        return round((total - before[1]) / (now - before[0]), 1) if before and now > before[0] else 0.0

    def refresh(self) -> dict[str, Any]:
        t = self.settings.topics
        parts, ends, _ = self._ends(t.events)
        figures: dict[str, Any] = {"events_per_s": self._rate(t.events, sum(ends)), "services": {}}
        for service in SERVICES:
            committed = self._consumer(self.settings.group_id(service)).committed(parts, timeout=5)
            lag = sum(max(end - max(c.offset, 0), 0) for end, c in zip(ends, committed))  # ends read first
            _, p_ends, _ = self._ends(t.predictions(service))
            figures["services"][service] = {"lag": lag, "predictions_per_s": self._rate(t.predictions(service), sum(p_ends)),
                                            "predictions": sum(p_ends)}
        figures["dlq"] = self._ends(t.dlq)[2]
        figures["at"] = time.time()
        return figures

    def _run(self) -> None:
        while not self._stop.wait(EVERY_S):
            if time.monotonic() - self._asked > WATCHED_FOR_S:
                continue
            try:
                self.figures = self.refresh()
            except (KafkaException, KeyError) as exc:
                self.figures = {**self.figures, "error": f"broker: {exc}"}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._consumers.values():
            c.close()
