"""``ridestream broker …``: the local single-node Kafka for development and tests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from broker.local import LocalBroker, fetch_jars
from ridestream.console import out

if TYPE_CHECKING:  # annotations only: the command line imports these when a command runs
    from shared.kafka.settings import Settings

app = typer.Typer(help="Run a local single-node Apache Kafka (KRaft) broker.", no_args_is_help=True)


def local_broker(settings: Settings) -> LocalBroker:
    return LocalBroker(
        home=settings.state_dir / "broker",
        port=settings.broker_port,
        controller_port=settings.broker_controller_port,
        heap=settings.broker_heap,
    )


def ensure_local_broker(settings: Settings) -> None:
    """Start the local broker unless an existing cluster is configured or it already runs."""
    if settings.uses_local_broker:
        broker = local_broker(settings)
        t0 = time.monotonic()
        if broker.start():
            out.print(f"started the local broker on {broker.bootstrap} in {time.monotonic() - t0:.1f}s")


@app.command()
def fetch() -> None:
    """Download the Kafka jars from Maven Central (once; `start` does it on first use)."""
    t0 = time.monotonic()
    if fetch_jars(quiet=False):
        out.print(f"fetched the Kafka jars in {time.monotonic() - t0:.1f}s")
    else:
        out.print("the Kafka jars are already here")


@app.command()
def start(
    fresh: bool = typer.Option(False, "--fresh", help="wipe the broker's data first"),
    port: int = typer.Option(None, min=1, max=65535, help="client port (default 9092, RIDESTREAM_BROKER_PORT)"),
) -> None:
    """Start the broker in the background and wait until it answers."""
    from shared.kafka.settings import load_settings

    settings = load_settings(**({"broker_port": port} if port else {}))
    broker = local_broker(settings)
    t0 = time.monotonic()
    if not broker.start(fresh=fresh):
        out.print(f"the broker is already running on {broker.bootstrap} (pid {broker.pid()})")
        return
    out.print(f"broker ready on {broker.bootstrap} in {time.monotonic() - t0:.1f}s (data: {broker.data_dir})")
    out.print(broker.bootstrap)


@app.command()
def stop() -> None:
    """Stop the broker: SIGTERM for a clean shutdown, SIGKILL after 30 s."""
    from shared.kafka.settings import load_settings

    broker = local_broker(load_settings())
    out.print("broker stopped" if broker.stop() else "the broker was not running")


@app.command()
def status() -> None:
    """Whether the broker runs and answers."""
    from shared.kafka.settings import load_settings

    broker = local_broker(load_settings())
    pid = broker.pid()
    if pid is None:
        out.print(f"stopped (data: {broker.data_dir})")
        raise typer.Exit(3)
    answering = "answering" if broker.answers() else "not answering yet"
    out.print(f"running, pid {pid}, {answering} on {broker.bootstrap} (data: {broker.data_dir})")


@app.command()
def logs(
    lines: int = typer.Option(50, "-n", "--lines", help="how many of the last lines"),
    follow: bool = typer.Option(False, "-f", "--follow", help="keep printing new lines"),
) -> None:
    """Show the broker's log."""
    from shared.kafka.settings import load_settings

    broker = local_broker(load_settings())
    for line in broker.tail(lines):
        print(line, end="")
    if follow and broker.log_file.is_file():
        with open(broker.log_file, errors="replace") as f:
            f.seek(0, 2)
            while True:
                line = f.readline()
                if line:
                    print(line, end="", flush=True)
                else:
                    time.sleep(0.3)
