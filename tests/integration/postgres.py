"""A real PostgreSQL server for the tests: Debian's binaries, a throwaway cluster in a temporary
folder on a free port, password authentication (so the tests can check that no password is
printed). As root the server runs as the ``postgres`` user, which the Debian package creates: the
server refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from broker.local import free_port

USER, PASSWORD = "ridestream", "pg-s3cret-pw"


def server_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else Debian's versioned folder."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(folders[-1]).parent if folders else None


def missing_reason() -> str | None:
    if server_bin() is None:
        return "PostgreSQL is not installed (make test installs Debian's postgresql where it runs as root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run the server as"
    return None


@dataclass
class LocalPostgres:
    """``home`` is made here (pytest's own temporary folders are closed to other users)."""

    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ridestream-postgres-")))
    port: int = 0

    def _run(self, *args: str) -> None:
        command = [str(server_bin() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        self.port = free_port()
        pwfile = self.home / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            for path in (self.home, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        data = self.home / "data"
        self._run("initdb", "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "--encoding=UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.home / "server.log"), "-w", "-t", "60", "start",
                  "-o", f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.home / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.home, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"
