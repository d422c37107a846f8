"""Lag autoscaling on a real broker: a burst overloads the tip service, the scaler adds replicas
as the lag grows and removes them after it drains (short cool-down), and no event is lost."""

from __future__ import annotations

import time

from ridestream.autoscale import LagRule, ServiceScaler
from ridestream.run_cmd import Offsets
from tests.integration.fleet import Fleet, fleet_env, publish, read_all, values


def test_a_burst_scales_tip_out_and_back_in_without_losing_an_event(kafka):
    kafka.create_contract_topics()
    s = kafka.settings
    fleet = Fleet(fleet_env(kafka.env()))
    offsets = Offsets(s)
    rule = LagRule(lag_threshold=500, activation_lag_threshold=5, max_replicas=s.events_partitions)
    scaler = ServiceScaler("tip", rule, lag=lambda: offsets.lag(s.group_id("tip"), s.topics.events),
                           start=lambda: fleet.start("tip"), stop=fleet.terminate, cooldown_s=3)
    try:
        assert scaler.tick() == 1  # no lag: the minimum, one replica (it takes seconds to start)
        sent = publish(s, rides=400, seed=11)  # the burst lands before that replica reads anything
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            scaler.tick()
            if max(n for _, n in scaler.history) > 1 and scaler.history[-1] == (0, 1):
                break
            time.sleep(0.5)
        lags = [lag for lag, _ in scaler.history]
        peak = max(n for _, n in scaler.history)
        assert peak == s.events_partitions, (scaler.history, fleet.output())  # capped by partitions
        assert scaler.history[-1] == (0, 1), scaler.history  # drained, then back to one after the cool-down
        at_peak = next(i for i, (_, n) in enumerate(scaler.history) if n == peak)
        assert max(lags[:at_peak + 1]) > rule.lag_threshold * (peak - 1)  # it rose with the lag
        assert all(p.returncode == 0 for p in fleet.procs if p.poll() is not None), fleet.output()  # drained cleanly
        requests = {e["event_id"] for e in sent if e["event_type"] == "ride_requested"}
        answered = {p["event_id"] for p in values(read_all(s, s.topics.predictions("tip"))) if not p.get("initial")}
        assert requests <= answered, f"{len(requests - answered)} requests lost"
    finally:
        fleet.close()
        offsets.close()
