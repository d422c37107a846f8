"""Rolling model versions out in the running fleet, on a real broker with real models: live swaps
under a steady stream, canary shares that stick to rides, A/B cohorts that stick to riders across
replicas and a rebalance, shadow output that never reaches riders, refusals of artifacts a
replica cannot use, promotion and rollback."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from consumers.control import ControlWriter, audit_history, latest_plans
from consumers.deployment import in_share
from consumers.rollout import start_plan
from shared import PROJECT_ROOT
from tests.integration.fleet import RIDESTREAM, Fleet, fleet_env, publish, read_all, values, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A model store of the committed models plus a candidate tip version: the same trees under
    another version id, so every prediction says which side made it."""
    root = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models", root)
    champion = (root / "tip" / "CURRENT").read_text().strip()
    shutil.copytree(root / "tip" / champion, root / "tip" / "vcandidate1")
    meta_path = root / "tip" / "vcandidate1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": "vcandidate1"}, indent=2))
    return root


@pytest.fixture
def fleet(kafka, store):
    kafka.create_contract_topics()
    f = Fleet(fleet_env(kafka.env(), RIDESTREAM_MODEL_STORE=str(store)))
    yield f
    f.close()


def cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RIDESTREAM, *args], env=fleet.env, capture_output=True, text=True, timeout=120)


def tip_predictions(kafka, topic: str | None = None) -> list[dict]:
    try:
        return values(read_all(kafka.settings, topic or kafka.settings.topics.predictions("tip")))
    except KafkaException:  # a topic this new may have no leader yet
        return []


def audited(kafka, action: str, plan_id: int) -> bool:
    return any(r.action == action and r.plan_id == plan_id for r in audit_history(kafka.settings, "tip"))


def requests_of(events: list[dict]) -> set[str]:
    return {e["event_id"] for e in events if e["event_type"] == "ride_requested"}


def test_a_live_canary_swap_under_a_steady_stream_loses_and_repeats_nothing(kafka, fleet):
    fleet.start("tip")
    champion = (Path(fleet.env["RIDESTREAM_MODEL_STORE"]) / "tip" / "CURRENT").read_text().strip()
    sent: list[dict] = []
    publisher = threading.Thread(target=lambda: sent.extend(
        publish(kafka.settings, rides=1500, seed=3, rate=400.0, id_prefix="steady")))
    publisher.start()
    assert wait_for(lambda: len(tip_predictions(kafka)) > 50, timeout=120)
    plan = start_plan("tip", "canary", {"tip": champion}, {"tip": "vcandidate1"}, None, steps=[30.0, 100.0],
                      interval_s=3600)
    writer = ControlWriter(kafka.settings, "test")
    writer.plan(plan, "plan")
    writer.close()
    assert wait_for(lambda: audited(kafka, "swapped", plan.plan_id), timeout=60)
    publisher.join()
    requests = requests_of(sent)
    assert wait_for(lambda: requests <= {p["event_id"] for p in tip_predictions(kafka)}, timeout=120)

    preds = tip_predictions(kafka)
    counts = Counter(p["event_id"] for p in preds)
    assert set(counts) == requests and max(counts.values()) == 1  # every request answered once, across the swap
    before = [p for p in preds if "variant" not in p]
    after = [p for p in preds if "variant" in p]
    assert before and after and all(p["model_version"] == champion for p in before)
    # the candidate answered exactly the rides the plan's salted hash puts in its 30 %
    expected = in_share([p["ride_id"] for p in after], plan.salt, plan.share)
    got = [p["variant"] == "candidate" for p in after]
    assert got == expected.tolist()
    assert all((p["model_version"] == "vcandidate1") == (p["variant"] == "candidate") for p in after)
    assert 0.2 < sum(got) / len(got) < 0.4


def test_shadow_never_reaches_riders_and_rollback_is_instant(kafka, fleet):
    fleet.start("tip")
    deploy = cli(fleet, "deploy", "shadow", "tip", "--version", "vcandidate1")
    assert deploy.returncode == 0, deploy.stderr
    plan = latest_plans(kafka.settings)["tip"]
    assert plan.strategy == "shadow" and plan.candidate == {"tip": "vcandidate1"}
    assert wait_for(lambda: audited(kafka, "swapped", plan.plan_id), timeout=60)
    sent = publish(kafka.settings, rides=200, seed=4, id_prefix="shadowed")
    requests = requests_of(sent)
    shadow_topic = kafka.settings.topics.shadow("tip")
    assert wait_for(lambda: requests <= {p["event_id"] for p in tip_predictions(kafka, shadow_topic)}, timeout=90)
    assert wait_for(lambda: requests <= {p["event_id"] for p in tip_predictions(kafka)}, timeout=90)
    user = [p for p in tip_predictions(kafka) if p["event_id"] in requests]
    shadow = [p for p in tip_predictions(kafka, shadow_topic) if p["event_id"] in requests]
    assert {p["variant"] for p in user} == {"stable"} and "vcandidate1" not in {p["model_version"] for p in user}
    assert {(p["variant"], p["model_version"]) for p in shadow} == {("shadow", "vcandidate1")}
    assert len(user) == len(shadow) == len(requests)

    def status() -> str:
        return cli(fleet, "deploy", "status", "tip").stdout

    # the replica's periodic report (every 10 s) pairs the two sides on the same events: the same trees
    assert wait_for(lambda: "mean difference +0.000" in status(), timeout=60), status()
    assert "shadow of tip vcandidate1" in status()

    back = cli(fleet, "deploy", "rollback", "tip")
    assert back.returncode == 0, back.stderr
    ended = latest_plans(kafka.settings)["tip"]
    assert ended.state == "rolled_back" and ended.plan_id == plan.plan_id + 1
    assert wait_for(lambda: audited(kafka, "swapped", ended.plan_id), timeout=30)
    later = requests_of(publish(kafka.settings, rides=50, seed=5, id_prefix="after"))
    assert wait_for(lambda: later <= {p["event_id"] for p in tip_predictions(kafka)}, timeout=60)
    assert all("variant" not in p for p in tip_predictions(kafka) if p["event_id"] in later)
    history = cli(fleet, "deploy", "history", "tip")
    assert history.returncode == 0 and "rollback" in history.stdout and "swapped" in history.stdout


def test_ab_cohorts_stick_to_riders_across_replicas_and_a_rebalance(kafka, fleet):
    first = fleet.start("tip")
    fleet.start("tip")
    deploy = cli(fleet, "deploy", "ab", "tip", "--version", "vcandidate1", "--share", "50")
    assert deploy.returncode == 0, deploy.stderr
    plan = latest_plans(kafka.settings)["tip"]
    assert wait_for(lambda: sum(r.action == "swapped" and r.plan_id == plan.plan_id
                                for r in audit_history(kafka.settings, "tip")) >= 2, timeout=60)
    sent = publish(kafka.settings, rides=300, seed=6, id_prefix="ab1")
    fleet.kill(first)  # its partitions move to the other replica
    sent += publish(kafka.settings, rides=300, seed=7, id_prefix="ab2")
    requests = requests_of(sent)
    assert wait_for(lambda: requests <= {p["event_id"] for p in tip_predictions(kafka)}, timeout=120)
    rider_of = {e["ride_id"]: e["rider_id"] for e in sent}
    sides: dict[str, set[str]] = {}
    for p in tip_predictions(kafka):
        if p["event_id"] in requests:
            sides.setdefault(rider_of[p["ride_id"]], set()).add(p["variant"])
    assert all(len(s) == 1 for s in sides.values())  # a rider is always in one cohort
    assert {"a", "b"} == set().union(*sides.values())
    riders = sorted(sides)
    assert [sides[r] == {"b"} for r in riders] == in_share(riders, plan.salt, 50.0).tolist()


def test_an_artifact_the_replica_cannot_use_is_refused_while_the_stable_serves(kafka, fleet):
    store = Path(fleet.env["RIDESTREAM_MODEL_STORE"])
    blob = store / "tip" / "vcandidate1" / "model.joblib"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    blob.write_bytes(bytes(data))
    fleet.start("tip")
    champion = (store / "tip" / "CURRENT").read_text().strip()
    refused = cli(fleet, "deploy", "canary", "tip", "--version", "vcandidate1")
    assert refused.returncode == 1 and "checksum" in refused.stderr and "Traceback" not in refused.stderr
    # written past the CLI's own check, the replica refuses it itself
    plan = start_plan("tip", "canary", {"tip": champion}, {"tip": "vcandidate1"}, None, steps=[50.0])
    writer = ControlWriter(kafka.settings, "test")
    writer.plan(plan, "plan")
    writer.close()
    assert wait_for(lambda: audited(kafka, "refused", plan.plan_id), timeout=60)
    reason = next(r.reason for r in audit_history(kafka.settings, "tip") if r.action == "refused")
    assert "checksum" in reason
    # an incompatible one: intact bytes, but built on other features than this code makes
    incompatible = store / "tip" / "vincompatible1"
    shutil.copytree(store / "tip" / champion, incompatible)
    meta = json.loads((incompatible / "metadata.json").read_text())
    meta.update(version="vincompatible1", features=meta["features"][:-1])
    (incompatible / "metadata.json").write_text(json.dumps(meta, indent=2))
    other = start_plan("tip", "canary", {"tip": champion}, {"tip": "vincompatible1"}, plan, steps=[50.0])
    writer = ControlWriter(kafka.settings, "test")
    writer.plan(other, "plan")
    writer.close()
    assert wait_for(lambda: audited(kafka, "refused", other.plan_id), timeout=60)
    reasons = [r.reason for r in audit_history(kafka.settings, "tip") if r.action == "refused"]
    assert "features" in reasons[-1] and len(reasons[-1].splitlines()) == 1
    requests = requests_of(publish(kafka.settings, rides=100, seed=8, id_prefix="refused"))
    assert wait_for(lambda: requests <= {p["event_id"] for p in tip_predictions(kafka)}, timeout=60)
    assert {(p["model_version"], p.get("variant")) for p in tip_predictions(kafka)} == {(champion, None)}


@pytest.fixture
def controller(kafka, store, monkeypatch):
    """The online evaluator with the rollout controller on its ticks, in a thread (as
    `ridestream evaluate --online` runs it), publishing every second."""
    from consumers.evaluator import OnlineEvaluator
    from consumers.rollout import controller_tick

    monkeypatch.setenv("RIDESTREAM_MODEL_STORE", str(store))  # where a promotion moves the champion alias
    evaluator = OnlineEvaluator(kafka.settings, publish_every_s=1.0, on_tick=controller_tick(kafka.settings))
    thread = threading.Thread(target=evaluator.run, daemon=True)
    thread.start()
    assert evaluator.wait_ready(60)
    yield evaluator
    evaluator.stop()
    thread.join(30)


def test_a_worse_canary_is_rolled_back_automatically_having_answered_only_its_share(kafka, fleet, store, controller):
    from training.candidates import distance_only

    worse = distance_only("tip", store).name  # distance-only: about twice the champion's error
    fleet.start("tip")
    deploy = cli(fleet, "deploy", "canary", "tip", "--version", worse, "--steps", "50,100", "--interval", "2s",
                 "--min-samples", "40")
    assert deploy.returncode == 0, deploy.stderr
    plan = latest_plans(kafka.settings)["tip"]
    assert wait_for(lambda: audited(kafka, "swapped", plan.plan_id), timeout=60)
    sent = publish(kafka.settings, rides=400, seed=9, id_prefix="worse")
    assert wait_for(lambda: latest_plans(kafka.settings)["tip"].state == "rolled_back", timeout=120)
    ended = latest_plans(kafka.settings)["tip"]
    decision = next(r for r in audit_history(kafka.settings, "tip") if r.action == "rollback")
    assert decision.actor == "controller" and "automatic rollback" in decision.reason
    assert decision.detail["candidate"]["mae"] > decision.detail["stable"]["mae"] * 1.1
    assert ended.stable == plan.stable and not ended.candidate
    requests = requests_of(sent)
    assert wait_for(lambda: requests <= {p["event_id"] for p in tip_predictions(kafka)}, timeout=60)
    answered = [p for p in tip_predictions(kafka) if p["event_id"] in requests and p.get("variant") == "candidate"]
    assert answered and all(p["model_version"] == worse for p in answered)
    assert in_share([p["ride_id"] for p in answered], plan.salt, plan.share).all()  # only its 50 %


def test_a_good_canary_steps_up_and_is_promoted(kafka, fleet, store, controller):
    fleet.start("tip")
    deploy = cli(fleet, "deploy", "canary", "tip", "--version", "vcandidate1", "--steps", "50,100",
                 "--interval", "2s", "--min-samples", "40", "--max-mae-ratio", "1.5")
    assert deploy.returncode == 0, deploy.stderr
    plan = latest_plans(kafka.settings)["tip"]
    assert wait_for(lambda: audited(kafka, "swapped", plan.plan_id), timeout=60)
    publish(kafka.settings, rides=300, seed=10, id_prefix="good1")
    assert wait_for(lambda: latest_plans(kafka.settings)["tip"].share == 100, timeout=120)
    stepped = latest_plans(kafka.settings)["tip"]
    assert wait_for(lambda: audited(kafka, "swapped", stepped.plan_id), timeout=60)
    publish(kafka.settings, rides=200, seed=11, id_prefix="good2")
    assert wait_for(lambda: latest_plans(kafka.settings)["tip"].state == "promoted", timeout=120)
    done = latest_plans(kafka.settings)["tip"]
    assert done.stable == {"tip": "vcandidate1"} and done.strategy is None
    assert (store / "tip" / "CURRENT").read_text().strip() == "vcandidate1"  # the champion alias moved
    actions = [r.action for r in audit_history(kafka.settings, "tip") if r.actor in ("cli", "controller")]
    assert actions == ["plan", "step", "promote"]


def test_a_rolling_update_moves_replicas_one_at_a_time_and_loses_nothing_when_one_is_killed(kafka, fleet, store):
    procs = [fleet.start("tip") for _ in range(3)]
    host = __import__("socket").gethostname()
    by_id = {f"{host}:{p.pid}": p for p in procs}
    from consumers.rollout import group_replicas

    assert wait_for(lambda: sorted(group_replicas(kafka.settings, "tip")) == sorted(by_id), timeout=90)
    sent: list[dict] = []
    publisher = threading.Thread(target=lambda: sent.extend(
        publish(kafka.settings, rides=800, seed=12, rate=400.0, id_prefix="rolling")))
    publisher.start()
    roll = subprocess.Popen([*RIDESTREAM, "deploy", "rolling", "tip", "--version", "vcandidate1", "--timeout", "60s"],
                            env=fleet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    order = sorted(by_id)
    # once the first replica serves the candidate, SIGKILL the one whose turn is next
    assert wait_for(lambda: any(r.action == "swapped" and r.actor == f"replica {order[0]}" and
                                _names(kafka, r.plan_id) == [order[0]]
                                for r in audit_history(kafka.settings, "tip")), timeout=90)
    fleet.kill(by_id[order[1]])
    out, err = roll.communicate(timeout=240)
    assert roll.returncode == 0, out + err
    publisher.join()
    done = latest_plans(kafka.settings)["tip"]
    assert done.state == "promoted" and done.stable == {"tip": "vcandidate1"}
    assert (store / "tip" / "CURRENT").read_text().strip() == "vcandidate1"
    steps = [r.detail["replica"] for r in audit_history(kafka.settings, "tip") if r.action == "step"]
    # one at a time, in order; the killed one was named and passed over — or, if the group had
    # already dropped it when its turn came, never named; or it had swapped before the signal landed
    assert steps in (order, [order[0], order[2]]), steps
    swapped_first = f"{order[1]} serves the candidate" in out
    assert ("passed over" in out) == (order[1] in steps and not swapped_first), out
    requests = requests_of(sent)
    assert wait_for(lambda: requests <= {p["event_id"] for p in tip_predictions(kafka)}, timeout=120)  # nothing lost
    late = [p for p in tip_predictions(kafka) if p["event_id"] in requests]
    assert {p["model_version"] for p in late} >= {"vcandidate1"}


def _names(kafka, plan_id: int) -> list[str]:
    """The replicas a plan has moved."""
    from consumers.control import parse_plan, read_to_end

    for msg in read_to_end(kafka.settings, kafka.settings.topics.control):
        plan = parse_plan(msg)
        if plan is not None and plan.plan_id == plan_id:
            return plan.replicas
    return []


def test_blue_green_switch_and_switch_back_answer_every_event_exactly_once(kafka, fleet, store):
    champion = (store / "tip" / "CURRENT").read_text().strip()
    fleet.start("tip")
    fleet.start("tip", "--colour", "green")
    deploy = cli(fleet, "deploy", "bluegreen", "tip", "--version", "vcandidate1")
    assert deploy.returncode == 0, deploy.stderr
    plan = latest_plans(kafka.settings)["tip"]
    assert plan.colours == {"blue": {"tip": champion}, "green": {"tip": "vcandidate1"}} and plan.live == "blue"
    assert wait_for(lambda: sum(r.action == "swapped" and r.plan_id == plan.plan_id
                                for r in audit_history(kafka.settings, "tip")) == 2, timeout=60)
    sent: list[dict] = []
    publisher = threading.Thread(target=lambda: sent.extend(
        publish(kafka.settings, rides=1000, seed=13, rate=400.0, id_prefix="bluegreen")))
    publisher.start()

    def versions() -> Counter:
        return Counter(p["model_version"] for p in tip_predictions(kafka))

    assert wait_for(lambda: versions()[champion] > 100, timeout=90)
    to_green = cli(fleet, "deploy", "switch", "tip")
    assert to_green.returncode == 0, to_green.stdout + to_green.stderr
    assert latest_plans(kafka.settings)["tip"].live == "green"
    assert wait_for(lambda: versions()["vcandidate1"] > 100, timeout=90)
    served_by_blue = versions()[champion]
    back = cli(fleet, "deploy", "switch", "tip")
    assert back.returncode == 0, back.stdout + back.stderr
    assert latest_plans(kafka.settings)["tip"].live == "blue"
    publisher.join()
    requests = requests_of(sent)
    assert wait_for(lambda: requests <= {p["event_id"] for p in tip_predictions(kafka)}, timeout=120)
    preds = tip_predictions(kafka)
    counts = Counter(p["event_id"] for p in preds)
    assert set(counts) == requests and max(counts.values()) == 1  # no gap, no overlap, across both switches
    assert versions()[champion] > served_by_blue  # blue answered again after the switch back
    assert {p["variant"] for p in preds} == {"stable", "candidate"}
    assert all((p["variant"] == "candidate") == (p["model_version"] == "vcandidate1") for p in preds)
