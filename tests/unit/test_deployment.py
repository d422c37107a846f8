"""How a replica splits a batch under a deployment plan, without a broker: sticky salted buckets,
one predict per model set per rule, variants on every prediction, shadow output apart."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from consumers.deployment import Deployment, buckets, in_share
from consumers.rollout import next_step, promoted, rolled_back, start_plan
from consumers.scoring import RideMemory, by_event_type
from consumers.services import DURATION, TIP
from shared.ml.artifacts import Model, load_model
from tests.unit.test_scoring import NOW, counted, ride


@pytest.fixture(scope="module")
def models():
    return {name: load_model(name) for name in ("initial_duration", "dynamic_duration", "tip")}


def other_version(models: dict[str, Model], suffix: str = "-cand") -> dict[str, Model]:
    """The same estimators under another version id: a candidate that is easy to tell apart."""
    return {n: Model(m.name, m.version + suffix, m.estimator, m.metadata, m.path) for n, m in models.items()}


def test_buckets_are_fixed_per_key_and_salt_and_fresh_per_salt():
    keys = [f"sim-{i}" for i in range(20_000)]
    first = buckets(keys, "s1")
    assert np.array_equal(first, buckets(keys, "s1")) and first.min() >= 0 and first.max() < 10_000
    assert np.array_equal(buckets(keys[5:9], "s1"), first[5:9])  # a key's bucket does not depend on its batch
    share = in_share(keys, "s1", 25.0).mean()
    assert 0.24 < share < 0.26
    other = in_share(keys, "s2", 25.0)
    both = (in_share(keys, "s1", 25.0) & other).mean()
    assert 0.05 < both < 0.075  # independent cohorts: 25 % of 25 %, not the same riders again
    assert not in_share(keys, "s1", 0.0).any() and in_share(keys, "s1", 100.0).all()


def test_a_canary_splits_by_ride_every_event_of_a_ride_to_one_side(models):
    stable = {n: models[n] for n in DURATION.model_names}
    candidate = other_version(stable)
    plan = start_plan("duration", "canary", {n: m.version for n, m in stable.items()},
                      {n: m.version for n, m in candidate.items()}, None, steps=[50.0])
    counted_stable, counted_candidate = counted(stable), counted(candidate)
    deployment = Deployment(counted_stable, plan, counted_candidate)
    batch = [e for i in range(200) for e in ride(i)]
    user, shadow = deployment.score(DURATION, RideMemory(), by_event_type(batch), NOW)
    assert len(shadow) == 0 and len(user) == sum(e.event_type != "ride_completed" for e in batch)
    side_of_ride: dict[str, set[str]] = {}
    for p in user:
        assert p["variant"] in ("stable", "candidate")
        assert p["model_version"].endswith("-cand") == (p["variant"] == "candidate")
        side_of_ride.setdefault(p["ride_id"], set()).add(p["variant"])
    assert all(len(sides) == 1 for sides in side_of_ride.values())
    to_candidate = sum(sides == {"candidate"} for sides in side_of_ride.values())
    assert 70 < to_candidate < 130
    for model in (*counted_stable.values(), *counted_candidate.values()):
        assert len(model.estimator.calls) == 1  # one predict per model set per rule per batch


def test_ab_sticks_to_the_rider_across_rides(models):
    tip = {"tip": models["tip"]}
    plan = start_plan("tip", "ab", {"tip": tip["tip"].version}, {"tip": "vB"}, None, share=50.0)
    deployment = Deployment(tip, plan, {"tip": other_version(tip, "-b")["tip"]})
    batch = [e.model_copy(update={"rider_id": f"rider-{i % 30}"}) for i in range(300) for e in ride(i)]
    user, _ = deployment.score(TIP, RideMemory(), by_event_type(batch), NOW)
    rider_of = {e.ride_id: e.rider_id for e in batch}
    variants: dict[str, set[str]] = {}
    for p in user:
        variants.setdefault(rider_of[p["ride_id"]], set()).add(p["variant"])
    assert all(len(v) == 1 for v in variants.values()) and {"a", "b"} == set().union(*variants.values())


def test_shadow_answers_everything_with_the_stable_and_pairs_the_candidate(models):
    tip = {"tip": models["tip"]}
    plan = start_plan("tip", "shadow", {"tip": tip["tip"].version}, {"tip": "vS"}, None)
    deployment = Deployment(tip, plan, other_version(tip, "-s"))
    batch = [e for i in range(50) for e in ride(i)]
    user, shadow = deployment.score(TIP, RideMemory(), by_event_type(batch), NOW)
    assert {p["variant"] for p in user} == {"stable"} and {p["variant"] for p in shadow} == {"shadow"}
    assert [p["event_id"] for p in user] == [p["event_id"] for p in shadow]
    pairing = deployment.take_pairing()
    assert pairing["n"] == 50 and pairing["sum"] == 0.0  # the same trees: no difference
    assert deployment.take_pairing()["n"] == 0


def test_without_a_plan_or_after_one_no_variant_is_stamped(models):
    tip = {"tip": models["tip"]}
    plan = start_plan("tip", "canary", {"tip": tip["tip"].version}, {"tip": "vC"}, None, steps=[10, 100])
    for finished in (promoted(next_step(plan, "ok"), "ok"), rolled_back(plan, "worse")):
        assert finished.plan_id > plan.plan_id and not finished.splits and not finished.candidate
        user, _ = Deployment(tip, finished).score(TIP, RideMemory(), by_event_type([e for i in range(5) for e in ride(i)]), NOW)
        assert all("variant" not in p for p in user)
    assert promoted(plan, "ok").stable == {"tip": "vC"} and rolled_back(plan, "no").stable == plan.stable


def test_plans_survive_the_wire():
    from shared.contract.codec import encode
    from shared.contract.control import DeploymentPlan

    plan = start_plan("tip", "canary", {"tip": "v1"}, {"tip": "v2"}, None, steps=[5, 50, 100], interval_s=30)
    again = DeploymentPlan.model_validate_json(encode(plan))
    assert again == plan and again.share == 5 and again.splits
    assert next_step(plan, "ok").share == 50 and next_step(plan, "ok").plan_id == plan.plan_id + 1
    assert datetime.now(timezone.utc) >= plan.created_at
