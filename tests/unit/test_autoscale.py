"""KEDA's Kafka-scaler rule as ridestream.autoscale applies it (and the manifests' numbers come from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.plan import load, service_capacity
from ridestream.autoscale import (
    ACTIVATION_LAG_THRESHOLDS,
    LAG_THRESHOLDS,
    MEASURED_EVENTS_PER_S,
    LagRule,
    ServiceScaler,
    Stabilized,
    desired_replicas,
    fleet_scalers,
    lag_threshold,
)

ROOT = Path(__file__).resolve().parents[2]

RULE = LagRule(lag_threshold=100, activation_lag_threshold=10, max_replicas=6, min_replicas=1)


@pytest.mark.parametrize("lag, want", [
    (0, 1), (10, 1),            # at or below activation: the minimum
    (11, 1), (100, 1),          # active: ceil(lag / threshold)
    (101, 2), (250, 3), (600, 6),
    (601, 6), (10**9, 6),       # capped by the partitions (allowIdleConsumers: false)
])
def test_desired_is_ceil_of_lag_over_threshold_capped_by_partitions(lag, want):
    assert desired_replicas(lag, RULE) == want


def test_scale_to_zero_only_below_activation():
    rule = LagRule(100, 10, max_replicas=3, min_replicas=0)
    assert desired_replicas(10, rule) == 0
    assert desired_replicas(11, rule) == 1  # active: at least one, even below the threshold


def test_bad_rules_are_refused():
    for args in ((0, 0, 3), (100, -1, 3), (100, 0, 0)):
        with pytest.raises(ValueError):
            LagRule(*args)
    with pytest.raises(ValueError):
        LagRule(100, 0, max_replicas=2, min_replicas=3)


def test_scale_up_at_once_and_down_after_the_cooldown():
    s = Stabilized(cooldown_s=30)
    assert [s(1, 0), s(4, 1), s(2, 10), s(1, 32), s(1, 41)] == [1, 4, 4, 2, 1]


def test_the_scaler_starts_and_stops_replicas_newest_first():
    lags = iter([500, 500, 0, 0])
    started, stopped = [], []

    def start():
        started.append(f"r{len(started) + 1}")
        return started[-1]

    scaler = ServiceScaler("tip", RULE, lag=lambda: next(lags), start=start, stop=stopped.append,
                           cooldown_s=5, replicas=["r0"])
    assert [scaler.tick(now=t) for t in (0, 1, 2, 7)] == [5, 5, 5, 1]
    assert stopped == ["r4", "r3", "r2", "r1"] and scaler.replicas == ["r0"]
    assert scaler.history == [(500, 5), (500, 5), (0, 5), (0, 1)]


def test_each_services_threshold_is_derived_from_its_measured_throughput():
    for service, rate in MEASURED_EVENTS_PER_S.items():
        assert LAG_THRESHOLDS[service] == lag_threshold(rate, 0.5, 10) == int(rate * 5) // 1000 * 1000
        assert ACTIVATION_LAG_THRESHOLDS[service] == LAG_THRESHOLDS[service] // 100
    # the rates are the capacity `ridestream bench --plan` takes from bench/results/services.json
    measured = load(ROOT / "bench/results/services.json")
    assert MEASURED_EVENTS_PER_S == {s: int(service_capacity(measured, s)[0]) for s in MEASURED_EVENTS_PER_S}


def test_a_given_threshold_applies_to_every_service_else_each_has_its_own():
    services = {"tip": [], "duration": []}
    own = fleet_scalers(services, lambda s: 0, lambda s: s, lambda c: None, partitions=6)
    assert [s.rule.lag_threshold for s in own] == [LAG_THRESHOLDS["tip"], LAG_THRESHOLDS["duration"]]
    given = fleet_scalers(services, lambda s: 0, lambda s: s, lambda c: None, partitions=6, lag_threshold_=500)
    assert [(s.rule.lag_threshold, s.rule.activation_lag_threshold) for s in given] == [(500, 5), (500, 5)]
