"""The one settings object: environment (``RIDESTREAM_*``), a ``.env`` file, then defaults.

``KAFKA_BOOTSTRAP_SERVERS`` is honoured too, so the usual variable points everything at an existing
cluster. When neither is set, ridestream uses its own local broker (``ridestream broker start``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import PROJECT_ROOT
from shared.contract.topics import SERVICES, STATEFUL_SERVICES, Service, Topics, TopicSpec
from shared.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RIDESTREAM_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        validate_by_name=True,  # Settings(bootstrap_servers=…) works beside the env aliases
    )

    # --- which Kafka -------------------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RIDESTREAM_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port…] of an existing cluster; unset = the local broker",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "ridestream"
    kafka_extra: dict[str, str] = Field(
        default_factory=dict, description="further librdkafka settings, as a JSON object"
    )
    connect_timeout_s: float = Field(default=10.0, gt=0)

    # --- topics --------------------------------------------------------------------------------
    namespace: str = Field(default="", description="prefix for every topic and consumer group")
    events_partitions: int = Field(default=6, ge=1)
    predictions_partitions: int = Field(default=6, ge=1)
    dlq_partitions: int = Field(default=1, ge=1)
    replication_factor: int | None = Field(default=None, ge=1, description="replicas of every topic "
                                           "created; unset: 3 (min.insync.replicas 2) from 3 brokers on, else 1")
    retention_hours: float = Field(default=168.0, ge=0, description="7 days; 0 keeps messages forever "
                                   "(for replaying data older than the retention, such as the TLC trips of 2019)")
    backend_state_retention_hours: float = Field(default=168.0, ge=0, description="how long the web backend's "
                                                 "table keeps a ride or an idempotency key not written again "
                                                 "(rides.backend.state is compacted, and deleted after this); 0: forever")

    # --- the fleet -----------------------------------------------------------------------------
    batch_size: int = Field(default=10_000, ge=1, le=100_000, description="most messages per batch")
    batch_max_wait_ms: int = Field(default=20, ge=1, description="longest wait for a batch's first message")
    commit_interval_ms: int = Field(default=100, ge=0, description="how often the offsets of batches whose "
                                    "output is acknowledged are committed, without waiting; output still unacknowledged "
                                    "after 5 intervals is waited for (0: after each batch, waiting)")
    processing: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once", description="at_least_once: offsets committed after the output is acknowledged "
        "(a crash may repeat predictions, same ids); exactly_once: each batch's output, dead letters and input "
        "offsets commit in one Kafka transaction (docs/delivery.md)")
    transaction_timeout_ms: int = Field(default=10_000, ge=1000, description="exactly_once: how long the broker "
                                        "keeps a dead process's open transaction (which holds read_committed "
                                        "readers back) before aborting it; Kafka Streams' default")
    state_ttl_hours: float = Field(default=6.0, gt=0, description="a ride's state (the duration service's memory) "
                                   "is forgotten this long after its request, by event time, if it never completed")
    max_message_bytes: int = Field(default=2_097_152, ge=1024, description="room for a 1 MB event in the DLQ")
    session_timeout_ms: int = Field(default=10_000, ge=1000, description="how long a silent (dead) member keeps its "
                                    "partitions: 10 s, not Kafka's 45 s — measured, docs/benchmarks.md#rebalances "
                                    "(classic group protocol; with `consumer` the group's consumer.session.timeout.ms)")
    group_protocol: Literal["classic", "consumer"] = Field(default="classic", description="consumer group protocol: "
                                                           "classic (cooperative-sticky) or consumer (KIP-848, Kafka 4)")
    native_models: bool = Field(default=True, description="serve models from trees compiled to native code (gcc); "
                                "false: always scikit-learn")
    model_threads: int = Field(default=1, ge=0, description="threads of one compiled predict call; 0 = one per "
                               "core. One: scale by processes, and a small batch never waits on a busy core")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="/metrics (and /healthz, /readyz) port "
                              "of a process; 0 = off")
    stall_timeout_s: float = Field(default=120.0, gt=0, description="/healthz fails when the consume loop has "
                                   "not come round for this long (its longest legitimate pause is seconds)")
    drain_timeout_s: float = Field(default=30.0, gt=0, description="how long a stopping service may take to "
                                   "drain (finish its batch, flush, commit, leave) before its supervisor kills it")
    drift: bool = Field(default=True, description="count each batch's features into its model's reference bins "
                        "and export the windowed PSI per feature on /metrics (docs/monitoring.md)")
    drift_window_s: float = Field(default=300.0, gt=0, description="the window of the PSI gauge, in seconds")
    model_store: Path = Field(default=PROJECT_ROOT / "models", description="the model registry: a folder of "
                              "<name>/<version>/ artifacts and alias files, mountable into containers")

    # --- the local broker ----------------------------------------------------------------------
    broker_port: int = Field(default=9092, ge=1, le=65535)
    broker_controller_port: int = Field(default=9093, ge=1, le=65535)
    broker_heap: str = Field(default="512m", pattern=r"^\d+[mMgG]$")
    broker_nodes: int = Field(default=1, ge=1, le=9, description="nodes of the local cluster (`broker start "
                              "--nodes N`): node i listens on broker_port + 2(i-1)")
    state_dir: Path = Field(default=PROJECT_ROOT / ".ridestream", description="broker data, logs, compiled models")

    @property
    def compiled_dir(self) -> Path:
        return self.state_dir / "compiled"

    @property
    def predict_threads(self) -> int:
        return self.model_threads or os.cpu_count() or 1

    @property
    def uses_local_broker(self) -> bool:
        return not self.bootstrap_servers

    @property
    def bootstrap(self) -> str:
        if self.bootstrap_servers:
            return self.bootstrap_servers
        return ",".join(f"localhost:{self.broker_port + 2 * i}" for i in range(self.broker_nodes))

    @property
    def topics(self) -> Topics:
        return Topics(self.namespace)

    def group_id(self, service: Service, colour: str = "blue") -> str:
        """A service's consumer group; a blue/green deployment's green replicas have their own."""
        return f"{self.namespace}ridestream-{service}" + ("" if colour == "blue" else f"-{colour}")

    @property
    def exactly_once(self) -> bool:
        return self.processing == "exactly_once"

    def transactional_id(self, service: Service, group_id: str, instance: str) -> str:
        """A service process's transactional id: ``[namespace]ridestream-SERVICE-tx.GROUP.INSTANCE``,
        with a per-process ``instance`` (decision 0006). Under KIP-447 zombies are fenced by the
        group's generation, so the id need not follow partitions; it must be unique per live process.
        The fixed prefix lets one prefixed ACL grant a service its transactional ids."""
        return f"{self.namespace}ridestream-{service}-tx.{group_id}.{instance}"

    @property
    def retention_ms(self) -> int:
        """The topics' ``retention.ms``; -1 (Kafka's "forever") for 0 hours. The broker deletes
        messages by their timestamps, so events stamped with old event times (a TLC file from
        2019) are deleted at its next retention check unless the retention is longer than their age."""
        return -1 if self.retention_hours == 0 else int(self.retention_hours * 3600 * 1000)

    def topic_specs(self) -> list[TopicSpec]:
        retention_ms = self.retention_ms
        t = self.topics

        def spec(name: str, partitions: int) -> TopicSpec:
            return TopicSpec(name, partitions, self.replication_factor, retention_ms)

        return [
            spec(t.events, self.events_partitions),
            *(spec(t.predictions(s), self.predictions_partitions) for s in SERVICES),
            spec(t.dlq, self.dlq_partitions),
            # one partition each: a handful of keys, read whole by every replica, in order
            TopicSpec(t.control, 1, self.replication_factor, compacted=True),
            spec(t.control_audit, 1),
            TopicSpec(t.model_quality, 1, self.replication_factor, compacted=True),
            # the web backend's rides and idempotency keys: a table every replica reads whole
            # (finished rides and old idempotency keys are forgotten after backend_state_retention_hours)
            TopicSpec(t.backend_state, self.events_partitions, self.replication_factor,
                      None if self.backend_state_retention_hours == 0 else int(self.backend_state_retention_hours * 3.6e6),
                      compacted=True),
            # a stateful service's per-ride state, partitioned like rides.events (the same ride, the same partition)
            *(TopicSpec(t.changelog(s), self.events_partitions, self.replication_factor, compacted=True)
              for s in STATEFUL_SERVICES),
        ]

    def shadow_spec(self, service: Service) -> TopicSpec:
        """The topic of a shadow candidate's predictions, made when a shadow plan needs it."""
        return TopicSpec(self.topics.shadow(service), self.predictions_partitions, self.replication_factor,
                         self.retention_ms)

    def kafka_config(self, tuning: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        """The librdkafka configuration shared by every client: the one place settings become
        ``bootstrap.servers``, security and TLS options. ``kafka_extra`` overrides the ``tuning``
        defaults, and ``overrides`` (what the caller relies on) override it."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        conf.update({k: str(v) for k, v in optional.items() if v is not None})
        conf.update(tuning or {})
        conf.update(self.kafka_extra)
        conf.update(overrides)
        return conf


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with a one-line :class:`ConfigError` when they are invalid."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(
            f"invalid setting RIDESTREAM_{field.upper()}: {first['msg']} "
            f"(got {first.get('input')!r}; check your environment and .env)"
        ) from None
