"""Rows of the real TLC sample (shipped in data/) mapped onto the wire contract."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from shared.contract.codec import decode_event, encode
from shared.contract.events import RideCompleted, RideRequested, RideStarted
from shared.data.tlc import SAMPLE_TRIPS, TRIP_COLUMNS, read_trip_file, trip_events
from shared.errors import DataError


@pytest.fixture(scope="module")
def trips() -> pd.DataFrame:
    return read_trip_file(SAMPLE_TRIPS)


def test_the_sample_reads_into_the_normalised_table(trips):
    assert len(trips) == 5000
    assert list(trips.columns) == TRIP_COLUMNS
    assert set(trips.service) == {"yellow", "green"}


def test_clean_real_rows_become_valid_contract_events(trips):
    clean = trips[(trips.fare_amount >= 0) & (trips.tip_amount >= 0) & (trips.total_amount >= 0)
                  & trips.passenger_count.between(0, 9) & trips.payment_type.between(1, 6)]
    assert len(clean) > 4900
    rides = trip_events(clean)
    assert len(rides) == len(clean)
    for ride in rides[:500]:
        requested, started, completed = ride
        assert (type(requested), type(started), type(completed)) == (RideRequested, RideStarted, RideCompleted)
        assert len({e.ride_id for e in ride}) == 1
        assert completed.event_time >= requested.event_time
        for event in ride:
            assert decode_event(encode(event)) == event
    first = rides[0][0]
    assert (first.pickup_zone, first.dropoff_zone, first.trip_distance_mi, first.service) == (179, 146, 0.9, "green")
    assert rides[0][2].total_amount == 6.3


def test_real_refunds_break_the_contract(trips):
    refunds = trips[trips.total_amount < 0]
    assert len(refunds) > 0  # the uncleaned sample has them, as real TLC files do
    for i in range(len(refunds)):
        with pytest.raises(ValidationError, match="greater than or equal to 0"):
            trip_events(refunds.iloc[[i]])


def test_green_files_with_lpep_columns_and_parquet(trips, tmp_path):
    green = trips[trips.service == "green"].head(20).drop(columns="service").rename(columns={
        "pickup_time": "lpep_pickup_datetime", "dropoff_time": "lpep_dropoff_datetime",
        "pickup_zone": "PULocationID", "dropoff_zone": "DOLocationID", "trip_distance_mi": "trip_distance",
    })
    path = tmp_path / "green_tripdata_2019-03.parquet"
    green.to_parquet(path)
    back = read_trip_file(path)
    assert set(back.service) == {"green"} and len(back) == 20
    assert back.pickup_time.iloc[0] == trips[trips.service == "green"].pickup_time.iloc[0]


def test_unknown_file_kinds_and_missing_columns_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not a TLC trip file"):
        read_trip_file(tmp_path / "trips.xlsx")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing TLC column tpep_pickup_datetime or lpep_pickup_datetime"):
        read_trip_file(bad)


def test_local_hour_and_weekday_match_pandas_across_dst_changes():
    import numpy as np
    import pandas as pd

    from shared.data.tlc import NYC_TZ, local_hour_weekday

    rng = np.random.default_rng(0)
    spring, autumn = 1552201200, 1572760800  # 2019-03-10 and 2019-11-03, 2 a.m. local
    starts = [*rng.uniform(1.2e9, 1.9e9, 100), spring - 50, autumn - 50, spring - 0.5, autumn - 3600]
    for start in starts:
        times = start + rng.uniform(0, 100, 100)
        local = pd.to_datetime(times, unit="s", utc=True).tz_convert(NYC_TZ)
        hour, weekday = local_hour_weekday(times)
        assert (hour == local.hour).all() and (weekday == local.day_of_week).all(), start
    wide = rng.uniform(1.5e9, 1.6e9, 500)  # a training table: spans years
    hour, weekday = local_hour_weekday(wide)
    assert (hour == pd.to_datetime(wide, unit="s", utc=True).tz_convert(NYC_TZ).hour).all()


def test_local_hour_and_weekday_at_every_offset_change_from_1970_to_2100_and_beyond():
    import numpy as np
    import pandas as pd

    from shared.data.clock import NYC_TZ, _nyc_offsets, local_hour_weekday

    starts, _ = _nyc_offsets()
    assert len(starts) > 250  # two changes a year
    around = np.concatenate([starts[1:] + d for d in (-3600, -1, -0.25, 0, 0.25, 1, 3599)])
    everywhere = np.random.default_rng(1).uniform(0, 4.1e9, 100_000)
    outside = np.array([-1e9, 4.2e9, 5e9])  # before the table and after it: zoneinfo, row by row
    for times in (around, everywhere, outside):
        local = pd.to_datetime(times, unit="s", utc=True).tz_convert(NYC_TZ)
        hour, weekday = local_hour_weekday(times)
        assert (hour == local.hour).all() and (weekday == local.day_of_week).all()


@pytest.mark.parametrize("args", [["score-batch", "--input", "{missing}"], ["score-batch", "--input", "{bad}"],
                                  ["train", "--data", "{missing}"]])
def test_a_missing_or_foreign_trip_file_is_one_line_not_a_traceback(args, tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    argv = [a.format(missing=tmp_path / "nope.parquet", bad=bad) for a in args]
    done = subprocess.run([sys.executable, "-m", "ridestream.cli", *argv], capture_output=True, text=True,
                          timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert ("no such file" in lines[0]) if "nope" in argv[-1] else ("missing TLC column" in lines[0])
