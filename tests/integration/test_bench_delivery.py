"""The benchmark's exactly-once phase in small form: both modes measured on the real broker, every
offered event's prediction seen by a read_committed reader, the ratios and Markdown written. It
checks correctness only — never a time, never a ratio's value."""

from __future__ import annotations

from bench.delivery import DeliveryResult, markdown, measure_round
from bench.loops import ride_requests


def test_exactly_once_beside_at_least_once_in_one_run(kafka):
    result = DeliveryResult(rates=(500.0,))
    phases: list[str] = []
    measure_round(result, kafka.settings, 0, ride_requests(2000, seed=5), seconds=2, phase=phases.append)
    assert phases[0].startswith("at-least-once") and any(p.startswith("exactly-once") for p in phases)
    for mode in ("at_least_once", "exactly_once"):
        assert [m.events for m in result.throughput[mode]] == [2000]  # every prediction visible
        lat = result.latency[mode]["500"][0]
        assert lat.events == 1000 and 0 < lat.p50_ms <= lat.p95_ms <= lat.p99_ms
    data = result.as_json()
    assert set(data["ratios"]) == {"eos_vs_alos_throughput", "eos_vs_alos_p99_at_500"}
    assert all(v > 0 for v in data["ratios"].values())
    text = markdown(result)
    assert "| exactly-once |" in text and "of at-least-once throughput" in text
