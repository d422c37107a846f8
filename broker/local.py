"""Run Apache Kafka (KRaft) nodes as background JVM processes: one node, or one of a cluster's
(:mod:`broker.cluster`), plain or ``--secure`` (:mod:`broker.secure`).

The jars come from Maven Central through ``broker/pom.xml`` into ``broker/lib/`` (ignored by git),
once. Each broker lives in a *home* directory holding its data, generated ``server.properties``,
log file and pid file, so a stop/start keeps every topic and offset, and several brokers (the
developer's and a test session's) can run side by side on different ports.

This module imports nothing from the rest of ridestream: the CLI and the test fixtures drive it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from broker.errors import BrokerError
from broker.secure import ADMIN, Secrets

__all__ = ["BrokerError", "LocalBroker", "fetch_jars", "free_port", "port_is_free"]

BROKER_DIR = Path(__file__).resolve().parent
POM = BROKER_DIR / "pom.xml"
LIB_DIR = BROKER_DIR / "lib"
_LIB_STAMP = ".pom-sha256"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise BrokerError(
            "java not found: install a JDK 17+ (e.g. `apt-get install openjdk-17-jre-headless`) "
            "or set JAVA_HOME, or point KAFKA_BOOTSTRAP_SERVERS at an existing cluster"
        )
    return found


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_ready(lib_dir: Path = LIB_DIR) -> bool:
    stamp = lib_dir / _LIB_STAMP
    return stamp.is_file() and stamp.read_text().strip() == _pom_digest()


def fetch_jars(lib_dir: Path = LIB_DIR, quiet: bool = True) -> bool:
    """Download Kafka and its runtime dependencies with Maven, unless ``lib_dir`` already holds
    the jars of the current pom. Returns True when it downloaded."""
    if jars_ready(lib_dir):
        return False
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            "mvn not found: install Maven (e.g. `apt-get install maven`) so ridestream can fetch "
            "the Kafka jars, or point KAFKA_BOOTSTRAP_SERVERS at an existing cluster"
        )
    staging = lib_dir.with_name(lib_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-B", *(["-q"] if quiet else []), "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]
    proc = subprocess.run(cmd, capture_output=quiet, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout or "").strip().splitlines()[-1:] if quiet else []
        raise BrokerError(
            "Maven could not fetch the Kafka jars"
            + (f" ({tail[0].strip()})" if tail else "")
            + ": check the network access to Maven Central and ~/.m2/settings.xml"
        )
    (staging / _LIB_STAMP).write_text(_pom_digest())
    shutil.rmtree(lib_dir, ignore_errors=True)
    staging.rename(lib_dir)
    return True


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for test brokers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LocalBroker:
    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    host: str = "localhost"
    lib_dir: Path = field(default=LIB_DIR)
    node_id: int = 1
    # a cluster's controller quorum: (node id, controller port, metadata directory id) of each
    # voter; empty for one node, which formats itself as the quorum's only voter (--standalone)
    quorum: tuple[tuple[int, int, str], ...] = ()
    cluster_id: str | None = None  # a cluster's nodes share one; one node makes its own
    secrets: Secrets | None = None  # --secure: SASL_SSL for clients, an authorizer

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def _cluster_file(self) -> Path:
        return self.home / "cluster.json"

    # --- state -------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of this home's running broker, or None (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if str(self.config_file).encode() in cmdline else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def answers(self, timeout: float = 2.0) -> bool:
        """True when the broker answers a metadata request on its bootstrap address."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0, **self.client_config()})
        try:
            admin.list_topics(timeout=timeout)
            return True
        except Exception:
            return False

    def quorum_state(self) -> dict:
        """What this node last recorded of the controller quorum (``leaderId``, ``leaderEpoch``…):
        a voter rewrites ``__cluster_metadata-0/quorum-state`` at every election it sees."""
        try:
            return json.loads((self.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
        except (OSError, ValueError):
            return {}

    def client_config(self) -> dict[str, str]:
        """librdkafka security settings of this broker's own admin (empty unless --secure)."""
        return self.secrets.client_config(ADMIN) if self.secrets else {}

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, fresh: bool = False, timeout: float = 90.0) -> bool:
        """Start the broker in the background and wait until it answers metadata.

        Returns False (and does nothing) when it is already running.
        """
        proc = self.launch(fresh)
        if proc is None:
            return False
        self.wait_ready(proc, timeout)
        return True

    def launch(self, fresh: bool = False) -> subprocess.Popen | None:
        """Format the storage on first use and start the JVM, without waiting (a cluster's node
        cannot answer before a majority of the quorum runs). None when it is already running."""
        if self.is_running():
            if fresh:
                raise BrokerError("the broker is running: stop it before starting with --fresh")
            return None
        java = _java()
        if fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._cluster_file.unlink(missing_ok=True)
        for p in (self.port, self.controller_port):
            if not port_is_free(self.host, p):
                raise BrokerError(
                    f"port {p} is taken by another process: stop it, or choose other ports "
                    "(RIDESTREAM_BROKER_PORT / RIDESTREAM_BROKER_CONTROLLER_PORT)"
                )
        fetch_jars(self.lib_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        if self.secrets:
            self.secrets.ensure(self.host)
        self._write_config()
        self._format_storage(java)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [java, *self._jvm_args(), "kafka.Kafka", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal does not reach the broker
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 90.0) -> None:
        """Wait until the launched broker answers metadata; a one-line error if it exits or does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"the broker exited during start ({self._last_error() or f'exit code {proc.returncode}'}); "
                    f"full log: {self.log_file}"
                )
            if self.answers(timeout=1.0):
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerError(
            f"the broker did not answer on {self.bootstrap} within {timeout:g}s; see {self.log_file}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM (a clean shutdown), then SIGKILL after ``timeout``. False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.1)
        if self._alive(pid):
            os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would (used by failure tests)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.05)
            self.pid_file.unlink(missing_ok=True)

    def tail(self, lines: int = 50) -> list[str]:
        if not self.log_file.is_file():
            return []
        with open(self.log_file, errors="replace") as f:
            return list(deque(f, maxlen=lines))

    # --- internals ---------------------------------------------------------------------------
    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def _jvm_args(self) -> list[str]:
        return [
            f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={BROKER_DIR / 'log4j2.properties'}",
            "-cp", f"{self.lib_dir}/*",
        ]

    def _write_config(self) -> None:
        template = Template((BROKER_DIR / "server.properties").read_text())
        replicas = min(3, len(self.quorum)) if self.quorum else 1
        voters = [port for _, port, _ in self.quorum] or [self.controller_port]
        text = template.substitute(
            host=self.host, port=self.port, controller_port=self.controller_port,
            data_dir=self.data_dir, node_id=self.node_id,
            quorum_bootstrap=",".join(f"{self.host}:{p}" for p in voters),
            listener="SASL_SSL" if self.secrets else "PLAINTEXT",
            controller_protocol="SASL_PLAINTEXT" if self.secrets else "PLAINTEXT",
            replicas=replicas, min_isr=min(2, replicas),
        )
        if self.secrets:  # it holds the broker's password: the user's only
            text += "\n" + self.secrets.server_properties()
            self.config_file.touch(mode=0o600)
            os.chmod(self.config_file, 0o600)
        self.config_file.write_text(text)

    def _format_storage(self, java: str) -> None:
        """Format the data directory on first use; refuse a data directory formatted for another
        controller port, since the KRaft voter set records it, or with other security, since the
        SCRAM credentials are written when the storage is formatted."""
        secure = self.secrets is not None
        if (self.data_dir / "meta.properties").is_file():
            recorded = json.loads(self._cluster_file.read_text()) if self._cluster_file.is_file() else {}
            if recorded.get("controller_port", self.controller_port) != self.controller_port:
                raise BrokerError(
                    f"the data in {self.data_dir} belongs to a broker with controller port "
                    f"{recorded['controller_port']}: use that port, or start with --fresh to wipe it"
                )
            if recorded.get("secure", False) != secure:
                was = "with --secure" if recorded.get("secure") else "without --secure"
                raise BrokerError(f"the data in {self.data_dir} was made {was}: start it the same way, "
                                  "or with --fresh to wipe it")
            return
        tool = [java, *self._jvm_args(), "kafka.tools.StorageTool"]
        cluster_id = self.cluster_id or subprocess.run(
            [*tool, "random-uuid"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if self.quorum:  # every voter is formatted with the same initial quorum (KIP-853)
            voters = ",".join(f"{node}@{self.host}:{port}:{directory}" for node, port, directory in self.quorum)
            quorum = ["--initial-controllers", voters]
        else:
            quorum = ["--standalone"]
        scram = self.secrets.scram_args() if self.secrets else []
        proc = subprocess.run(
            [*tool, "format", *quorum, "-t", cluster_id, "-c", str(self.config_file), *scram],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            reason = _redact(detail[0], self.secrets) if detail else proc.returncode
            raise BrokerError(f"formatting the broker storage failed: {reason}")
        self._cluster_file.write_text(json.dumps(
            {"cluster_id": cluster_id, "controller_port": self.controller_port, "secure": secure}
        ))

    def _last_error(self) -> str | None:
        for line in reversed(self.tail(200)):
            if " ERROR " in line or "Exception" in line:
                return _redact(line.strip()[:300], self.secrets)
        return None


def _redact(line: str, secrets: Secrets | None) -> str:
    """``line`` without any of the generated passwords (a tool's error may echo its arguments)."""
    if secrets is not None:
        for name in secrets.principals():
            line = line.replace(secrets.password(name), "***")
    return line
