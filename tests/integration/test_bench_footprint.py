"""The start-up and replay-memory phases of the bench run against the real broker and produce
every figure they report. Correctness only: no time or size is asserted."""

from __future__ import annotations

from bench.replay_memory import markdown as replay_markdown
from bench.replay_memory import replay_memory
from bench.run import bench_topics, topics_deleted_after
from bench.startup import markdown as startup_markdown
from bench.startup import run_startup


def test_startup_phase_measures_help_rss_and_the_first_prediction(kafka):
    with topics_deleted_after(kafka.settings):
        data = run_startup(kafka.settings, services=("tip",), repeat=1, rate=200.0, seconds=2.0).as_json()
    assert data["help_s"] > 0 and data["help_rss_mb"] > 0
    assert data["service_rss_mb"]["tip"] > 0 and data["first_prediction_s"]["tip"] > 0
    assert "| tip |" in "\n".join(startup_markdown(data))
    assert not bench_topics(kafka.settings)


def test_replay_memory_phase_replays_each_size_to_parquet(kafka):
    with topics_deleted_after(kafka.settings):
        rows = [r.as_json() for r in replay_memory(kafka.settings, "tip", sizes=(1000, 5000))]
    assert [r["events"] for r in rows] == [1000, 5000]
    assert all(r["peak_rss_mb"] > 0 and r["output_mb"] > 0 for r in rows)
    assert "| tip | 5,000 |" in "\n".join(replay_markdown(rows))
