"""The online evaluator on a real broker: simulated rides through the real backend, predictions with
known errors written by hand, the windowed MAE read back from ``rides.model_quality``; then a new
evaluator rebuilds the same figures from Kafka, plus what arrived while none was running."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import orjson
import pytest

from consumers.evaluator import OnlineEvaluator
from producer.backend import Backend
from producer.sources import simulated
from shared.contract.codec import encode_dict
from shared.contract.events import prediction_record
from shared.contract.topics import create_topics
from shared.kafka.clients import flush_all, make_admin, make_producer
from shared.ml.artifacts import load_model
from tests.integration.fleet import read_all, wait_for

RIDES = 200


def quality(settings) -> dict[str, dict]:
    """The latest record per key on the compacted model-quality topic."""
    try:
        msgs = read_all(settings, settings.topics.model_quality, timeout=10)
    except AssertionError:
        return {}
    return {m.key().decode(): orjson.loads(m.value()) for m in msgs}


class Rides:
    """Simulated rides, their actuals known before they are published."""

    def __init__(self, settings, n: int, seed: int):
        self.settings = settings
        self.chunks = list(simulated(n, seed=seed, chunk=n, id_prefix=f"ev{seed}"))
        events = [e for _, chunk in self.chunks for e in chunk]
        self.done = {e["ride_id"]: e for e in events if e["event_type"] == "ride_completed"}
        self.ids = sorted(self.done, key=lambda r: int(r.rsplit("-", 1)[1]))
        self.producer = make_producer(settings)

    def publish_events(self) -> None:
        """The lifecycles, live, with the backend's initial duration estimates."""
        stats = Backend(self.settings, load_model("initial_duration")).publish(self.chunks, live=True)
        assert stats.failed == 0

    def predict(self, service: str, rides: list[str], value, version: str, variant: str | None = None,
                topic: str | None = None, **extra) -> None:
        for r in rides:
            record = prediction_record(service, version, r, f"{r}-req", "2026-01-01T00:00:00Z", value(self.done[r]),
                                       "2026-01-01T00:00:00Z", variant=variant,
                                       **{k: f(self.done[r]) for k, f in extra.items()})
            self.producer.produce(topic or self.settings.topics.predictions(service), key=r.encode(),
                                  value=encode_dict(record))
        flush_all(self.producer)


def start(settings, **kwargs) -> tuple[OnlineEvaluator, threading.Thread]:
    evaluator = OnlineEvaluator(settings, publish_every_s=0.3, discover_every_s=0.5, **kwargs)
    thread = threading.Thread(target=evaluator.run, daemon=True)
    thread.start()
    assert evaluator.wait_ready(30), "the evaluator did not catch up"
    return evaluator, thread


EXPECTED = {
    "tip/v1/stable/request": (RIDES // 2, 0.5),
    "tip/v2/candidate/request": (RIDES // 2, 1.0),
    "tip/v2/shadow/request": (RIDES, 0.75),
    "duration/d1/none/p50": (RIDES, 2.0),
}


def published_as_expected(settings, extra: dict | None = None) -> bool:
    got = quality(settings)
    return all(k in got and got[k]["n"] == n and got[k]["mae"] == pytest.approx(mae, abs=1e-3)
               for k, (n, mae) in {**EXPECTED, **(extra or {})}.items())


def shown(settings) -> str:
    return str({k: (v["n"], round(v["mae"], 4)) for k, v in quality(settings).items()})


def check_first_evaluator(s, rides: Rides, ev1: OnlineEvaluator) -> None:
    """Predictions with known errors, before and after their rides complete, repeated, on a shadow
    topic made while the evaluator runs, and one unreadable: the published figures are exact."""
    ids, half = rides.ids, RIDES // 2
    stable, candidate = ids[0::2], ids[1::2]
    first_half, second_half = set(ids[:half]), set(ids[half:])
    # predictions before their rides complete, for half the rides…
    rides.predict("tip", [r for r in stable if r in first_half], lambda c: c["tip_amount"] + 0.5, "v1", "stable")
    rides.predict("tip", [r for r in candidate if r in first_half], lambda c: c["tip_amount"] + 1.0, "v2", "candidate")
    rides.publish_events()
    # …and after, for the others; a few repeated (the same prediction_id) count once
    rides.predict("tip", [r for r in stable if r in second_half], lambda c: c["tip_amount"] + 0.5, "v1", "stable")
    rides.predict("tip", [r for r in candidate if r in second_half], lambda c: c["tip_amount"] + 1.0, "v2", "candidate")
    rides.predict("tip", stable[:20], lambda c: c["tip_amount"] + 0.5, "v1", "stable")
    # duration answers half way through each ride (elapsed = value − remaining_min = duration / 2), 2 min off
    rides.predict("duration", ids, lambda c: round(c["duration_min"] + 2, 3), "d1",
                  remaining_min=lambda c: round(c["duration_min"] + 2 - c["duration_min"] / 2, 3))
    # a shadow topic made while the evaluator runs is found and read
    create_topics(make_admin(s), [s.shadow_spec("tip")])
    rides.predict("tip", ids, lambda c: c["tip_amount"] + 0.75, "v2", topic=s.topics.shadow("tip"))
    rides.producer.produce(s.topics.predictions("tip"), key=b"x", value=b"not a prediction")
    flush_all(rides.producer)

    initial_version = load_model("initial_duration").version
    assert wait_for(lambda: published_as_expected(s), timeout=30), shown(s)
    got = quality(s)
    assert got[f"duration/{initial_version}/none/initial"]["n"] == RIDES  # the backend's own estimates
    record = got["tip/v1/stable/request"]
    assert record["window_s"] == 600 and record["sd"] == pytest.approx(0, abs=1e-9) and record["variant"] == "stable"
    # the controller's in-process view agrees
    assert ev1.stats("tip", "v2", "candidate").n == half
    assert ev1.stats("tip", "v2", "candidate").mae == pytest.approx(1.0)
    assert ev1.stats("tip", variant="shadow").n == RIDES
    assert ev1.stats("duration", "d1", stage="p50").mae == pytest.approx(2.0, abs=1e-3)


def test_online_mae_per_variant_and_stage_and_a_restart_rebuilds_it(kafka):
    kafka.create_contract_topics()
    s = kafka.settings
    rides = Rides(s, RIDES, seed=11)
    ids = rides.ids

    ev1, t1 = start(s)
    try:
        check_first_evaluator(s, rides, ev1)
    finally:
        ev1.stop()
        t1.join(30)
    assert not t1.is_alive()
    assert ev1.totals.malformed == 1 and ev1.totals.counts.duplicates == 20
    before = ev1.figures()

    # while no evaluator runs, cost predictions arrive: the next one must judge them too
    rides.predict("cost", ids, lambda c: round(c["total_amount"] - c["tip_amount"], 2) - 0.25, "c1")
    ev2, t2 = start(s)
    try:
        assert wait_for(lambda: published_as_expected(s, {"cost/c1/none/request": (RIDES, 0.25)}), timeout=30), \
            shown(s)
        after = ev2.figures()
        for key, stats in before.items():
            assert after[key].n == stats.n and after[key].mae == pytest.approx(stats.mae), key
        assert ev2.counts().duplicates == 20  # rebuilt from the same messages, the same verdicts
    finally:
        ev2.stop()
        t2.join(30)


def test_the_command_runs_until_sigterm_and_says_what_it_did(kafka):
    kafka.create_contract_topics()
    rides = Rides(kafka.settings, 50, seed=12)
    rides.publish_events()
    rides.predict("tip", rides.ids, lambda c: c["tip_amount"] + 0.5, "v1")
    code = "from ridestream.online_cmd import online; online(publish_every_s=0.3)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=kafka.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: quality(kafka.settings).get("tip/v1/none/request", {}).get("n") == 50, timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "caught up" in stderr
    assert "stopped after" in stderr and "50 rides completed" in stderr
