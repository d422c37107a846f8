"""The simulator is deterministic, calibrated to the real sample, and its rides drift early."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.data import simulator
from shared.data.tlc import SAMPLE_TRIPS, clean_trips, read_trip_file


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return clean_trips(read_trip_file(SAMPLE_TRIPS))[0]


@pytest.fixture(scope="module")
def cal(real):
    return simulator.fit(real)


def test_same_seed_same_rides_other_seed_other_rides(cal):
    a, b = simulator.simulate(cal, 2000, seed=5), simulator.simulate(cal, 2000, seed=5)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(simulator.progress(a, seed=5), simulator.progress(b, seed=5))
    assert not simulator.simulate(cal, 2000, seed=6)["duration_min"].equals(a["duration_min"])


@pytest.mark.parametrize("column", ["trip_distance_mi", "duration_min", "fare_amount"])
def test_medians_within_15_percent_of_the_real_sample(real, cal, column):
    rides = simulator.simulate(cal, 50_000, seed=1)
    assert rides[column].median() == pytest.approx(real[column].median(), rel=0.15)


def test_fares_follow_the_meter_and_tips_the_payment_type(cal):
    rides = simulator.simulate(cal, 20_000, seed=2)
    assert (rides.fare_amount >= 2.5).all() and np.allclose(rides.fare_amount * 2, np.round(rides.fare_amount * 2))
    assert (rides[rides.payment_type != 1].tip_amount == 0).all()  # cash tips are recorded as 0
    assert rides[rides.payment_type == 1].tip_amount.median() > 0
    assert np.allclose(rides.total_amount, rides.cost_amount + rides.tip_amount, atol=0.011)
    jfk = rides[(rides.pickup_zone == 132) & (rides.dropoff_zone.isin([161, 162, 230, 236, 237]))]
    assert (jfk.fare_amount == 52.0).all()


def test_progress_is_monotone_and_ends_at_the_trip_distance(cal):
    rides = simulator.simulate(cal, 500, seed=3)
    prog = simulator.progress(rides, seed=3)
    assert len(prog) == int(np.maximum(np.ceil(rides.duration_min) - 1, 0).sum())
    for _, g in prog.groupby("ride_index"):
        assert g.distance_done_mi.is_monotonic_increasing
    total = rides.trip_distance_mi.to_numpy()[prog.ride_index]
    assert np.allclose(prog.distance_done_mi + prog.distance_left_mi, total, atol=0.002)
    assert (prog.remaining_min > 0).all()


def test_a_rides_drift_shows_in_its_first_progress_events(cal):
    rides = simulator.simulate(cal, 5000, seed=4)
    prog = simulator.progress(rides, seed=4)
    early = prog[prog.elapsed_min == 3].set_index("ride_index")
    r = rides.loc[early.index]
    early_speed = early.distance_done_mi / (3 / 60)
    # the speed seen after 3 minutes tells how the ride compares with its expected speed
    realised = r.trip_distance_mi / (r.duration_min / 60)
    corr = np.corrcoef(np.log(early_speed / r.expected_speed_mph), np.log(realised / r.expected_speed_mph))[0, 1]
    assert corr > 0.6


def test_a_million_rides_vectorized(cal):
    rides = simulator.simulate(cal, 1_000_000, seed=9)
    assert len(rides) == 1_000_000 and rides.ride_index.is_unique
    assert rides.duration_min.between(1, 180).all()


def test_rides_become_whole_contract_lifecycles_in_time_order(cal):
    from shared.contract.codec import decode_event, encode_dict
    from shared.contract.events import RideCompleted, RideProgress, RideRequested, RideStarted

    rides = simulator.simulate(cal, 300, seed=7)
    prog = simulator.progress(rides, seed=7)
    raw = simulator.lifecycle_events(rides, prog, id_prefix="t")
    events = [decode_event(encode_dict(e)) for e in raw]  # every one passes the strict contract
    assert len(events) == 3 * len(rides) + len(prog)
    times = [e.event_time for e in events]
    assert times == sorted(times)
    assert len({e.event_id for e in events}) == len(events)
    by_ride: dict[str, list] = {}
    for e in events:
        by_ride.setdefault(e.ride_id, []).append(e)
    for ride_id, lifecycle in by_ride.items():
        kinds = [type(e) for e in lifecycle]
        assert kinds[:2] == [RideRequested, RideStarted] and kinds[-1] is RideCompleted
        assert set(kinds[2:-1]) <= {RideProgress}
        done = lifecycle[-1]
        row = rides.iloc[int(ride_id.split("-")[1])]
        assert done.duration_min == pytest.approx(row.duration_min)
        assert done.total_amount == pytest.approx(row.total_amount)
