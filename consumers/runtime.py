"""The one fleet runtime: consume a batch → validate → features → predict → produce → commit.

Promises (DESIGN.md):

* at-least-once — a batch's offsets are committed only after every prediction and DLQ entry of
  that batch (and of every batch before it) is acknowledged by the broker; the next batch does not
  wait for those acknowledgements, nor for the commit (:meth:`Runtime._settle`,
  :meth:`Runtime._commit_pending`); a SIGKILL loses nothing and may repeat the batches of the
  last few ``commit_interval_ms``, with the same ``prediction_id`` values;
* one bad message never stops a partition — it goes to the DLQ with its reason and original bytes;
* one ``predict`` per model per batch (:func:`consumers.scoring.score_batch`); a large batch's
  output is produced while the next batch's compiled trees run, when a next batch is already
  waiting (:meth:`Runtime.process`), and at once when none is;
* a full producer queue means wait and poll, never drop;
* SIGTERM/Ctrl-C drains: the batch in flight is finished, flushed and committed, then the
  consumer leaves the group;
* exactly-once on request (``RIDESTREAM_PROCESSING=exactly_once``): the output, dead letters and
  input offsets of the batches of each commit interval commit in one Kafka transaction
  (:mod:`consumers.transactions`); an aborted one rewinds to the committed offsets.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumers.control import REPLICA_ID, PlanFollower
from consumers.deployment import Deployment
from consumers.drift import DriftMonitor
from consumers.health import STATS_INTERVAL_MS, Health
from consumers.metrics import ServiceMetrics
from consumers.scoring import RideMemory, ServiceSpec, by_event_type
from consumers.sinks import KafkaSink, Sink
from consumers.state import Record, StateStore
from consumers.transactions import Fenced, Stuck, TimedOut, Transactions
from shared.contract.codec import InvalidMessage, read_event, read_events
from shared.contract.control import DeploymentPlan
from shared.contract.predictions import Predictions
from shared.contract.topics import STATEFUL_SERVICES
from shared.errors import AccessDenied
from shared.kafka.clients import ACL_ERRORS, AUTH_ERRORS, consume_ready, make_consumer
from shared.kafka.settings import Settings
from shared.ml.artifacts import Model
from shared.ml.native import meanwhile

log = logging.getLogger("ridestream.runtime")

# Offsets settle whenever the producer has nothing outstanding. A service that answers most events
# (duration: every ride_progress) at a steady few thousand events/s never gets there — each batch's
# output is still lingering when the next one's is produced — so output unacknowledged this many
# commit intervals after it was produced is *asked* for: a flush of at most FLUSH_SLICE_S, once
# per interval, that settles everything if the broker answers within it (~1 ms on a local
# broker). A whole flush, waiting however long the broker takes, comes only after
# OVERDUE_WAIT_INTERVALS: three seconds after a replica started, its whole flushes waited 40–450 ms
# for a broker slow to acknowledge, and the stream stood still meanwhile (5,000 events/s, p99
# 25–320 ms); the echo, which never waits for acknowledgements, did not see it.
OVERDUE_INTERVALS = 5
OVERDUE_WAIT_INTERVALS = 100
FLUSH_SLICE_S = 0.002

# The lag gauge is computed at most this often (seconds): per batch it was a twentieth of the
# service's time at 5,000 events/s, where batches are a few events each.
LAG_EVERY_S = 0.5

# While a plan is in force, each replica reports what each variant answered this often (seconds).
REPORT_EVERY_S = 10.0

# A batch this large is produced while the next batch's trees run (below, the overlap would save
# under ~2 ms and cost the batch's events the next batch's time: 5k events/s p50 +2 ms measured).
HOLD_BACK_FROM = 1000


@dataclass
class BatchResult:
    consumed: int = 0
    predictions: int = 0
    dead_letters: int = 0


@dataclass
class ScoredBatch:
    """A batch scored and not yet produced: its output, and the offsets it covers."""

    received: float
    result: BatchResult
    predictions: Predictions = field(default_factory=Predictions)
    shadow: Predictions = field(default_factory=Predictions)  # a shadow candidate's, for its own topic
    dead_letters: list[tuple[Message, list[tuple[str, bytes]]]] = field(default_factory=list)
    state: list[Record] = field(default_factory=list)  # changelog records of the memory's changes
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


@contextmanager
def steady_gc(first_threshold: int = 50_000) -> Iterator[None]:
    """Keep Python's cyclic garbage collector off what start-up built, while a service runs.

    A batch makes ~100k short-lived objects; with the default thresholds the collector ran ~50
    times per 10k-event batch, and every few batches a full pass walked the models, pandas and
    every module (~100 ms each). Freezing what exists at start (it is never garbage) and
    collecting the youngest generation every 50k net allocations instead of 700 took ~30 % off
    the batch's time (measured per 10k tip events: mean 231 → 161 ms). Reference counting still
    frees everything non-cyclic at once; cycles are still collected, only less often."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(first_threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``): what loading and
    checking the models freed would otherwise stay in the process's resident memory for good."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class Runtime:
    """Runs one service process. ``stop()`` (or SIGTERM via the CLI) drains and returns."""

    def __init__(self, spec: ServiceSpec, settings: Settings, models: dict[str, Model],
                 group_id: str | None = None, input_topic: str | None = None,
                 output_topic: str | None = None, metrics: ServiceMetrics | None = None,
                 stop_event: threading.Event | None = None, sink: Sink | None = None,
                 bounds: dict[tuple[str, int], tuple[int, int]] | None = None,
                 progress: Callable[[int], None] | None = None,
                 observe: Callable[[list[Any]], None] | None = None, follow_plans: bool = False,
                 colour: str = "blue"):
        """``sink`` replaces the Kafka output (replay to a file or a backfill topic). ``bounds``
        — (topic, partition) → [start, end) offsets — makes a bounded run that reads exactly those
        ranges without joining a group or committing anything, and stops by itself. ``progress``
        hears how many messages each batch took; ``observe`` sees each batch's valid events.
        ``follow_plans`` makes the process read its service's deployment plan on ``rides.control``
        at start and follow it while running (:class:`consumers.control.PlanFollower`). ``colour``
        (blue/green) names a full set of replicas in a consumer group of its own: blue is the
        service's usual group; a green replica publishes only when a blue/green plan makes it live."""
        self.spec = spec
        self.settings = settings
        self.models = models
        self.colour = colour
        self.group_id = group_id or settings.group_id(spec.name, colour)
        self.input_topic = input_topic or settings.topics.events
        self.output_topic = output_topic or settings.topics.predictions(spec.name)
        self.shadow_topic = settings.topics.shadow(spec.name)
        self.dlq_topic = settings.topics.dlq
        self.metrics = metrics or ServiceMetrics(spec.name)
        self.drift = (DriftMonitor(spec.name, self.metrics.registry, settings.drift_window_s)
                      if settings.drift and bounds is None else None)
        self.memory = RideMemory(spec.memory_size)
        self.deployment = Deployment(models, colour=colour)
        self.follower = (PlanFollower(settings, spec.name, spec.model_names, models, colour=colour)
                         if follow_plans else None)
        # what this replica publishes: None = everything; else (mode, cut-over) of a blue/green plan
        self._gate: tuple[str, dict[int, int]] | None = None if colour == "blue" else ("none", {})
        self._applied_cut: dict[int, int] = {}
        self._report_at = 0.0
        self._variant_counts: dict[str, int] = {}
        self._stop = stop_event or threading.Event()
        self.sink = sink
        self.consumer: Consumer | None = None  # made by run()
        self.bounds = bounds
        self.progress = progress
        self.observe = observe
        self._pending: dict[tuple[str, int], int] = {}  # offsets processed and delivered, not yet committed
        self._committing: dict[tuple[str, int], int] = {}  # the latest asynchronous commit in flight
        self._last_commit = 0.0
        # batches produced but not yet known to be delivered: their next offsets, the first offsets
        # of the oldest of them (where a failed delivery rewinds to) and when it was produced
        self._unsettled: dict[tuple[str, int], int] = {}
        self._rewind: dict[tuple[str, int], int] = {}
        self._unsettled_since = 0.0
        self._asked_at = 0.0  # the last bounded flush of overdue output
        self._deferred: ScoredBatch | None = None  # scored, produced with the next batch's trees
        self._positions: dict[tuple[str, int], int] = {}  # next offset to read, for the lag gauge
        self._lag_at = 0.0
        self._lag_stale = False  # positions moved since the gauge was last computed
        # exactly-once (a live run only): the open transaction; made by run() with the sink's producer
        self.txn: Transactions | None = None
        self.state: StateStore | None = None  # the memory on its changelog (a live stateful service)
        self._abort_pending = False  # producing inside the transaction failed: abort it, then rewind
        self._fenced = False
        self.totals = BatchResult()
        self.health = Health(settings.stall_timeout_s)  # /healthz and /readyz (consumers.health)
        self._show_models()

    # --- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def accelerate_models(self) -> None:
        """Switch each model to compiled trees once they are built and verified (seconds, the
        first time a version is seen; then cached). Scoring goes on with scikit-learn meanwhile."""
        for name, model in self.models.items():
            started = time.monotonic()
            if model.accelerate(self.settings.compiled_dir, self.settings.predict_threads):
                log.info("%s %s: serving from compiled trees (ready in %.1fs)", name, model.version,
                         time.monotonic() - started)
        release_free_memory()

    def run(self) -> BatchResult:
        s = self.settings
        compiling = threading.Thread(target=self.accelerate_models, name="compile-models", daemon=True)
        if s.native_models:
            compiling.start()
        if self.follower is not None:  # the plan in force before the first batch
            self.follower.start(wait_s=s.connect_timeout_s + 60)
            self._take_plan()
        self.health.models_loaded = bool(self.models)
        # the client id names this replica to the group, so a rolling update can move it by name;
        # the client's statistics tell readiness whether a broker is up and the group joined
        stats = {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self.health.on_stats} if self.bounds is None else {}
        self.consumer = make_consumer(s, self.group_id, on_commit=self._on_commit,
                                      **{"client.id": f"{s.client_id}-{self.spec.name}@{REPLICA_ID}"}, **stats)
        eos = s.exactly_once and self.bounds is None
        tid = s.transactional_id(self.spec.name, self.group_id, REPLICA_ID) if eos else None
        if self.sink is None:
            self.sink = KafkaSink(s, self.output_topic, self.dlq_topic, transactional_id=tid)
        if self.bounds is None and self.spec.name in STATEFUL_SERVICES and colour_keeps_state(self.colour) \
                and isinstance(self.sink, KafkaSink):
            self._open_state()
        if eos and self.txn is None:
            self.txn = Transactions(self.sink.producer, tid, timeout_s=s.connect_timeout_s * 3,
                                    transaction_timeout_s=s.transaction_timeout_ms / 1000)
        remaining: dict[tuple[str, int], int] = {}
        if self.bounds is None:
            self.consumer.subscribe([self.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                    on_lost=self._on_lost)
        else:
            remaining = {tp: end for tp, (start, end) in self.bounds.items() if end > start}
            self.consumer.assign([TopicPartition(t, p, self.bounds[(t, p)][0]) for t, p in remaining])
        try:
            with steady_gc():
                while not self.stopping and (self.bounds is None or remaining):
                    self.health.beat()
                    if self.follower is not None:
                        self._take_plan()  # between two batches, with none in hand
                    msgs = self._next_batch()
                    if self.bounds is not None:
                        msgs = self._within_bounds(msgs, remaining)
                    if msgs:
                        self.process(msgs)
                    elif self.bounds is None:
                        self._quiet()
        finally:
            self._close()
            if compiling.is_alive():
                # a run shorter than the compilation (a small replay) waits for it: the process
                # must not exit while native code runs in that thread (it aborts the interpreter)
                log.info("waiting for the models' compilation to finish")
                compiling.join()
        return self.totals

    def _open_state(self) -> None:
        """Keep the memory on the service's changelog, if the topic exists (`topics create` makes it)."""
        topic = self.settings.topics.changelog(self.spec.name)
        try:
            exists = topic in self.consumer.list_topics(topic, timeout=self.settings.connect_timeout_s).topics
            exists = exists and not self.consumer.list_topics(topic, timeout=5).topics[topic].error
        except KafkaException:
            exists = False
        if not exists:
            log.warning("no topic %s: ride state is kept in memory only and does not move with its partition "
                        "(run `ridestream topics create`)", topic)
            return
        self.memory = RideMemory(self.spec.memory_size, ttl_s=self.settings.state_ttl_hours * 3600, track=True)
        self.state = StateStore(self.settings, self.memory, topic)

    def _next_batch(self) -> list[Message]:
        """:func:`shared.kafka.clients.consume_ready`: what has been fetched, at once; if nothing has, the
        held-back batch goes out and offsets settle before waiting for the next message."""
        return consume_ready(self.consumer, self.settings.batch_size, self.settings.batch_max_wait_ms / 1000,
                             when_idle=self._idle)

    def _idle(self) -> None:
        self._emit_deferred()  # nothing to overlap it with: its events must not wait
        self._settle_if_due()
        if self.drift is not None:  # off the latency path: counted while nothing is waiting
            self.drift.count_pending()

    def _quiet(self) -> None:
        """Nothing arrived for a whole wait: settle, show the lag as it now is, and report what the
        variants answered if a report is due."""
        self._settle_if_due()
        self._report()
        if self._lag_stale:
            self._update_lag()

    def _within_bounds(self, msgs: list[Message], remaining: dict[tuple[str, int], int]) -> list[Message]:
        """Drop what lies past each partition's end; a partition whose end is reached is done."""
        kept = []
        for msg in msgs:
            tp = (msg.topic(), msg.partition())
            end = remaining.get(tp)
            if msg.error() is None and end is not None and msg.offset() < end:
                kept.append(msg)
                if msg.offset() + 1 >= end:
                    del remaining[tp]
        return kept

    def _close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        try:
            if self.txn is not None and not self._fenced:
                self._emit_deferred()
                self._commit_transaction()
            elif self.txn is None:
                self._emit_deferred()
                if self.bounds is None:
                    self._settle(wait=True)  # before the sink closes: a failure there must not be committed
                    self._commit_pending(sync=True)
        finally:
            if self._fenced:  # nothing more may be produced or committed: the open transaction is never visible
                self.sink.producer.purge()
            elif self.sink is not None:
                self.sink.close()
            if self.drift is not None:
                self.drift.close()
            self.consumer.close()  # leaves the group (if it joined one): its partitions move at once

    # --- one batch ---------------------------------------------------------------------------
    def process(self, msgs: Sequence[Message]) -> BatchResult:
        """Validate and score a batch. A large one's output is produced while the next batch's
        trees run (:func:`shared.ml.native.meanwhile`), or as soon as no next batch is waiting
        (:meth:`_next_batch`), so a batch's Python work overlaps the next one's native work."""
        received = time.monotonic()
        batch = ScoredBatch(received, BatchResult(consumed=len(msgs)))
        valid = [msg for msg in msgs if msg.error() is None]
        if len(valid) < len(msgs):
            _log_consumer_errors(msgs, self.group_id, self.settings.sasl_username)
        if valid:  # a runtime reads one topic; within a partition, the batch is in offset order
            topic = valid[0].topic()
            last = {msg.partition(): msg.offset() for msg in valid}
            first = {msg.partition(): msg.offset() for msg in reversed(valid)}
            batch.first_offsets = {(topic, p): offset for p, offset in first.items()}
            batch.next_offsets = {(topic, p): offset + 1 for p, offset in last.items()}
        events = _read_all(valid)
        kept = valid
        if events is None:
            events, kept = self._read_each(valid, batch)

        by_type = by_event_type(events)
        for event_type, group in by_type.items():  # once per type, not per event
            self.metrics.events(event_type).inc(len(group))
        if self.observe:
            self.observe(events)
        scored_at = datetime.now(timezone.utc)
        previous, self._deferred = self._deferred, None
        # the previous batch's output goes out beside this one's longest tree walk (about half the
        # largest group's rows: a canary splits a group in two)
        largest = max((len(by_type.get(rule.event_type, ())) for rule in self.spec.rules), default=0)
        with meanwhile(partial(self._emit, previous), largest // 2) if previous else nullcontext():
            batch.predictions, batch.shadow = self.deployment.score(self.spec, self.memory, by_type, scored_at)
        if self.state is not None:
            batch.state = self.state.records(events, kept)
        if self._gate is not None:  # blue/green: scored (warm), published only where this colour answers
            self._mute(batch, events, kept)
        self.metrics.scoring.observe(time.monotonic() - received)
        batch.result.predictions = len(batch.predictions)
        if self.deployment.variants[0] is not None:
            self._count_variants(batch)
        if len(msgs) >= HOLD_BACK_FROM:
            self._deferred = batch
        else:
            self._emit(batch)
        self._positions.update(batch.next_offsets)
        self._lag_stale = True
        if received - self._lag_at >= LAG_EVERY_S:
            self._update_lag()
        self._settle_if_due()
        return batch.result

    def _read_each(self, msgs: Sequence[Message], batch: ScoredBatch) -> tuple[list[Any], list[Message]]:
        """The batch's valid events and their messages, one message at a time; the others become
        dead letters."""
        events, kept = [], []
        for msg in msgs:
            try:
                event = read_event(msg.value())
                key = msg.key()
                if key is None:
                    raise InvalidMessage("missing_key", "the message has no key (expected the ride_id)")
                if key != event.ride_id.encode():
                    raise InvalidMessage("key_mismatch", f"the key {key[:64]!r} is not the ride_id {event.ride_id!r}")
            except InvalidMessage as exc:
                batch.dead_letters.append((msg, self._dead_letter_headers(msg, exc)))
                self.metrics.dead_letters(exc.error_type).inc()
                batch.result.dead_letters += 1
                continue
            events.append(event)
            kept.append(msg)
        return events, kept

    def _emit(self, batch: ScoredBatch) -> None:
        """Produce a scored batch's dead letters and predictions; its offsets then wait for the
        broker's acknowledgements (:meth:`_settle`) — or, exactly-once, commit with them in the
        open transaction (:meth:`_commit_transaction`)."""
        if self.txn is not None:
            self._emit_in_transaction(batch)
        else:
            self._produce(batch)
            if not self._unsettled:
                self._unsettled_since = batch.received
            for tp, offset in batch.first_offsets.items():
                self._rewind.setdefault(tp, offset)
            self._unsettled.update(batch.next_offsets)
        result = batch.result
        self.metrics.predictions.inc(result.predictions)
        self.metrics.batches.observe(result.consumed)
        self.metrics.end_to_end.observe(time.monotonic() - batch.received)
        self.totals.consumed += result.consumed
        self.totals.predictions += result.predictions
        self.totals.dead_letters += result.dead_letters
        if self.progress:
            self.progress(result.consumed)

    def _produce(self, batch: ScoredBatch) -> None:
        if batch.state:
            self.sink.records(self.state.topic, batch.state)
        for msg, headers in batch.dead_letters:
            self.sink.dead_letter(msg, headers)
        self.sink.emit(batch.predictions)
        if batch.shadow:
            self.sink.emit(batch.shadow, self.shadow_topic)

    def _emit_in_transaction(self, batch: ScoredBatch) -> None:
        """Exactly-once: the batch's output in the open transaction (begun if none is), its input
        offsets to commit with it. After a failure nothing more is produced until the abort."""
        if self._abort_pending:
            return
        try:
            self.txn.begin()
            self._produce(batch)
        except KafkaException as exc:
            try:
                self.txn.failed(exc)
            except Fenced:
                self._fenced = True
                raise
            except TimedOut as timed_out:
                self._renew(timed_out)
                return
            except Exception as abortable:
                log.warning("producing in the transaction failed (%s); it will be aborted", abortable)
                self._abort_pending = True
                return
        self.txn.add(batch.next_offsets)

    def _commit_transaction(self) -> None:
        """Commit the open transaction with its input offsets — or abort it (a failure, or an
        abortable error on commit) and rewind every partition to its committed offset. A fenced
        producer raises :class:`Fenced`: the process stops."""
        try:
            if self._abort_pending:
                self.txn.abort()
                committed = False
            else:
                committed = self.txn.commit(self.consumer.consumer_group_metadata)
        except Fenced:
            self._fenced = True
            raise
        except TimedOut as timed_out:
            self._renew(timed_out)
            return
        self._last_commit = time.monotonic()
        if not committed:
            self._abort_pending = False
            self._rewind_to_committed()

    def _renew(self, timed_out: TimedOut) -> None:
        """The broker aborted a transaction that outlived its timeout (this process stalled): a new
        producer under the same id, and everything since the committed offsets read again."""
        log.warning("%s; starting a new producer and rewinding to the committed offsets", timed_out)
        self.txn.renew(self.sink.renew(purge=not isinstance(timed_out, Stuck)))
        self._abort_pending = False
        self._rewind_to_committed()

    def _rewind_to_committed(self, leaving: set[tuple[str, int]] = frozenset()) -> None:
        """After an abort: every partition (but ``leaving``) back to its committed offset, and the
        batch held back dropped — all of it is read and scored again, with the same ids."""
        self._deferred = None
        assigned = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in leaving]
        if not assigned:
            return
        while True:
            try:
                committed = self.consumer.committed(assigned, timeout=self.settings.connect_timeout_s)
                break
            except KafkaException as exc:  # the coordinator away: nothing can be scored meanwhile anyway
                log.warning("cannot read the committed offsets (%s); retrying", exc.args[0].str())
                time.sleep(1.0)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                log.warning("cannot rewind partition %d: %s", tp.partition, exc.args[0].str())
        log.info("rewound %s to the committed offsets", sorted(tp.partition for tp in committed))
        if self.state is not None:  # the memory went on with what is now aborted: back to the changelog's
            mine = {tp.partition for tp in committed}
            self.state.drop(mine)
            self.state.restore(mine)

    def _emit_deferred(self) -> None:
        """Produce the scored batch still held back, if any (then the caller settles)."""
        if self._deferred is not None:
            batch, self._deferred = self._deferred, None
            self._emit(batch)

    def _dead_letter_headers(self, msg: Message, exc: InvalidMessage) -> list[tuple[str, bytes]]:
        return [
            ("error.type", exc.error_type.encode()), ("error.message", exc.message.encode()),
            ("source.topic", msg.topic().encode()), ("source.partition", str(msg.partition()).encode()),
            ("source.offset", str(msg.offset()).encode()), ("service", self.spec.name.encode()),
        ]

    # --- the deployment plan -----------------------------------------------------------------
    def _take_plan(self) -> None:
        """Swap in the deployment the follower prepared for a new plan, if any: between two
        batches, so every batch is scored by one deployment and no event is lost or answered twice."""
        deployment = self.follower.take()
        if deployment is None:
            return
        self._report(force=True)  # what the old deployment answered
        self._report_at = time.monotonic()
        self._follow_colours(deployment.plan)
        self.deployment = deployment
        self.models = deployment.stable
        self._show_models()
        plan = deployment.plan
        log.info("%s: now serving %s", self.spec.name, deployment.describe())
        self.follower.writer.audit(self.spec.name, plan.plan_id, "swapped", deployment.describe())

    def _answers(self, msg: Message) -> bool:
        mode, cut = self._gate
        if mode == "from":
            return msg.offset() >= cut.get(msg.partition(), 0)
        if mode == "below":
            return msg.offset() < cut.get(msg.partition(), 0)
        return mode == "all"

    def _mute(self, batch: ScoredBatch, events: list[Any], kept: Sequence[Message]) -> None:
        """Drop the output of the messages this colour does not answer (the other colour does)."""
        muted = {e.event_id for e, m in zip(events, kept) if not self._answers(m)}
        batch.predictions = batch.predictions.without(muted)
        batch.shadow = batch.shadow.without(muted)
        batch.dead_letters = [(m, h) for m, h in batch.dead_letters if self._answers(m)]

    def _drain(self, only: set[tuple[str, int]] | None = None) -> None:
        """Produce the batch held back, wait for the broker to acknowledge everything, and commit
        (``only`` these partitions) synchronously: what was processed is then durable and committed."""
        if self._fenced:  # closing after a fence: nothing may be committed
            return
        self._emit_deferred()
        if self.txn is not None:  # the transaction holds every partition's offsets: it commits whole
            self._commit_transaction()
            return
        self._settle(wait=True)
        self._commit_pending(only, sync=True)

    def _follow_colours(self, plan: DeploymentPlan) -> None:
        """A blue/green plan's side of a swap. The live colour, asked to stop, publishes the rest
        of what it holds, waits for the broker, commits, and reports the committed offsets — how far
        it answered — as the cut-over; the colour named live from a cut-over goes back (or on) to
        it, so it answers every event from there: none twice, none missed."""
        mode, cut = plan.publishes(self.colour)
        ready = self.consumer is not None  # not before the first batch: nothing to report or seek yet
        if plan.switching and self.colour == (plan.live or "blue") and ready:
            self._drain()
            assigned = self.consumer.assignment()
            committed = self.consumer.committed(assigned, timeout=30) if assigned else []
            offsets = {str(tp.partition): max(tp.offset, 0) for tp in committed}
            self.follower.writer.audit(self.spec.name, plan.plan_id, "cutover", f"{self.colour} stopped",
                                       colour=self.colour, offsets=offsets)
        elif mode == "from" and cut != self._applied_cut and ready:
            self._drain()
            mine = [tp for tp in self.consumer.assignment() if tp.partition in cut]
            for tp in mine:
                key = (tp.topic, tp.partition)
                for offsets in (self._pending, self._committing, self._unsettled, self._rewind):
                    offsets.pop(key, None)
                try:
                    self.consumer.seek(TopicPartition(tp.topic, tp.partition, cut[tp.partition]))
                except KafkaException as exc:
                    log.warning("cannot seek partition %d to the cut-over: %s", tp.partition, exc.args[0].str())
            if mine:
                self.consumer.commit(offsets=[TopicPartition(tp.topic, tp.partition, cut[tp.partition]) for tp in mine],
                                     asynchronous=False)
            log.info("%s is live from %s", self.colour, cut)
        if mode == "from":
            self._applied_cut = cut
        self._gate = None if mode == "all" else (mode, cut)

    def _show_models(self) -> None:
        self.metrics.model_info.clear()
        for variant, models in self.deployment.models().items():
            if self.drift is not None:
                self.drift.watch(models.values())
            for name, model in models.items():
                self.metrics.model_info.labels(self.spec.name, name, model.version).set(1)

    def _count_variants(self, batch: ScoredBatch) -> None:
        counts = self._variant_counts
        for part in (*batch.predictions.parts, *batch.shadow.parts):
            counts[part.variant] = counts.get(part.variant, 0) + len(part)
        self._report()

    def _report(self, force: bool = False) -> None:
        """Every ``REPORT_EVERY_S`` while a plan is in force: how many predictions each variant made
        here, on the audit topic (``deploy status`` shows the shares the replicas really served)."""
        at = time.monotonic()
        if not self._variant_counts or self.follower is None or (not force and at - self._report_at < REPORT_EVERY_S):
            return
        plan = self.deployment.plan
        extra = {"shadow": self.deployment.take_pairing()} if plan is not None and plan.shadows else {}
        self.follower.writer.audit(self.spec.name, plan.plan_id if plan else 0, "report", "",
                                   predictions=self._variant_counts, seconds=round(at - self._report_at, 3), **extra)
        self._variant_counts, self._report_at = {}, at

    # --- offsets and rebalancing -------------------------------------------------------------
    def _settle_if_due(self) -> None:
        """After each batch and when idle: settle what is acknowledged, without waiting unless the
        oldest unsettled batch is overdue; commit that every ``commit_interval_ms``."""
        interval = self.settings.commit_interval_ms / 1000
        if self.txn is not None:
            if self._abort_pending or (self.txn.open and time.monotonic() - self.txn.since >= interval):
                self._commit_transaction()
            return
        now = time.monotonic()
        unsettled_for = now - self._unsettled_since
        wait = self.bounds is not None or unsettled_for >= interval * OVERDUE_WAIT_INTERVALS
        within = 0.0
        if not wait and unsettled_for >= interval * OVERDUE_INTERVALS and now - self._asked_at >= interval:
            within, self._asked_at = FLUSH_SLICE_S, now
        self._settle(wait=wait, within_s=within)
        if self.bounds is None and time.monotonic() - self._last_commit >= interval:
            self._commit_pending(sync=interval == 0)

    def _settle(self, wait: bool, within_s: float = 0.0) -> None:
        """Move the batches whose every prediction and dead letter the broker acknowledged to the
        offsets to commit (:meth:`_commit_pending`); ``within_s``: a flush of at most that long
        first (output overdue, see ``OVERDUE_INTERVALS``).

        Neither the next batch nor this check waits for acknowledgements (that wait was a third of
        a batch's time at a few thousand events/s, and a flush now and then the latency's tail):
        produced batches settle once the producer has nothing outstanding — or, with ``wait``
        (long overdue, a rebalance, shutdown), after a whole flush. At-least-once holds: nothing is committed
        before everything produced before it is durable, and a failed delivery rewinds every
        partition to the oldest unsettled batch, which is scored again with the same ids; the batch
        held back for producing was read after it, so it is dropped and read again too. A bounded
        run (replay) commits nothing."""
        if not self._unsettled:
            return
        failed = self.sink.flush() if wait else self.sink.settled(within_s)
        if failed is None:
            return
        if failed:
            log.warning("%d deliveries failed; reprocessing from the oldest unacknowledged batch", failed)
            if self._deferred is not None:  # consumed after the rewind's batches: read again too
                for tp, offset in self._deferred.first_offsets.items():
                    self._rewind.setdefault(tp, offset)
                self._deferred = None
            for (topic, partition), offset in self._rewind.items():
                try:
                    self.consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException:  # revoked meanwhile: its new owner starts from the commit
                    pass
        elif self.bounds is None:
            self._pending.update(self._unsettled)
        self._unsettled.clear()
        self._rewind.clear()

    def _commit_pending(self, only: set[tuple[str, int]] | None = None, sync: bool = False) -> None:
        """Commit the settled offsets (of ``only`` these partitions). Asynchronously — the stream
        does not wait for the coordinator; a failure comes back through :meth:`_on_commit` and is
        retried — except on a rebalance and at shutdown, which also repeat the commits still in
        flight, synchronously."""
        def chosen(offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
            return {tp: o for tp, o in offsets.items() if only is None or tp in only}

        pending = {**chosen(self._committing), **chosen(self._pending)} if sync else chosen(self._pending)
        self._last_commit = time.monotonic()
        if not pending:
            return
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in pending.items()],
                                 asynchronous=not sync)
        except KafkaException as exc:  # broker away or group rebalancing: retried on the next batch
            log.warning("commit failed (%s); will retry", exc.args[0].str())
            return
        for tp, offset in pending.items():
            if self._pending.get(tp) == offset:
                del self._pending[tp]
            if sync:
                if self._committing.get(tp, offset) <= offset:
                    self._committing.pop(tp, None)
            else:
                self._committing[tp] = offset

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """An asynchronous commit's outcome (served by the consumer's poll, on this thread): a
        partition whose latest commit failed has its offset committed again with the next."""
        for p in partitions:
            tp = (p.topic, p.partition)
            if self._committing.get(tp) != p.offset:
                continue  # a later commit of this partition is in flight, or it was revoked
            del self._committing[tp]
            if err is not None or p.error is not None:
                self._pending.setdefault(tp, p.offset)  # a newer settled offset would cover it
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("commit failed (%s); will retry", err.str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [p.partition for p in partitions])
        if self.state is not None:  # before any of their events is scored
            self.state.restore(p.partition for p in partitions if p.topic == self.input_topic)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # batches are scored whole before the next poll; produce the last, wait for their
        # deliveries, then commit what was processed on the partitions that are leaving
        self._drain({(p.topic, p.partition) for p in partitions})
        for p in partitions:
            for offsets in (self._pending, self._committing, self._positions):
                offsets.pop((p.topic, p.partition), None)
        if self.state is not None:
            self.state.drop({p.partition for p in partitions})
        self.metrics.forget_lag(p.partition for p in partitions if p.topic == self.input_topic)
        log.info("revoked %s", [p.partition for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.forget_lag(p.partition for p in partitions if p.topic == self.input_topic)
        if self._fenced:
            return
        if self.txn is not None:
            # another member owns them now: what this transaction holds for them must not become
            # visible, so it all aborts and the partitions still ours are read again from their commit
            lost = {(p.topic, p.partition) for p in partitions}
            self.txn.forget(lost)
            try:
                self.txn.abort()
            except Fenced:
                self._fenced = True
                raise
            self._abort_pending = False
            if self.state is not None:
                self.state.drop({p.partition for p in partitions})
            self._rewind_to_committed(leaving=lost)
            for p in partitions:
                self._positions.pop((p.topic, p.partition), None)
            log.info("lost %s", [p.partition for p in partitions])
            return
        self._emit_deferred()  # its other partitions are still ours (repeats are allowed, gaps not)
        if self.state is not None:
            self.state.drop({p.partition for p in partitions})
        for p in partitions:  # another member owns them now: its commits win
            for offsets in (self._pending, self._committing, self._unsettled, self._rewind, self._positions):
                offsets.pop((p.topic, p.partition), None)

    def _update_lag(self) -> None:
        self._lag_at, self._lag_stale = time.monotonic(), False
        for (topic, partition), offset in self._positions.items():
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.lag_of(partition).set(max(high - offset, 0))


def colour_keeps_state(colour: str) -> bool:
    """Only the service's usual (blue) group writes its changelog: a green replica scores with
    other model versions, so its state would contradict blue's; it keeps its memory in process."""
    return colour == "blue"


def _read_all(msgs: Sequence[Message]) -> list[Any] | None:
    """Every message's event in one pass, if all are valid and keyed by their ride_id (a live
    batch, nearly always); None if any is not — :meth:`Runtime._read_each` then sorts them out."""
    events = read_events([msg.value() for msg in msgs])
    if events is None or [msg.key() for msg in msgs] != [event.ride_id.encode() for event in events]:
        return None
    return events


def _log_consumer_errors(msgs: Sequence[Message], group: str, user: str | None) -> None:
    """Log what the consumer reported; a refused login or a missing ACL stops the service with
    one line (waiting would not change it)."""
    for msg in msgs:
        err = msg.error()
        if err is not None and err.code() in ACL_ERRORS | AUTH_ERRORS:
            what = f"read topic {msg.topic()}" if msg.topic() else f"join group {group}"
            raise AccessDenied(f"{f'user {user!r}' if user else 'this client'} may not {what} ({err.name()}): "
                               "run the service with its own principal, or grant it (`ridestream acl apply`)")
        if err is not None and err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", err.str())
