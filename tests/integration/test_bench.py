"""The benchmark's quick mode: every loop runs on the real broker and the outputs are written,
the batched peers (FastStream, Faust, each in its own virtualenv) and the rollout phases included
(shadow, canary, a live swap). It checks correctness only — never a time, never a ratio."""

from __future__ import annotations

import json

from bench.run import LOOPS, BenchConfig, bench_topics, run, write
from tests.integration.fleet import wait_for


def test_quick_bench_runs_every_loop_on_the_same_events(kafka, tmp_path):
    cfg = BenchConfig(events=3000, repeat=1, naive_events=150, naive_seconds=10, partitions=3,
                      warmup_seconds=0.2, window_seconds=0.5, max_steady_events=30_000,
                      latency_rates=(500.0,), peer_latency_rates=(500.0,), latency_seconds=2, latency_lead_in_s=2,
                      process_events=2000,
                      startup_repeat=1,
                      startup_rate=200.0, startup_seconds=2.0,
                      delivery=False)  # exactly-once vs at-least-once: tests/integration/test_bench_delivery.py
    phases: list[str] = []
    result = run(kafka.settings, cfg, phase=phases.append)
    assert any("deleting the" in p for p in phases)
    assert wait_for(lambda: bench_topics(kafka.settings) == set(), timeout=30)  # none left behind
    # the throughput loops on the steady topic, sized by time: at least the 3,000 events, at most the cap
    assert 3000 <= result.steady_events <= 30_000 and result.estimate_per_s > 0
    for loop in ("passthrough", "batched", "faststream", "faust"):  # each over its window (or what it had)
        assert [0 < m.events <= result.steady_events for m in result.runs[loop]] == [True], (loop, result.notes)
        assert result.runs[loop][0].full_window is not None
    assert 0 < result.runs["naive"][0].events <= 150
    assert 0 < result.runs["quix"][0].events <= 150, result.notes  # Quix Streams, in its own virtualenv
    assert all(m.seconds > 0 for ms in result.runs.values() for m in ms)
    for peer in ("faststream", "faust"):  # as services: every offered event scored
        lat = result.peer_latency[peer]["500"][0]
        assert lat.events == 1000 and 0 < lat.p50_ms <= lat.p95_ms <= lat.p99_ms, peer
    assert any("passthrough" in p for p in phases) and any("naive" in p for p in phases) and any("Quix" in p for p in phases)
    assert any("FastStream" in p for p in phases) and any("Faust" in p for p in phases)
    lat = result.latency["500"][0]
    assert lat.events == 1000 and 0 < lat.p50_ms <= lat.p95_ms <= lat.p99_ms  # every offered event scored
    floor = result.latency_floor["500"][0]
    assert floor.events == 1000 and 0 < floor.p50_ms <= floor.p95_ms <= floor.p99_ms  # every event echoed
    assert [m.events for m in result.processes["1"]] == [2000] and [m.events for m in result.processes["2"]] == [2000]
    assert result.replay[0].events == 3000
    assert [m.events > 0 for m in result.drift_off] == [True] and any("drift counting off" in p for p in phases)
    # under a plan: the same 3,000 events with no plan, a shadow (every event scored twice, the
    # candidate's answers on the shadow topic) and a canary; the swap planned half way is audited
    modes = result.rollout.rounds[0]
    assert set(modes) == {"single", "shadow", "canary"} and all(run.measure.events == 3000 for run in modes.values())
    assert modes["shadow"].shadow_events == 3000 and modes["single"].shadow_events == 0
    assert "shadow tip vbenchcandidate" in modes["shadow"].served
    assert "candidate tip vbenchcandidate (50 %)" in modes["canary"].served and "plan" not in modes["single"].served
    swap, still = result.swap.runs["swap"][0], result.swap.runs["no_swap"][0]
    assert swap.swapped and swap.load_s is not None and not still.swapped
    assert swap.events == still.events == 2000 and set(still.variants) == {"none"}

    paths = write(result, tmp_path / "bench.json")
    data = json.loads(paths[0].read_text())
    assert set(data["events_per_s"]) == set(LOOPS) == {"passthrough", "batched", "naive", "quix", "faststream", "faust"}
    assert all(data["events_per_s"][loop] > 0 for loop in LOOPS)
    assert set(data["throughput_summary"]) == set(LOOPS)
    assert all(set(s) == {"min", "median", "max"} for s in data["throughput_summary"].values())
    window = data["throughput_window"]
    assert window["window_s"] == 0.5 and window["steady_events"] == result.steady_events
    assert set(window["loops"]) == {"passthrough", "batched", "faststream", "faust"}
    assert set(data["peers_latency_ms"]) == {"faststream", "faust"}
    assert set(data["peers_latency_ms"]["faust"]["500"]) == {"p50_ms", "p95_ms", "p99_ms"}
    targets = data["peer_targets"]
    assert targets["best_batched_peer"] in {"faststream", "faust"} and targets["throughput_vs_best_peer"] > 0
    assert "p99_ms_at_5000" not in targets  # the quick mode offers 500 events/s only
    assert "| faststream |" in paths[1].read_text() and "| faust |" in paths[1].read_text()
    assert {"cores", "memory_gib", "cpu"} <= set(data["machine"])
    assert set(data["latency_ms"]["500"]) == set(data["latency_floor_ms"]["500"]) == {"p50_ms", "p95_ms", "p99_ms"}
    assert data["processes_events_per_s"]["two_vs_one"] > 0 and data["replay_events_per_s"] > 0
    assert set(data["processes_cpu_busy"]) == {"1", "2"} and all(0 < b <= 1 for b in data["processes_cpu_busy"].values())
    assert "| batched |" in paths[1].read_text() and "cores were" in paths[1].read_text()
    assert "echo p50 / p95 / p99" in paths[1].read_text()
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rollout = data["rollout"]
    assert all(rollout[k] > 0 for k in ("single", "shadow", "canary", "shadow_ratio", "canary_ratio"))
    assert len(rollout["rounds"]) == 1 and rollout["rounds"][0]["shadow_events"] == 3000
    swapped = data["swap_latency"]
    assert swapped["offered_per_s"] == 1000 and len(swapped["rounds"]) == 1
    assert all(swapped[run]["p99_ms"] > 0 and len(swapped[f"{run}_p99_spread_ms"]) == 2 for run in ("swap", "no_swap"))
    assert "p99_added_ms" in swapped and "swaps_in_window" in swapped
    assert "| shadow |" in paths[1].read_text() and "| live swap |" in paths[1].read_text()
    startup = data["startup"]
    assert startup["help_s"] > 0 and set(startup["service_rss_mb"]) == set(startup["first_prediction_s"]) == {
        "tip", "duration", "cost"}
    assert "ridestream --help" in paths[1].read_text()
    drift = data["drift"]
    assert drift["on_events_per_s"] > 0 and drift["off_events_per_s"] > 0 and len(drift["cost_per_round"]) == 1
    assert "Drift counting" in paths[1].read_text()
