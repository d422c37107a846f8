"""Start-up and footprint, measured as users meet them: ``ridestream --help`` (wall time and peak
RSS of the process), each service's resident memory at a steady stream, and the time from
starting a replica (its trees already compiled and cached) to its first prediction.

Peak RSS comes from the kernel's accounting of the finished child (``wait4``'s ``ru_maxrss``);
a running service's RSS from ``/proc/<pid>/status``. The first prediction's time is its broker
timestamp minus the wall clock when the process was started, for events published beforehand.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet import _service_env, contract_topics, offer, read_timestamps, stop_services
from bench.loops import lifecycles
from consumers.services import SERVICE_SPECS
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_model

SERVICES = ("tip", "duration", "cost")


def ridestream_command() -> list[str]:
    """The installed ``ridestream`` script beside this interpreter (what a user runs), else ``-m``."""
    script = Path(sys.executable).with_name("ridestream")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ridestream.cli"]


# run by a small interpreter of its own: a child forked from the bench (hundreds of MB) would
# report the bench's memory as its peak (Linux keeps the high-water mark across exec)
_LAUNCH = ("import resource, subprocess, sys, time\n"
           "t = time.monotonic()\n"
           "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
           "print(code, time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def timed_child(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``command`` to its end: (wall seconds, peak RSS in MB)."""
    out = subprocess.run([sys.executable, "-c", _LAUNCH, *command], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    code, seconds, peak_kb = int(out[0]), float(out[1]), int(out[2])
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}")
    return seconds, peak_kb / 1024


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration, ValueError):
        return None


@dataclass
class StartupResult:
    help_s: list[float] = field(default_factory=list)
    help_rss_mb: list[float] = field(default_factory=list)
    service_rss_mb: dict[str, list[float]] = field(default_factory=dict)  # samples over the steady stream
    first_prediction_s: dict[str, list[float]] = field(default_factory=dict)
    steady_rate: float = 0.0

    def as_json(self) -> dict[str, Any]:
        med = statistics.median
        return {
            "help_s": round(med(self.help_s), 3) if self.help_s else None,
            "help_rss_mb": round(med(self.help_rss_mb), 1) if self.help_rss_mb else None,
            "service_rss_mb": {s: round(med(v), 1) for s, v in self.service_rss_mb.items() if v},
            "service_rss_max_mb": {s: round(max(v), 1) for s, v in self.service_rss_mb.items() if v},
            "first_prediction_s": {s: round(med(v), 2) for s, v in self.first_prediction_s.items() if v},
            "steady_rate": self.steady_rate,
            "runs": asdict(self),
        }


def warm_cache(settings: Settings, services: tuple[str, ...]) -> None:
    """Compile (or find) every model's trees, so replicas start with them cached."""
    for service in services:
        for name in SERVICE_SPECS[service].model_names:
            load_model(name).accelerate(settings.compiled_dir, settings.predict_threads)


def help_runs(result: StartupResult, repeat: int) -> None:
    for _ in range(repeat):
        seconds, peak = timed_child([*ridestream_command(), "--help"])
        result.help_s.append(seconds)
        result.help_rss_mb.append(peak)


def service_runs(settings: Settings, service: str, result: StartupResult, repeat: int, rate: float,
                 seconds: float, seed: int = 0) -> None:
    """``repeat`` replicas of ``service``, one after the other, each on a namespace of its own with
    events already published when it starts (the time to its first prediction); then a steady
    stream of whole lifecycles at ``rate`` for ``seconds``, its RSS sampled over the second half."""
    for i in range(repeat):
        scoped = contract_topics(settings, f"startup-{service}")
        source, sink = scoped.topics.events, scoped.topics.predictions(service)
        offer(scoped, source, lifecycles(200, seed=seed + 500 + i), None)
        started_wall = time.time()
        proc = subprocess.Popen([*ridestream_command(), "consume", service], env=_service_env(scoped),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            stamps = read_timestamps(scoped, sink, 1, 120)
            if stamps:
                result.first_prediction_s.setdefault(service, []).append(min(stamps.values()) / 1000 - started_wall)
            samples: list[float] = []
            done = threading.Event()

            def sample(pid: int = proc.pid) -> None:
                if not done.wait(seconds / 2):
                    while not done.wait(0.25):
                        value = rss_mb(pid)
                        if value is not None:
                            samples.append(value)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            offer(scoped, source, lifecycles(int(rate * seconds), seed=seed + 10 * i), rate)
            done.set()
            sampler.join()
            result.service_rss_mb.setdefault(service, []).extend(samples)
        finally:
            stop_services([proc])


def run_startup(settings: Settings, services: tuple[str, ...] = SERVICES, repeat: int = 3, rate: float = 1000.0,
                seconds: float = 10.0) -> StartupResult:
    """The whole phase: the trees cached first, then --help, then each service."""
    result = StartupResult(steady_rate=rate)
    warm_cache(settings, services)
    help_runs(result, repeat)
    for service in services:
        service_runs(settings, service, result, repeat, rate, seconds)
    return result


def markdown(data: dict[str, Any]) -> list[str]:
    """The Markdown lines of the ``startup`` JSON section."""
    lines = [f"Start-up and footprint (median of runs): `ridestream --help` {data['help_s']:.2f} s, peak RSS "
             f"{data['help_rss_mb']:.0f} MB.", "",
             f"| service | RSS at {data['steady_rate']:,.0f} events/s, MB (max) | process start → first prediction, "
             "trees cached, s |", "|---|---|---|"]
    for service, mb in data["service_rss_mb"].items():
        first = data["first_prediction_s"].get(service)
        lines.append(f"| {service} | {mb:.0f} ({data['service_rss_max_mb'][service]:.0f}) | "
                     f"{'—' if first is None else f'{first:.2f}'} |")
    return lines
