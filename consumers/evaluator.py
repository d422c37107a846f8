"""Online evaluation: every prediction joined to its ride's actuals, windowed MAE per service,
model version, variant and stage, on ``rides.model_quality`` and on ``/metrics``.

The truth arrives with ``ride_completed`` on ``rides.events``; the predictions arrive on
``rides.predictions.SERVICE`` and ``rides.predictions.SERVICE.shadow``, in either order relative
to it. :class:`JoinState` is the join and the aggregates, without Kafka; :class:`OnlineEvaluator`
feeds it from the topics and publishes.

**The join.** Per ride the state holds the predictions waiting for their truth (until the ride
completes) and then the ride's actuals (for ``linger_s``, default 15 min, so predictions that
arrive after the completion still join). A ride that never completes is forgotten ``ttl_s``
(default 3 h) after it was first seen, and at most ``max_rides`` (default 200,000) are held:
beyond that completed rides go first (oldest completion first: they only wait for late
predictions), then the open rides seen first. Those clocks are wall time at arrival: during a
replay (below) nothing expires under the evaluator's feet. A prediction seen twice (the same
``prediction_id`` and variant: an at-least-once redelivery) is counted once.

**The stage** of a prediction: tip and cost ``request``; duration: the backend's estimate
(``initial: true``) ``initial``, the service's answer to the request (no ``remaining_min``)
``request``; with ``remaining_min``, elapsed = value − remaining_min: 0 → ``start``, else the
fraction elapsed / actual duration → ``p25``, ``p50`` or ``p75``, the nearest quarter when within
±0.125 (outside 0.125–0.875: not counted). The error is |value − actual| (duration:
``duration_min``; tip: ``tip_amount``; cost: ``total_amount − tip_amount``).

**The aggregates** are n, Σ|e| and Σ|e|² per (service, model version, variant, stage) in
``bucket_s`` buckets of the completion's message time (1 s: a canary step is judged on the rides
completed since it began, to the second), kept ``retain_s`` (1 h): any span
within that can be asked (:meth:`OnlineEvaluator.stats`), and every ``publish_every_s`` the last
``window_s`` (10 min) is published. A bucket counts in a span when it starts inside it. The live
backend stamps each event with the time it sends it; a completion whose message time is already
older than ``retain_s`` (a TLC file replayed at the trips' own times) is joined but counted in no
bucket (``counts.too_old``).

**A restart loses nothing.** The evaluator commits no offsets. It assigns itself every partition
of its input topics (its group id, ``NAMESPACEridestream-evaluator``, is never joined: a join
needs both sides of a ride in one process, and a group would split them between members) and starts each at the first offset whose time is at
or after now − ``horizon_s`` (default ``ttl_s + retain_s``: the predictions of any ride that
completed within the retained buckets). Aggregates are keyed by the completion's message time,
not by when it was read, so the replay rebuilds the same buckets. While it catches up, partitions
that run more than ``align_s`` ahead of the slowest are paused, so the replay meets the rides in
about the order they happened and the join's bounds hold; nothing is published and ``on_tick``
is not called until every partition has reached the end it had at start (:attr:`ready`).
Shadow topics that appear later are found within ``discover_every_s`` and read from the start of
the horizon. Run one evaluator per namespace (more are harmless — each computes the same
figures — but redundant).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice

import orjson
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from consumers.analysis import Stats
from shared.contract.codec import InvalidMessage, encode, read_event
from shared.contract.control import ModelQuality, quality_key
from shared.contract.events import VARIANTS
from shared.contract.topics import SERVICES, TopicSpec, create_topics
from shared.kafka.clients import consume_ready, make_admin, make_consumer, make_producer, produce
from shared.kafka.settings import Settings

log = logging.getLogger("ridestream.evaluator")

STAGES: tuple[str, ...] = ("initial", "request", "start", "p25", "p50", "p75")
INITIAL, REQUEST = -2.0, -1.0  # the stage code of a prediction without elapsed time
START_EPS_MIN = 0.01  # elapsed below this is the start (value and remaining_min are rounded to 3 places)
_HASH_MASK = (1 << 52) - 1  # a prediction id's hash, exact as a double
_HEAD = 6  # a ride's record: seen, done_at (-1 = open), completed_ts, duration, tip, cost; then its predictions
_SERVICE_NUMBER = {s: i for i, s in enumerate(SERVICES)}


def stage_of(code: float, duration_min: float) -> str | None:
    """The stage of a prediction with stage code ``code`` (INITIAL, REQUEST or the elapsed
    minutes) on a ride that lasted ``duration_min``; None when it falls between stages."""
    if code < 0:
        return "initial" if code == INITIAL else "request"
    if code < START_EPS_MIN:
        return "start"
    if duration_min <= 0:
        return None
    fraction = code / duration_min
    quarter = min(max(round(fraction * 4), 1), 3)
    if abs(fraction - quarter / 4) > 0.125:
        return None
    return ("p25", "p50", "p75")[quarter - 1]


def read_prediction(value: bytes | None, shadow: bool = False) -> tuple[str, str, str, str, float, float, str] | None:
    """A prediction's value as (ride_id, service, model_version, variant, stage code, value,
    prediction_id), or None when it is not one. orjson and a few checks rather than the pydantic
    model: this is the evaluator's hot path. ``shadow``: from a shadow topic, where a prediction
    without a variant is the shadow's."""
    try:
        p = orjson.loads(value)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError):
        return None
    if type(p) is not dict:
        return None
    ride_id, service, version, v, pid = (p.get("ride_id"), p.get("service"), p.get("model_version"),
                                         p.get("value"), p.get("prediction_id"))
    if (type(ride_id) is not str or not ride_id or service not in _SERVICE_NUMBER or type(version) is not str
            or not version or type(pid) is not str or type(v) not in (float, int) or not math.isfinite(v)):
        return None
    variant = p.get("variant")
    if variant is None:
        variant = "shadow" if shadow else "none"
    elif variant not in VARIANTS:
        return None
    code = REQUEST
    if service == "duration":
        if p.get("initial") is True:
            code = INITIAL
        else:
            remaining = p.get("remaining_min")
            if remaining is not None:
                if type(remaining) not in (float, int) or not math.isfinite(remaining):
                    return None
                code = max(v - remaining, 0.0)
    return ride_id, service, version, variant, code, float(v), pid


Key = tuple[str, str, str, str]  # service, model version, variant, stage


@dataclass
class JoinCounts:
    predictions: int = 0  # predictions taken in (duplicates not included)
    duplicates: int = 0
    completions: int = 0  # ride_completed events taken in (a repeated one not included)
    joined: int = 0  # predictions joined to their ride's actuals (whether counted in a stage or not)
    unstaged: int = 0  # joined, but between stages (duration progress outside 0.125–0.875)
    too_old: int = 0  # joined to a completion older than the retained buckets
    expired_rides: int = 0  # forgotten after ttl_s without completing
    evicted_rides: int = 0  # dropped at the max_rides cap
    dropped_predictions: int = 0  # predictions of expired or evicted rides, never joined


class JoinState:
    """The join of predictions to actuals and the bucketed aggregates, without Kafka.

    Not thread-safe; :class:`OnlineEvaluator` guards it. Times are unix seconds: ``now`` is wall
    time at arrival (for expiry), ``completed_ts`` the completion's message time (for buckets)."""

    def __init__(self, ttl_s: float = 3 * 3600, linger_s: float = 900, max_rides: int = 200_000,
                 bucket_s: float = 1, retain_s: float = 3600):
        if min(ttl_s, linger_s, bucket_s, retain_s) <= 0 or max_rides < 1:
            raise ValueError("ttl_s, linger_s, bucket_s and retain_s must be positive, max_rides at least 1")
        self.ttl_s, self.linger_s, self.max_rides = ttl_s, linger_s, max_rides
        self.bucket_s, self.retain_s = bucket_s, retain_s
        self.counts = JoinCounts()
        # ride → record; dicts keep insertion order, so each is oldest first: open rides by first
        # sight, completed ones by completion (a completing ride moves from one to the other)
        self._open: dict[str, array] = {}
        self._done: dict[str, array] = {}
        self._series: list[tuple[str, str, str]] = []  # series number → (service, model version, variant)
        self._series_number: dict[tuple[str, str, str], int] = {}
        self._buckets: dict[int, dict[tuple[int, str], list[float]]] = {}  # bucket → (series, stage) → [n, Σ|e|, Σ|e|²]
        self._oldest_bucket = -(1 << 62)

    # --- taking things in ------------------------------------------------------------------------
    @property
    def rides_held(self) -> int:
        return len(self._open) + len(self._done)

    def holds(self, ride_id: str) -> bool:
        return ride_id in self._open or ride_id in self._done

    def add_prediction(self, ride_id: str, service: str, model_version: str, variant: str, code: float,
                       value: float, prediction_id: str, now: float) -> None:
        sk = (service, model_version, variant)
        sn = self._series_number.get(sk)
        if sn is None:
            sn = self._series_number[sk] = len(self._series)
            self._series.append(sk)
        h = float(hash((prediction_id, variant)) & _HASH_MASK)  # a shadow may share ids with its twin
        rec = self._done.get(ride_id)
        if rec is not None:  # the truth is here: join now
            if h in rec[_HEAD:]:
                self.counts.duplicates += 1
                return
            rec.append(h)
            self._join(sn, code, value, rec)
        else:  # wait for the truth
            rec = self._open.get(ride_id)
            if rec is None:
                rec = self._new_ride(ride_id, now)
            elif h in rec[_HEAD + 3::4]:
                self.counts.duplicates += 1
                return
            rec.extend((sn, code, value, h))
        self.counts.predictions += 1

    def add_completion(self, ride_id: str, duration_min: float, tip: float, cost: float,
                       completed_ts: float, now: float) -> None:
        if ride_id in self._done:
            return  # a repeated completion: already joined
        rec = self._open.pop(ride_id, None)
        if rec is None:
            rec = array("d", (now, -1.0, 0.0, 0.0, 0.0, 0.0))
        self.counts.completions += 1
        rec[1], rec[2], rec[3], rec[4], rec[5] = now, completed_ts, duration_min, tip, cost
        waiting = rec[_HEAD:]
        del rec[_HEAD:]
        for i in range(0, len(waiting), 4):
            self._join(int(waiting[i]), waiting[i + 1], waiting[i + 2], rec)
        rec.extend(waiting[3::4])  # keep only the ids, to spot late duplicates
        self._done[ride_id] = rec
        self._enforce_cap()

    def _new_ride(self, ride_id: str, now: float) -> array:
        rec = self._open[ride_id] = array("d", (now, -1.0, 0.0, 0.0, 0.0, 0.0))
        self._enforce_cap()
        return rec

    def _join(self, sn: int, code: float, value: float, rec: array) -> None:
        self.counts.joined += 1
        service = self._series[sn][0]
        duration = rec[3]
        stage = stage_of(code, duration) if service == "duration" else "request"
        if stage is None:
            self.counts.unstaged += 1
            return
        actual = duration if service == "duration" else rec[4] if service == "tip" else rec[5]
        bucket = int(rec[2] // self.bucket_s)
        if bucket < self._oldest_bucket:
            self.counts.too_old += 1
            return
        cells = self._buckets.get(bucket)
        if cells is None:
            cells = self._buckets[bucket] = {}
        cell = cells.get((sn, stage))
        e = abs(value - actual)
        if cell is None:
            cells[(sn, stage)] = [1, e, e * e]
        else:
            cell[0] += 1
            cell[1] += e
            cell[2] += e * e

    # --- forgetting ------------------------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Forget completed rides ``linger_s`` after their completion, open rides ``ttl_s`` after
        they were first seen, and buckets older than ``retain_s``."""
        for ride_id in _front(self._done, lambda rec: rec[1] < now - self.linger_s):
            del self._done[ride_id]
        expired = _front(self._open, lambda rec: rec[0] < now - self.ttl_s)
        self._drop_open(expired)
        self.counts.expired_rides += len(expired)
        self._oldest_bucket = int((now - self.retain_s) // self.bucket_s)
        for bucket in [b for b in self._buckets if b < self._oldest_bucket]:
            del self._buckets[bucket]

    def _enforce_cap(self) -> None:
        """Beyond ``max_rides``, drop completed rides first (the oldest completion first: they
        only wait for late predictions), then the open rides seen first; 1 % below the cap at
        once, so that dropping from the front of a dict stays cheap."""
        excess = len(self._open) + len(self._done) - self.max_rides
        if excess <= 0:
            return
        excess += self.max_rides // 100
        done = list(islice(self._done, excess))
        for ride_id in done:
            del self._done[ride_id]
        evicted = list(islice(self._open, excess - len(done)))
        self._drop_open(evicted)
        self.counts.evicted_rides += len(done) + len(evicted)

    def _drop_open(self, rides: list[str]) -> None:
        for ride_id in rides:
            self.counts.dropped_predictions += (len(self._open.pop(ride_id)) - _HEAD) // 4

    # --- reading ---------------------------------------------------------------------------------
    def sums(self, since: float | None = None, until: float | None = None) -> dict[Key, list[float]]:
        """[n, Σ|e|, Σ|e|²] per key over the buckets that start in [since, until)."""
        first = -(1 << 62) if since is None else math.ceil(since / self.bucket_s)
        last = (1 << 62) if until is None else math.ceil(until / self.bucket_s)
        out: dict[tuple[int, str], list[float]] = {}
        for bucket, cells in self._buckets.items():
            if first <= bucket < last:
                for k, (n, s1, s2) in cells.items():
                    acc = out.get(k)
                    if acc is None:
                        out[k] = [n, s1, s2]
                    else:
                        acc[0] += n
                        acc[1] += s1
                        acc[2] += s2
        return {(*self._series[sn], stage): acc for (sn, stage), acc in out.items()}

    def stats(self, service: str, model_version: str | None = None, variant: str | None = None,
              stage: str = "request", since: float | None = None, until: float | None = None) -> Stats:
        """The absolute errors of one service's predictions at ``stage`` whose rides completed in
        [since, until) (to the bucket), of one model version and variant (None: all of them)."""
        n = s1 = s2 = 0.0
        for (svc, version, var, stg), (a, b, c) in self.sums(since, until).items():
            if svc == service and stg == stage and model_version in (None, version) and variant in (None, var):
                n, s1, s2 = n + a, s1 + b, s2 + c
        return Stats.from_sums(n, s1, s2)

    def keys(self) -> list[Key]:
        """Every key with a sample in the retained buckets."""
        return sorted({(*self._series[sn], stage) for cells in self._buckets.values() for sn, stage in cells})


def _front(rides: dict[str, array], due: Callable[[array], bool]) -> list[str]:
    """The rides at the front of ``rides`` (oldest first) for which ``due`` holds."""
    out = []
    for ride_id, rec in rides.items():
        if not due(rec):
            break
        out.append(ride_id)
    return out


def ahead_of_slowest(last_ts: dict[tuple[str, int], float], align_s: float) -> set[tuple[str, int]]:
    """The partitions whose last message read is more than ``align_s`` later than the slowest
    one's: paused during the start-up replay, so every input moves through time together (the
    slowest is never among them, so the replay always moves on)."""
    if not last_ts:
        return set()
    slowest = min(last_ts.values())
    return {tp for tp, ts in last_ts.items() if ts > slowest + align_s}


class EvaluatorMetrics:
    """Prometheus metrics of the evaluator, in their own registry (like ServiceMetrics)."""

    LABELS = ["service", "model_version", "variant", "stage"]

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.mae = Gauge("ridestream_online_mae", "Online MAE over the window, by service, model version, "
                         "variant and stage", self.LABELS, registry=r)
        self.sd = Gauge("ridestream_online_error_sd", "Standard deviation of the absolute errors over the window",
                        self.LABELS, registry=r)
        self.samples = Gauge("ridestream_online_samples", "Predictions judged over the window", self.LABELS, registry=r)
        self.window = Gauge("ridestream_online_window_seconds", "The window of the online figures", registry=r)
        self.joined = Counter("ridestream_evaluator_joined", "Predictions joined to their ride's actuals", registry=r)
        self.completed = Counter("ridestream_evaluator_rides_completed", "Ride completions taken in", registry=r)
        self.expired = Counter("ridestream_evaluator_rides_expired", "Rides forgotten without their actuals: "
                               "ttl (never completed) or cap (max rides held)", ["reason"], registry=r)
        self.dropped = Counter("ridestream_evaluator_predictions_dropped", "Predictions of expired rides, never judged",
                               registry=r)
        self.malformed = Counter("ridestream_evaluator_malformed", "Messages skipped as unreadable", ["topic"], registry=r)
        self.held = Gauge("ridestream_evaluator_rides_held", "Rides held in the join state", registry=r)
        self.ready = Gauge("ridestream_evaluator_ready", "1 once the start-up replay has caught up", registry=r)
        self._shown: set[Key] = set()
        self._counted = JoinCounts()

    def update(self, figures: dict[Key, Stats], counts: JoinCounts, held: int, window_s: float, ready: bool) -> None:
        for key, s in figures.items():
            self.mae.labels(*key).set(s.mae)
            self.sd.labels(*key).set(s.sd)
            self.samples.labels(*key).set(s.n)
        for key in self._shown - set(figures):
            for gauge in (self.mae, self.sd, self.samples):
                gauge.remove(*key)
        self._shown = set(figures)
        old = self._counted
        self.joined.inc(counts.joined - old.joined)
        self.completed.inc(counts.completions - old.completions)
        self.expired.labels("ttl").inc(counts.expired_rides - old.expired_rides)
        self.expired.labels("cap").inc(counts.evicted_rides - old.evicted_rides)
        self.dropped.inc(counts.dropped_predictions - old.dropped_predictions)
        self._counted = JoinCounts(**vars(counts))
        self.held.set(held)
        self.window.set(window_s)
        self.ready.set(1 if ready else 0)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)


@dataclass
class EvaluatorTotals:
    messages: int = 0
    malformed: int = 0
    published: int = 0
    counts: JoinCounts = field(default_factory=JoinCounts)
    rides_held: int = 0


def quality_spec(settings: Settings) -> TopicSpec:
    return next(s for s in settings.topic_specs() if s.name == settings.topics.model_quality)


def ensure_quality_topic(settings: Settings) -> str:
    """Create ``rides.model_quality`` (compacted) if it is missing; "created" or "exists"."""
    return create_topics(make_admin(settings), [quality_spec(settings)])[settings.topics.model_quality]


class OnlineEvaluator:
    """Joins predictions to actuals from Kafka and publishes windowed MAE (see the module doc).

    ``run()`` loops until ``stop()`` (or ``stop_event`` is set) — in a thread of its own or as a
    process's main loop. ``on_tick(evaluator)`` is called from the loop every ``publish_every_s``
    once the evaluator is :attr:`ready`, after it publishes: the place for a canary or A/B
    controller, which reads :meth:`stats`. :meth:`stats` may also be called from other threads."""

    def __init__(self, settings: Settings, *, window_s: float = 600, publish_every_s: float = 5,
                 ttl_s: float = 3 * 3600, linger_s: float = 900, max_rides: int = 200_000,
                 bucket_s: float = 1, retain_s: float = 3600, horizon_s: float | None = None,
                 align_s: float = 30, discover_every_s: float = 10, batch_size: int | None = None,
                 on_tick: Callable[[OnlineEvaluator], None] | None = None,
                 stop_event: threading.Event | None = None, metrics: EvaluatorMetrics | None = None):
        if window_s <= 0 or publish_every_s <= 0:
            raise ValueError("window_s and publish_every_s must be positive")
        self.settings = settings
        self.window_s, self.publish_every_s = window_s, publish_every_s
        self.retain_s = max(retain_s, window_s)
        self.horizon_s = horizon_s if horizon_s is not None else ttl_s + self.retain_s
        self.align_s, self.discover_every_s = align_s, discover_every_s
        self.batch_size = batch_size or settings.batch_size
        self.on_tick = on_tick
        self.state = JoinState(ttl_s, linger_s, max_rides, bucket_s, self.retain_s)
        self.metrics = metrics or EvaluatorMetrics()
        self.totals = EvaluatorTotals()
        self.group_id = f"{settings.namespace}ridestream-evaluator"
        self._stop = stop_event or threading.Event()
        self._lock = threading.RLock()
        self._ready = threading.Event()
        self._topics = self._input_topics()
        self._assigned: set[tuple[str, int]] = set()
        self._behind: dict[tuple[str, int], int] = {}  # partition → end offset to reach at start
        self._last_ts: dict[tuple[str, int], float] = {}  # partition → last message time read (catch-up)
        self._paused: set[tuple[str, int]] = set()
        self._placed_all = False  # the last discovery assigned every input partition there was
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # --- the public side -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once every input partition has been read to where it ended at start."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stats(self, service: str, model_version: str | None = None, variant: str | None = None,
              stage: str = "request", since: float | None = None, until: float | None = None) -> Stats:
        """n, MAE and sd of the absolute errors of ``service``'s predictions at ``stage`` whose
        rides completed since ``since`` (unix seconds; None: the retained ``retain_s``), for one
        model version and variant (None: any)."""
        with self._lock:
            return self.state.stats(service, model_version, variant, stage, since, until)

    def counts(self) -> JoinCounts:
        """What the join has done so far (a copy)."""
        with self._lock:
            return JoinCounts(**vars(self.state.counts))

    def figures(self, now: float | None = None) -> dict[Key, Stats]:
        """The windowed figures: every key with a sample in the retained buckets, over the last
        ``window_s`` (n = 0 where the window has none)."""
        now = time.time() if now is None else now
        with self._lock:
            sums = self.state.sums(since=now - self.window_s)
            keys = set(self.state.keys()) | set(sums)
        return {k: Stats.from_sums(*sums.get(k, (0, 0.0, 0.0))) for k in sorted(keys)}

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> EvaluatorTotals:
        ensure_quality_topic(self.settings)
        self._consumer = make_consumer(self.settings, self.group_id)
        self._producer = make_producer(self.settings, on_delivery=self._delivered)
        wait_s = 0.1  # when nothing comes: how often the loop still expires, publishes and ticks
        now = time.time()
        next_publish = next_discover = next_expire = now
        try:
            while not self._stop.is_set():
                if now >= next_discover:
                    self._discover(now)
                    next_discover = now + self.discover_every_s
                msgs = consume_ready(self._consumer, self.batch_size, wait_s)
                now = time.time()
                if msgs:
                    with self._lock:
                        self._take(msgs, now)
                if not self.ready:
                    self._catch_up()
                if now >= next_expire:
                    with self._lock:
                        self.state.expire(now)
                    next_expire = now + 1.0
                if self.ready and now >= next_publish:
                    self._publish(now)
                    next_publish = now + self.publish_every_s
                    self._tick()
            if self.ready:
                self._publish(time.time())
        finally:
            self._producer.flush(10)
            self._consumer.close()
        self.totals.counts = JoinCounts(**vars(self.state.counts))
        self.totals.rides_held = self.state.rides_held
        return self.totals

    def _input_topics(self) -> dict[str, tuple[str | None, bool]]:
        """topic → (service or None for the events, whether it is a shadow topic)."""
        t = self.settings.topics
        topics: dict[str, tuple[str | None, bool]] = {t.events: (None, False)}
        for s in SERVICES:
            topics[t.predictions(s)] = (s, False)
            topics[t.shadow(s)] = (s, True)
        return topics

    def _discover(self, now: float) -> None:
        """Assign the input partitions not assigned yet (at start: all that exist; later: a shadow
        topic made since), each from the first offset at or after now − horizon."""
        assert self._consumer is not None
        try:
            metadata = self._consumer.list_topics(timeout=5).topics
        except Exception as exc:  # the broker away for a moment: try again at the next discovery
            log.warning("cannot list topics: %s", exc)
            return
        new = [TopicPartition(name, p, int((now - self.horizon_s) * 1000))
               for name in self._topics if name in metadata and metadata[name].error is None
               for p in metadata[name].partitions if (name, p) not in self._assigned]
        self._placed_all = False
        if not new:
            if not self._assigned:
                log.info("none of the input topics exists yet")
            self._placed_all = bool(self._assigned)
            return
        start: list[TopicPartition] = []
        try:
            # the ends first: where no message is at or after the horizon, start at the end as it
            # was before the question, so nothing produced in between is skipped
            ends = {(tp.topic, tp.partition): self._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in new}
            found = self._consumer.offsets_for_times(new, timeout=10)
        except KafkaException as exc:  # e.g. a topic just made, without a leader yet: next time
            log.info("cannot place the new input partitions yet: %s", exc)
            return
        for tp in found:
            if tp.error is not None:
                log.info("cannot place %s [%d] yet: %s", tp.topic, tp.partition, tp.error)
                continue
            high = ends[(tp.topic, tp.partition)]
            offset = tp.offset if tp.offset >= 0 else high
            start.append(TopicPartition(tp.topic, tp.partition, offset))
            if not self.ready and offset < high:
                self._behind[(tp.topic, tp.partition)] = high
                self._last_ts[(tp.topic, tp.partition)] = now - self.horizon_s
        self._placed_all = len(start) == len(new)
        if not start:
            return
        self._consumer.incremental_assign(start)
        self._assigned.update((tp.topic, tp.partition) for tp in start)
        log.info("evaluating %d partitions (%d new), %d behind", len(self._assigned), len(start), len(self._behind))

    def _take(self, msgs: list[Message], now: float) -> None:
        state, topics = self.state, self._topics
        catching_up = bool(self._behind)
        for msg in msgs:
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", msg.error())
                continue
            self.totals.messages += 1
            topic = msg.topic()
            service, shadow = topics[topic]
            kind, ts_ms = msg.timestamp()
            ts = ts_ms / 1000 if kind != TIMESTAMP_NOT_AVAILABLE else now
            if catching_up:
                self._last_ts[(topic, msg.partition())] = ts
            value = msg.value()
            if service is None:
                if not value or b"ride_completed" not in value:
                    continue  # the other event types carry no truth: not even decoded
                try:
                    e = read_event(value)
                except InvalidMessage:
                    self._malformed(topic)
                    continue
                if e.event_type == "ride_completed":
                    state.add_completion(e.ride_id, e.duration_min, e.tip_amount,
                                         round(e.total_amount - e.tip_amount, 2), ts, now)
                continue
            p = read_prediction(value, shadow)
            if p is None or p[1] != service:
                self._malformed(topic)
                continue
            state.add_prediction(p[0], p[1], p[2], p[3], p[4], p[5], p[6], now)

    def _malformed(self, topic: str) -> None:
        self.totals.malformed += 1
        self.metrics.malformed.labels(topic).inc()
        if self.totals.malformed <= 10 or self.totals.malformed % 1000 == 0:
            log.warning("skipped an unreadable message on %s (%d so far)", topic, self.totals.malformed)

    def _catch_up(self) -> None:
        """Track the start-up replay: drop the partitions that reached their start-time end, pause
        those running more than ``align_s`` ahead of the slowest, and latch :attr:`ready`."""
        assert self._consumer is not None
        if self._behind:
            tps = [TopicPartition(t, p) for t, p in self._behind]
            for tp in self._consumer.position(tps):
                if tp.offset >= self._behind[(tp.topic, tp.partition)]:
                    del self._behind[(tp.topic, tp.partition)]
                    self._last_ts.pop((tp.topic, tp.partition), None)
        if not self._behind:
            if self._paused:
                self._consumer.resume([TopicPartition(t, p) for t, p in self._paused])
                self._paused.clear()
            if self._placed_all:
                self._ready.set()
                log.info("caught up: %d rides held", self.state.rides_held)
            return
        ahead = ahead_of_slowest(self._last_ts, self.align_s)
        if ahead - self._paused:
            self._consumer.pause([TopicPartition(t, p) for t, p in ahead - self._paused])
        if self._paused - ahead:
            self._consumer.resume([TopicPartition(t, p) for t, p in self._paused - ahead])
        self._paused = ahead

    def _publish(self, now: float) -> None:
        """The windowed figures to ``rides.model_quality`` (key = quality_key) and the gauges."""
        assert self._producer is not None
        figures = self.figures(now)
        at = datetime.fromtimestamp(now, timezone.utc)
        topic = self.settings.topics.model_quality
        for (service, version, variant, stage), s in figures.items():
            record = ModelQuality(service=service, model_version=version, variant=variant,  # type: ignore[arg-type]
                                  stage=stage, window_s=self.window_s, n=s.n, mae=s.mae, sd=s.sd, updated_at=at)
            produce(self._producer, topic, encode(record), quality_key(service, version, variant, stage).encode())
        self.totals.published += len(figures)
        self._producer.poll(0)
        with self._lock:
            counts, held = JoinCounts(**vars(self.state.counts)), self.state.rides_held
        self.metrics.update(figures, counts, held, self.window_s, self.ready)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            log.warning("a model-quality record was not delivered: %s", err.str())

    def _tick(self) -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick(self)
        except Exception:  # a controller's bug must not stop the evaluation
            log.exception("on_tick failed")
