"""The control plane on the wire: deployment plans on ``rides.control`` (compacted, key = service),
every change and decision on ``rides.control.audit``, and the replica's side of it — a thread that
reads the plan in force at start, follows it while the service runs, loads and checks the versions
a new plan names beside the ones serving, and hands the runtime a ready :class:`Deployment` to
swap in between two batches.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from consumers.deployment import Deployment
from consumers.services import serving_load
from shared.contract.codec import encode
from shared.contract.control import AuditRecord, DeploymentPlan
from shared.contract.topics import Service
from shared.errors import RidestreamError
from shared.kafka.clients import flush_all, make_consumer, make_producer, produce
from shared.kafka.reading import ReadTimeout
from shared.kafka.reading import read_to_end as read_topic
from shared.kafka.settings import Settings
from shared.ml.artifacts import Model, cached_probe

log = logging.getLogger("ridestream.control")

REPLICA_ID = f"{socket.gethostname()}:{os.getpid()}"  # this process, as plans and the group name it
REPLICA = f"replica {REPLICA_ID}"


def now() -> datetime:
    return datetime.now(timezone.utc)


# --- reading ---------------------------------------------------------------------------------------
def topic_reader(settings: Settings, topic: str) -> Consumer | None:
    """A consumer outside any group (it commits nothing), at the start of every partition of
    ``topic``; None while the topic does not exist (or the broker does not answer)."""
    # a fetch waits at most 100 ms on a quiet topic: the end (the plan in force) is seen at start-up
    # within that, not librdkafka's default 500 ms — the service's first batch waits for it
    consumer = make_consumer(settings, f"{settings.namespace}ridestream-control-reader",
                             **{"enable.partition.eof": True, "fetch.wait.max.ms": 100})
    try:
        meta = consumer.list_topics(topic, timeout=settings.connect_timeout_s).topics.get(topic)
    except KafkaException:
        meta = None
    if meta is None or meta.error is not None or not meta.partitions:
        consumer.close()
        return None
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    return consumer


def read_to_end(settings: Settings, topic: str, timeout: float = 15.0) -> Iterator[Message]:
    """Every message of ``topic`` as it is now, in order per partition; nothing if it does not
    exist; what could be read if the broker is too slow (:func:`shared.kafka.reading.read_to_end`)."""
    try:
        yield from read_topic(settings, topic, timeout=timeout, group=f"{settings.namespace}ridestream-control-reader")
    except ReadTimeout as exc:
        log.warning("%s", exc)


def parse_plan(msg: Message) -> DeploymentPlan | None:
    """A plan from a control message, or None (a tombstone, or a value that is not a plan)."""
    if not msg.value():
        return None
    try:
        return DeploymentPlan.model_validate_json(msg.value())
    except ValidationError as exc:
        log.warning("ignoring a control message that is not a deployment plan (offset %d): %s",
                    msg.offset(), str(exc).splitlines()[0])
        return None


def latest_plans(settings: Settings) -> dict[str, DeploymentPlan]:
    """Service → the plan in force (the highest plan_id seen for its key)."""
    plans: dict[str, DeploymentPlan] = {}
    for msg in read_to_end(settings, settings.topics.control):
        plan = parse_plan(msg)
        if plan is not None and (plan.service not in plans or plan.plan_id > plans[plan.service].plan_id):
            plans[plan.service] = plan
    return plans


def audit_history(settings: Settings, service: str | None = None) -> list[AuditRecord]:
    records = []
    for msg in read_to_end(settings, settings.topics.control_audit):
        try:
            record = AuditRecord.model_validate_json(msg.value())
        except ValidationError:
            continue
        if service is None or record.service == service:
            records.append(record)
    return records


# --- writing ---------------------------------------------------------------------------------------
class ControlWriter:
    """Publishes plans and audit records (one producer; ``close`` waits for the broker)."""

    def __init__(self, settings: Settings, actor: str):
        self.settings = settings
        self.actor = actor
        self.producer = make_producer(settings)

    def plan(self, plan: DeploymentPlan, action: str, reason: str = "", **detail: Any) -> None:
        """Put ``plan`` in force and record why; returns once the broker has both (or after 10 s),
        so a caller that goes on to watch the replicas' answers watches after the plan."""
        produce(self.producer, self.settings.topics.control, encode(plan), plan.service.encode())
        summary = {"strategy": plan.strategy, "state": plan.state, "stable": plan.stable,
                   "candidate": plan.candidate, "share": plan.share}
        self.audit(plan.service, plan.plan_id, action, reason or plan.reason, plan=summary, **detail)
        self.producer.flush(10)

    def audit(self, service: str, plan_id: int, action: str, reason: str = "", **detail: Any) -> None:
        record = AuditRecord(service=service, plan_id=plan_id, at=now(), action=action, actor=self.actor,
                             reason=reason, detail=orjson.loads(orjson.dumps(detail, default=str)))
        produce(self.producer, self.settings.topics.control_audit, encode(record), service.encode())
        self.producer.poll(0)

    def close(self) -> None:
        flush_all(self.producer)


# --- a replica following its service's plan -------------------------------------------------------
class PlanFollower:
    """Reads the control topic in a thread of its own; ``take()`` gives the runtime a prepared
    :class:`Deployment` once per new plan.

    Preparing means loading each version the plan names (from the local model store), refusing
    one that cannot be used here — missing, corrupt, another scikit-learn, other features — with
    an audit record while the current deployment keeps serving, compiling its trees and running
    one prediction, so the swap itself costs nothing. Model objects are kept by version: the
    stable stays loaded beside a candidate, so a rollback swaps back at once.
    """

    def __init__(self, settings: Settings, service: Service, model_names: list[str], serving: dict[str, Model],
                 load: Callable[[str, str], Model] | None = None, poll_s: float = 0.5, colour: str = "blue"):
        self.settings = settings
        self.colour = colour
        self.service = service
        self.model_names = model_names
        self.load = load or serving_load(settings)
        self.poll_s = poll_s
        self.loaded: dict[tuple[str, str], Model] = {(m.name, m.version): m for m in serving.values()}
        self.plan_id = 0  # the newest plan seen (followed or refused)
        self._ready: Deployment | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"plans-{service}", daemon=True)
        self.writer = ControlWriter(settings, REPLICA)

    def start(self, wait_s: float | None = None) -> None:
        """Start following; wait up to ``wait_s`` for the plan in force at start to be prepared."""
        self._thread.start()
        if wait_s and not self._caught_up.wait(wait_s):
            log.warning("%s: the control topic did not answer within %.0fs; serving %s meanwhile",
                        self.service, wait_s, ", ".join(f"{k[0]} {k[1]}" for k in self.loaded))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.writer.close()

    def take(self) -> Deployment | None:
        """The deployment prepared since the last call, if any (called between two batches)."""
        if self._ready is None:
            return None
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def _run(self) -> None:
        consumer = None
        try:
            while not self._stop.is_set():
                if consumer is None:
                    consumer = topic_reader(self.settings, self.settings.topics.control)
                    if consumer is None:
                        self._caught_up.set()  # no control topic yet: nothing to follow (we retry)
                        self._stop.wait(5)
                        continue
                newest: DeploymentPlan | None = None
                for msg in consumer.consume(100, timeout=self.poll_s):
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            self._caught_up_with(newest)
                            newest = None
                        continue
                    plan = parse_plan(msg)
                    if plan is not None and plan.service == self.service and plan.plan_id > self.plan_id:
                        newest = plan if newest is None or plan.plan_id > newest.plan_id else newest
                if newest is not None:
                    self._prepare(newest)
        except Exception:  # never take the service down: it keeps serving what it serves
            log.exception("%s: following the control topic failed; serving the current deployment", self.service)
            self._caught_up.set()
        finally:
            if consumer is not None:
                consumer.close()

    def _caught_up_with(self, newest: DeploymentPlan | None) -> None:
        if newest is not None:
            self._prepare(newest)
        self._caught_up.set()

    def _prepare(self, plan: DeploymentPlan) -> None:
        self.plan_id = plan.plan_id
        started = time.monotonic()
        try:
            sets = [self._model_set(versions) for versions in plan.versions_needed(self.colour)]
        except RidestreamError as exc:
            log.error("%s: refusing plan %d: %s", self.service, plan.plan_id, exc)
            self.writer.audit(self.service, plan.plan_id, "refused", str(exc))
            return
        deployment = Deployment(sets[0], plan, sets[1] if len(sets) > 1 else {}, replica=REPLICA_ID,
                                colour=self.colour)
        with self._lock:
            self._ready = deployment
        log.info("%s: plan %d ready (%s) in %.1fs", self.service, plan.plan_id, deployment.describe(),
                 time.monotonic() - started)
        self.writer.audit(self.service, plan.plan_id, "loaded", deployment.describe(),
                          seconds=round(time.monotonic() - started, 3))

    def _model_set(self, versions: dict[str, str]) -> dict[str, Model]:
        unknown = set(versions) - set(self.model_names)
        if unknown:
            raise RidestreamError(f"the plan names {', '.join(sorted(unknown))}, not a model of the "
                                  f"{self.service} service ({', '.join(self.model_names)})")
        models = {}
        for name in self.model_names:
            version = versions.get(name)
            if version is None:
                raise RidestreamError(f"the plan names no {name} version")
            models[name] = self.loaded.get((name, version)) or self._load(name, version)
        return models

    def _load(self, name: str, version: str) -> Model:
        model = self.load(name, version)
        if self.settings.native_models:
            model.accelerate(self.settings.compiled_dir, self.settings.predict_threads)
        predict = model.native or model.estimator.predict
        predict(cached_probe(name, self.settings.compiled_dir)[:32])  # warm: the first call after a load pays for the rest
        self.loaded[(name, version)] = model
        return model
