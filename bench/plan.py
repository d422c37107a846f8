"""``ridestream bench --plan RATE``: what a city sending RATE ride events a second needs — replicas
per service, partitions of ``rides.events``, brokers at the replication factor — from the latest
bench results, each number with the figure it comes from.

The rules, and why:

* **Headroom**: every process and broker is planned at :data:`HEADROOM` (50 %) of the capacity
  measured for it, so a replica or a broker can fail and the rest absorb its share, a burst or a
  rebalance's backlog is caught up, and the bench machine's figures (2 shared cores) are not taken
  for a production node's.
* **A service's capacity per process** is the lower of two figures of ``services.json``: the
  shipped runtime on whole lifecycles in process (``events_per_s.batched``) and one separate
  ``ridestream consume`` process (``processes_events_per_s["1"]``); the second is rough for tip
  and cost (timed over the few events they answer), so the lower one is taken.
* **Partitions**: a partition is read by one member of a group, so ``rides.events`` needs one per
  replica of the largest group — and never fewer than the default (``RIDESTREAM_EVENTS_PARTITIONS``).
  Plan them up front: adding partitions later moves rides' keys to other partitions mid-ride.
* **Brokers**: ``fleet.json`` gives the ride events/s the local broker carried per core of its JVM
  at the whole fleet's highest sustained step (its writes and the three groups' reads, at
  replication factor 1). A broker is planned with as many cores as the bench machine had, at the
  headroom; each event is counted once per replica (a follower's fetch costs less than a leader
  serving three groups: this errs high). At least as many brokers as the replication factor.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import DataError

HEADROOM = 0.5
SERVICES = ("duration", "tip", "cost")
RESULTS = Path("bench/results")
PRODUCED_BY = {"services.json": "ridestream bench --service all", "fleet.json": "ridestream bench --fleet"}


class PlanInputError(DataError):
    """A bench result the plan needs is missing or unreadable: one line, naming the command that makes it."""


@dataclass
class Line:
    what: str
    value: int
    source: str


@dataclass
class Plan:
    rate: float
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def value(self, what: str) -> int:
        return next(line.value for line in self.lines if line.what == what)


def load(path: Path) -> dict[str, Any]:
    """A bench JSON, or a one-line :class:`PlanInputError` naming the command that writes it."""
    command = PRODUCED_BY.get(path.name, "ridestream bench")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanInputError(f"{path} not found: run `{command}` to produce it") from None
    except (OSError, ValueError) as exc:
        raise PlanInputError(f"{path} could not be read ({exc}): run `{command}` again") from None


def service_capacity(services: dict[str, Any], name: str) -> tuple[float, str]:
    """(events/s one process of ``name`` takes, where that comes from)."""
    try:
        each = services["services"][name]
        batched = float(each["events_per_s"]["batched"])
        process = each.get("processes_events_per_s", {}).get("1")
    except (KeyError, TypeError, ValueError):
        raise PlanInputError(f"services.json has no figures for {name}: run `{PRODUCED_BY['services.json']}`") from None
    if process is not None and float(process) < batched:
        return float(process), (f"services.json, {name}: one `ridestream consume {name}` process, {float(process):,.0f}/s "
                                f"(in process: {batched:,.0f}/s)")
    return batched, f"services.json, {name}: in process, {batched:,.0f}/s" + (
        f" (one `ridestream consume` process: {float(process):,.0f}/s)" if process is not None else "")


def broker_capacity(fleet: dict[str, Any]) -> tuple[float, str]:
    """(ride events/s one broker takes at the headroom, at replication factor 1; where it comes from)."""
    f = fleet.get("fleet", {})
    per_core, best = f.get("broker_events_per_core_s"), f.get("highest_sustained_delivered_per_s")
    cores = fleet.get("machine", {}).get("cores")
    if not per_core or not cores:
        raise PlanInputError("fleet.json has no broker figure (no sustained step, or the broker's CPU was not "
                             f"measured): run `{PRODUCED_BY['fleet.json']}` on a local broker")
    return per_core * cores * HEADROOM, (f"fleet.json: {per_core:,.0f} events/s per core of the broker's JVM at "
                                         f"the highest sustained step ({best:,.0f}/s) × {cores} cores × {HEADROOM:.0%}")


def make_plan(rate: float, services: dict[str, Any], fleet: dict[str, Any], replication_factor: int | None,
              min_partitions: int) -> Plan:
    """The plan for ``rate`` ride events/s. ``replication_factor`` None: 3, what ridestream gives
    every topic on a cluster of three brokers or more."""
    plan = Plan(rate)
    replicas: dict[str, int] = {}
    for name in SERVICES:
        capacity, source = service_capacity(services, name)
        replicas[name] = max(1, math.ceil(rate / (capacity * HEADROOM)))
        plan.lines.append(Line(f"{name} replicas", replicas[name],
                               f"{rate:,.0f} ÷ ({HEADROOM:.0%} × {capacity:,.0f}/s) — {source}"))
    widest = max(replicas, key=replicas.get)
    plan.lines.append(Line("rides.events partitions", max(replicas[widest], min_partitions),
                           f"one per {widest} replica (the largest group), at least the default {min_partitions}"))
    rf = replication_factor or 3
    rf_source = (f"RIDESTREAM_REPLICATION_FACTOR={replication_factor}" if replication_factor else
                 "RIDESTREAM_REPLICATION_FACTOR unset: 3, as ridestream creates topics on 3 brokers or more")
    plan.lines.append(Line("replication factor", rf, rf_source))
    per_broker, source = broker_capacity(fleet)
    plan.lines.append(Line("brokers", max(rf, math.ceil(rate * rf / per_broker)),
                           f"{rate:,.0f} × {rf} replicas ÷ {per_broker:,.0f}/s per broker — {source}; at least {rf}"))
    best = fleet.get("fleet", {}).get("highest_sustained_delivered_per_s")
    if best:
        cores = fleet.get("machine", {}).get("cores")
        machines = math.ceil(rate / (best * HEADROOM))
        plan.notes.append(f"Cross-check: the whole fleet sustained {best:,.0f} events/s on one {cores}-core machine "
                          f"(fleet.json); at {HEADROOM:.0%} that is {machines:,} such machine{'s' if machines > 1 else ''} "
                          f"for {rate:,.0f} events/s, the backend included.")
    return plan


def plan_from_results(rate: float, replication_factor: int | None, min_partitions: int,
                      results: Path = RESULTS) -> Plan:
    services, fleet = load(results / "services.json"), load(results / "fleet.json")
    return make_plan(rate, services, fleet, replication_factor, min_partitions)
