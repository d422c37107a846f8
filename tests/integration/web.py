"""Helpers for web service tests: `ridestream serve` replicas as users run them, and an SSE reader."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from broker.local import free_port
from tests.integration.fleet import RIDESTREAM


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()[-3000:]


def start_server(env: dict[str, str], logs: Path, *args: str) -> Server:
    port = free_port()
    log_path = logs / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*RIDESTREAM, "serve", "--port", str(port), *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
    return Server(f"http://127.0.0.1:{port}", proc, log_path)


def wait_ready(server: Server, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"ridestream serve exited {server.proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"ridestream serve not ready within {timeout}s:\n{server.output()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)


@dataclass
class SseEvent:
    event: str
    data: dict
    id: str | None


def sse_events(lines: Iterable[str]) -> Iterator[SseEvent]:
    """The events of an SSE stream's lines: ``event:``, ``data:`` (JSON) and ``id:`` fields, an
    empty line ending each."""
    kind, data, ident = "message", [], None
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(kind, orjson.loads("\n".join(data)), ident)
            kind, data, ident = "message", [], None
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line.startswith("id:"):
            ident = line[3:].strip()


@dataclass
class SseReader:
    """Reads an SSE stream in a thread, so a test can act while events arrive."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[SseEvent] = field(default_factory=list)
    status: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _response: httpx.Response | None = None

    def start(self) -> SseReader:
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            self._stream()
        except (httpx.HTTPError, RuntimeError, OSError, AttributeError):
            pass  # closed under it: the disconnect the test asked for

    def _stream(self) -> None:
        with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(5, read=30)) as r:
            self._response = r
            self.status = r.status_code
            if r.status_code != 200:
                return
            for event in sse_events(r.iter_lines()):
                if self._stop.is_set():
                    return
                self.events.append(event)

    def predictions(self) -> list[dict]:
        return [e.data for e in list(self.events) if e.event == "prediction"]

    def wait(self, condition: Callable[[list[dict]], bool], timeout: float = 90) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self.predictions()):
                return True
            time.sleep(0.2)
        return condition(self.predictions())

    def close(self) -> None:
        """Disconnect: the server sees the connection go."""
        self._stop.set()
        if self._response is not None:
            self._response.close()
        if self._thread is not None:
            self._thread.join(10)


def read_sse(url: str, until: Callable[[list[dict]], bool], headers: dict[str, str] | None = None,
             timeout: float = 90) -> list[SseEvent]:
    """Read an SSE stream in this thread until ``until(predictions so far)``, then disconnect."""
    events: list[SseEvent] = []
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, headers=headers or {}, timeout=httpx.Timeout(5, read=30)) as r:
        assert r.status_code == 200, r.read()
        for event in sse_events(r.iter_lines()):
            events.append(event)
            if until([e.data for e in events if e.event == "prediction"]):
                return events
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"the stream at {url} did not give what was expected within {timeout}s: {events}")
