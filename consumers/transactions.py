"""Exactly-once processing: one Kafka transaction per commit interval (KIP-447).

A service process in ``exactly_once`` mode has one transactional producer. A transaction is begun
before a batch's output is produced; the predictions, dead letters and state changes of every
batch produced since then, and their input offsets (sent with the consumer's group metadata, so
the broker fences a member that lost its partitions), commit together every
``commit_interval_ms``, on a rebalance and at shutdown. Never one transaction per message.

What an error means (librdkafka's classification):

* retriable (a timeout, the coordinator moving): the same call again;
* abortable (a failed delivery, a rebalance fenced the offsets): abort — none of the
  transaction's output becomes visible — and the runtime rewinds to the committed offsets;
* fatal, in a transaction open longer than ``transaction.timeout.ms``: the broker aborted it
  and bumped the producer's epoch (a process stalled that long — a starved machine): :class:`TimedOut`,
  and the runtime makes a new producer under the same id and rewinds, as Kafka Streams does;
* a call that never returns (librdkafka's coordinator requests can outlive their timeout after the
  coordinator went away: confluentinc/librdkafka#5456, #5511): :class:`Stuck` after its timeout and
  a margin; the stuck producer is abandoned, never destroyed, and the runtime renews it as above;
* fatal otherwise (another process with the same transactional id fenced this one): :class:`Fenced`,
  and the process stops without committing anything more.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from shared.errors import RidestreamError

log = logging.getLogger("ridestream.transactions")

T = TypeVar("T")


class Fenced(RidestreamError):
    """The producer can no longer transact (fenced by a newer instance, or another fatal error)."""


class TimedOut(Exception):
    """The broker aborted the transaction when it outlived ``transaction.timeout.ms``; the producer
    is unusable, but no other process owns its id: a new one may take over."""


class Stuck(TimedOut):
    """A transaction call did not return long after its timeout: the producer is abandoned."""


STUCK_MARGIN_S = 10.0  # beyond a call's own timeout before it is deemed stuck


class _Caller:
    """Runs calls on a daemon thread of its own, so a caller can stop waiting for one that never
    returns — and the process can still exit (a pool's worker would be joined at exit, forever)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="txn-call", daemon=True).start()

    def _serve(self) -> None:
        while True:
            call, outcome, done = self._calls.get()
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # handed to the caller
                outcome.append((False, exc))
            done.set()

    def call(self, call: Callable[[], T], timeout: float) -> T:
        """``call()``'s result or exception; :class:`TimeoutError` if it has not returned in time."""
        outcome: list[tuple[bool, Any]] = []
        done = threading.Event()
        self._calls.put((call, outcome, done))
        if not done.wait(timeout):
            raise TimeoutError
        ok, value = outcome[0]
        if ok:
            return value
        raise value


class TransactionalProducer(Protocol):
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: Any,
                                    timeout: float = ...) -> None: ...
    def commit_transaction(self, timeout: float = ...) -> None: ...
    def abort_transaction(self, timeout: float = ...) -> None: ...


class Transactions:
    """The open transaction of one process: whether it is open, since when, and the input offsets
    (topic, partition) → next offset of the batches produced in it."""

    def __init__(self, producer: TransactionalProducer, transactional_id: str, timeout_s: float = 30.0,
                 retries: int = 20, transaction_timeout_s: float = 10.0):
        self.producer = producer
        self.transaction_timeout_s = transaction_timeout_s
        self.transactional_id = transactional_id
        self.timeout_s = timeout_s
        self.retries = retries  # a retriable error this many times in a row is treated as abortable
        self.open = False
        self.since = 0.0
        self.offsets: dict[tuple[str, int], int] = {}
        self.committed = 0  # transactions committed
        self.aborted = 0  # transactions aborted
        self._caller = _Caller()
        self.abandoned: list[Any] = []  # stuck producers: referenced forever, since destroying one would block

    def begin(self) -> None:
        """Open a transaction unless one is open (before anything of a batch is produced)."""
        if not self.open:
            self._call(self.producer.begin_transaction)
            self.open, self.since = True, time.monotonic()

    def add(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """The input offsets a batch produced in this transaction moves each partition to."""
        self.offsets.update(next_offsets)

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions lost to another member: their offsets are not ours to commit."""
        for tp in partitions:
            self.offsets.pop(tp, None)

    def renew(self, producer: TransactionalProducer) -> None:
        """A new producer under the same id (after :class:`TimedOut`), with no transaction open."""
        self.producer, self.open, self.offsets = producer, False, {}

    def _bounded(self, call: Callable[[], T]) -> T:
        """``call()`` on a helper thread, waited for at most its timeout and a margin."""
        try:
            return self._caller.call(call, self.timeout_s + STUCK_MARGIN_S)
        except TimeoutError:
            self.abandoned.append(self.producer)
            self._caller = _Caller()  # the old thread stays blocked in the call
            self.open, self.offsets = False, {}
            raise Stuck(f"a transaction call of {self.transactional_id!r} did not return within "
                        f"{self.timeout_s + STUCK_MARGIN_S:.0f}s") from None

    def commit(self, group_metadata: Callable[[], Any]) -> bool:
        """Commit the open transaction with its input offsets. True: committed (or none was open);
        False: aborted — nothing of it is visible, and the caller rewinds to the committed offsets.
        Raises :class:`Fenced` when the producer cannot go on."""
        if not self.open:
            return True
        try:
            if self.offsets:
                positions = [TopicPartition(t, p, o) for (t, p), o in sorted(self.offsets.items())]
                self._call(lambda: self.producer.send_offsets_to_transaction(positions, group_metadata(),
                                                                             self.timeout_s))
            self._call(lambda: self.producer.commit_transaction(self.timeout_s))
        except _Abortable as exc:
            log.warning("transaction aborted (%s); rewinding to the committed offsets", exc)
            self.abort()
            return False
        self.open, self.offsets = False, {}
        self.committed += 1
        return True

    def abort(self) -> None:
        """Abort the open transaction (if any): its output is never visible to read_committed readers."""
        if self.open:
            try:
                self._call(lambda: self.producer.abort_transaction(self.timeout_s))
            except _Abortable as exc:  # abort itself cannot be abortable: the producer is unusable
                raise Fenced(f"cannot abort the transaction of {self.transactional_id!r}: {exc}") from None
            self.aborted += 1
        self.open, self.offsets = False, {}

    def failed(self, exc: KafkaException) -> None:
        """An error from producing inside the transaction: raise what it means (:class:`Fenced`
        or an abortable error for :meth:`commit` to handle)."""
        raise self._classify(exc.args[0])

    def _call(self, call: Callable[[], T]) -> T:
        for attempt in range(self.retries):
            try:
                return self._bounded(call)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                    log.warning("transaction call failed (%s); retrying", error.str())
                    time.sleep(min(0.1 * 2 ** attempt, 2.0))
                    continue
                raise self._classify(error) from None
        raise _Abortable(f"still failing after {self.retries} retries")

    def _classify(self, error: KafkaError) -> Exception:
        if error.fatal():
            if self.open and time.monotonic() - self.since >= self.transaction_timeout_s:
                self.open, self.offsets = False, {}
                return TimedOut(f"the broker aborted a transaction open for {time.monotonic() - self.since:.1f}s, "
                                f"longer than transaction.timeout.ms ({error.str()})")
            if error.code() in FENCED_CODES:
                return Fenced(f"fenced: another process took over transactional id {self.transactional_id!r} "
                              f"({error.str()}); this one stops, its open transaction is never visible")
            return Fenced(f"the transactional producer {self.transactional_id!r} failed fatally "
                          f"({error.str()}); this process stops, its open transaction is never visible")
        return _Abortable(error.str())


class _Abortable(Exception):
    """An error after which the transaction must be aborted (or one retried too often)."""


FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
