"""The rollout phases of the benchmark: what a deployment plan costs the tip service.

* Throughput under a plan, in process, on the events the other loops score: the shipped runtime
  following its control topic with no plan (one model), under a shadow plan (the candidate scores
  every event too: two predicts per batch, its output to the shadow topic) and under a 50 % canary
  (each batch split by the salted hash of ``ride_id``). The candidate is the tip artifact under
  another version id in a bench model store: the same trees, its own model object and predictor.

  Why a real plan on the control topic (``follow_plans``) rather than a :class:`Deployment` set on
  the runtime by hand: it is what `ridestream consume tip` runs — the follower thread reading the
  control topic beside the batches, the deployment it prepares (candidate loaded from the store,
  verified, compiled, warmed) swapped in by the runtime itself, the per-variant counts and the
  audit reports while the plan is in force. The swap happens before the first batch, so the clock
  sees scoring under the plan only. Each mode has its own namespace (its own control, audit and
  shadow topics), so the plan in force is that mode's and no real service's.

* p99 at a steady offered rate across a live swap: one `ridestream consume tip` process (with the
  bench store as ``RIDESTREAM_MODEL_STORE``), the latency phase's stream, and half way through
  the measured stream a 50 % canary plan naming the candidate, which the process loads beside the
  serving model and swaps in between two batches. The run without a swap is identical but for the
  plan. The replica's "swapped" audit record says when the swap happened: inside the measured
  window or not.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.fleet import Latency, contract_topics, percentiles, start_services, steady_stream, stop_services
from bench.loops import Measure, topic_size, under_plan
from consumers.control import ControlWriter, audit_history
from consumers.rollout import start_plan
from shared.contract.topics import create_topics
from shared.kafka.clients import make_admin
from shared.kafka.settings import Settings
from shared.ml.artifacts import Model, load_model, model_store

MODES = ("single", "shadow", "canary")
CANDIDATE = "vbenchcandidate"  # the tip artifact copied under this version id
CANARY_SHARE = 50.0


def bench_store(root: Path, candidate: str = CANDIDATE) -> Path:
    """A model store in ``root``: the store in force, plus its tip champion under ``candidate`` —
    as a trained candidate would be, already in the store before a plan names it."""
    store = root / "models"
    shutil.copytree(model_store(), store)
    champion = (store / "tip" / "CURRENT").read_text().strip()
    shutil.copytree(store / "tip" / champion, store / "tip" / candidate)
    meta_path = store / "tip" / candidate / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": candidate}, indent=2))
    return store


# --- throughput under a plan -------------------------------------------------------------------
@dataclass
class ModeRun:
    measure: Measure
    served: str  # the runtime's deployment, as it describes it
    shadow_events: int = 0  # predictions the run put on the shadow topic


@dataclass
class RolloutModes:
    """The namespaces, plans and store of the three modes, made once per bench run."""

    settings: dict[str, Settings]
    load: Any  # (name, version) → Model, from the bench store

    @classmethod
    def prepare(cls, settings: Settings, ns: str, stable: Model, store: Path) -> RolloutModes:
        scoped = {}
        for mode in MODES:
            s = settings.model_copy(update={"namespace": f"{ns}{mode}."})
            wanted = {s.topics.control, s.topics.control_audit}
            specs = [spec for spec in s.topic_specs() if spec.name in wanted]
            if mode == "shadow":
                specs.append(s.shadow_spec("tip"))
            create_topics(make_admin(s), specs)
            scoped[mode] = s
        versions = ({"tip": stable.version}, {"tip": CANDIDATE})
        plans = {"shadow": start_plan("tip", "shadow", *versions, None, reason="bench: shadow"),
                 "canary": start_plan("tip", "canary", *versions, None, steps=[CANARY_SHARE], interval_s=86_400,
                                      reason="bench: 50 % canary")}
        for mode, plan in plans.items():
            writer = ControlWriter(scoped[mode], "bench")
            writer.plan(plan, "plan")
            writer.close()
        return cls(scoped, partial(_load_from, store))

    def measure(self, mode: str, source: str, sink: str, stable: Model, n: int) -> ModeRun:
        s = self.settings[mode]
        shadow = s.topics.shadow("tip")
        before = topic_size(s, shadow) if mode == "shadow" else 0
        measure, served = under_plan(s, source, sink, {"tip": stable}, n, self.load)
        after = topic_size(s, shadow) if mode == "shadow" else 0
        return ModeRun(measure, served, after - before)


def _load_from(store: Path, name: str, version: str) -> Model:
    return load_model(name, version, store)


@dataclass
class RolloutResult:
    """Per round, each mode's run (the modes interleaved, in a rotating order)."""

    rounds: list[dict[str, ModeRun]] = field(default_factory=list)

    def per_s(self, mode: str) -> list[float]:
        return [r[mode].measure.per_s for r in self.rounds if mode in r]

    def ratios(self, mode: str) -> list[float]:
        """``mode`` / single, per round (each pair measured in the same round)."""
        return [r[mode].measure.per_s / r["single"].measure.per_s for r in self.rounds
                if mode in r and r["single"].measure.per_s]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {mode: round(statistics.median(self.per_s(mode)), 1) for mode in MODES}
        for mode in ("shadow", "canary"):
            out[f"{mode}_ratio"] = round(statistics.median(self.ratios(mode)), 3)
        out["spread_events_per_s"] = {mode: [round(min(self.per_s(mode)), 1), round(max(self.per_s(mode)), 1)]
                                      for mode in MODES}
        out["rounds"] = [
            {**{mode: round(run.measure.per_s, 1) for mode, run in r.items()},
             **{f"{mode}_ratio": round(r[mode].measure.per_s / r["single"].measure.per_s, 3)
                for mode in ("shadow", "canary") if r["single"].measure.per_s},
             "events": {mode: run.measure.events for mode, run in r.items()},
             "seconds": {mode: round(run.measure.seconds, 4) for mode, run in r.items()},
             "shadow_events": r["shadow"].shadow_events,
             "order": list(r)}
            for r in self.rounds]
        out["served"] = {mode: self.rounds[0][mode].served for mode in MODES} if self.rounds else {}
        out["ratio_is"] = "median over rounds of mode / single measured in the same round"
        return out


# --- p99 across a live swap --------------------------------------------------------------------
@dataclass
class SwapLatency(Latency):
    swap: bool = False  # a plan was written half way through the measured stream
    swapped: bool = False  # the replica audited "swapped" for it
    in_window: bool = False  # …between the first and the last measured event's production
    swap_at_s: float | None = None  # when, in seconds after the first measured event was produced
    window_s: float = 0.0  # first to last measured event produced
    load_s: float | None = None  # the replica's time to load, verify, compile and warm the candidate
    variants: dict[str, int] = field(default_factory=dict)  # measured predictions per variant


def swap_latency(settings: Settings, rate: float, seconds: float, seed: int, store: Path, swap: bool,
                 lead_in_s: float = 2.0, audit_wait_s: float = 30.0) -> SwapLatency:
    """One `ridestream consume tip` process following plans, the latency phase's steady stream at
    ``rate``; with ``swap``, a 50 % canary of the candidate written when the measured events are
    half produced. Without, the same run and no plan."""
    scoped = contract_topics(settings, f"swap-{int(swap)}")
    stable = (store / "tip" / "CURRENT").read_text().strip()
    plan = start_plan("tip", "canary", {"tip": stable}, {"tip": CANDIDATE}, None, steps=[CANARY_SHARE],
                      interval_s=86_400, reason="bench: a live swap")
    writer = ControlWriter(scoped, "bench")  # made before the stream in both runs

    def write_plan() -> None:
        writer.plan(plan, "plan")
        writer.producer.flush(10)

    procs = start_services(scoped, 1, {"RIDESTREAM_MODEL_STORE": str(store)})
    variants: dict[str, str | None] = {}
    audit = []
    try:
        produced, scored = steady_stream(scoped, rate, seconds, seed, lead_in_s,
                                         midway=write_plan if swap else None, variants=variants)
        deadline = time.monotonic() + audit_wait_s
        while swap and time.monotonic() < deadline:  # the swap may be audited after the window: wait
            audit = [r for r in audit_history(scoped, "tip") if r.plan_id == plan.plan_id]
            if any(r.action == "swapped" for r in audit):
                break
            time.sleep(0.5)
    finally:
        stop_services(procs)
        writer.close()
    base = percentiles(rate, produced, scored)
    first, last = (min(produced.values()), max(produced.values())) if produced else (0, 0)
    swapped = next((r for r in audit if r.action == "swapped"), None)
    loaded = next((r for r in audit if r.action == "loaded"), None)
    swap_ms = swapped.at.timestamp() * 1000 if swapped else None
    return SwapLatency(
        **base.__dict__, swap=swap, swapped=swapped is not None,
        in_window=swap_ms is not None and first <= swap_ms <= last,
        swap_at_s=round((swap_ms - first) / 1000, 3) if swap_ms is not None else None,
        window_s=round((last - first) / 1000, 3), load_s=loaded.detail.get("seconds") if loaded else None,
        variants=dict(Counter(v or "none" for v in variants.values())))


@dataclass
class SwapResult:
    rate: float
    runs: dict[str, list[SwapLatency]] = field(default_factory=lambda: {"no_swap": [], "swap": []})

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offered_per_s": self.rate}
        for label, runs in self.runs.items():
            out[label] = {q: statistics.median(getattr(x, q) for x in runs) for q in ("p50_ms", "p95_ms", "p99_ms")}
            out[f"{label}_p99_spread_ms"] = [min(x.p99_ms for x in runs), max(x.p99_ms for x in runs)]
        out["p99_added_ms"] = round(out["swap"]["p99_ms"] - out["no_swap"]["p99_ms"], 1)
        out["swaps_in_window"] = sum(x.in_window for x in self.runs["swap"])
        out["rounds"] = [{label: runs[i].__dict__ for label, runs in self.runs.items()}
                         for i in range(min(len(r) for r in self.runs.values()))]
        return out
