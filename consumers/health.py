"""What ``/healthz`` and ``/readyz`` answer for one service process (Kubernetes' probes).

* **Liveness** (``/healthz``) is a heartbeat of the consume loop: the loop beats once per pass
  (at least every ``RIDESTREAM_BATCH_MAX_WAIT_MS`` while idle), and a beat older than
  ``RIDESTREAM_STALL_TIMEOUT_S`` fails the probe. Model compilation runs on its own thread (and a
  plan's new version is loaded and compiled by the plan follower's), so neither pauses the loop;
  the longest legitimate pause on the loop is one full batch scored by scikit-learn before the
  compiled trees are ready, plus a rebalance's synchronous flush and commit while the broker
  elects a new leader — seconds, against the default of 120 s.
* **Readiness** (``/readyz``) is: models loaded, the broker reachable and the consumer group
  joined. Both of the last two come from librdkafka's own statistics (``statistics.interval.ms``),
  served by the consumer's poll on the loop's thread: a broker counts as reachable when one is
  ``UP``, the group as joined when its state is ``up`` and its join state ``steady``. A member
  that owns no partitions (a surge replica during a rolling update, a seventh replica on six
  partitions) is in the group all the same, so it is ready.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

# how often librdkafka reports the statistics readiness reads (ms)
STATS_INTERVAL_MS = 1000


@dataclass
class Health:
    """Written by the consume loop (beats, statistics), read by the HTTP server's thread."""

    stall_timeout_s: float
    models_loaded: bool = False
    broker_up: bool = False
    group_joined: bool = False
    partitions: int = 0  # how many the group gave this member
    stats_at: float = 0.0
    last_beat: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's statistics callback: broker states and the group's state."""
        stats = json.loads(stats_json)
        brokers = stats.get("brokers", {}).values()
        cgrp = stats.get("cgrp") or {}
        with self._lock:
            self.broker_up = any(b.get("state") == "UP" for b in brokers if b.get("nodeid", -1) >= 0)
            self.group_joined = cgrp.get("state") == "up" and cgrp.get("join_state") == "steady"
            self.partitions = int(cgrp.get("assignment_size", 0))
            self.stats_at = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        since = time.monotonic() - self.last_beat
        if since > self.stall_timeout_s:
            return False, f"the consume loop has not come round for {since:.0f}s (limit {self.stall_timeout_s:g}s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            # none yet, or none since the loop stalled (liveness says so too)
            stale = not self.stats_at or time.monotonic() - self.stats_at > self.stall_timeout_s
            problems = [text for bad, text in (
                (not self.models_loaded, "models not loaded"),
                (stale, "no fresh client statistics (the loop is not polling)"),
                (not self.broker_up, "no broker reachable"),
                (not self.group_joined, "consumer group not joined"),
            ) if bad]
            owned = self.partitions
        return (not problems, "; ".join(problems) or f"ok ({owned} partitions)")
