"""Topic names of the wire contract, and idempotent creation and description of those topics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from shared.errors import TopicError

Service = Literal["duration", "tip", "cost"]
SERVICES: tuple[Service, ...] = ("duration", "tip", "cost")
STATEFUL_SERVICES: tuple[Service, ...] = ("duration",)  # those with per-ride state on a changelog

EVENTS = "rides.events"
DLQ = "rides.events.dlq"
PREDICTIONS: dict[Service, str] = {s: f"rides.predictions.{s}" for s in SERVICES}
CONTROL = "rides.control"  # compacted, key = service: the deployment plan in force
CONTROL_AUDIT = "rides.control.audit"  # every plan change and automatic decision, in order
MODEL_QUALITY = "rides.model_quality"  # compacted: windowed online MAE per service, version, variant
BACKEND_STATE = "rides.backend.state"  # compacted: the web backend's rides and idempotency keys


@dataclass(frozen=True)
class Topics:
    """The contract's topic names, under an optional namespace prefix.

    The namespace is empty in production (the names are exactly the contract's); tests and
    side-by-side experiments give each run its own prefix so nothing bleeds between them.
    """

    namespace: str = ""

    @property
    def events(self) -> str:
        return self.namespace + EVENTS

    @property
    def dlq(self) -> str:
        return self.namespace + DLQ

    def predictions(self, service: Service) -> str:
        return self.namespace + PREDICTIONS[service]

    def shadow(self, service: Service) -> str:
        """A shadow candidate's predictions: never read by riders."""
        return self.namespace + PREDICTIONS[service] + ".shadow"

    def backfill(self, service: Service) -> str:
        return self.namespace + PREDICTIONS[service] + ".backfill"

    @property
    def control(self) -> str:
        return self.namespace + CONTROL

    @property
    def control_audit(self) -> str:
        return self.namespace + CONTROL_AUDIT

    @property
    def model_quality(self) -> str:
        return self.namespace + MODEL_QUALITY

    @property
    def backend_state(self) -> str:
        """Compacted, partitioned like ``rides.events``: what every web backend replica follows."""
        return self.namespace + BACKEND_STATE

    def changelog(self, service: Service) -> str:
        """Compacted, partitioned like ``rides.events``: a service's per-ride state (DESIGN)."""
        return f"{self.namespace}ridestream-{service}-state-changelog"

    def all(self) -> list[str]:
        return [self.events, *(self.predictions(s) for s in SERVICES), self.dlq,
                self.control, self.control_audit, self.model_quality, self.backend_state,
                *(self.changelog(s) for s in STATEFUL_SERVICES)]


def replication_for(brokers: int) -> int:
    """Replicas of a topic on a cluster of ``brokers``: 3 from three brokers on, else 1."""
    return 3 if brokers >= 3 else 1


def min_insync_for(replicas: int) -> int:
    """With 3 replicas or more a write (acks=all) needs 2 in sync: one broker may fail, and what
    was acknowledged survives it; with fewer, 1."""
    return 2 if replicas >= 3 else 1


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int | None = None  # None: from the cluster's size (replication_for)
    retention_ms: int | None = None
    compacted: bool = False  # keep the latest value per key (a table), not a time window

    def config(self) -> dict[str, str]:
        """The topic's policy: a time window, or a table (compacted) — which, with a retention too,
        also forgets keys not written again for that long."""
        window = {} if self.retention_ms is None else {"retention.ms": str(self.retention_ms)}
        if not self.compacted:
            return window
        return {"cleanup.policy": "compact,delete" if window else "compact", **window}

    def new_topic(self, brokers: int = 1) -> NewTopic:
        replicas = self.replication_factor or replication_for(brokers)
        config = self.config()
        if self.compacted:
            config |= {"min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000"}
        if min_insync_for(replicas) > 1:
            config["min.insync.replicas"] = str(min_insync_for(replicas))
        return NewTopic(self.name, self.partitions, replicas, config=config)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    retention_ms: int | None
    compacted: bool = False
    replicas: int = 1
    min_insync_replicas: int = 1


def create_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30.0) -> dict[str, str]:
    """Create the topics that do not exist yet. Returns name → "created" or "exists".

    An existing topic is left as it is (Kafka cannot shrink partitions; growing them would move
    keys to other partitions and break per-ride ordering), so running this twice is harmless.
    """
    if not specs:
        return {}
    brokers = len(admin.list_topics(timeout=timeout).brokers) if any(s.replication_factor is None for s in specs) else 1
    futures = admin.create_topics([s.new_topic(brokers) for s in specs], request_timeout=timeout)
    outcome: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            outcome[name] = "created"
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"
            else:
                raise TopicError(f"cannot create topic {name}: {err.str()}") from None
    return outcome


def describe_topics(admin: AdminClient, names: list[str], timeout: float = 10.0) -> list[TopicInfo | None]:
    """Partitions and retention of each named topic; None where the topic does not exist."""
    metadata = admin.list_topics(timeout=timeout).topics
    present = [n for n in names if n in metadata and metadata[n].error is None]
    configs: dict[str, tuple[int | None, bool, int, int]] = {}
    if present:
        resources = [ConfigResource(ResourceType.TOPIC, n) for n in present]
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            config = future.result(timeout=timeout)
            entry, policy = config.get("retention.ms"), config.get("cleanup.policy")
            isr = config.get("min.insync.replicas")
            replicas = max((len(p.replicas) for p in metadata[resource.name].partitions.values()), default=1)
            configs[resource.name] = (int(entry.value) if entry is not None and entry.value else None,
                                      policy is not None and "compact" in (policy.value or ""),
                                      replicas, int(isr.value) if isr is not None and isr.value else 1)
    return [
        TopicInfo(n, len(metadata[n].partitions), *configs[n]) if n in configs else None
        for n in names
    ]
