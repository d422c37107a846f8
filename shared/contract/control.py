"""The rollout contract: deployment plans on ``rides.control``, their audit trail on
``rides.control.audit`` and online model quality on ``rides.model_quality``.

A plan is the whole truth for one service (the compacted topic keeps the latest per key =
service): which model versions serve, how events are split between them, and where a rollout
stands. Every replica reads it at start and follows it while running; ``plan_id`` only grows, so
a replica ignores anything older than what it follows. Readers ignore fields they do not know.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from shared.contract.events import SCHEMA_VERSION, Id, UtcTime, WireModel
from shared.contract.topics import Service

Strategy = Literal["canary", "shadow", "ab", "bluegreen", "rolling"]
Colour = Literal["blue", "green"]
COLOURS: tuple[str, ...] = ("blue", "green")
STRATEGIES: tuple[str, ...] = ("canary", "shadow", "ab", "bluegreen", "rolling")
PlanState = Literal["active", "promoted", "rolled_back"]
Versions = dict[str, Annotated[str, Field(min_length=1, max_length=128)]]  # model name → version
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class DeploymentPlan(WireModel):
    """The plan in force for one service.

    ``strategy`` None with ``state`` "promoted" or "rolled_back" means no rollout: every event is
    answered by ``stable``. While ``state`` is "active":

    - canary: ``share`` % of rides (salted hash of ``ride_id``) go to ``candidate``; ``steps`` are
      the shares it walks through, ``step`` the index reached, each held ``interval_s``;
    - shadow: ``stable`` answers every event; ``candidate`` scores the same events and publishes
      to ``rides.predictions.SERVICE.shadow``;
    - ab: riders split by a salted hash of ``rider_id`` (else ``ride_id``): ``share`` % to "b"
      (``candidate``), the rest to "a" (``stable``);
    - rolling: the replicas named in ``replicas`` (``HOST:PID``) serve ``candidate``, the others
      ``stable``; ``ridestream deploy rolling`` adds them one at a time, each seen healthy first;
    - bluegreen: two full sets of replicas, each its own consumer group (``ridestream-SERVICE`` is
      blue, ``ridestream-SERVICE-green`` green), each serving ``colours[its colour]`` on the same
      events; only ``live`` publishes. ``cutover`` (partition → offset) is where the live colour
      began answering: it answers from there, the other colour only below it, so across a switch
      every event is answered once. While ``switching``, the live colour stops publishing and
      reports how far it answered; the switch command then names the other colour live with those
      offsets as the cut-over.

    ``live`` outlives the plan: after a blue/green plan ends, its live colour goes on serving.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    service: Service
    plan_id: Annotated[int, Field(ge=1)] = Field(description="grows with every change of the service's plan")
    strategy: Strategy | None = None
    state: PlanState = "active"
    stable: Versions = Field(description="the versions that answer riders outside the candidate's share")
    candidate: Versions = Field(default_factory=dict)
    share: Percent = 0.0
    steps: list[Percent] = Field(default_factory=list)
    step: Annotated[int, Field(ge=0)] = 0
    interval_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 600.0
    salt: Id = Field(description="with the ride or rider id, picks each one's side: fresh per plan")
    max_mae_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1.10, description="the candidate is rolled back when its online MAE exceeds the stable's by this factor")
    min_samples: Annotated[int, Field(ge=1)] = Field(default=200, description="judged outcomes per side before a decision")
    created_at: UtcTime
    step_started_at: UtcTime
    reason: str = ""
    replicas: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, description="rolling: the replicas (HOST:PID) already moved to the candidate")
    colours: dict[Colour, Versions] = Field(default_factory=dict, description="bluegreen: each colour's versions")
    live: Colour | None = Field(default=None, description="bluegreen: the colour that publishes (blue when unset)")
    switching: bool = Field(default=False, description="bluegreen: the live colour stops and reports its offsets")
    cutover: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="bluegreen: partition → the offset from which the live colour answers")

    @property
    def splits(self) -> bool:
        """Whether events are divided between stable and candidate (each event answered once)."""
        return self.state == "active" and self.strategy in ("canary", "ab") and bool(self.candidate)

    @property
    def shadows(self) -> bool:
        return self.state == "active" and self.strategy == "shadow" and bool(self.candidate)

    @property
    def rolls(self) -> bool:
        return self.state == "active" and self.strategy == "rolling" and bool(self.candidate)

    def versions_needed(self, colour: str = "blue") -> list[Versions]:
        """The model sets a replica (of ``colour``) must hold loaded to follow this plan (a rolling
        update's replicas hold both, so each moves the moment its turn comes)."""
        if colour in self.colours:
            return [self.colours[colour]]
        return [self.stable, self.candidate] if (self.splits or self.shadows or self.rolls) else [self.stable]

    def publishes(self, colour: str) -> tuple[str, dict[int, int]]:
        """How a replica of ``colour`` gates its output: ("all" | "none" | "from" | "below", cut-over)."""
        live = self.live or "blue"
        cut = {int(p): o for p, o in self.cutover.items()}
        if self.switching:
            return "none", {}
        if colour == live:
            return ("from", cut) if cut else ("all", {})
        return ("below", cut) if cut else ("none", {})


Action = Literal["plan", "step", "promote", "rollback", "refused", "loaded", "swapped", "alias", "decision", "report",
                 "switch", "cutover"]


class AuditRecord(WireModel):
    """One line of ``rides.control.audit``: a plan change (manual or automatic), an analysis
    decision, what a replica did with a plan (loaded, swapped, refused), or a replica's periodic
    report while a plan is in force (events and scoring time per variant)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    service: Service
    plan_id: Annotated[int, Field(ge=0)]
    at: UtcTime
    action: Action
    actor: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="who: 'cli', 'controller', or 'replica HOST:PID'")
    reason: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


Stage = Annotated[str, Field(min_length=1, max_length=32)]


class ModelQuality(WireModel):
    """Windowed online error of one (service, model version, variant, stage): the absolute errors
    of the predictions joined to their rides' actuals, over the last ``window_s`` of completions.
    ``stage``: "request" (answers to ride_requested), "start", "p25"/"p50"/"p75" (duration answers
    at that fraction of the ride). ``sd`` is the standard deviation of the absolute errors, so a
    reader can test two variants against each other (Welch) without the raw errors."""

    schema_version: Literal[1] = SCHEMA_VERSION
    service: Service
    model_version: Annotated[str, Field(min_length=1)]
    variant: str = Field(description="'stable', 'candidate', 'shadow', 'a', 'b', or 'none' without a plan")
    stage: Stage
    window_s: Annotated[float, Field(gt=0)]
    n: Annotated[int, Field(ge=0)]
    mae: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    sd: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    updated_at: UtcTime

    @property
    def key(self) -> str:
        return quality_key(self.service, self.model_version, self.variant, self.stage)


def quality_key(service: str, model_version: str, variant: str, stage: str) -> str:
    return f"{service}/{model_version}/{variant}/{stage}"


plan_adapter: TypeAdapter[DeploymentPlan] = TypeAdapter(DeploymentPlan)


def new_salt(service: str, plan_id: int) -> str:
    """A salt no earlier plan used: cohorts are fresh per experiment."""
    stamp = datetime.now(timezone.utc).isoformat()
    return hashlib.sha256(f"{service}/{plan_id}/{stamp}".encode()).hexdigest()[:12]
