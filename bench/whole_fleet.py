"""``ridestream bench --fleet``: the whole fleet together on this machine — the backend's simulator
(``ridestream produce --rate R``) publishing whole ride lifecycles, the three services
(``ridestream consume duration|tip|cost``) and the broker, each a process of its own.

Two measures:

* **Latency** at steady offered rates: from a ``ride_requested`` produced to the last of its three
  predictions produced, and from each ``ride_progress`` to its corrected duration — broker
  timestamps, as in :mod:`bench.fleet` (the backend stamps each event with the time it sends it).
* **Sustained rate**, by stepping the offered rate: a step is sustained when the backend delivers
  the rate and no group's lag grows over the last half of the window — by the least-squares slope of
  the lag sampled every second, it gains less than one second of the offered traffic over that half
  (the lag moves by whole batches, so a bound of zero would fail on noise); stepping ends at the
  first step that is not, and one more step halfway (geometrically) between it and the last
  sustained narrows where the ceiling lies.

CPU per component comes from ``/proc/<pid>/stat`` (user + system time of the process and all its
threads) at the start and end of each window: the backend's processes, each service, the broker's
JVM and this bench; the machine's total from ``/proc/stat`` says how much the rest (other users of
the machine) took.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.fleet import (
    Latency,
    _service_env,
    contract_topics,
    cpu_jiffies,
    percentiles,
    start_services,
    stop_services,
    wait_for_group,
)
from bench.run import machine, topics_deleted_after
from ridestream.run_cmd import Offsets
from shared.kafka.reading import read_to_end
from shared.kafka.settings import Settings

SERVICES = ("duration", "tip", "cost")
RIDESTREAM = [sys.executable, "-m", "ridestream.cli"]


@dataclass
class FleetConfig:
    start_rate: float = 5000.0  # events/s of the first step
    factor: float = 1.5  # each step offers this many times the last
    max_steps: int = 8
    stop_at_failure: bool = True  # the full run stops at the first step not sustained…
    refine: int = 1  # …then tries this many steps halfway (geometrically) between it and the last sustained
    window_s: float = 60.0  # each step's measured window
    lead_in_s: float = 5.0  # after the backend's first events, before a window (start-up of the producers)
    latency_rates: tuple[float, ...] = (1000.0, 5000.0)
    latency_seconds: float = 20.0
    producer_rate: float = 15000.0  # most events/s asked of one backend process; more processes above it
    growth_allowance_s: float = 1.0  # over the last half, a bounded lag gains less than this many seconds of traffic
    delivered_share: float = 0.95  # the backend must publish at least this share of the offered rate
    drain_timeout_s: float = 120.0  # after a step, for every group's lag to reach 0
    verify: bool = False  # read every step's events and answers back (the quick mode; costly at full rates)


def quick_config() -> FleetConfig:
    """Every phase, small (the test's): two steps of 8 s, latency at two low rates for 3 s, every
    answer read back. Checks that it runs, never its figures."""
    return FleetConfig(start_rate=400.0, factor=2.0, max_steps=2, stop_at_failure=False, window_s=8.0, lead_in_s=2.0,
                       latency_rates=(300.0, 600.0), latency_seconds=3.0, drain_timeout_s=120.0, verify=True)


@dataclass
class Step:
    offered_per_s: float
    producers: int
    window_s: float = 0.0
    delivered_per_s: float = 0.0  # ride events the backend published over the window
    lag_slope_per_s: dict[str, float] = field(default_factory=dict)  # over the window's last half
    lag_end: dict[str, int] = field(default_factory=dict)
    sustained: bool = False
    why_not: str | None = None
    drained: bool = False  # every group's lag back to 0 after the backend stopped
    cpu_cores: dict[str, float] = field(default_factory=dict)
    answered: dict[str, list[int]] | None = None  # service → [answered, expected] (verify only)
    lag_samples: list[list[float]] = field(default_factory=list)  # [seconds, lag duration, tip, cost]
    load_1min: float = 0.0  # the machine's load average at the window's end


@dataclass
class LatencyPhase:
    offered_per_s: float
    requests: Latency  # ride_requested → the last of its three predictions
    progress: Latency  # ride_progress → its corrected duration
    answered: dict[str, list[int]] = field(default_factory=dict)
    delivered_per_s: float = 0.0
    cpu_cores: dict[str, float] = field(default_factory=dict)


@dataclass
class FleetResult:
    config: FleetConfig
    latency: list[LatencyPhase] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    dead_letters: int = 0
    broker_measured: bool = False
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    load_average: list[float] = field(default_factory=list)  # at the start, then at the end

    @property
    def highest_sustained(self) -> Step | None:
        return max((s for s in self.steps if s.sustained), key=lambda s: s.offered_per_s, default=None)

    @property
    def first_failing(self) -> Step | None:
        """The lowest offered rate not sustained (a refining step may lie below the ×factor step)."""
        return min((s for s in self.steps if not s.sustained), key=lambda s: s.offered_per_s, default=None)

    def broker_events_per_core_s(self) -> float | None:
        """Ride events/s the broker carried per core of its JVM at the highest sustained step (with
        the three services' reads and writes): the capacity figure of ``bench --plan``."""
        best = self.highest_sustained
        cores = best.cpu_cores.get("broker") if best else None
        return round(best.delivered_per_s / cores, 1) if best and cores else None

    def as_json(self) -> dict[str, Any]:
        best, failing = self.highest_sustained, self.first_failing
        return {
            "fleet": {
                "highest_sustained_per_s": best.offered_per_s if best else None,
                "highest_sustained_delivered_per_s": best.delivered_per_s if best else None,
                "first_failing_per_s": failing.offered_per_s if failing else None,
                "broker_events_per_core_s": self.broker_events_per_core_s(),
                "broker_measured": self.broker_measured,
                "dead_letters": self.dead_letters,
                "latency": {str(int(p.offered_per_s)): asdict(p) for p in self.latency},
                "steps": [asdict(s) for s in self.steps],
                "config": asdict(self.config),
            },
            "machine": machine(),
            "date": self.started,
            "load_average": self.load_average,
            "commit": _commit(),
        }


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


# --- CPU per process -----------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` and its threads so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """CPU seconds of named groups of processes and of the whole machine between :meth:`start` and
    :meth:`stop`, as cores used on average over the wall time between them."""

    def __init__(self, components: dict[str, list[int]]):
        self.components = components
        self._t0 = 0.0
        self._before: dict[str, float] = {}
        self._machine: tuple[int, int] | None = None

    def _read(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) or 0.0 for p in pids) for name, pids in self.components.items()}

    def start(self) -> None:
        self._t0, self._before, self._machine = time.monotonic(), self._read(), cpu_jiffies()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        after, machine_now = self._read(), cpu_jiffies()
        cores = {name: round((after[name] - self._before[name]) / wall, 3) for name in self.components}
        if self._machine and machine_now and machine_now[1] > self._machine[1]:
            busy = (machine_now[0] - self._machine[0]) / (machine_now[1] - self._machine[1])
            cores["machine"] = round(busy * (os.cpu_count() or 1), 3)
            cores["others"] = round(max(0.0, cores["machine"] - sum(cores[n] for n in self.components)), 3)
        return cores


# --- the fleet's processes -----------------------------------------------------------------------

class Backends:
    """``ridestream produce --rate R`` processes sharing an offered rate, as the backend runs."""

    def __init__(self, settings: Settings, rate: float, per_process: float, seed: int, logs: Path):
        self.count = max(1, math.ceil(rate / per_process))
        self.procs: list[subprocess.Popen] = []
        self.logs = [logs / f"backend-{seed}-{i}.log" for i in range(self.count)]
        for i, log in enumerate(self.logs):
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(
                    [*RIDESTREAM, "produce", "--rate", f"{rate / self.count:.1f}", "--quiet", "--seed",
                     str(seed * 100 + i)], env=_service_env(settings), stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check(self) -> None:
        for p, log in zip(self.procs, self.logs):
            if p.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"a backend process exited {p.returncode}: {' / '.join(tail)}")

    def stop(self) -> None:
        """SIGTERM: each sends what it has and flushes (``ridestream produce`` drains on it)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Fleet:
    """The three services, one process each, on a namespace of their own, and reading its lag."""

    def __init__(self, settings: Settings, broker_pids: list[int], logs: Path):
        self.settings = settings
        self.broker_pids = broker_pids
        self.logs = logs
        self.services = {s: start_services(settings, 1, service=s)[0] for s in SERVICES}
        self.offsets = Offsets(settings)

    def settle(self) -> None:
        for s in SERVICES:
            wait_for_group(self.settings, 1, timeout=180, service=s)

    def components(self, backends: Backends) -> dict[str, list[int]]:
        out = {"backend": backends.pids, **{s: [p.pid] for s, p in self.services.items()}}
        if self.broker_pids:
            out["broker"] = self.broker_pids
        out["bench"] = [os.getpid()]
        return out

    def events_end(self) -> int:
        return self.offsets.end(self.settings.topics.events)

    def lags(self) -> dict[str, int]:
        topic = self.settings.topics.events
        return {s: self.offsets.lag(self.settings.group_id(s), topic) for s in SERVICES}

    def check(self) -> None:
        for s, p in self.services.items():
            if p.poll() is not None:
                raise RuntimeError(f"the {s} service exited {p.returncode} during the fleet bench")

    def drain(self, timeout: float) -> bool:
        """Until every group's lag is 0 (True), or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if not any(self.lags().values()):
                return True
            time.sleep(0.5)
        return False

    def dead_letters(self) -> int:
        return self.offsets.end(self.settings.topics.dlq)

    def stop(self) -> None:
        stop_services(list(self.services.values()))
        self.offsets.close()


def _flowing(fleet: Fleet, backends: Backends, since: int, timeout: float = 120.0) -> None:
    """Until the backend's first events are on the topic (its start-up: imports, the simulator's fit)."""
    deadline = time.monotonic() + timeout
    while fleet.events_end() <= since:
        backends.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the backend published nothing in {timeout:.0f} s")
        time.sleep(0.25)


# --- reading answers back ------------------------------------------------------------------------

def _read(settings: Settings, topic: str, since_s: float) -> list[tuple[dict, int]]:
    """(decoded value, broker timestamp ms) of every message of ``topic`` from ``since_s`` on."""
    since = datetime.fromtimestamp(since_s, timezone.utc)
    return [(orjson.loads(m.value()), m.timestamp()[1]) for m in read_to_end(settings, topic, since, timeout=300)]


def answers(settings: Settings, since_s: float) -> dict[str, dict[str, int]]:
    """service → source event_id → the first answer's timestamp, from ``since_s`` on; the backend's
    own initial estimates on the duration topic are not the service's answers."""
    out: dict[str, dict[str, int]] = {}
    for service in SERVICES:
        seen: dict[str, int] = {}
        for value, ts in _read(settings, settings.topics.predictions(service), since_s):
            if value.get("initial"):
                continue
            if value["event_id"] not in seen or ts < seen[value["event_id"]]:
                seen[value["event_id"]] = ts
        out[service] = seen
    return out


def _answered(events: list[tuple[dict, int]], got: dict[str, dict[str, int]]) -> dict[str, list[int]]:
    """service → [events it answered, events it should answer] (duration: requests, starts and
    progress; tip and cost: requests)."""
    wanted = {"duration": {"ride_requested", "ride_started", "ride_progress"},
              "tip": {"ride_requested"}, "cost": {"ride_requested"}}
    out = {}
    for service, types in wanted.items():
        ids = [e["event_id"] for e, _ in events if e["event_type"] in types]
        out[service] = [sum(i in got[service] for i in ids), len(ids)]
    return out


# --- the phases ----------------------------------------------------------------------------------

def warm_up(fleet: Fleet, rate: float, logs: Path, timeout: float = 300.0) -> None:
    """A backend at ``rate`` until every group has consumed and committed what it sent: the services
    have loaded their models, joined, read their plans and scored (their first minutes on a busy machine
    would otherwise count as latency)."""
    since = fleet.events_end()
    backends = Backends(fleet.settings, rate, math.inf, 0, logs)
    try:
        _flowing(fleet, backends, since)
        if not fleet.drain(timeout):
            raise RuntimeError(f"the services did not keep up with {rate:,.0f} events/s within {timeout:.0f} s")
    finally:
        backends.stop()
    fleet.drain(timeout)


def latency_phase(fleet: Fleet, rate: float, seconds: float, lead_in_s: float, seed: int,
                  logs: Path) -> LatencyPhase:
    """One backend process at ``rate`` for a lead-in and ``seconds``; the events produced in the
    window, against their answers."""
    since = fleet.events_end()
    backends = Backends(fleet.settings, rate, math.inf, seed, logs)
    cpu = CpuWindow(fleet.components(backends))
    try:
        _flowing(fleet, backends, since)
        time.sleep(lead_in_s)
        t0, end0 = time.time(), fleet.events_end()
        cpu.start()
        time.sleep(seconds)
        t1, end1 = time.time(), fleet.events_end()
        cores = cpu.stop()
        fleet.check()
    finally:
        backends.stop()
    fleet.drain(120)
    events = [(e, ts) for e, ts in _read(fleet.settings, fleet.settings.topics.events, t0) if ts < t1 * 1000]
    got = answers(fleet.settings, t0)
    requests = {e["event_id"]: ts for e, ts in events if e["event_type"] == "ride_requested"}
    progress = {e["event_id"]: ts for e, ts in events if e["event_type"] == "ride_progress"}
    all_three = {i: max(got[s][i] for s in SERVICES) for i in requests if all(i in got[s] for s in SERVICES)}
    corrected = {i: got["duration"][i] for i in progress if i in got["duration"]}
    return LatencyPhase(rate, percentiles(rate, requests, all_three), percentiles(rate, progress, corrected),
                        _answered(events, got), round((end1 - end0) / (t1 - t0), 1), cores)


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope (per second) of (seconds, lag) samples; 0 with fewer than two."""
    if len(samples) < 2:
        return 0.0
    t, lag = np.array(samples, dtype=float).T
    return float(np.polyfit(t, lag, 1)[0]) if np.ptp(t) > 0 else 0.0


def step_phase(fleet: Fleet, rate: float, cfg: FleetConfig, seed: int, logs: Path) -> Step:
    """The backend at ``rate`` (as many processes as :attr:`FleetConfig.producer_rate` needs) for a
    lead-in and a window, the lag of every group sampled every second; then the backend stops and
    the groups drain."""
    since_s, since = time.time(), fleet.events_end()
    backends = Backends(fleet.settings, rate, cfg.producer_rate, seed, logs)
    step = Step(rate, backends.count)
    cpu = CpuWindow(fleet.components(backends))
    samples: list[tuple[float, dict[str, int]]] = []
    try:
        _flowing(fleet, backends, since)
        time.sleep(cfg.lead_in_s)
        t0, end0 = time.monotonic(), fleet.events_end()
        cpu.start()
        while (now := time.monotonic()) - t0 < cfg.window_s:
            samples.append((now - t0, fleet.lags()))
            backends.check()
            fleet.check()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        wall, end1 = time.monotonic() - t0, fleet.events_end()
        step.cpu_cores = cpu.stop()
        step.load_1min = round(os.getloadavg()[0], 2)
        samples.append((wall, fleet.lags()))
    finally:
        backends.stop()
    step.window_s, step.delivered_per_s = round(wall, 2), round((end1 - end0) / wall, 1)
    late = [(t, lags) for t, lags in samples if t >= wall / 2]
    step.lag_slope_per_s = {s: round(slope([(t, lags[s]) for t, lags in late]), 1) for s in SERVICES}
    step.lag_end = samples[-1][1]
    step.lag_samples = [[round(t, 2), *(lags[s] for s in SERVICES)] for t, lags in samples]
    allowed = cfg.growth_allowance_s * rate / (wall / 2)  # events/s of slope: that much traffic over the last half
    growing = [s for s, v in step.lag_slope_per_s.items() if v > allowed]
    short = step.delivered_per_s < cfg.delivered_share * rate
    step.sustained = not growing and not short
    if growing:
        step.why_not = "lag grows: " + ", ".join(f"{s} +{step.lag_slope_per_s[s]:,.0f}/s" for s in growing)
    if short:
        step.why_not = "; ".join(filter(None, [step.why_not, f"the backend published {step.delivered_per_s:,.0f}/s"]))
    step.drained = fleet.drain(cfg.drain_timeout_s)
    if cfg.verify and step.drained:
        events = _read(fleet.settings, fleet.settings.topics.events, since_s)
        step.answered = _answered(events, answers(fleet.settings, since_s))
    return step


def refinement(result: FleetResult) -> float | None:
    """The rate halfway (geometrically, to 10 events/s) between the highest sustained step and the
    lowest failing one above it; None without both, or when it was offered already."""
    best, failing = result.highest_sustained, result.first_failing
    if best is None or failing is None or failing.offered_per_s < best.offered_per_s:
        return None
    rate = round((best.offered_per_s * failing.offered_per_s) ** 0.5, -1)
    return None if rate in {s.offered_per_s for s in result.steps} else rate


def steps(cfg: FleetConfig) -> list[float]:
    return [cfg.start_rate * cfg.factor ** i for i in range(cfg.max_steps)]


def run_fleet(settings: Settings, cfg: FleetConfig, broker_pids: list[int],
              phase: Callable[[str], None] = lambda _: None) -> FleetResult:
    """The whole bench on a namespace of its own; its topics are deleted afterwards."""
    result = FleetResult(cfg, broker_measured=bool(broker_pids), load_average=[round(x, 2) for x in os.getloadavg()])
    with topics_deleted_after(settings, phase), tempfile.TemporaryDirectory(prefix="ridestream-fleet-") as tmp:
        logs = Path(tmp)
        scoped = contract_topics(settings, "fleet")
        phase("starting the three services")
        fleet = Fleet(scoped, broker_pids, logs)
        try:
            fleet.settle()
            phase("warming up: every service scores the backend's first rides")
            warm_up(fleet, min(cfg.latency_rates + (cfg.start_rate,)) / 2, logs)
            for i, rate in enumerate(cfg.latency_rates):
                phase(f"latency at {rate:,.0f} events/s for {cfg.latency_seconds:g} s")
                result.latency.append(latency_phase(fleet, rate, cfg.latency_seconds, cfg.lead_in_s, 1 + i, logs))
            for i, rate in enumerate(steps(cfg)):
                phase(f"step {i + 1}: {rate:,.0f} events/s for {cfg.window_s:g} s")
                step = step_phase(fleet, rate, cfg, 10 + i, logs)
                result.steps.append(step)
                if not step.sustained and cfg.stop_at_failure:
                    break
            for i in range(cfg.refine if cfg.stop_at_failure else 0):  # narrow where the ceiling lies
                rate = refinement(result)
                if rate is None:
                    break
                phase(f"refining: {rate:,.0f} events/s for {cfg.window_s:g} s")
                result.steps.append(step_phase(fleet, rate, cfg, 30 + i, logs))
            result.dead_letters = fleet.dead_letters()
        finally:
            fleet.stop()
    result.load_average += [round(x, 2) for x in os.getloadavg()]
    return result


# --- output ---------------------------------------------------------------------------------------

def _cores(c: dict[str, float]) -> str:
    return " / ".join(f"{c.get(k, float('nan')):.2f}" if k in c else "—"
                      for k in ("backend", "duration", "tip", "cost", "broker", "others", "machine"))


def markdown(result: FleetResult) -> str:
    data, m, cfg = result.as_json(), machine(), result.config
    best, failing = result.highest_sustained, result.first_failing
    lines = [f"The whole fleet on one machine: the backend (`ridestream produce --rate R`, whole simulated ride "
             f"lifecycles), `ridestream consume duration|tip|cost` (one process each) and the local Kafka broker, "
             f"on {m['cores']} cores / {m['memory_gib']} GiB ({m['cpu']}), {result.started}, commit "
             f"`{data['commit']}`, load average {' → '.join(f'{x:.1f}' for x in result.load_average[:1] + result.load_average[3:4])} "
             f"(1 min, start → end).", ""]
    if best:
        lines.append(f"**Highest sustained: {best.offered_per_s:,.0f} events/s** offered ({best.delivered_per_s:,.0f} "
                     f"published) for {best.window_s:.0f} s, every group's lag bounded over the last half.")
    else:
        lines.append("**No step was sustained.**")
    if failing:
        lines.append(f"First failing step: {failing.offered_per_s:,.0f} events/s ({failing.why_not}).")
    lines += ["", "| offered events/s | backend processes | published events/s | lag slope, last half, events/s "
                  "(duration / tip / cost) | sustained | load (1 min) | CPU cores: backend / duration / tip / cost / "
                  "broker / others / machine |", "|---|---|---|---|---|---|---|"]
    for s in sorted(result.steps, key=lambda s: s.offered_per_s):
        slopes = " / ".join(f"{s.lag_slope_per_s[x]:+,.0f}" for x in SERVICES)
        verdict = "yes" if s.sustained else f"no ({s.why_not})"
        lines.append(f"| {s.offered_per_s:,.0f} | {s.producers} | {s.delivered_per_s:,.0f} | {slopes} | {verdict} | "
                     f"{s.load_1min:.1f} | {_cores(s.cpu_cores)} |")
    lines += ["", f"A step is sustained when the backend publishes ≥ {cfg.delivered_share:.0%} of the offered rate and "
                  f"no group's lag gains {cfg.growth_allowance_s:g} s of the offered traffic over the window's last "
                  f"half (least-squares slope of the lag sampled every second; the lag moves by whole batches). CPU: cores used on average over the window "
                  f"(`/proc/PID/stat`); *machine* is all of the machine's cores busy (`/proc/stat`), and *others* what "
                  f"of it no process of the fleet or this bench used (other users of the machine)."]
    if not result.broker_measured:
        lines.append("The broker's CPU was not measured (not a local broker of this state directory).")
    if result.latency:
        lines += ["", "End-to-end latency (broker timestamps): a `ride_requested` produced → the last of its three "
                      "predictions produced; a `ride_progress` → its corrected duration.", "",
                  "| offered events/s | request → all three: p50 / p95 / p99 ms | progress → corrected duration: "
                  "p50 / p95 / p99 ms | answered (duration / tip / cost) | CPU cores: backend / duration / tip / "
                  "cost / broker / others / machine |", "|---|---|---|---|---|"]
        for p in result.latency:
            q, r = p.requests, p.progress
            answered = " / ".join(f"{a:,}/{b:,}" for a, b in (p.answered[s] for s in SERVICES))
            lines.append(f"| {p.offered_per_s:,.0f} | {q.p50_ms:.1f} / {q.p95_ms:.1f} / {q.p99_ms:.1f} | "
                         f"{r.p50_ms:.1f} / {r.p95_ms:.1f} / {r.p99_ms:.1f} | {answered} | {_cores(p.cpu_cores)} |")
    per_core = result.broker_events_per_core_s()
    if per_core:
        lines += ["", f"The broker carried {per_core:,.0f} ride events/s per core of its JVM at the highest sustained "
                      "step (with the services' reads and writes): the broker figure of `ridestream bench --plan`."]
    lines.append(f"Dead letters: {result.dead_letters}.")
    return "\n".join(lines) + "\n"


def write(result: FleetResult, output: Path) -> list[Path]:
    """JSON, Markdown and a chart of the cores each component used per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    md = output.with_suffix(".md")
    md.write_text(markdown(result))
    paths = [output, md]
    steps_ = sorted(result.steps, key=lambda s: s.offered_per_s)
    if steps_:
        png = output.with_suffix(".png")
        fig, ax = plt.subplots(figsize=(7, 3.4))
        labels = [f"{s.offered_per_s / 1000:.1f}k{'' if s.sustained else ' ✗'}" for s in steps_]
        bottom = np.zeros(len(steps_))
        colours = {"backend": "#f59e0b", "duration": "#2563eb", "tip": "#10b981", "cost": "#7c3aed",
                   "broker": "#dc2626", "others": "#d1d5db"}
        for name, colour in colours.items():
            values = np.array([s.cpu_cores.get(name, 0.0) for s in steps_])
            ax.bar(labels, values, bottom=bottom, label=name, color=colour)
            bottom += values
        ax.plot(labels, [s.cpu_cores.get("machine", np.nan) for s in steps_], "k.--", label="machine busy")
        ax.axhline(os.cpu_count() or 1, color="grey", lw=0.8)
        ax.set_ylim(0, max(os.cpu_count() or 1, float(bottom.max())) * 1.45)  # room for the legend
        ax.set_xlabel("offered events/s (✗: not sustained)")
        ax.set_ylabel("cores used")
        ax.set_title("the whole fleet: CPU per component per step")
        ax.legend(fontsize=7, ncol=4, loc="upper left")
        fig.tight_layout()
        fig.savefig(png, dpi=120)
        plt.close(fig)
        paths.append(png)
    return paths
