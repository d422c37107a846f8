"""``ridestream run``: the main job — the broker, the topics, the backend and the three services as
child processes, with a live summary, until Ctrl-C stops everything cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.live import Live
from rich.table import Table

from ridestream.autoscale import COOLDOWN_S, ServiceScaler, fleet_scalers
from ridestream.broker_cmd import ensure_local_broker
from ridestream.console import out

if TYPE_CHECKING:  # annotations only: the command line imports these when a command runs
    from confluent_kafka import Consumer, TopicPartition

    from shared.kafka.settings import Settings

RIDESTREAM = [sys.executable, "-m", "ridestream.cli"]


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    overran: float | None = None  # the drain it did not finish in, before it was killed

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            # its own session: Ctrl-C reaches only `run`, which stops the children in order
            self.proc = subprocess.Popen([*RIDESTREAM, *self.args], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def why(self) -> str:
        """How it ended, for the line that names a child that failed."""
        if self.overran is not None:
            return f"did not stop within {self.overran:.0f} s and was killed; its threads' stacks end {self.log}"
        return f"{self.state}, see {self.log}"

    @property
    def state(self) -> str:
        code = self.proc.poll() if self.proc else None
        return "running" if code is None else f"exited {code}"


@dataclass
class Offsets:
    """Rates and lag read from the broker: end offsets of the topics, committed offsets of groups."""

    settings: Settings
    consumers: dict[str, Consumer] = field(default_factory=dict)
    last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def _consumer(self, group: str | None = None) -> Consumer:
        """A consumer that never subscribes: it only reads offsets (of ``group``, if given)."""
        from shared.kafka.clients import make_consumer

        group = group or f"{self.settings.namespace}ridestream-run"
        if group not in self.consumers:
            self.consumers[group] = make_consumer(self.settings, group)
        return self.consumers[group]

    def partitions(self, topic: str) -> list[TopicPartition]:
        from confluent_kafka import TopicPartition

        meta = self._consumer().list_topics(topic, timeout=5).topics[topic]
        return [TopicPartition(topic, p) for p in meta.partitions]

    def end(self, topic: str) -> int:
        c = self._consumer()
        return sum(c.get_watermark_offsets(tp, timeout=5)[1] for tp in self.partitions(topic))

    def rate(self, topic: str) -> tuple[int, float]:
        now, total = time.monotonic(), self.end(topic)
        before = self.last.get(topic)
        self.last[topic] = (now, total)
        return total, (total - before[1]) / (now - before[0]) if before and now > before[0] else 0.0

    def lag(self, group: str, topic: str) -> int:
        parts = self.partitions(topic)
        committed = self._consumer(group).committed(parts, timeout=5)
        c = self._consumer()
        return sum(c.get_watermark_offsets(tp, timeout=5)[1] - max(ctp.offset, 0) for tp, ctp in zip(parts, committed))

    def close(self) -> None:
        for c in self.consumers.values():
            c.close()


def _replicas(specs: list[str] | None) -> dict[str, int]:
    from shared.contract.topics import SERVICES

    counts = dict.fromkeys(SERVICES, 1)
    for spec in specs or []:
        name, sep, n = spec.partition("=")
        if not sep or name not in counts or not n.isdigit():
            raise typer.BadParameter(f"{spec!r}: expected SERVICE=N with SERVICE one of {', '.join(SERVICES)}")
        counts[name] = int(n)
    return counts


def summary(offsets: Offsets, settings: Settings, children: list[Child], previous: Table | None = None) -> Table:
    """The live table; while the broker cannot answer (a new topic without a leader yet, a
    restart), the previous table stays up."""
    from confluent_kafka import KafkaException

    try:
        return _summary(offsets, settings, children)
    except KafkaException:
        return previous if previous is not None else Table(title="waiting for the broker…")


def _summary(offsets: Offsets, settings: Settings, children: list[Child]) -> Table:
    from shared.contract.topics import SERVICES

    t = settings.topics
    table = Table(title="ridestream — Ctrl-C stops everything", title_justify="left")
    for col in ("", "per second", "total", "lag", "processes"):
        table.add_column(col, justify="right" if col else "left")
    total, rate = offsets.rate(t.events)
    backend = [c for c in children if c.name == "backend"]
    table.add_row("ride events", f"{rate:,.0f}", f"{total:,}", "", ", ".join(c.state for c in backend))
    for service in SERVICES:
        total, rate = offsets.rate(t.predictions(service))
        lag = offsets.lag(settings.group_id(service), t.events)
        procs = [c for c in children if c.name.startswith(service)]
        running = sum(c.state == "running" for c in procs)
        table.add_row(f"{service} predictions", f"{rate:,.0f}", f"{total:,}", f"{lag:,}", f"{running}/{len(procs)} running")
    dlq, _ = offsets.rate(t.dlq)
    table.add_row("dead letters", "", f"{dlq:,}", "", "")
    quality, _ = offsets.rate(t.model_quality)
    table.add_row("online quality figures", "", f"{quality:,}", "", ", ".join(c.state for c in children if c.name == "evaluator"))
    return table


def run(
    rate: float = typer.Option(500.0, help="ride events a second from the backend"),
    replicas: list[str] = typer.Option(None, "--replicas", help="SERVICE=N processes, e.g. tip=3"),
    duration: float = typer.Option(None, help="stop by itself after this many seconds"),
    metrics_port: int = typer.Option(9300, help="first /metrics port of the services (0 = off)"),
    autoscale: bool = typer.Option(False, "--autoscale", help="add and remove service processes by their "
                                   "group's lag, with KEDA's Kafka-scaler rule (docs/kubernetes.md)"),
    lag_threshold: int = typer.Option(None, min=1, help="with --autoscale: lag per replica (KEDA lagThreshold) of "
                                      "every service [default: each its own, from its measured throughput]"),
    cooldown: float = typer.Option(COOLDOWN_S, help="with --autoscale: seconds before scaling down"),
    web_port: int = typer.Option(8000, help="port of the web service: the rider page, the API (0 = off)"),
) -> None:
    """Start the broker if needed, the topics, the backend and the services; show them live."""
    from shared.contract.topics import create_topics
    from shared.kafka.clients import ensure_reachable, make_admin
    from shared.kafka.settings import load_settings

    settings = load_settings()
    ensure_local_broker(settings)
    admin = make_admin(settings)
    ensure_reachable(admin, settings)
    create_topics(admin, settings.topic_specs())
    logs = settings.state_dir / "logs"
    children: list[Child] = []
    port = metrics_port
    for service, n in _replicas(replicas).items():
        for i in range(n):
            args = ["consume", service]
            if metrics_port:
                port += 1
                args += ["--metrics-port", str(port)]
            children.append(Child(f"{service}-{i + 1}", args, logs / f"{service}-{i + 1}.log"))
    evaluator = ["evaluate", "--online"] + (["--metrics-port", str(metrics_port)] if metrics_port else [])
    children.append(Child("evaluator", evaluator, logs / "evaluator.log"))  # online MAE; judges rollouts
    children.append(Child("backend", ["produce", "--rate", str(rate), "--quiet"], logs / "backend.log"))
    if web_port:  # the rider-facing web service: its page, its API
        children.append(Child("web", ["serve", "--port", str(web_port)], logs / "web.log"))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for child in children:
        child.start()
    ports = f"; /metrics on ports {metrics_port + 1}–{port} (the evaluator's {metrics_port})" if metrics_port else ""
    out.print(f"broker {settings.bootstrap}; logs in {logs}{ports}")
    if web_port:
        out.print(f"rider page http://127.0.0.1:{web_port}/ · operator http://127.0.0.1:{web_port}/ops · API http://127.0.0.1:{web_port}/docs")
    offsets = Offsets(settings)
    scalers = _autoscalers(settings, offsets, children, port, logs, lag_threshold, cooldown) if autoscale else []
    deadline = time.monotonic() + duration if duration else None
    try:
        table = summary(offsets, settings, children)
        with Live(table, console=out, refresh_per_second=2) as live:
            while not stop.wait(1.0):
                for scaler in scalers:
                    scaler.tick()
                table = summary(offsets, settings, children, table)
                live.update(table)
                if deadline and time.monotonic() > deadline:
                    break
            # the backend first, so the services can finish what it sent
            _stop_children([c for c in children if c.name == "backend"])
            _stop_children([c for c in children if c.name != "backend"])
            live.update(summary(offsets, settings, children, table))
    finally:
        _stop_children(children)
        offsets.close()
    failed = [c for c in children if c.proc and c.proc.returncode not in (0, -signal.SIGTERM)]
    if failed:
        out.print(f"[red]stopped with errors[/]: {', '.join(f'{c.name} ({c.why})' for c in failed)}")
        raise typer.Exit(1)
    out.print("\nstopped cleanly" + ("; the local broker keeps running (`ridestream broker stop`)" if settings.uses_local_broker else ""))


def _autoscalers(settings: Settings, offsets: Offsets, children: list[Child], last_port: int, logs: Path,
                 lag_threshold: int | None, cooldown: float) -> list[ServiceScaler]:
    """One lag scaler per service (ridestream.autoscale), starting and stopping its processes."""
    from shared.contract.topics import SERVICES

    ports = iter(range(last_port + 1, 65536)) if last_port else None
    serial = dict.fromkeys(SERVICES, 100)  # scaled replicas are named tip-101, tip-102…

    def start(service: str) -> Child:
        serial[service] += 1
        args = ["consume", service] + (["--metrics-port", str(next(ports))] if ports else [])
        child = Child(f"{service}-{serial[service]}", args, logs / f"{service}-{serial[service]}.log")
        child.start()
        children.append(child)
        return child

    def stop(child: Child) -> None:  # drains (SIGTERM); it then leaves the summary
        _stop_children([child])
        children.remove(child)

    running = {s: [c for c in children if c.name.startswith(f"{s}-")] for s in SERVICES}
    partitions = len(offsets.partitions(settings.topics.events))  # the cap, as KEDA reads it: the topic's
    return fleet_scalers(running, lambda s: offsets.lag(settings.group_id(s), settings.topics.events), start, stop,
                         partitions, lag_threshold, cooldown)


def _stop_children(children: list[Child], timeout: float = 30.0) -> None:
    for c in children:
        if c.proc and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for c in children:
        if c.proc is None:
            continue
        try:
            c.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            c.proc.send_signal(signal.SIGUSR1)  # its threads' stacks to its log: why it did not stop
            time.sleep(0.5)
            c.proc.kill()
            c.proc.wait()
            c.overran = timeout
