"""The steady window of the throughput loops (bench.window), on a clock the test moves."""

from __future__ import annotations

from bench.window import SteadyWindow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_window_opens_after_the_warm_up_and_closes_after_its_length():
    clock = Clock()
    w = SteadyWindow(2.0, 5.0, clock=clock)
    assert w.tick(0) is False  # the first event
    for t, done in ((1.0, 100), (2.5, 250), (4.0, 400), (7.0, 700)):
        clock.now = 100 + t
        assert w.tick(done) is False
    clock.now = 107.6
    assert w.tick(760) is True and w.over
    steady = w.steady()
    assert steady.full and steady.events == 760 - 250 and steady.seconds == 107.6 - 102.5
    clock.now = 109.0
    assert w.tick(900) is True and w.steady() == steady  # ticks after the end change nothing


def test_running_out_of_events_is_measured_over_what_there_was_and_says_so():
    clock = Clock()
    w = SteadyWindow(1.0, 5.0, total=1000, clock=clock)
    w.tick(0)
    clock.now = 101.5
    assert w.tick(300) is False  # the window opens here
    clock.now = 103.5
    assert w.tick(1000) is True and w.over
    steady = w.steady()
    assert not steady.full and steady.events == 700 and steady.seconds == 2.0


def test_running_out_inside_the_warm_up_is_measured_from_the_first_event():
    clock = Clock()
    w = SteadyWindow(2.0, 5.0, total=500, clock=clock)
    w.tick(0)
    clock.now = 100.5
    assert w.tick(500) is True
    steady = w.steady()
    assert not steady.full and steady.events == 500 and steady.seconds == 0.5
