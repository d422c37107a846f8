"""`ridestream bench --web --quick`: every phase of the web bench runs on the real broker and its
outputs are written. It checks that it runs and what it counted — never a time, never a ratio."""

from __future__ import annotations

import json

from bench.web import quick_config, run_web, write_web


def test_quick_web_bench_runs_every_phase(kafka, tmp_path):
    kafka.create_contract_topics()
    cfg = quick_config()
    phases: list[str] = []
    result = run_web(kafka.settings, cfg, phase=phases.append)
    assert {x.name for x in result.predict} == {"naive", "batched", "batched_one_trip"}
    assert all(x.errors == 0 and x.ok == x.requests and x.per_s > 0 for x in result.predict + result.rides)
    assert result.sse["clients"] == cfg.sse_clients and result.sse["received"] == result.sse["predictions"]
    assert result.answer["request_answer_remote_duration"]["answered_remotely"] > 0  # it did ask the duration service
    assert result.answer["event_stream_duration_service"]["answered"] > 0  # the fleet's answer reached the stream
    paths = write_web(result, tmp_path / "web.json")
    data = json.loads(paths[0].read_text())
    assert set(data["web"]) >= {"predict", "predict_vs_naive", "rides", "sse", "answer"}
    assert "| naive |" in paths[1].read_text() and "SSE fan-out" in paths[1].read_text()
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
