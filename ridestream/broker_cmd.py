"""``ridestream broker …``: the local Kafka for development and tests — one node (the default),
or ``--nodes N`` KRaft nodes on this machine; either of them ``--secure``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from broker.cluster import LocalCluster
from broker.local import LocalBroker, fetch_jars
from broker.secure import PRINCIPALS, Secrets, SecretsError
from ridestream.console import out
from shared.errors import ConfigError

if TYPE_CHECKING:  # annotations only: the command line imports these when a command runs
    from shared.kafka.settings import Settings

app = typer.Typer(help="Run a local Apache Kafka (KRaft): one node, or a cluster of several.", no_args_is_help=True)


def _recorded_secure(home: Path) -> bool:
    try:
        return bool(json.loads((home / "cluster.json").read_text()).get("secure", False))
    except (OSError, ValueError):
        return False


def local_broker(settings: Settings, secure: bool | None = None) -> LocalBroker:
    """The single node in ``STATE_DIR/broker``; ``secure`` None: as its data was formatted."""
    home = settings.state_dir / "broker"
    secure = _recorded_secure(home) if secure is None else secure
    return LocalBroker(
        home=home,
        port=settings.broker_port,
        controller_port=settings.broker_controller_port,
        heap=settings.broker_heap,
        secrets=Secrets(home / "secrets") if secure else None,
    )


def local_cluster(settings: Settings, nodes: int | None = None, secure: bool | None = None) -> LocalCluster:
    """The cluster in ``STATE_DIR/cluster``: the one recorded there unless ``nodes`` is given."""
    home = settings.state_dir / "cluster"
    recorded = LocalCluster.existing(home, settings.broker_heap)
    if nodes is None and recorded is not None:
        return recorded
    return LocalCluster.layout(home, nodes or settings.broker_nodes, settings.broker_port,
                               settings.broker_controller_port, heap=settings.broker_heap,
                               secure=bool(secure) if secure is not None else (recorded.secure if recorded else False))


def _all_local(settings: Settings) -> list[tuple[str, LocalBroker]]:
    """Every local node this state directory knows: the single broker, then the cluster's."""
    found = [("broker", local_broker(settings))]
    cluster = LocalCluster.existing(settings.state_dir / "cluster", settings.broker_heap)
    if cluster is not None:
        found += [(f"node {n.node_id}", n) for n in cluster.nodes]
    return found


def ensure_local_broker(settings: Settings) -> None:
    """Start the local broker (or cluster, with RIDESTREAM_BROKER_NODES > 1) unless an existing
    cluster is configured or it already runs."""
    if settings.uses_local_broker:
        t0 = time.monotonic()
        if settings.broker_nodes > 1:
            cluster = local_cluster(settings, settings.broker_nodes)
            if cluster.start():
                out.print(f"started the local cluster on {cluster.bootstrap} in {time.monotonic() - t0:.1f}s")
            return
        broker = local_broker(settings)
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
    nodes: int = typer.Option(None, min=1, max=9, help="KRaft nodes, each broker and controller (default 1, "
                              "RIDESTREAM_BROKER_NODES); node i on port + 2(i-1)"),
    secure: bool = typer.Option(False, "--secure", help="SASL/SCRAM-SHA-512 over TLS and ACLs, one principal "
                                "per part of the fleet (`ridestream broker credentials`)"),
) -> None:
    """Start the broker (or cluster) in the background and wait until it answers."""
    from shared.kafka.settings import load_settings

    overrides = {"broker_port": port, "broker_nodes": nodes}
    settings = load_settings(**{k: v for k, v in overrides.items() if v})
    t0 = time.monotonic()
    if settings.broker_nodes > 1:
        cluster = local_cluster(settings, settings.broker_nodes, secure)
        if not cluster.start(fresh=fresh):
            out.print(f"the cluster is already running on {cluster.bootstrap}")
            return
        out.print(f"{len(cluster.ports)} nodes ready on {cluster.bootstrap} in {time.monotonic() - t0:.1f}s "
                  f"(data: {cluster.home}); other commands find them with RIDESTREAM_BROKER_NODES={len(cluster.ports)}")
        _secure_hint(cluster.secrets)
        out.print(cluster.bootstrap)
        return
    broker = local_broker(settings, secure)
    if not broker.start(fresh=fresh):
        out.print(f"the broker is already running on {broker.bootstrap} (pid {broker.pid()})")
        return
    out.print(f"broker ready on {broker.bootstrap} in {time.monotonic() - t0:.1f}s (data: {broker.data_dir})")
    _secure_hint(broker.secrets)
    out.print(broker.bootstrap)


def _secure_hint(secrets: Secrets | None) -> None:
    if secrets is not None:
        out.print(f"SASL_SSL with SCRAM-SHA-512; principals {', '.join(PRINCIPALS)}: "
                  "`eval \"$(ridestream broker credentials admin)\"` connects as the admin")


@app.command()
def stop() -> None:
    """Stop the broker and every node of the cluster: SIGTERM for a clean shutdown, SIGKILL after 30 s."""
    from shared.kafka.settings import load_settings

    stopped = [name for name, node in _all_local(load_settings()) if node.stop()]
    if not stopped:
        out.print("the broker was not running")
    else:
        out.print("broker stopped" if stopped == ["broker"] else f"stopped: {', '.join(stopped)}")


@app.command()
def status() -> None:
    """Whether the broker (and each node of the cluster) runs and answers; exit code 3 if none runs."""
    from shared.kafka.settings import load_settings

    settings = load_settings()
    running = 0
    found = _all_local(settings)
    for name, node in found:
        label = f"{name}: " if len(found) > 1 else ""  # one node: as it always printed
        pid = node.pid()
        if pid is None:
            if name == "broker" or node.home.exists():
                out.print(f"{label}stopped (data: {node.data_dir})")
            continue
        running += 1
        answering = "answering" if node.answers() else "not answering yet"
        out.print(f"{label}running, pid {pid}, {answering} on {node.bootstrap} (data: {node.data_dir})")
    cluster = LocalCluster.existing(settings.state_dir / "cluster", settings.broker_heap)
    if cluster is not None and (leader := cluster.active_controller()) is not None:
        out.print(f"active controller: node {leader}")
    if not running:
        raise typer.Exit(3)


@app.command()
def logs(
    lines: int = typer.Option(50, "-n", "--lines", help="how many of the last lines"),
    follow: bool = typer.Option(False, "-f", "--follow", help="keep printing new lines"),
    node: int = typer.Option(None, "--node", min=1, help="only this node of the cluster"),
) -> None:
    """Show the broker's log, or each node's (headed by its name)."""
    from shared.kafka.settings import load_settings

    found = [(name, b) for name, b in _all_local(load_settings()) if b.log_file.is_file()]
    if node is not None:
        found = [(name, b) for name, b in found if name == f"node {node}"]
        if not found:
            raise ConfigError(f"no log of node {node}: `ridestream broker status` lists the nodes")
    for name, b in found:
        if len(found) > 1:
            print(f"==> {name}: {b.log_file} <==")
        for line in b.tail(lines):
            print(line, end="")
    if follow and found:
        files = [(name, open(b.log_file, errors="replace")) for name, b in found]
        for _, f in files:
            f.seek(0, 2)
        while True:
            quiet = True
            for name, f in files:
                line = f.readline()
                if line:
                    quiet = False
                    print(f"{name}: {line}" if len(files) > 1 else line, end="", flush=True)
            if quiet:
                time.sleep(0.3)


@app.command()
def credentials(
    principal: str = typer.Argument(None, help="print the environment that connects as this principal, "
                                    "password included"),
) -> None:
    """The --secure broker's principals; with a name, the `export` lines to connect as it (its password too)."""
    from shared.kafka.settings import load_settings

    settings = load_settings()
    cluster = LocalCluster.existing(settings.state_dir / "cluster", settings.broker_heap)
    secrets = cluster.secrets if cluster is not None and cluster.secure else local_broker(settings).secrets
    if secrets is None or not secrets.exists():
        raise ConfigError("no --secure local broker here: start one with `ridestream broker start --secure`")
    if principal is None:
        table = Table("principal", "connects")
        for name in secrets.principals():
            table.add_row(name, f"eval \"$(ridestream broker credentials {name})\"")
        out.print(table)
        out.print(f"passwords: {secrets.passwords_file} (0600); CA: {secrets.ca_file}")
        return
    try:
        env = secrets.env(principal)
    except SecretsError as exc:
        raise ConfigError(str(exc)) from None
    for key, value in env.items():
        print(f"export {key}={value}")
