"""A local Kafka cluster: N KRaft nodes on this machine, each broker and controller in one JVM.

Every node is a voter of the controller quorum. The quorum is dynamic (KIP-853, ``kraft.version``
1): each node's storage is formatted with the same ``--initial-controllers`` list (node id,
controller endpoint and metadata directory id of every voter), so the three start as one quorum
at once — no node has to be started alone and the others added one by one with
``add-controller``, which needs each to catch up first — and voters can still be added or removed
later with ``kafka-metadata-quorum``. Node *i* (from 1) listens on ``port + 2(i-1)`` for clients
and ``controller_port + 2(i-1)`` for the quorum, and lives in ``home/node-i``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from broker.local import LIB_DIR, BrokerError, LocalBroker
from broker.secure import ADMIN, Secrets

_LAYOUT = "cluster.json"


def kafka_uuid() -> str:
    """A random Kafka ``Uuid`` as its tools print it (URL-safe base64, no padding, never a leading '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


@dataclass
class LocalCluster:
    home: Path
    ports: list[tuple[int, int]]  # (client port, controller port) of each node, node 1 first
    heap: str = "384m"
    host: str = "localhost"
    secure: bool = False
    lib_dir: Path = field(default=LIB_DIR)

    @classmethod
    def layout(cls, home: Path, nodes: int, port: int, controller_port: int, **kwargs) -> LocalCluster:
        return cls(home, [(port + 2 * i, controller_port + 2 * i) for i in range(nodes)], **kwargs)

    @classmethod
    def existing(cls, home: Path, heap: str = "384m") -> LocalCluster | None:
        """The cluster formatted in ``home`` before, as it was started; None if there is none."""
        try:
            recorded = json.loads((home / _LAYOUT).read_text())
        except (OSError, ValueError):
            return None
        return cls(home, [tuple(p) for p in recorded["ports"]], heap=heap, secure=recorded.get("secure", False))

    @property
    def secrets(self) -> Secrets | None:
        return Secrets(self.home / "secrets") if self.secure else None

    @property
    def nodes(self) -> list[LocalBroker]:
        recorded = self._recorded()
        quorum = tuple((i + 1, c, d) for i, ((_, c), d) in enumerate(zip(self.ports, recorded["directories"])))
        return [
            LocalBroker(self.home / f"node-{i + 1}", port=p, controller_port=c, heap=self.heap, host=self.host,
                        lib_dir=self.lib_dir, node_id=i + 1, quorum=quorum, cluster_id=recorded["cluster_id"],
                        secrets=self.secrets)
            for i, (p, c) in enumerate(self.ports)
        ]

    def node(self, node_id: int) -> LocalBroker:
        return self.nodes[node_id - 1]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{p}" for p, _ in self.ports)

    def client_config(self) -> dict[str, str]:
        """librdkafka security settings of the cluster's admin (empty unless secure)."""
        return self.secrets.client_config(ADMIN) if self.secrets else {}

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self, fresh: bool = False, timeout: float = 120.0) -> bool:
        """Start every node that is not running and wait until each answers. False if all ran."""
        if fresh:
            if any(n.is_running() for n in self._known_nodes()):
                raise BrokerError("the cluster is running: stop it before starting with --fresh")
            (self.home / _LAYOUT).unlink(missing_ok=True)
        self._record()
        launched = [(n, n.launch()) for n in self.nodes]
        for n, proc in launched:
            if proc is not None:
                n.wait_ready(proc, timeout)
        return any(proc is not None for _, proc in launched)

    def stop(self) -> bool:
        """Stop every node: SIGTERM to all at once (one by one, the last would wait out its
        controlled shutdown with no quorum left), SIGKILL after 30 s. False if none was running."""
        nodes = self._known_nodes()
        for n in nodes:
            if (pid := n.pid()) is not None:
                os.kill(pid, signal.SIGTERM)
        return any([n.stop() for n in nodes])

    def quorum_status(self) -> dict[str, int]:
        """The controller quorum's leader and epoch as the running voters recorded them last
        (``__cluster_metadata-0/quorum-state``, which a voter rewrites at every election): the
        newest epoch wins. Empty when no node runs. (The Kafka jars ridestream fetches have no
        ``kafka-metadata-quorum`` tool, and a broker's metadata answer names a random broker as
        the controller in KRaft.)"""
        best: dict[str, int] = {}
        for n in self.nodes:
            if not n.is_running():
                continue
            state = n.quorum_state()
            epoch, leader = int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))
            if leader >= 0 and epoch > best.get("epoch", -1):
                best = {"leader": leader, "epoch": epoch}
        return best

    def active_controller(self) -> int | None:
        return self.quorum_status().get("leader")

    # --- internals -----------------------------------------------------------------------------
    def _recorded(self) -> dict:
        return json.loads((self.home / _LAYOUT).read_text())

    def _record(self) -> None:
        """The cluster's id, ports, security and the voters' directory ids, kept so every later
        start (and `stop`/`status`/`logs`) finds the same cluster; other ports or security than
        the data was made with are refused."""
        path = self.home / _LAYOUT
        if path.is_file():
            recorded = self._recorded()
            if [tuple(p) for p in recorded["ports"]] != self.ports or recorded.get("secure", False) != self.secure:
                was = f"{len(recorded['ports'])} nodes on ports {', '.join(str(p) for p, _ in recorded['ports'])}" + (
                    ", --secure" if recorded.get("secure") else "")
                raise BrokerError(f"the cluster in {self.home} was made with {was}: start it the same way, "
                                  "or with --fresh to wipe it")
            return
        self.home.mkdir(parents=True, exist_ok=True)
        for i in range(len(self.ports)):
            (self.home / f"node-{i + 1}" / "cluster.json").unlink(missing_ok=True)
            shutil.rmtree(self.home / f"node-{i + 1}" / "data", ignore_errors=True)
        path.write_text(json.dumps({
            "cluster_id": kafka_uuid(), "ports": self.ports, "secure": self.secure,
            "directories": [kafka_uuid() for _ in self.ports],
        }))

    def _known_nodes(self) -> list[LocalBroker]:
        """The nodes of the cluster recorded in ``home`` (possibly of another size), for stopping."""
        if not (self.home / _LAYOUT).is_file():
            return []
        recorded = LocalCluster.existing(self.home, self.heap)
        return recorded.nodes if recorded else []
