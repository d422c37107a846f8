"""What the batched peers' applications share (they import it from the project's root, in their own
virtualenvs): their arguments, scoring a batch the way a user of the contract would, and the report
of a throughput run.

Scoring validates each event with the contract model (as the naive loop and Quix Streams do), then
calls the tip model's scikit-learn ``predict`` once for the whole batch, and builds each prediction
keyed by its ride, as the contract says.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.window import SteadyWindow  # noqa: E402
from shared.contract.codec import decode_event, encode_dict  # noqa: E402
from shared.contract.events import prediction_record  # noqa: E402
from shared.ml.artifacts import Model, load_model  # noqa: E402


def arguments() -> dict:
    """The one JSON argument :mod:`bench.peers` passes."""
    return json.loads(sys.argv[1])


def tip_model() -> Model:
    return load_model("tip")  # scikit-learn, as a user would load the artifact


def validated(values: list[bytes]) -> list[Any]:
    """Each value as a contract event (pydantic, from the bytes)."""
    return [decode_event(v) for v in values]


def score(model: Model, events: list[Any]) -> list[tuple[bytes, bytes]]:
    """(key, value) of the tip prediction of each validated event: one ``predict`` per batch."""
    tips = model.predict_events(events)
    now = datetime.now(timezone.utc)
    return [(e.ride_id.encode(), encode_dict(prediction_record("tip", model.version, e.ride_id, e.event_id,
                                                               e.event_time, round(float(t), 3), now)))
            for e, t in zip(events, tips)]


def window(args: dict) -> SteadyWindow | None:
    return SteadyWindow(args["warmup_s"], args["window_s"], args["total"]) if args["mode"] == "throughput" else None


def report(clock: SteadyWindow, done: int) -> None:
    """The throughput run's result on stdout: the window's events and seconds, whether the window
    was full, and how many events the application finished in all (their predictions published)."""
    steady = clock.steady()
    print(json.dumps({"events": steady.events, "seconds": steady.seconds, "full": steady.full, "done": done}),
          flush=True)
