"""Benchmarks of the service as separate processes (`ridestream consume tip`, as users run it):
end-to-end latency at offered rates, one process vs two, and replay throughput.

Times come from the broker's own records: each message's timestamp is set when its producer
hands it over, so a prediction's timestamp minus its event's is the time from the event being
produced to the prediction being produced (the acknowledgement follows within a millisecond on a
local broker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import orjson
from confluent_kafka import ConsumerGroupState, KafkaException, TopicPartition

from bench.loops import Measure, preproduce, ride_requests
from consumers.replay import plan, replay
from consumers.services import TIP
from consumers.sinks import FileSink
from shared.contract.codec import encode_dict
from shared.contract.topics import create_topics
from shared.kafka.clients import make_admin, make_consumer, make_producer, produce
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_model

RIDESTREAM = [sys.executable, "-m", "ridestream.cli"]
STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 64 * 1024  # read no more of a long run's stderr than its tail needs


def contract_topics(settings: Settings, label: str) -> Settings:
    """Settings of a fresh namespace whose contract topics exist: `ridestream consume tip` run
    with it reads ``<ns>rides.events`` and writes ``<ns>rides.predictions.tip``."""
    scoped = settings.model_copy(update={"namespace": f"{settings.namespace}bench-{label}-{time.monotonic_ns()}."})
    create_topics(make_admin(scoped), scoped.topic_specs())
    return scoped


def drop_topics(scoped: Settings) -> None:
    """Delete the topics of ``scoped``'s namespace (made by :func:`contract_topics`). A phase that
    runs many short latency runs would otherwise leave ~100 partitions per run on the broker (a
    whole ``--service all`` run, over two thousand), and later runs would measure a fuller broker."""
    admin = make_admin(scoped)
    made = [t for t in admin.list_topics(timeout=10).topics if t.startswith(scoped.namespace)]
    for future in (admin.delete_topics(made, operation_timeout=30).values() if made else ()):
        try:
            future.result(60)
        except KafkaException:  # left for the run's own clean-up (bench.run.topics_deleted_after)
            pass


def _service_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap, "RIDESTREAM_NAMESPACE": settings.namespace,
            "RIDESTREAM_BATCH_MAX_WAIT_MS": "5", "RIDESTREAM_SESSION_TIMEOUT_MS": "6000", **(extra or {})}


def start_services(settings: Settings, n: int, extra_env: dict[str, str] | None = None,
                   service: str = "tip") -> list[subprocess.Popen]:
    """``n`` `ridestream consume SERVICE` processes (each following the plan on the control topic, as
    the command does unless given ``--model``); ``extra_env``, e.g. ``RIDESTREAM_MODEL_STORE``."""
    return [_spawn([*RIDESTREAM, "consume", service], _service_env(settings, extra_env)) for _ in range(n)]


def start_echo(settings: Settings, n: int = 1, service: str = "tip") -> list[subprocess.Popen]:
    """:mod:`bench.echo` in place of a service: the same bytes to its output topic."""
    command = [sys.executable, "-m", "bench.echo", settings.topics.events, settings.topics.predictions(service)]
    return [_spawn(command, _service_env(settings)) for _ in range(n)]


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A measured process; its stderr kept in a temporary file, so that one which dies during a
    run says why (:func:`stop_services`) instead of leaving an empty measurement unexplained."""
    log = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    except BaseException:
        log.close()
        raise
    proc.stderr_log = log  # type: ignore[attr-defined]
    return proc


def stop_services(procs: list[subprocess.Popen], explain: bool = False,
                  stopped: Collection[subprocess.Popen] = ()) -> None:
    """SIGTERM each (a drain, as an operator stops one); one that had already died, or that exits
    with an error, has its stderr's last lines printed (every one's with ``explain``: a run that
    did not get its answers) — but not those in ``stopped``, which the run stopped or killed itself."""
    died = [p for p in procs if p.poll() is not None and p not in stopped]
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        log = getattr(p, "stderr_log", None)
        try:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            failed = p not in stopped and p.returncode not in (0, -signal.SIGTERM)
            if log is not None and (explain or p in died or failed):
                _print_tail(p, log, "died during the run" if p in died else "failed to stop" if failed
                            else "did not answer every event")
        finally:
            if log is not None:
                log.close()


def _print_tail(p: subprocess.Popen, log, state: str) -> None:
    log.seek(max(0, os.fstat(log.fileno()).st_size - STDERR_TAIL_BYTES))
    tail = log.read().decode(errors="replace").strip().splitlines()[-STDERR_TAIL_LINES:]
    print(f"bench: {' '.join(p.args[2:])} {state} (exit {p.returncode}):", *tail, sep="\n  ", file=sys.stderr)


def read_timestamps(settings: Settings, topic: str, expect: int, timeout: float,
                    variants: dict[str, str | None] | None = None) -> dict[str, int]:
    """event_id → message timestamp (ms) of every message in ``topic`` (the first, where an event
    was answered twice), waiting for ``expect``; ``variants`` receives event_id → the message's
    ``variant`` field (None where absent)."""
    consumer = make_consumer(settings, f"{settings.namespace}bench-reader-{time.monotonic_ns()}")
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < expect and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=10_000, timeout=0.5):
            if msg.error() is None:
                value = orjson.loads(msg.value())
                if value["event_id"] in seen and seen[value["event_id"]] <= msg.timestamp()[1]:
                    continue
                seen[value["event_id"]] = msg.timestamp()[1]
                if variants is not None:
                    variants[value["event_id"]] = value.get("variant")
    consumer.close()
    return seen


@dataclass
class Latency:
    offered_per_s: float | None
    events: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


def offer(settings: Settings, topic: str, events: list[dict], rate: float | None,
          at: tuple[int, Callable[[], None]] | None = None) -> None:
    """Produce ``events`` at ``rate`` a second (None: as fast as possible). ``at`` = (i, fn) runs
    ``fn`` in a thread of its own when the i-th event is about to be produced."""
    producer = make_producer(settings, **{"linger.ms": 1})
    messages = [(encode_dict(e), e["ride_id"].encode()) for e in events]  # encoded before the clock
    t0 = time.monotonic()
    for i, (value, key) in enumerate(messages):
        if rate and i % 20 == 0:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if at is not None and i == at[0]:
            threading.Thread(target=at[1], name="bench-midway", daemon=True).start()
        produce(producer, topic, value, key)
        producer.poll(0)
    producer.flush(60)


def publish_at_once(settings: Settings, topic: str, events: list[dict]) -> None:
    """Produce ``events`` in one transaction. The services read ``read_committed``, so they see
    the whole backlog when it commits: they measure scoring a backlog, not keeping up with the
    bench's own producer (which would also share the CPU with them while it runs)."""
    producer = make_producer(settings, **{"transactional.id": f"{settings.namespace}bench-{time.monotonic_ns()}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    preproduce(settings, topic, events, producer)
    producer.commit_transaction(120)


def latency(settings: Settings, rate: float | None, seconds: float, seed: int, lead_in_s: float = 2.0,
            start: Callable[..., list[subprocess.Popen]] = start_services, service: str = "tip",
            make: Callable[..., list[dict]] | None = None,
            answered: Callable[[dict], bool] | None = None) -> Latency:
    """One process of ``service`` (or what ``start`` starts instead, e.g. :func:`start_echo`),
    warmed up; then one steady stream offered at ``rate`` (:func:`steady_stream`) of the events
    ``make(n, seed=…)`` makes (ride_requested by default); ``answered`` says which events the
    process answers (all by default)."""
    scoped = contract_topics(settings, f"latency-{int(rate or 0)}")
    procs = start(scoped, 1, service=service)
    try:
        produced, scored = steady_stream(scoped, rate, seconds, seed, lead_in_s, service=service, make=make,
                                         answered=answered)
    finally:
        stop_services(procs)
        drop_topics(scoped)
    return percentiles(rate, produced, scored)


def steady_stream(scoped: Settings, rate: float | None, seconds: float, seed: int, lead_in_s: float = 2.0,
                  midway: Callable[[], None] | None = None,
                  variants: dict[str, str | None] | None = None, service: str = "tip",
                  make: Callable[..., list[dict]] | None = None,
                  answered: Callable[[dict], bool] | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """Against the tip process(es) already started in ``scoped``'s namespace: a warm-up, then one
    steady stream offered at ``rate`` whose first ``lead_in_s`` seconds are not measured. Returns
    the measured events' produced and predicted broker timestamps (ms), by event_id. ``midway``
    runs (in a thread) when the measured events are half produced; ``variants`` receives each
    measured prediction's variant.

    Why the lead-in: a consumer that sat idle while a *new* idempotent producer starts may wait a
    whole ``fetch.wait.max.ms`` (500 ms) for its first batch — a start-up effect of the producer,
    not the service's steady-state latency, which is what this figure is about. And a replica's
    first seconds: the duration service's first overdue flushes (at-least-once) waited 40–450 ms
    for a broker slow to acknowledge, three or four seconds after it started (the bench's phases
    give 5 s: ``BenchConfig.latency_lead_in_s``)."""
    source, sink = scoped.topics.events, scoped.topics.predictions(service)
    make = make or ride_requests
    answers = answered or (lambda _: True)
    warm = make(200, seed=seed + 1000)
    offer(scoped, source, warm, None)
    read_timestamps(scoped, sink, sum(map(answers, warm)), 120)  # the process is up and has scored
    per_s = rate or 50_000
    lead = make(int(per_s * lead_in_s), seed=seed + 2000)
    events = make(int(per_s * seconds), seed=seed)
    offer(scoped, source, lead + events, rate, at=(len(lead) + len(events) // 2, midway) if midway else None)
    ids = {e["event_id"] for e in events if answers(e)}
    total = len(warm) + len(lead) + len(events)
    produced = {k: v for k, v in read_timestamps(scoped, source, total, 60).items() if k in ids}
    seen: dict[str, str | None] | None = {} if variants is not None else None
    expected = sum(map(answers, warm)) + sum(map(answers, lead)) + len(ids)
    scored = {k: v for k, v in read_timestamps(scoped, sink, expected, 120, seen).items() if k in ids}
    if variants is not None:
        variants.update({k: v for k, v in seen.items() if k in ids})
    return produced, scored


def percentiles(rate: float | None, produced: dict[str, int], scored: dict[str, int]) -> Latency:
    delays = np.array([scored[k] - produced[k] for k in scored if k in produced], dtype=float)
    p50, p95, p99 = np.percentile(delays, [50, 95, 99]) if len(delays) else (np.nan,) * 3
    return Latency(rate, len(delays), round(float(p50), 1), round(float(p95), 1), round(float(p99), 1))


def wait_for_group(settings: Settings, members: int, timeout: float = 90, service: str = "tip") -> None:
    """Until the service's group is stable with ``members`` members that each own partitions."""
    admin, group = make_admin(settings), settings.group_id(service)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
        except (KafkaException, TimeoutError):  # no group yet, its coordinator still loading, or a busy machine
            desc = None
        if (desc is not None and desc.state == ConsumerGroupState.STABLE and len(desc.members) == members
                and all(m.assignment.topic_partitions for m in desc.members)):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{members} {service} process(es) did not settle in group {group} in {timeout:.0f}s")


def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


class CpuSampler:
    """Reads the machine's CPU counters every ``every`` seconds in a thread, to tell afterwards how
    busy the cores were between two wall-clock times (e.g. the first and last prediction)."""

    def __init__(self, every: float = 0.02):
        self.every = every
        self.samples: list[tuple[float, int, int]] = []  # (time.time(), busy, total)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="cpu-sampler", daemon=True)

    def _sample(self) -> None:
        while True:
            counters = cpu_jiffies()
            if counters is None:
                return
            self.samples.append((time.time(), *counters))
            if self._done.wait(self.every):
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def busy_between(self, start: float, end: float) -> float | None:
        """Share of all cores busy from the last sample at or before ``start`` to the first at or
        after ``end``; None without samples around both."""
        before = [s for s in self.samples if s[0] <= start]
        after = [s for s in self.samples if s[0] >= end]
        if not before or not after or after[0][2] <= before[-1][2]:
            return None
        (_, busy0, total0), (_, busy1, total1) = before[-1], after[0]
        return (busy1 - busy0) / (total1 - total0)


def processes_throughput(settings: Settings, events: list[dict], processes: int, service: str = "tip",
                         answered: Callable[[dict], bool] | None = None) -> Measure:
    """``processes`` tip processes, already settled in their group with the partitions shared,
    then the events published at once; the rate is taken from the first to the last prediction's
    broker timestamp. Publishing only after the group settles keeps start-up, joins and the
    rebalance that a second member causes out of the figure (they would dominate a few seconds).
    How busy the machine's cores were from the first to the last prediction (services, broker and
    this reader) says whether a second process had a core to itself."""
    scoped = contract_topics(settings, f"procs-{processes}")
    expected = sum(map(answered, events)) if answered else len(events)
    procs = start_services(scoped, processes, service=service)
    try:
        wait_for_group(scoped, processes, service=service)
        with CpuSampler() as cpu:
            publish_at_once(scoped, scoped.topics.events, events)
            stamps = sorted(read_timestamps(scoped, scoped.topics.predictions(service), expected, 300).values())
        busy = cpu.busy_between(stamps[0] / 1000, stamps[-1] / 1000) if len(stamps) > 1 else None
    finally:
        stop_services(procs)
    # events per second: all the events published, over the first to the last prediction
    scored_all = len(stamps) == expected
    return Measure(len(events) if scored_all else len(stamps), (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1
                   else 0.0, busy)


def replay_throughput(settings: Settings, source: str, path) -> Measure:
    """The replay command's path over the whole pre-produced range, to a file."""
    ranges = plan(settings, "earliest", "latest", topic=source)
    started: list[float] = []
    done = [0]

    def progress(n: int) -> None:
        if not started:
            started.append(time.monotonic())
        done[0] += n

    replay(settings, TIP, {"tip": load_model("tip")}, ranges, FileSink(path), progress=progress)
    return Measure(done[0], time.monotonic() - started[0] if started else 0.0)
