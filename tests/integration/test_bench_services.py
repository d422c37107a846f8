"""``ridestream bench --service``'s quick mode: every phase for every service, on whole ride
lifecycles, on the real broker; the outputs are written. Correctness only — never a time."""

from __future__ import annotations

import json

from bench.run import bench_topics
from bench.services import LOOPS, SERVICES, answers, quick_config, run_services, write
from tests.integration.fleet import wait_for


def test_quick_service_bench_runs_every_phase_for_every_service(kafka, tmp_path):
    cfg = quick_config()
    result = run_services(kafka.settings, cfg, SERVICES)
    assert wait_for(lambda: bench_topics(kafka.settings) == set(), timeout=30)  # none left behind
    assert set(result.mix) == {"ride_requested", "ride_started", "ride_progress", "ride_completed"}
    assert sum(result.mix.values()) == cfg.events
    for name in SERVICES:
        r = result.services[name]
        assert cfg.events <= r.steady_events <= cfg.max_steady_events  # sized by time, --events the least
        for loop in ("passthrough", "batched"):  # timed over a steady window: every event taken, answered or not
            assert [0 < m.events <= r.steady_events and m.seconds > 0 for m in r.runs[loop]] == [True]
        assert 0 < r.runs["naive"][0].events <= cfg.naive_events
        lat, floor = r.latency["500"][0], r.latency_floor["500"][0]
        assert 0 < lat.events <= floor.events == 1000  # the service answers some of the events echo moves
        assert 0 < lat.p50_ms <= lat.p95_ms <= lat.p99_ms
        assert all(m.events > 0 for n in ("1", "2") for m in r.processes[n])
    assert result.services["duration"].latency["500"][0].events > result.services["tip"].latency["500"][0].events
    assert answers("duration")({"event_type": "ride_progress"}) and not answers("tip")({"event_type": "ride_progress"})

    paths = write(result, tmp_path / "services.json")
    data = json.loads(paths[0].read_text())
    assert set(data["services"]) == set(SERVICES)
    for name in SERVICES:
        each = data["services"][name]
        assert set(each["events_per_s"]) == set(LOOPS)
        assert set(each["latency_ms"]["500"]) == {"p50_ms", "p95_ms", "p99_ms"}
        assert each["throughput_window"]["window_s"] == cfg.window_seconds
    assert data["events_per_s"] == data["services"]["tip"]["events_per_s"]  # the tip bench's readers
    text = paths[1].read_text()
    assert all(f"| {name} |" in text for name in SERVICES) and "echo p50 / p95 / p99" in text
    assert f"{cfg.window_seconds:g} s window after" in text
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
