"""The TLC loader and each cleaning rule, on the real sample and on constructed rows."""

from __future__ import annotations

import pandas as pd
import pytest

from shared.data.tlc import SAMPLE_TRIPS, clean_trips, read_trip_file, read_trips
from shared.errors import DataError

GOOD = {
    "pickup_time": pd.Timestamp("2019-03-05 08:00:00"), "dropoff_time": pd.Timestamp("2019-03-05 08:12:00"),
    "pickup_zone": 142, "dropoff_zone": 236, "trip_distance_mi": 2.0, "passenger_count": 1,
    "payment_type": 1, "fare_amount": 10.0, "tip_amount": 2.0, "total_amount": 15.8, "service": "yellow",
}


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{**GOOD, **r} for r in rows])


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"fare_amount": -10.0, "total_amount": -10.8}, "negative_amount"),
        ({"tip_amount": -1.0}, "negative_amount"),
        ({"trip_distance_mi": 0.0}, "zero_distance"),
        ({"dropoff_time": pd.Timestamp("2019-03-05 08:00:30")}, "duration_out_of_range"),
        ({"dropoff_time": pd.Timestamp("2019-03-05 11:30:00")}, "duration_out_of_range"),
        ({"pickup_zone": 264}, "unknown_zone"),
        ({"dropoff_zone": 265}, "unknown_zone"),
        ({"passenger_count": None}, "missing_values"),
        ({"payment_type": 9}, "bad_payment_type"),
        ({"service": "fhv"}, "unknown_service"),
        ({"trip_distance_mi": 40.0}, "implausible_speed"),
        ({"tip_amount": 20.0}, "tip_exceeds_total"),
    ],
)
def test_each_rule_drops_what_it_names(change, rule):
    clean, report = clean_trips(frame({}, change))
    assert len(clean) == 1 and report.rows_in == 2 and report.rows_out == 1
    assert report.dropped[rule] == 1
    assert sum(report.dropped.values()) == 1


def test_derived_columns_and_utc_times():
    clean, _ = clean_trips(frame({}))
    row = clean.iloc[0]
    assert row.duration_min == 12.0 and row.cost_amount == 13.8
    assert str(row.pickup_utc) == "2019-03-05 13:00:00+00:00"  # 08:00 in New York (EST)


def test_real_sample_cleaning_counts():
    clean, report = clean_trips(read_trip_file(SAMPLE_TRIPS))
    assert report.rows_in == 5000
    assert report.dropped["negative_amount"] == 9  # the refunds
    assert report.dropped["zero_distance"] > 0 and report.dropped["unknown_zone"] > 0
    assert report.rows_out == len(clean) and 4800 < len(clean) < 4950
    assert clean[["fare_amount", "tip_amount", "total_amount"]].ge(0).all().all()
    assert clean.duration_min.between(1, 180).all()
    assert (clean[clean.payment_type == 2].tip_amount == 0).all()  # cash tips are not recorded


def test_parquet_folders_and_globs(tmp_path):
    trips = read_trip_file(SAMPLE_TRIPS)
    yellow = trips[trips.service == "yellow"].head(30).rename(columns={
        "pickup_time": "tpep_pickup_datetime", "dropoff_time": "tpep_dropoff_datetime",
        "pickup_zone": "PULocationID", "dropoff_zone": "DOLocationID", "trip_distance_mi": "trip_distance",
    }).drop(columns="service")
    green = yellow.rename(columns={"tpep_pickup_datetime": "lpep_pickup_datetime",
                                   "tpep_dropoff_datetime": "lpep_dropoff_datetime"}).head(10)
    (tmp_path / "monthly").mkdir()
    yellow.to_parquet(tmp_path / "monthly" / "yellow_tripdata_2019-03.parquet")
    green.to_parquet(tmp_path / "monthly" / "green_tripdata_2019-03.parquet")
    from_folder = read_trips([tmp_path / "monthly"])
    from_glob = read_trips([str(tmp_path / "monthly" / "*.parquet")])
    assert len(from_folder) == len(from_glob) == 40
    assert sorted(from_folder.service.value_counts().items()) == [("green", 10), ("yellow", 30)]
    clean, report = clean_trips(from_folder)
    assert report.rows_in == 40 and len(clean) == report.rows_out
    with pytest.raises(DataError, match="no such file"):
        read_trips([tmp_path / "nothing-here"])
