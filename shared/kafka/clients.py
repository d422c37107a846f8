"""The one Kafka client factory: every producer, consumer and admin client is made here from
:class:`~shared.kafka.settings.Settings`, so security, client ids and defaults live in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ClusterMetadata

from shared.errors import AccessDenied, BrokerUnavailable, TopicError
from shared.kafka.settings import Settings

# librdkafka's own log lines (connection refused, retries…) go to this logger instead of stderr;
# the CLI shows them with --verbose and otherwise reports failures as one-line errors.
kafka_log = logging.getLogger("ridestream.kafka")


def _base(settings: Settings, overrides: dict[str, Any], tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    return settings.kafka_config(tuning, logger=kafka_log, **overrides)


# what a producer's at-least-once promise rests on: RIDESTREAM_KAFKA_EXTRA cannot change it
PRODUCER_GUARANTEES = {"enable.idempotence": True, "acks": "all"}
# throughput/latency trade-offs: RIDESTREAM_KAFKA_EXTRA can (e.g. {"linger.ms": "1"})
PRODUCER_TUNING = {
    "compression.type": "lz4",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Tuning defaults < ``settings.kafka_extra`` < the guarantees and the caller's ``overrides``."""
    return _base(settings, {**PRODUCER_GUARANTEES, **overrides}, PRODUCER_TUNING)


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer (no duplicates or reordering on retries), LZ4-compressed, small linger."""
    return Producer(producer_config(settings, **overrides))


def make_transactional_producer(settings: Settings, transactional_id: str, **overrides: Any) -> Producer:
    """:func:`make_producer` with a ``transactional.id``, its transactions initialised (which
    fences an older producer with the same id and aborts what it left open). The transaction
    timeout bounds how long a dead process's open transaction holds ``read_committed`` readers."""
    producer = make_producer(settings, **{"transactional.id": transactional_id,
                                          "transaction.timeout.ms": settings.transaction_timeout_ms, **overrides})
    try:
        producer.init_transactions(settings.connect_timeout_s * 3)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot start transactions as {transactional_id!r} at {settings.bootstrap}: "
                                f"{exc.args[0].str()}") from None
    return producer


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, **kwargs: Any) -> None:
    """Produce one message; while the local queue is full, serve delivery reports and wait —
    never drop."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def flush_all(producer: Producer) -> None:
    """Wait until every queued message is acknowledged or has failed (its delivery report says
    which); it keeps waiting while the broker is away."""
    while producer.flush(1.0) > 0:
        pass


def consume_ready(consumer: Consumer, size: int, wait_s: float,
                  when_idle: Callable[[], None] = lambda: None) -> list[Message]:
    """Whatever ``consumer`` has fetched, up to ``size`` messages, at once; if nothing has,
    ``when_idle()``, then the first message to arrive within ``wait_s`` and whatever came with it.

    A batch is never held back to fill up (librdkafka's batch consume would wait out the whole
    timeout): under load batches grow by themselves, since more arrives while one is handled,
    and at a trickle an event waits for nothing but the batch before it."""
    msgs = consumer.consume(num_messages=size, timeout=0)
    if not msgs:
        when_idle()
        msgs = consumer.consume(num_messages=1, timeout=wait_s)
        if msgs and size > 1:
            msgs += consumer.consume(num_messages=size - 1, timeout=0)
    return msgs


# librdkafka stops fetching a partition while its local queue holds queued.min.messages (100,000)
# and looks again only after fetch.queue.backoff.ms (1 s by default): under a backlog the queues
# drained long before that and every process read ~120,000 events/s with half its time waiting
# (py-spy; docs/decisions/0008). A smaller queue looked at every 10 ms: the cost service 135,300 →
# 289,855 events/s, peak RSS 172 → 177 MB. Only a consumer under a backlog ever reaches them.
CONSUMER_TUNING = {"fetch.queue.backoff.ms": 10, "queued.min.messages": 10_000}


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer whose offsets are committed only by the caller (never automatically), with
    incremental rebalancing so adding a replica does not stop the others: cooperative-sticky on
    the classic group protocol, or Kafka 4's consumer group protocol (KIP-848), where the broker
    assigns and times sessions out (``group.consumer.session.timeout.ms``). Tuning defaults <
    ``settings.kafka_extra`` < these and the caller's ``overrides``."""
    conf = {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }
    if settings.group_protocol == "consumer":
        conf["group.protocol"] = "consumer"  # librdkafka refuses the classic protocol's settings with it
    else:
        conf |= {"partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": settings.session_timeout_ms}
    conf.update(overrides)
    return _base(settings, conf, CONSUMER_TUNING)


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **overrides))


def make_admin(settings: Settings, **overrides: Any) -> AdminClient:
    errors: list[KafkaError] = []  # what librdkafka reported, for ensure_reachable's message
    admin = AdminClient(_base(settings, {"error_cb": errors.append, **overrides}))
    admin.ridestream_errors = errors
    return admin


# librdkafka's codes for a refused login: a wrong user or password (SASL), a refused certificate
AUTH_ERRORS = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
# and for a principal without the ACL it needs
ACL_ERRORS = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
              KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED}


def authentication_failed(settings: Settings) -> AccessDenied:
    who = f"user {settings.sasl_username!r}" if settings.sasl_username else "this client"
    return AccessDenied(
        f"the cluster at {settings.bootstrap} refused {who} ({settings.sasl_mechanism or settings.security_protocol}): "
        "check RIDESTREAM_SASL_USERNAME and RIDESTREAM_SASL_PASSWORD (`ridestream broker credentials NAME` for the "
        "local --secure broker)"
    )


def ensure_reachable(admin: AdminClient, settings: Settings, timeout: float | None = None) -> ClusterMetadata:
    """Cluster metadata, or a one-line :class:`BrokerUnavailable` after ``timeout`` seconds (an
    :class:`AccessDenied` when the broker refused the login)."""
    timeout = settings.connect_timeout_s if timeout is None else timeout
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # serve the error callbacks librdkafka queued meanwhile
        reported = getattr(admin, "ridestream_errors", [])
        if exc.args[0].code() in AUTH_ERRORS or any(e.code() in AUTH_ERRORS for e in reported):
            raise authentication_failed(settings) from None
        hint = (
            "start the local one with `ridestream broker start`, or set KAFKA_BOOTSTRAP_SERVERS"
            if settings.uses_local_broker
            else "check KAFKA_BOOTSTRAP_SERVERS / RIDESTREAM_BOOTSTRAP_SERVERS and the network"
        )
        raise BrokerUnavailable(
            f"no Kafka broker answered at {settings.bootstrap} within {timeout:g}s "
            f"({exc.args[0].str()}): {hint}"
        ) from None


def require_topics(admin: AdminClient, settings: Settings, topics: list[str]) -> None:
    """A one-line error naming the topics that do not exist, and how to create them."""
    existing = ensure_reachable(admin, settings).topics
    missing = [t for t in topics if t not in existing]
    if missing and settings.sasl_username:  # a topic the principal may not describe is not listed
        for topic in missing:
            meta = admin.list_topics(topic, timeout=settings.connect_timeout_s).topics.get(topic)
            if meta is not None and meta.error is not None and meta.error.code() in ACL_ERRORS:
                raise AccessDenied(f"user {settings.sasl_username!r} may not use topic {topic} ({meta.error.name()}): "
                                   "run it with its own principal, or grant it (`ridestream acl apply`)")
    if missing:
        raise TopicError(f"no topic {', '.join(missing)} on {settings.bootstrap}: run `ridestream topics create`")
