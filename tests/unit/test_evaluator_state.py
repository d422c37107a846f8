"""The evaluator's join and aggregates without a broker: both arrival orders, stages, duplicates,
expiry, the cap on rides held, windowed statistics and the memory a held ride costs."""

from __future__ import annotations

import gc
import tracemalloc

import orjson
import pytest

from consumers.evaluator import INITIAL, REQUEST, JoinState, ahead_of_slowest, read_prediction, stage_of

T0 = 1_800_000_000.0  # a unix time, on a bucket boundary


def tip(state: JoinState, ride: str, value: float, now: float, version: str = "v1", variant: str = "stable",
        pid: str | None = None) -> None:
    state.add_prediction(ride, "tip", version, variant, REQUEST, value, pid or f"{ride}/{version}/{variant}", now)


def complete(state: JoinState, ride: str, at: float, duration: float = 20.0, tip_usd: float = 2.0,
             cost: float = 15.0) -> None:
    state.add_completion(ride, duration, tip_usd, cost, at, now=at)


def test_stage_of() -> None:
    assert stage_of(INITIAL, 20) == "initial" and stage_of(REQUEST, 20) == "request"
    assert stage_of(0.0, 20) == "start" and stage_of(0.001, 20) == "start"
    assert stage_of(5.0, 20) == "p25" and stage_of(10.0, 20) == "p50" and stage_of(15.0, 20) == "p75"
    assert stage_of(2.5, 20) == "p25" and stage_of(17.5, 20) == "p75"  # ±0.125 is inside
    assert stage_of(2.4, 20) is None and stage_of(17.6, 20) is None and stage_of(25, 20) is None
    assert stage_of(1.0, 0.0) is None


def prediction(**fields) -> bytes:
    base = {"schema_version": 1, "prediction_id": "p1", "ride_id": "r1", "event_id": "e1", "service": "tip",
            "model_version": "v1", "value": 2.5, "unit": "usd", "event_time": "2026-01-01T00:00:00Z",
            "scored_at": "2026-01-01T00:00:00Z"}
    return orjson.dumps({k: v for k, v in {**base, **fields}.items() if v is not None})


def test_read_prediction() -> None:
    assert read_prediction(prediction()) == ("r1", "tip", "v1", "none", REQUEST, 2.5, "p1")
    assert read_prediction(prediction(variant="candidate"))[3] == "candidate"
    assert read_prediction(prediction(), shadow=True)[3] == "shadow"
    assert read_prediction(prediction(service="duration", unit="min", initial=True))[4] == INITIAL
    assert read_prediction(prediction(service="duration", unit="min", value=22.0))[4] == REQUEST
    assert read_prediction(prediction(service="duration", unit="min", value=22.0, remaining_min=12.0))[4] == 10.0
    assert read_prediction(prediction(service="duration", unit="min", value=22.0, remaining_min=22.0))[4] == 0.0
    assert read_prediction(prediction(service="tip", value=3))[5] == 3.0  # an int is a number
    for bad in (b"", b"not json", b"[1]", None, prediction(value="2.5"), prediction(value=True),
                prediction(ride_id=""), prediction(service="fare"), prediction(variant="c"),
                prediction(prediction_id=7), prediction(model_version=""),
                prediction(service="duration", remaining_min="1")):
        assert read_prediction(bad) is None, bad


def test_prediction_before_its_completion_joins_at_the_completion() -> None:
    s = JoinState()
    tip(s, "r1", 2.5, T0)
    tip(s, "r1", 3.0, T0, version="v2", variant="candidate")
    assert s.stats("tip").n == 0 and s.rides_held == 1
    complete(s, "r1", T0 + 60, tip_usd=2.0)
    assert s.stats("tip", "v1", "stable").mae == 0.5
    assert s.stats("tip", "v2", "candidate").mae == 1.0
    both = s.stats("tip")  # all versions and variants
    assert both.n == 2 and both.mae == 0.75
    assert s.counts.joined == 2 and s.counts.completions == 1


def test_completion_before_its_predictions_joins_each_at_once() -> None:
    s = JoinState()
    complete(s, "r1", T0, duration=30, tip_usd=1.0, cost=20.0)
    tip(s, "r1", 1.25, T0 + 1)
    s.add_prediction("r1", "cost", "c1", "none", REQUEST, 18.0, "c", T0 + 1)
    s.add_prediction("r1", "duration", "d1", "none", INITIAL, 27.0, "d0", T0 + 1)
    s.add_prediction("r1", "duration", "d2", "none", REQUEST, 33.0, "d1", T0 + 1)
    s.add_prediction("r1", "duration", "d2", "none", 0.0, 31.0, "d2", T0 + 1)
    s.add_prediction("r1", "duration", "d2", "none", 15.0, 29.0, "d3", T0 + 1)  # half way
    s.add_prediction("r1", "duration", "d2", "none", 29.0, 30.0, "d4", T0 + 1)  # 97 %: no stage
    assert s.stats("tip").mae == 0.25
    assert s.stats("cost").mae == 2.0
    assert s.stats("duration", stage="initial").mae == 3.0
    assert s.stats("duration", stage="request").mae == 3.0
    assert s.stats("duration", stage="start").mae == 1.0
    assert s.stats("duration", stage="p50").mae == 1.0
    assert s.counts.unstaged == 1 and s.counts.joined == 7
    assert s.keys() == [("cost", "c1", "none", "request"), ("duration", "d1", "none", "initial"),
                        ("duration", "d2", "none", "p50"), ("duration", "d2", "none", "request"),
                        ("duration", "d2", "none", "start"), ("tip", "v1", "stable", "request")]


@pytest.mark.parametrize("completion_first", [False, True])
def test_a_repeated_prediction_or_completion_counts_once(completion_first: bool) -> None:
    s = JoinState()
    if completion_first:
        complete(s, "r1", T0)
    for _ in range(3):
        tip(s, "r1", 3.0, T0, pid="same")
    tip(s, "r1", 4.0, T0, pid="other")
    if not completion_first:
        complete(s, "r1", T0)
    complete(s, "r1", T0 + 5)  # the completion redelivered
    tip(s, "r1", 3.0, T0 + 6, pid="same")  # and a late redelivery after the join
    st = s.stats("tip")
    assert st.n == 2 and st.mae == 1.5
    assert s.counts.duplicates == 3 and s.counts.completions == 1


def test_open_rides_expire_after_the_ttl_and_completed_ones_after_the_linger() -> None:
    s = JoinState(ttl_s=3600, linger_s=600, retain_s=7200)
    tip(s, "open", 1.0, T0)
    tip(s, "open", 1.1, T0, variant="candidate")
    tip(s, "done", 2.5, T0)
    complete(s, "done", T0 + 60)
    s.expire(T0 + 600)
    assert s.rides_held == 2  # the completed ride still lingers (a late prediction may come)
    tip(s, "done", 3.0, T0 + 601, variant="candidate")
    assert s.stats("tip", variant="candidate").n == 1
    s.expire(T0 + 60 + 600 + 120)
    assert s.rides_held == 1 and s.counts.expired_rides == 0
    s.expire(T0 + 3600 + 120)
    assert s.rides_held == 0
    assert s.counts.expired_rides == 1 and s.counts.dropped_predictions == 2
    assert s.stats("tip").n == 2  # what was joined stays in its buckets


def test_the_cap_drops_the_oldest_rides_first() -> None:
    s = JoinState(max_rides=100)
    for i in range(1000):
        tip(s, f"r{i}", 1.0, T0 + i)
    assert 99 <= s.rides_held <= 100  # beyond the cap, 1 % below it at once
    assert s.counts.evicted_rides == s.counts.dropped_predictions == 1000 - s.rides_held
    kept = [i for i in range(1000) if s.holds(f"r{i}")]
    assert kept == list(range(1000 - len(kept), 1000))  # the newest
    for i in kept:
        complete(s, f"r{i}", T0 + 1000)
    assert s.stats("tip").n == len(kept)
    # completed rides go first: a new open ride now evicts the oldest completion, not an open ride
    for i in range(3):
        tip(s, f"new{i}", 1.0, T0 + 2000)
    assert all(s.holds(f"new{i}") for i in range(3)) and s.rides_held <= 100
    assert not s.holds(f"r{kept[0]}") and s.holds(f"r{kept[-1]}")
    assert s.counts.dropped_predictions == 1000 - len(kept)  # completed rides lose nothing


def test_windowed_statistics_by_completion_time() -> None:
    s = JoinState(bucket_s=10, retain_s=3600)
    for i in range(60):  # one ride completing every 10 s for 10 minutes; errors 0, 1, 2, 0, 1, 2…
        tip(s, f"r{i}", 2.0 + i % 3, T0)
        complete(s, f"r{i}", T0 + 10 * i)
    everything = s.stats("tip")
    assert everything.n == 60 and everything.mae == 1.0
    assert everything.sd == pytest.approx((40 / 59) ** 0.5)  # 20 each of 0, 1, 2
    last_minute = s.stats("tip", since=T0 + 540)
    assert last_minute.n == 6 and last_minute.mae == 1.0
    assert s.stats("tip", since=T0 + 541).n == 5  # a bucket counts when it starts inside the span
    assert s.stats("tip", since=T0, until=T0 + 30).n == 3
    assert s.stats("tip", stage="p50").n == 0 and s.stats("cost").n == 0
    sums = s.sums(since=T0 + 590)
    assert sums == {("tip", "v1", "stable", "request"): [1, 2.0, 4.0]}


def test_buckets_older_than_the_retention_are_forgotten() -> None:
    s = JoinState(bucket_s=10, retain_s=600)
    tip(s, "old", 3.0, T0)
    complete(s, "old", T0)
    s.expire(T0 + 700)
    assert s.stats("tip").n == 0 and s.keys() == []
    tip(s, "late", 3.0, T0 + 700)
    s.add_completion("late", 10, 2.0, 9.0, completed_ts=T0 + 50, now=T0 + 700)  # completed long ago
    assert s.stats("tip").n == 0 and s.counts.too_old == 1


def test_the_replay_pauses_the_partitions_ahead_of_the_slowest() -> None:
    last = {("events", 0): T0, ("events", 1): T0 + 100, ("tip", 0): T0 + 30, ("tip", 1): T0 + 31}
    assert ahead_of_slowest(last, 30) == {("events", 1), ("tip", 1)}
    assert ahead_of_slowest({("events", 0): T0}, 30) == set() and ahead_of_slowest({}, 30) == set()


def fill(s: JoinState, rides: int, start: int = 0, now: float = T0) -> None:
    """A realistic ride: initial, request and start duration estimates, six progress answers, a tip
    and a cost; every other ride also completed (held for the linger: ids only)."""
    for i in range(start, start + rides):
        r = f"sim1781234567-{i}"
        s.add_prediction(r, "duration", "20260101T000000-init", "none", INITIAL, 21.5, f"{r}-a", now)
        s.add_prediction(r, "duration", "20260101T000000-dyn", "stable", REQUEST, 21.0, f"{r}-b", now)
        s.add_prediction(r, "duration", "20260101T000000-dyn", "stable", 0.0, 21.0, f"{r}-c", now)
        for k in range(1, 7):
            s.add_prediction(r, "duration", "20260101T000000-dyn", "stable", 3.0 * k, 21.0 + k / 10, f"{r}-p{k}", now)
        s.add_prediction(r, "tip", "20260101T000000-tip", "stable", REQUEST, 2.4, f"{r}-t", now)
        s.add_prediction(r, "cost", "20260101T000000-cost", "stable", REQUEST, 17.0, f"{r}-k", now)
        if i % 2:
            s.add_completion(r, 20.0, 2.0, 16.5, now, now)


def held_bytes(rides: int, cap: int) -> tuple[int, JoinState]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        s = JoinState(max_rides=cap)
        fill(s, rides)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, s
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_cap() -> None:
    at_cap, s = held_bytes(500, cap=500)
    assert s.rides_held == 500
    ten_times, s = held_bytes(5_000, cap=500)
    assert 495 <= s.rides_held <= 500 and s.counts.evicted_rides == 5_000 - s.rides_held
    # ten times the rides, about the same memory: the cap bounds it (what is above is the dicts'
    # tables, which keep room for the entries they dropped until they are resized)
    assert ten_times < at_cap * 1.5
    per_ride = at_cap / 500
    print(f"\n{per_ride:.0f} bytes per ride held (half open with 11 predictions waiting, half completed)")
    assert per_ride < 1_500  # ~500 measured (CPython 3.11); a regression would show here
