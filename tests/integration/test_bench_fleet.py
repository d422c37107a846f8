"""``ridestream bench --fleet --quick`` on the real broker: the backend's processes, the three services
and the broker together; every phase runs, every offered event is answered by the services that
answer its type, and the figures are positive and ordered. Correctness only — never a time or a rate."""

from __future__ import annotations

import json

from bench.run import bench_topics
from bench.whole_fleet import SERVICES, quick_config, run_fleet, steps, write
from broker.local import LocalBroker
from tests.integration.fleet import wait_for


def test_quick_fleet_bench_runs_every_phase_and_every_event_is_answered(kafka, local_broker_home, tmp_path):
    cfg = quick_config()
    broker = LocalBroker(local_broker_home / "session").pid()  # the session's own broker, when it started one
    phases: list[str] = []
    result = run_fleet(kafka.settings, cfg, [broker] if broker else [], phase=phases.append)
    assert wait_for(lambda: bench_topics(kafka.settings) == set(), timeout=30)  # none left behind
    assert result.dead_letters == 0

    assert [p.offered_per_s for p in result.latency] == list(cfg.latency_rates)
    for p in result.latency:
        assert all(a == b > 0 for a, b in p.answered.values()), p.answered  # every event its services answer
        assert p.answered["tip"] == p.answered["cost"] and p.answered["duration"][1] > p.answered["tip"][1]
        for q in (p.requests, p.progress):
            assert q.events > 0 and 0 < q.p50_ms <= q.p95_ms <= q.p99_ms
        assert p.requests.events == p.answered["tip"][1]
        assert p.delivered_per_s > 0

    assert [s.offered_per_s for s in result.steps] == steps(cfg) and len(result.steps) == cfg.max_steps
    for s in result.steps:
        assert s.producers == 1 and s.delivered_per_s > 0 and s.window_s > 0 and s.drained
        assert all(a == b > 0 for a, b in s.answered.values()), s.answered
        assert set(s.lag_slope_per_s) == set(SERVICES) and len(s.lag_samples) >= 3
        assert all(s.cpu_cores[name] > 0 for name in ("backend", *SERVICES))
        assert s.cpu_cores["machine"] >= s.cpu_cores["duration"]
        assert s.sustained == (s.why_not is None)
        if broker:
            assert s.cpu_cores["broker"] > 0
    assert result.highest_sustained is None or result.highest_sustained.sustained

    paths = write(result, tmp_path / "fleet.json")
    data = json.loads(paths[0].read_text())
    assert {"machine", "date", "load_average", "commit"} <= set(data)
    assert set(data["fleet"]["latency"]) == {str(int(r)) for r in cfg.latency_rates}
    assert len(data["fleet"]["steps"]) == cfg.max_steps and data["fleet"]["broker_measured"] == bool(broker)
    text = paths[1].read_text()
    assert "request → all three" in text and all(f"| {r:,.0f} |" in text for r in steps(cfg))
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
