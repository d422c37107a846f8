"""The benchmark's quick mode: every loop runs on the real broker and the outputs are written.
It checks correctness only — never a time."""

from __future__ import annotations

import json

from bench.run import LOOPS, BenchConfig, run, write
from tests.integration.fleet import read_all


def test_quick_bench_runs_every_loop_on_the_same_events(kafka, tmp_path):
    cfg = BenchConfig(events=3000, repeat=1, naive_events=150, naive_seconds=10, partitions=3)
    phases: list[str] = []
    result = run(kafka.settings, cfg, phase=phases.append)
    assert [m.events for m in result.runs["passthrough"]] == [3000]
    assert [m.events for m in result.runs["batched"]] == [3000]
    assert 0 < result.runs["naive"][0].events <= 150
    assert all(m.seconds > 0 for ms in result.runs.values() for m in ms)
    assert any("passthrough" in p for p in phases) and any("naive" in p for p in phases)

    paths = write(result, tmp_path / "bench.json")
    data = json.loads(paths[0].read_text())
    assert set(data["events_per_s"]) == set(LOOPS)
    assert {"cores", "memory_gib", "cpu"} <= set(data["machine"])
    assert "| batched |" in paths[1].read_text()
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
