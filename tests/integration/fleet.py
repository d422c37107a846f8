"""Helpers for fleet tests: service processes as users run them, the backend, and reading topics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from broker.local import LocalBroker, free_port
from producer.backend import Backend
from producer.sources import simulated
from shared.contract.topics import create_topics
from shared.kafka.clients import make_admin
from shared.kafka.reading import read_to_end
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_model

RIDESTREAM = [sys.executable, "-m", "ridestream.cli"]


@dataclass
class Fleet:
    """Service processes started with ``ridestream consume``; all killed at teardown. Their output
    goes to a file each (a pipe nobody reads would stall a process that writes enough of it)."""

    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ridestream-fleet-")))

    def start(self, service: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"{service}-{len(self.procs) + 1}.log", "w") as log:
            proc = subprocess.Popen([*RIDESTREAM, "consume", service, *args], env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def output(self) -> str:
        """What every process printed so far, for an assertion's message."""
        return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(self.logs.glob("*.log")))

    def terminate(self, proc: subprocess.Popen, timeout: float = 60) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def dedicated_broker(settings: Settings, home: Path) -> tuple[LocalBroker, Settings]:
    """A fresh local broker of a test's own (one it may stop and restart) under ``home``, with
    the contract's topics; and ``settings`` pointed at it."""
    broker = LocalBroker(home / "broker", port=free_port(), controller_port=free_port())
    broker.start(fresh=True)
    scoped = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
    create_topics(make_admin(scoped), scoped.topic_specs())
    return broker, scoped


def publish(settings: Settings, rides: int, seed: int = 0, rate: float = 0.0, id_prefix: str | None = None) -> list[dict]:
    """Publish simulated rides with the real backend; returns the events sent."""
    backend = Backend(settings, load_model("initial_duration"))
    sent: list[dict] = []
    chunks = []
    for table, events in simulated(rides, seed=seed, chunk=max(1, min(rides, 500)), id_prefix=id_prefix):
        chunks.append((table, events))
        sent.extend(events)
    stats = backend.publish(chunks, rate=rate, live=True)
    assert stats.failed == 0 and stats.acked == stats.produced
    return sent


def read_all(settings: Settings, topic: str, timeout: float = 30) -> list:
    """Every committed message now in ``topic`` (:func:`shared.kafka.reading.read_to_end`)."""
    return list(read_to_end(settings, topic, timeout=timeout, group=f"{settings.namespace}reader"))


def values(msgs: list) -> list[dict]:
    return [orjson.loads(m.value()) for m in msgs]


def failed_children_logs(output: str, lines: int = 40) -> str:
    """The last lines of the log of each child `ridestream run` named as failed (what it was doing
    when it was killed), for an assertion's message: a CI run leaves nothing else behind."""
    at = output.find("stopped with errors")
    failed = output[at:] if at >= 0 else ""  # wrapped at the console's width, never inside a path
    tails = []
    for path in dict.fromkeys(re.findall(r"(/\S+?\.log)\b", failed)):
        text = Path(path).read_text(errors="replace").splitlines() if Path(path).exists() else ["(no log)"]
        tails.append(f"--- {path}\n" + "\n".join(text[-lines:]))
    return "\n".join(tails)


def wait_for(condition: Callable[[], bool], timeout: float = 90, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def fleet_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    # a killed member's partitions move after 6 s instead of 45 s
    return {**env, "RIDESTREAM_BATCH_MAX_WAIT_MS": "20", "RIDESTREAM_SESSION_TIMEOUT_MS": "6000",
            **extra, "PYTHONUNBUFFERED": "1",
            "PATH": os.environ.get("PATH", "")}
