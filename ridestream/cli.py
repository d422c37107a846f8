"""The one command line, ``ridestream …``.

Each ``*_cmd`` module imports at its top only typer, rich and the standard library; a command
imports what it needs (Kafka clients, pydantic, scikit-learn, pandas…) inside its function, so
``ridestream --help`` and a service process load only what they use
(tests/unit/test_cli_imports.py holds this)."""

from __future__ import annotations

import os
import sys

from ridestream import startup_signals

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "ridestream":  # the program, not an import
    startup_signals.install()  # before any import below: a stop during start-up exits cleanly

import logging  # noqa: E402

import typer  # noqa: E402
from rich.markup import escape  # noqa: E402

from broker.local import BrokerError  # noqa: E402
from ridestream import (  # noqa: E402
    acl_cmd,
    batch_cmd,
    bench_cmd,
    broker_cmd,
    consume_cmd,
    deploy_cmd,
    dlq_cmd,
    drift_cmd,
    models_cmd,
    offsets_cmd,
    produce_cmd,
    replay_cmd,
    run_cmd,
    schema_cmd,
    serve_cmd,
    topics_cmd,
    train_cmd,
    watch_cmd,
)
from ridestream.console import err  # noqa: E402
from shared.errors import RidestreamError  # noqa: E402

app = typer.Typer(
    help="Real-time ML on taxi-ride events: Kafka, a backend and a fleet of scoring services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(broker_cmd.app, name="broker")
app.add_typer(topics_cmd.app, name="topics")
app.add_typer(acl_cmd.app, name="acl")
app.add_typer(schema_cmd.app, name="schema")
app.command("run")(run_cmd.run)
app.command("produce")(produce_cmd.produce)
app.command("consume")(consume_cmd.consume)
app.command("watch")(watch_cmd.watch)
app.command("serve")(serve_cmd.serve)
app.command("replay")(replay_cmd.replay)
app.add_typer(offsets_cmd.app, name="offsets")
app.add_typer(dlq_cmd.app, name="dlq")
app.command("score-batch")(batch_cmd.score_batch)
app.command("report")(batch_cmd.report)
app.command("drift")(drift_cmd.drift)
app.command("bench")(bench_cmd.bench)
app.command("train")(train_cmd.train)
app.command("evaluate")(train_cmd.evaluate)
app.add_typer(models_cmd.app, name="models")
app.add_typer(deploy_cmd.app, name="deploy")


@app.callback()
def _root(verbose: bool = typer.Option(False, "-v", "--verbose", help="log Kafka client details")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # connection retries are expected while a broker restarts; failures surface as errors
        logging.getLogger("ridestream.kafka").setLevel(logging.CRITICAL)


def main() -> None:
    startup_signals.settle()
    try:
        app()
    except (RidestreamError, BrokerError) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug or a case no check foresaw: still one line, the traceback on request
        if {"-v", "--verbose"} & set(sys.argv[1:]):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        err.print(f"[red]error:[/] unexpected {type(exc).__name__}: {escape(first)} — rerun with -v for the "
                  "traceback, and please report it", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
