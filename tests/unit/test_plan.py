"""``ridestream bench --plan RATE`` on synthetic bench results: exact replicas, partitions and brokers,
each with its source; a missing result is one line naming the command that makes it."""

from __future__ import annotations

import json
import os
import sys

import pytest

from bench.plan import HEADROOM, PlanInputError, make_plan, plan_from_results
from ridestream import cli

SERVICES = {"services": {
    # duration: one separate process (40,000/s) is below the in-process runtime (70,000/s): the lower counts
    "duration": {"events_per_s": {"batched": 70_000.0}, "processes_events_per_s": {"1": 40_000.0, "2": 60_000.0}},
    "tip": {"events_per_s": {"batched": 160_000.0}, "processes_events_per_s": {"1": 290_000.0}},
    "cost": {"events_per_s": {"batched": 160_000.0}},
}}
FLEET = {"fleet": {"broker_events_per_core_s": 30_000.0, "highest_sustained_delivered_per_s": 15_000.0},
         "machine": {"cores": 2}}


def _write(folder, services=True, fleet=True):
    folder.mkdir(parents=True, exist_ok=True)
    if services:
        (folder / "services.json").write_text(json.dumps(SERVICES))
    if fleet:
        (folder / "fleet.json").write_text(json.dumps(FLEET))
    return folder


@pytest.mark.parametrize(("rate", "rf", "expected"), [
    # replicas = ⌈rate ÷ (capacity × 50 %)⌉; partitions = max(largest group, 6);
    # brokers = max(rf, ⌈rate × rf ÷ (30,000/s per core × 2 cores × 50 %)⌉)
    (5_000, None, {"duration replicas": 1, "tip replicas": 1, "cost replicas": 1, "rides.events partitions": 6,
                   "replication factor": 3, "brokers": 3}),
    (50_000, None, {"duration replicas": 3, "tip replicas": 1, "cost replicas": 1, "rides.events partitions": 6,
                    "replication factor": 3, "brokers": 5}),
    (500_000, None, {"duration replicas": 25, "tip replicas": 7, "cost replicas": 7, "rides.events partitions": 25,
                     "replication factor": 3, "brokers": 50}),
    (500_000, 2, {"duration replicas": 25, "tip replicas": 7, "cost replicas": 7, "rides.events partitions": 25,
                  "replication factor": 2, "brokers": 34}),
])
def test_the_plan_is_the_measured_capacity_at_the_headroom(rate, rf, expected):
    assert HEADROOM == 0.5
    plan = make_plan(rate, SERVICES, FLEET, rf, min_partitions=6)
    assert {line.what: line.value for line in plan.lines} == expected
    sources = {line.what: line.source for line in plan.lines}
    assert "(50% × 40,000/s)" in sources["duration replicas"]
    assert "one `ridestream consume duration` process, 40,000/s" in sources["duration replicas"]
    assert "in process, 160,000/s" in sources["tip replicas"] and "in process, 160,000/s" in sources["cost replicas"]
    assert "30,000/s per broker" in sources["brokers"] and "fleet.json: 30,000 events/s per core" in sources["brokers"]
    assert "duration replica" in sources["rides.events partitions"]
    assert ("unset: 3" if rf is None else f"RIDESTREAM_REPLICATION_FACTOR={rf}") in sources["replication factor"]
    machines = -(-rate // 7_500)  # the whole fleet: 15,000/s at 50 %
    assert f"{machines:,} such machine{'s' if machines > 1 else ''} for" in plan.notes[0]


def test_plan_reads_the_results_folder_and_names_the_command_of_a_missing_file(tmp_path):
    folder = _write(tmp_path / "r")
    assert plan_from_results(50_000, None, 6, folder).value("brokers") == 5
    (folder / "fleet.json").unlink()
    with pytest.raises(PlanInputError, match=r"fleet.json not found: run `ridestream bench --fleet`"):
        plan_from_results(50_000, None, 6, folder)
    (folder / "fleet.json").write_text(json.dumps({"fleet": {"broker_events_per_core_s": None}, "machine": {}}))
    with pytest.raises(PlanInputError, match="no broker figure"):
        plan_from_results(50_000, None, 6, folder)


@pytest.mark.parametrize(("services", "fleet", "expected"), [
    (False, True, "bench/results/services.json not found: run `ridestream bench --service all` to produce it"),
    (True, False, "bench/results/fleet.json not found: run `ridestream bench --fleet` to produce it"),
])
def test_the_cli_says_in_one_line_which_result_is_missing(services, fleet, expected, tmp_path, monkeypatch, capsys):
    _write(tmp_path / "bench" / "results", services, fleet)
    monkeypatch.chdir(tmp_path)
    for var in [v for v in list(os.environ) if v.startswith("RIDESTREAM_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: the plan never asks a broker
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(sys, "argv", ["ridestream", "bench", "--plan", "50000"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code not in (0, None)
    said = capsys.readouterr()
    text = " ".join((said.out + said.err).split())
    assert expected in text and "Traceback" not in text and len((said.out + said.err).strip().splitlines()) == 1


def test_the_cli_prints_the_plan_with_its_sources(tmp_path, monkeypatch, capsys):
    _write(tmp_path / "bench" / "results")
    monkeypatch.chdir(tmp_path)
    for var in [v for v in list(os.environ) if v.startswith("RIDESTREAM_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(sys, "argv", ["ridestream", "bench", "--plan", "50000"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code in (0, None)
    text = capsys.readouterr().out
    assert "capacity plan for 50,000 ride events/s" in text
    assert all(what in text for what in ("duration replicas", "rides.events partitions", "brokers", "fleet.json"))
