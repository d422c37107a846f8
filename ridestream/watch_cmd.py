"""``ridestream watch``: the rider's view — each ride's estimate, its corrections during the ride,
tip and cost, updating in place."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import typer
from rich.live import Live
from rich.table import Table

from ridestream.console import out


@dataclass
class RideView:
    ride_id: str
    initial: float | None = None
    expected: float | None = None
    remaining: float | None = None
    corrections: int = 0
    tip: float | None = None
    cost: float | None = None
    seen: float = 0.0

    def apply(self, p: dict) -> None:
        self.seen = time.monotonic()
        if p["service"] == "duration":
            if p.get("initial"):
                self.initial = p["value"]
            else:
                self.corrections += self.expected is not None
                self.expected, self.remaining = p["value"], p.get("remaining_min")
        elif p["service"] == "tip":
            self.tip = p["value"]
        else:
            self.cost = p["value"]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "…"
    return f"${value:,.2f}" if unit == "usd" else f"{value:,.1f} min"


def render(rides: dict[str, RideView], limit: int) -> Table:
    table = Table(title="rides, most recently updated first (Ctrl-C to quit)", title_justify="left")
    for col in ("ride", "first estimate", "expected now", "left", "corrections", "tip", "cost"):
        table.add_column(col, justify="left" if col == "ride" else "right")
    for r in sorted(rides.values(), key=lambda r: r.seen, reverse=True)[:limit]:
        table.add_row(r.ride_id, _fmt(r.initial, "min"), _fmt(r.expected, "min"), _fmt(r.remaining, "min"),
                      str(r.corrections), _fmt(r.tip, "usd"), _fmt(r.cost, "usd"))
    return table


def watch(
    ride: str = typer.Option(None, "--ride", help="follow one ride (read from the start of the topics)"),
    rows: int = typer.Option(15, help="how many rides to show"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="replay what the topics hold first"),
    seconds: float = typer.Option(None, help="stop after this many seconds"),
) -> None:
    """Follow the prediction topics as a rider would see them."""
    import orjson

    from shared.contract.topics import SERVICES
    from shared.kafka.clients import ensure_reachable, make_admin, make_consumer
    from shared.kafka.settings import load_settings

    settings = load_settings()
    ensure_reachable(make_admin(settings), settings)
    start = "earliest" if (ride or from_beginning) else "latest"
    # a throwaway group that never commits: watching never disturbs anything
    consumer = make_consumer(settings, f"{settings.namespace}ridestream-watch-{uuid.uuid4().hex[:8]}",
                             **{"auto.offset.reset": start})
    consumer.subscribe([settings.topics.predictions(s) for s in SERVICES])
    rides: dict[str, RideView] = {}
    deadline = time.monotonic() + seconds if seconds else None
    try:
        with Live(render(rides, rows), console=out, refresh_per_second=4) as live:
            while deadline is None or time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=1000, timeout=0.25):
                    if msg.error():
                        continue
                    p = orjson.loads(msg.value())
                    if ride and p.get("ride_id") != ride:
                        continue
                    rides.setdefault(p["ride_id"], RideView(p["ride_id"])).apply(p)
                live.update(render(rides, rows))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
