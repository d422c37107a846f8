"""How a rollout moves: the plan transitions (start, step, promote, roll back) — pure functions the
CLI and the controller share — and the controller that judges canaries and A/B tests online.

The controller runs inside the online evaluator (``ridestream evaluate --online``), which holds the
joined outcomes it judges by. Like Argo Rollouts and Flagger: a canary holds each step for its
interval, and the analysis runs throughout — as soon as both sides have the minimum sample and the
candidate is worse by more than the plan's threshold, it is rolled back (share 0, audited); at the
end of a step that passed, the next step; past a last step of 100 %, promotion (the ``champion``
alias moves). Without enough samples a step holds: no decision is taken on too little evidence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import KafkaException
from pydantic import ValidationError

from consumers.control import ControlWriter, parse_plan, topic_reader
from shared.contract.control import AuditRecord, DeploymentPlan, new_salt
from shared.errors import RidestreamError
from shared.kafka.clients import make_admin
from shared.ml.registry import set_alias

log = logging.getLogger("ridestream.rollout")

DEFAULT_STEPS = (5.0, 25.0, 50.0, 100.0)


def now() -> datetime:
    return datetime.now(timezone.utc)


def start_plan(service: str, strategy: str, stable: dict[str, str], candidate: dict[str, str],
               previous: DeploymentPlan | None, *, steps: list[float] | None = None, share: float = 50.0,
               interval_s: float = 600.0, max_mae_ratio: float = 1.10, min_samples: int = 200,
               reason: str = "") -> DeploymentPlan:
    """A new active plan, numbered after ``previous`` (the plan in force, if any), with a fresh salt.
    The live colour and its cut-over outlive a plan, so they come from ``previous``; blue/green: the
    live colour (blue if none was) serves ``stable``, the other ``candidate``."""
    plan_id = (previous.plan_id if previous else 0) + 1
    live, cutover = (previous.live, previous.cutover) if previous else (None, {})
    colours = {}
    if strategy == "bluegreen":
        live = live or "blue"
        colours = {live: stable, ("green" if live == "blue" else "blue"): candidate}
    steps = list(steps or (DEFAULT_STEPS if strategy == "canary" else []))
    at = now()
    return DeploymentPlan(
        service=service, plan_id=plan_id, strategy=strategy, state="active", stable=stable, candidate=candidate,
        share=steps[0] if strategy == "canary" else (share if strategy == "ab" else 0.0), steps=steps, step=0,
        interval_s=interval_s, salt=new_salt(service, plan_id), max_mae_ratio=max_mae_ratio,
        min_samples=min_samples, created_at=at, step_started_at=at, reason=reason, colours=colours,
        live=live, cutover=dict(cutover))


def _next(plan: DeploymentPlan, reason: str, **changes: Any) -> DeploymentPlan:
    return plan.model_copy(update={"plan_id": plan.plan_id + 1, "reason": reason, **changes})


def next_step(plan: DeploymentPlan, reason: str) -> DeploymentPlan:
    step = plan.step + 1
    return _next(plan, reason, step=step, share=plan.steps[step], step_started_at=now())


def promoted(plan: DeploymentPlan, reason: str) -> DeploymentPlan:
    """The candidate becomes the stable: every replica serves it, no split, no variant."""
    return _next(plan, reason, strategy=None, state="promoted", stable=plan.candidate, candidate={}, share=0.0,
                 steps=[], step=0, step_started_at=now(), colours={}, switching=False)


def rolled_back(plan: DeploymentPlan, reason: str) -> DeploymentPlan:
    """Back to the stable alone, at once: replicas hold it loaded beside the candidate."""
    return _next(plan, reason, strategy=None, state="rolled_back", candidate={}, share=0.0, steps=[], step=0,
                 step_started_at=now(), colours={}, switching=False)


def switching(plan: DeploymentPlan, reason: str) -> DeploymentPlan:
    """Blue/green, first half of a switch: the live colour stops publishing and reports how far it answered."""
    return _next(plan, reason, switching=True)


def switched(plan: DeploymentPlan, live: str, cutover: dict[str, int], reason: str) -> DeploymentPlan:
    """Blue/green, second half: ``live`` answers from ``cutover`` on, the other colour below it."""
    return _next(plan, reason, switching=False, live=live, cutover=cutover)


def judged_model(plan: DeploymentPlan) -> tuple[str, str, str, str]:
    """(model, stable version, candidate version, stage) the analysis compares: the first model
    whose version the plan changes; the dynamic duration model is judged half way through rides."""
    for name in sorted(plan.candidate):
        if plan.candidate[name] != plan.stable.get(name):
            return name, plan.stable.get(name, ""), plan.candidate[name], ("p50" if name == "dynamic_duration" else "request")
    name = sorted(plan.candidate)[0]
    return name, plan.stable.get(name, ""), plan.candidate[name], "request"


Stats = Any  # consumers.analysis.Stats
StatsOf = Callable[[str, str, str, str, float], Stats]  # service, version, variant, stage, since (unix s)


class RolloutController:
    """Judges the active canary and A/B plans on each tick and writes what it decides.

    ``stats_of`` gives the online error of (service, model version, variant, stage) since a time;
    ``write(plan, action, reason, **detail)`` puts a plan in force and audits it;
    ``audit(service, plan_id, action, reason, **detail)`` records a decision;
    ``promote_alias(plan)`` moves the champion alias in the model store."""

    def __init__(self, plans: Callable[[], dict[str, DeploymentPlan]], stats_of: StatsOf,
                 write: Callable[..., None], audit: Callable[..., None],
                 promote_alias: Callable[[DeploymentPlan], None] = lambda plan: None):
        self.plans = plans
        self.stats_of = stats_of
        self.write = write
        self.audit = audit
        self.promote_alias = promote_alias
        self._verdicts: dict[tuple[str, int], str] = {}  # the A/B verdict last audited per plan

    def tick(self) -> None:
        for plan in self.plans().values():
            if plan.state != "active" or not plan.candidate:
                continue
            try:
                if plan.strategy == "canary":
                    self._canary(plan)
                elif plan.strategy == "ab":
                    self._ab(plan)
            except Exception:  # one service's analysis must not stop the others'
                log.exception("%s: analysis of plan %d failed", plan.service, plan.plan_id)

    def _sides(self, plan: DeploymentPlan, stable_variant: str, candidate_variant: str) -> tuple[Stats, Stats, dict]:
        model, stable_v, candidate_v, stage = judged_model(plan)
        # the candidate on the rides of this step; the stable, which does not change, on the rides
        # of the whole plan — at a last step of 100 % it answers none
        stable = self.stats_of(plan.service, stable_v, stable_variant, stage, plan.created_at.timestamp())
        candidate = self.stats_of(plan.service, candidate_v, candidate_variant, stage, plan.step_started_at.timestamp())
        detail = {"model": model, "stage": stage, stable_variant: _figures(stable), candidate_variant: _figures(candidate)}
        return stable, candidate, detail

    def _canary(self, plan: DeploymentPlan) -> None:
        from consumers.analysis import canary_verdict  # scipy: imported when a canary is judged, not by every CLI call

        stable, candidate, detail = self._sides(plan, "stable", "candidate")
        verdict, reason = canary_verdict(stable, candidate, plan.min_samples, plan.max_mae_ratio)
        if verdict == "fail":
            log.warning("%s: rolling back plan %d: %s", plan.service, plan.plan_id, reason)
            self.write(rolled_back(plan, f"automatic rollback: {reason}"), "rollback", **detail)
            return
        held = (now() - plan.step_started_at).total_seconds()
        if verdict != "pass" or held < plan.interval_s:
            return
        if plan.step + 1 < len(plan.steps):
            nxt = next_step(plan, f"step {plan.step + 1} passed: {reason}")
            self.write(nxt, "step", **detail)
        elif plan.share >= 100:
            done = promoted(plan, f"last step passed: {reason}")
            self.write(done, "promote", **detail)
            self.promote_alias(done)

    def _ab(self, plan: DeploymentPlan) -> None:
        from consumers.analysis import ab_verdict

        a, b, detail = self._sides(plan, "a", "b")
        verdict, figures = ab_verdict(a, b, plan.min_samples)
        if self._verdicts.get((plan.service, plan.plan_id)) != verdict:
            self._verdicts[(plan.service, plan.plan_id)] = verdict
            self.audit(plan.service, plan.plan_id, "decision", f"A/B: {verdict}", **detail, **figures)


def _figures(stats: Stats) -> dict[str, float]:
    return {"n": stats.n, "mae": round(stats.mae, 4), "sd": round(stats.sd, 4)}


class PlanTable:
    """The plan in force per service, kept current by reading ``rides.control`` without waiting
    (each ``__call__`` takes what arrived since the last)."""

    def __init__(self, settings: Any):
        self._settings = settings
        self._consumer = topic_reader(settings, settings.topics.control)
        self._plans: dict[str, DeploymentPlan] = {}

    def __call__(self) -> dict[str, DeploymentPlan]:
        if self._consumer is None:  # the topic did not exist yet
            self._consumer = topic_reader(self._settings, self._settings.topics.control)
            if self._consumer is None:
                return dict(self._plans)
        while msgs := [m for m in self._consumer.consume(500, timeout=0) if m.error() is None]:
            for msg in msgs:
                plan = parse_plan(msg)
                if plan is not None and plan.plan_id > getattr(self._plans.get(plan.service), "plan_id", 0):
                    self._plans[plan.service] = plan
        return dict(self._plans)

    def record(self, plan: DeploymentPlan) -> None:
        """A plan this process just wrote: in force from now, before the topic gives it back."""
        self._plans[plan.service] = plan

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


def controller_tick(settings: Any) -> Callable[[Any], None]:
    """The evaluator's ``on_tick``: a :class:`RolloutController` judging with the evaluator's
    own figures, writing plans and audit records as ``controller``, moving the champion alias on
    promotion."""
    writer = ControlWriter(settings, "controller")
    table = PlanTable(settings)
    evaluator_ref: list[Any] = []

    def write(plan: DeploymentPlan, action: str, reason: str = "", **detail: Any) -> None:
        writer.plan(plan, action, reason, **detail)
        table.record(plan)

    def promote_alias(plan: DeploymentPlan) -> None:
        for name, version in plan.stable.items():
            try:
                set_alias(name, "champion", version)
            except Exception as exc:  # another machine's store: the plan itself is what replicas follow
                log.warning("could not move %s's champion alias to %s here: %s", name, version, exc)

    def stats_of(service: str, version: str, variant: str, stage: str, since: float) -> Any:
        return evaluator_ref[0].stats(service, version, variant, stage, since)

    controller = RolloutController(table, stats_of, write, writer.audit, promote_alias)

    def tick(evaluator: Any) -> None:
        evaluator_ref[:] = [evaluator]
        controller.tick()

    return tick


# --- rolling updates -------------------------------------------------------------------------------
def group_replicas(settings: Any, service: str, timeout: float = 10.0, attempts: int = 5,
                   group: str | None = None) -> list[str]:
    """The replicas (HOST:PID) now in the service's consumer group, from the client ids the
    runtime gives its consumers (``…@HOST:PID``), sorted. Asked again while the coordinator
    cannot answer (a group being formed, a broker away); then a one-line error."""
    group = group or settings.group_id(service)
    admin = make_admin(settings)  # held until the answer: a client collected meanwhile fails the future
    for attempt in range(attempts):
        try:
            future = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
            members = future.result(timeout=timeout + 5).members
            return sorted({m.client_id.split("@", 1)[1] for m in members if "@" in m.client_id})
        except (KafkaException, TimeoutError) as exc:
            problem = exc
            time.sleep(min(2 ** attempt, 5))
    raise RidestreamError(f"cannot list the members of group {group}: {problem}")


class AuditTail:
    """The audit records appended since this tail was made, read without a group."""

    def __init__(self, settings: Any):
        self._consumer = topic_reader(settings, settings.topics.control_audit)
        if self._consumer is None:
            raise RidestreamError(f"no topic {settings.topics.control_audit}: run `ridestream topics create`")
        self.seen: list[Any] = []

    def wait(self, condition: Callable[[Any], bool], timeout: float) -> bool:
        """Whether a record meeting ``condition`` arrives (or has arrived) within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            if any(condition(r) for r in self.seen):
                return True
            if time.monotonic() >= deadline:
                return False
            for msg in self._consumer.consume(200, timeout=0.2):
                if msg.error() is None and msg.value():
                    try:
                        self.seen.append(AuditRecord.model_validate_json(msg.value()))
                    except ValidationError:
                        continue

    def close(self) -> None:
        self._consumer.close()


def roll(settings: Any, plan: DeploymentPlan, write: Callable[..., None], say: Callable[[str], None],
         timeout_s: float = 120.0, settle_s: float = 2.0,
         replicas: Callable[[], list[str]] | None = None) -> DeploymentPlan:
    """Move a service's replicas to the candidate one at a time, as a Kubernetes rolling update
    moves pods: name the next replica in the plan, wait until it has swapped to the candidate
    (loaded, checked, compiled, warmed: the replica's own audit record) and is still in its group
    ``settle_s`` later, then the next. A replica that leaves the group meanwhile (killed, scaled
    down) is passed over — its partitions move to the others, at-least-once as always; one that
    stays but does not swap within ``timeout_s`` rolls everything back. Replicas that join during
    the roll are moved too; when none is left the candidate is promoted."""
    replicas = replicas or (lambda: group_replicas(settings, plan.service))
    tail = AuditTail(settings)
    try:
        moved: list[str] = []
        gone: set[str] = set()
        while todo := [r for r in replicas() if r not in moved and r not in gone]:
            replica = todo[0]
            plan = _next(plan, f"move replica {replica}", replicas=[*moved, replica])
            write(plan, "step", replica=replica)
            say(f"moving {replica} ({len(moved) + 1} of {len(moved) + len(todo)})")
            swapped = tail.wait(lambda r: r.action == "swapped" and r.plan_id == plan.plan_id
                                and r.actor == f"replica {replica}", timeout_s)
            if swapped:
                time.sleep(settle_s)
            if replica not in replicas():
                gone.add(replica)
                say(f"{replica} left the group: passed over")
                continue
            if not swapped:
                ended = rolled_back(plan, f"automatic rollback: {replica} did not swap to the candidate "
                                          f"within {timeout_s:g}s")
                write(ended, "rollback", replica=replica)
                return ended
            moved.append(replica)
            say(f"{replica} serves the candidate")
        done = promoted(plan, f"rolling update done: {len(moved)} replicas moved one at a time")
        write(done, "promote", moved=moved, passed_over=sorted(gone))
        return done
    finally:
        tail.close()
