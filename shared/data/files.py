"""Where the shipped data lives (no imports: the services read these paths without pandas)."""

from shared import PROJECT_ROOT

DATA_DIR = PROJECT_ROOT / "data"
SAMPLE_TRIPS = DATA_DIR / "tlc_trips_2019_03_sample.csv"
ZONES_CSV = DATA_DIR / "taxi_zones.csv"
