"""New York's clock for features: local hour and weekday of UTC times, without pandas on the
services' path (pandas only for times outside the 1970–2100 table)."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

NYC_TZ = "America/New_York"  # TLC times are local wall-clock times


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """UTC-aware timestamps as float epoch seconds, whatever their resolution (pandas 3 infers it)."""
    return times.dt.as_unit("us").astype("int64").to_numpy() / 1e6


def local_hour_weekday(epoch_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NYC local hour (0–23) and weekday (Monday 0) of UTC epoch seconds: traffic keeps local time.

    Times from 1970 to 2100 take their UTC offset from a table of New York's offset changes (one
    ``searchsorted``): pandas' time-zone conversion costs about a millisecond per call, which a
    small live batch feels. Other centuries go through zoneinfo, NaN through pandas."""
    epoch = np.asarray(epoch_s, dtype=np.float64)
    starts, offsets = _nyc_offsets()
    if len(epoch):
        lo, hi = float(epoch.min()), float(epoch.max())
        if starts[0] <= lo and hi < _TABLE_END_S:  # False for NaN too
            local_s = np.floor(epoch + offsets[np.searchsorted(starts, epoch, side="right") - 1]).astype(np.int64)
            # 1970-01-01 was a Thursday (3 when Monday is 0)
            return (local_s // 3600) % 24, (local_s // 86400 + 3) % 7
    if not np.isnan(epoch).any():  # times of other centuries (valid events): zoneinfo, one at a time
        local = [datetime.fromtimestamp(float(t), _NYC) for t in epoch]
        return (np.fromiter((t.hour for t in local), np.int64, len(local)),
                np.fromiter((t.weekday() for t in local), np.int64, len(local)))
    import pandas as pd  # NaN (training tables only)

    local = pd.to_datetime(epoch, unit="s", utc=True).tz_convert(NYC_TZ)
    return np.asarray(local.hour, dtype=np.int64), np.asarray(local.day_of_week, dtype=np.int64)


_NYC = ZoneInfo(NYC_TZ)
_TABLE_END_S = datetime(2101, 1, 1, tzinfo=timezone.utc).timestamp()


def _utc_offset_s(epoch_s: float) -> float:
    offset = datetime.fromtimestamp(epoch_s, _NYC).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


@lru_cache(maxsize=1)
def _nyc_offsets() -> tuple[np.ndarray, np.ndarray]:
    """When each of New York's UTC offsets took effect (epoch seconds, 1970–2100) and the offset.

    Built once from zoneinfo (a few thousand lookups, ~20 ms): the offset is read at every month's
    start, and where two months differ the change is found to the second by bisection (New York
    changes its offset at most once a month)."""
    months = [int(datetime(y, m, 1, tzinfo=timezone.utc).timestamp()) for y in range(1970, 2101) for m in range(1, 13)]
    at_month = [_utc_offset_s(m) for m in months]
    starts, offsets = [months[0]], [at_month[0]]
    for a, b, before, after in zip(months, months[1:], at_month, at_month[1:]):
        if after == before:
            continue
        while b - a > 1:  # invariant: offset(a) == before != offset(b)
            mid = (a + b) // 2
            a, b = (mid, b) if _utc_offset_s(mid) == before else (a, mid)
        starts.append(b)
        offsets.append(_utc_offset_s(b))
    return np.array(starts, dtype=np.float64), np.array(offsets, dtype=np.float64)
