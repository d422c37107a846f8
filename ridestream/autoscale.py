"""Lag autoscaling with KEDA's Kafka-scaler rule, for ``ridestream run --autoscale`` and for the
numbers of the Kubernetes ScaledObjects (docs/kubernetes.md).

KEDA's Kafka scaler reports the consumer group's total lag (end offset − committed offset, summed
over the topic's partitions); the HorizontalPodAutoscaler then wants
``ceil(total lag / lagThreshold)`` replicas. With ``allowIdleConsumers`` false (the default) the
lag is capped at ``lagThreshold × partitions``, so no more replicas than partitions are asked for;
``maxReplicaCount`` caps it too. At or below ``activationLagThreshold`` the scaler is inactive and
the workload goes to ``minReplicaCount``. Scaling up is immediate; scaling down waits out a
cool-down (the HPA's scale-down stabilization window: the highest wish of the window wins).
:func:`desired_replicas` is that rule, and the one place it is written down.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("ridestream.autoscale")

# Events a second one replica of each service works through a backlog of whole lifecycles, as
# `ridestream bench --service all` measured them (bench/results/services.json, 2026-12-01): the
# lower of its runtime in process (services.<name>.events_per_s.batched) and one `ridestream
# consume` process (processes_events_per_s["1"]) — the capacity `ridestream bench --plan` takes.
MEASURED_EVENTS_PER_S = {"tip": 491_745, "duration": 97_130, "cost": 167_402}
# A Kubernetes replica gets one core where the bench's process had two (broker included): count on
# half of it.
REPLICA_SHARE = 0.5
# How long a replica may take to work through its share of a backlog before another is wanted.
CATCH_UP_S = 10.0


def lag_threshold(events_per_s: float, share: float = REPLICA_SHARE, catch_up_s: float = CATCH_UP_S) -> int:
    """A ScaledObject's ``lagThreshold``: the backlog one replica clears in ``catch_up_s`` at
    ``share`` of the measured throughput (rounded down to a thousand)."""
    return int(events_per_s * share * catch_up_s) // 1000 * 1000


# each service's, as its ScaledObject spells it out
LAG_THRESHOLDS = {service: lag_threshold(rate) for service, rate in MEASURED_EVENTS_PER_S.items()}
# below this total lag a service is idle: 1 % of the threshold, and above the lag of one committed
# offset per partition that a transactional producer's markers leave behind (kedacore/keda#5675)
ACTIVATION_LAG_THRESHOLDS = {service: threshold // 100 for service, threshold in LAG_THRESHOLDS.items()}
COOLDOWN_S = 300.0  # the HPA's default scale-down stabilization window


@dataclass(frozen=True)
class LagRule:
    """One service's scaling parameters, named as in a KEDA ScaledObject."""

    lag_threshold: int
    activation_lag_threshold: int
    max_replicas: int  # min(maxReplicaCount, partitions of the topic)
    min_replicas: int = 1

    def __post_init__(self) -> None:
        if self.lag_threshold < 1 or self.activation_lag_threshold < 0:
            raise ValueError("lagThreshold must be ≥ 1 and activationLagThreshold ≥ 0")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 ≤ min replicas ({self.min_replicas}) ≤ max replicas ({self.max_replicas}), max ≥ 1")


def desired_replicas(total_lag: int, rule: LagRule) -> int:
    """KEDA's Kafka scaler with the HPA's arithmetic: the replicas wanted for ``total_lag``."""
    if total_lag <= rule.activation_lag_threshold:
        return rule.min_replicas
    capped = min(total_lag, rule.lag_threshold * rule.max_replicas)  # allowIdleConsumers: false
    want = math.ceil(capped / rule.lag_threshold)
    return max(rule.min_replicas, 1, min(want, rule.max_replicas))


@dataclass
class Stabilized:
    """Scale up at once, down only to the highest wish of the last ``cooldown_s`` seconds."""

    cooldown_s: float
    wishes: deque[tuple[float, int]] = field(default_factory=deque)

    def __call__(self, desired: int, now: float) -> int:
        self.wishes.append((now, desired))
        while self.wishes and self.wishes[0][0] < now - self.cooldown_s:
            self.wishes.popleft()
        return max(w for _, w in self.wishes)


@dataclass
class ServiceScaler:
    """Keeps one service's replicas where the rule says, through ``start`` and ``stop`` callbacks
    (the replica handles are the caller's); ``lag()`` reads the group's total lag from the broker."""

    service: str
    rule: LagRule
    lag: Callable[[], int]
    start: Callable[[], object]
    stop: Callable[[object], None]
    cooldown_s: float = COOLDOWN_S
    replicas: list[object] = field(default_factory=list)
    history: list[tuple[int, int]] = field(default_factory=list)  # (total lag, replicas) per tick
    _stabilized: Stabilized = field(init=False)

    def __post_init__(self) -> None:
        self._stabilized = Stabilized(self.cooldown_s)

    def tick(self, now: float | None = None) -> int:
        """Read the lag, apply the rule, start or stop replicas (the newest first); how many run.
        While the broker cannot say (a coordinator moving, a restart), nothing changes."""
        from confluent_kafka import KafkaException

        try:
            total = self.lag()
        except KafkaException as exc:
            log.info("%s: lag unknown (%s); replicas unchanged", self.service, exc.args[0].str())
            return len(self.replicas)
        target = self._stabilized(desired_replicas(total, self.rule), time.monotonic() if now is None else now)
        if target != len(self.replicas):
            log.info("%s: lag %d → %d replicas (from %d)", self.service, total, target, len(self.replicas))
        while len(self.replicas) < target:
            self.replicas.append(self.start())
        while len(self.replicas) > target:
            self.stop(self.replicas.pop())
        self.history.append((total, len(self.replicas)))
        return len(self.replicas)


def fleet_scalers(services: dict[str, list[object]], lag_of: Callable[[str], int], start: Callable[[str], object],
                  stop: Callable[[object], None], partitions: int, lag_threshold_: int | None = None,
                  cooldown_s: float = COOLDOWN_S) -> list[ServiceScaler]:
    """A scaler per service of ``services`` (name → the replicas already running), each between one
    replica and ``partitions``, at its own threshold (``LAG_THRESHOLDS``) or ``lag_threshold_`` for
    all, with the activation threshold at 1 % of it."""
    def rule(name: str) -> LagRule:
        threshold = LAG_THRESHOLDS[name] if lag_threshold_ is None else lag_threshold_
        return LagRule(threshold, threshold // 100, max_replicas=partitions, min_replicas=1)

    return [ServiceScaler(name, rule(name), lag=lambda name=name: lag_of(name), start=lambda name=name: start(name),
                          stop=stop, cooldown_s=cooldown_s, replicas=list(running))
            for name, running in services.items()]
