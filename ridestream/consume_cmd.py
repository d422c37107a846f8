"""``ridestream consume duration|tip|cost``: one process of a service's consumer group."""

from __future__ import annotations

import signal
import threading

import typer

from ridestream import startup_signals
from ridestream.console import err

FENCED_EXIT = 3  # a fenced process stops without a traceback; its supervisor may start a new one


def consume(
    service: str = typer.Argument(..., help="duration, tip or cost"),
    group: str = typer.Option(None, help="consumer group (default ridestream-<service>)"),
    batch_size: int = typer.Option(None, help="most messages per batch (default 10000)"),
    metrics_port: int = typer.Option(None, help="serve /metrics on this port (0 = off)"),
    model: list[str] = typer.Option(None, "--model", help="VERSION, NAME=VERSION or an artifact folder, to pin a "
                                    "model (a pinned process follows no deployment plan)"),
    colour: str = typer.Option("blue", "--colour", help="blue (the service's usual group) or green: a second full "
                               "set of replicas for a blue/green deployment, publishing only while live"),
) -> None:
    """Run one process of a service until SIGTERM or Ctrl-C, which drain it cleanly. It serves each
    model's champion, or what the deployment plan on rides.control says, and follows new plans live."""
    # the imports below take seconds (scikit-learn, pandas): a stop meanwhile ends the process cleanly
    startup_signals.install()
    from consumers.runtime import Runtime
    from consumers.services import SERVICE_SPECS, pick_models
    from consumers.transactions import Fenced
    from shared.contract.topics import SERVICES
    from shared.kafka.clients import make_admin, require_topics
    from shared.kafka.settings import load_settings

    startup_signals.settle()
    stopping = threading.Event()  # set by SIGTERM/Ctrl-C, even before the runtime exists
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
    if colour not in ("blue", "green"):
        raise typer.BadParameter(f"unknown colour {colour!r}: blue or green")
    overrides = {"batch_size": batch_size, "metrics_port": metrics_port}
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    spec = SERVICE_SPECS[service]  # type: ignore[index]
    models = pick_models(spec, model, settings)
    runtime = Runtime(spec, settings, models, group_id=group, stop_event=stopping, follow_plans=not model,
                      colour=colour)
    require_topics(make_admin(settings), settings, [runtime.input_topic, runtime.output_topic, runtime.dlq_topic])
    runtime.metrics.serve(settings.metrics_port, runtime.health)
    versions = ", ".join(f"{n} {m.version}" for n, m in models.items())
    mode = ", exactly-once" if settings.exactly_once else ""
    err.print(f"{service}: consuming {runtime.input_topic} as group {runtime.group_id} ({versions}{mode})")
    try:
        totals = runtime.run()
    except Fenced as exc:  # exactly-once: another process took this one's transactional id
        err.print(f"{service}: stopped: {exc}", soft_wrap=True)
        raise typer.Exit(FENCED_EXIT) from None
    err.print(f"{service}: stopped after {totals.consumed} events, {totals.predictions} predictions, "
              f"{totals.dead_letters} to the DLQ")
