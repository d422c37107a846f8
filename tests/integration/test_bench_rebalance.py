"""`ridestream bench --rebalance --quick` on the real broker, on Kafka 4's consumer group protocol
(KIP-848; the fleet tests run on the classic one): a replica joins, one leaves with SIGTERM, one
dies with SIGKILL while events stream, and every event is still scored. It checks counts — never
a time."""

from __future__ import annotations

import json

from bench.rebalance import CHANGES, quick_config, run_rebalance, write_rebalance


def test_every_event_is_scored_across_a_join_a_leave_and_a_death_on_kip_848(kafka, tmp_path):
    cfg = quick_config()
    assert cfg.protocols == ("consumer",)
    phases: list[str] = []
    (result,) = run_rebalance(kafka.settings, cfg, phase=phases.append)
    assert [c.change for c in result.changes] == list(CHANGES) and len(phases) == len(CHANGES)
    for change in result.changes:
        assert change.events_after > 0 and change.scored_after == change.events_after, change  # none lost
        assert change.longest_wait_ms >= change.p99_wait_ms > 0
    paths = write_rebalance([result], cfg, tmp_path / "rebalance.json")
    data = json.loads(paths[0].read_text())["rebalance"]
    assert set(data["protocols"]) == {"consumer"} and data["config"]["session_timeout_ms"] == cfg.session_timeout_ms
    assert "| consumer |" in paths[1].read_text()
