"""The peers: other Python stream processors applying the tip model to the same events on the same
broker, each an application of its own (``bench/*_app.py``) run in a virtualenv the bench makes on
first use under the state directory, one per peer with its own pins. Each peer's library pins
other versions of the Kafka client or pydantic than ridestream does, so none shares the project's
environment; the model's libraries (scikit-learn, numpy, pandas, joblib, orjson, msgspec, and
pydantic for the contract where the peer allows it) are installed at the project's own versions, so
the same artifact loads and ``shared`` imports.

* ``quix`` — Quix Streams, one message at a time (:mod:`bench.quix_app`);
* ``faststream`` — FastStream's batch subscriber on its confluent-kafka backend (:mod:`bench.faststream_app`);
* ``faust`` — faust-streaming, an agent taking batches with ``stream.take`` (:mod:`bench.faust_app`).

The batched peers run in two ways: over the pre-produced events for a steady window sized by time
(:func:`throughput`, the same :class:`~bench.window.SteadyWindow` as the in-process loops), and as a
long-running service on a namespace's contract topics for the latency phase (:func:`starter`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path

from bench.loops import Measure, topic_size
from shared.contract.topics import TopicSpec, create_topics
from shared.kafka.clients import make_admin
from shared.kafka.settings import Settings

HERE = Path(__file__).resolve().parent
MODEL_PINS = ("scikit-learn", "scipy", "numpy", "pandas", "joblib", "orjson", "msgspec")
CONTRACT_PINS = ("pydantic", "pydantic-core", "pydantic-settings")


@dataclass(frozen=True)
class Peer:
    name: str  # the loop's key in the results
    title: str
    requirements: tuple[str, ...]  # the peer's own packages, pinned
    app: Path
    batched: bool
    contract_pins: bool = True  # pydantic at the project's version (quixstreams pins an older one)
    more_pins: tuple[str, ...] = ()  # more of the project's libraries, at its versions, that ``shared`` needs

    def pins(self) -> list[str]:
        own = MODEL_PINS + (CONTRACT_PINS if self.contract_pins else ()) + self.more_pins
        return [*self.requirements, *(f"{p}=={version(p)}" for p in own)]


QUIX = Peer("quix", "Quix Streams", ("quixstreams==3.28.1",), HERE / "quix_app.py", batched=False, contract_pins=False)
FASTSTREAM = Peer("faststream", "FastStream", ("faststream[confluent]==0.7.8",), HERE / "faststream_app.py", batched=True)
# aiokafka (Faust's client) reads the LZ4-compressed batches ridestream's producer writes with its lz4 extra
FAUST = Peer("faust", "Faust", ("faust-streaming==0.15.3", "aiokafka[lz4]==0.14.0", "cramjam==2.14.0"), HERE / "faust_app.py", batched=True,
             more_pins=("confluent-kafka",))  # Faust's client is aiokafka; the contract's topics module imports it
BATCHED = (FASTSTREAM, FAUST)


class PeerUnavailable(RuntimeError):
    """A peer's virtualenv could not be made (no package index reachable, …)."""


class PeerFailed(RuntimeError):
    """A peer's application did not finish its run; the message carries the end of its output."""


def ensure_venv(settings: Settings, peer: Peer) -> Path:
    """The peer's interpreter, making its virtualenv (once; a minute or two) when missing or
    when its pins changed."""
    pins = peer.pins()
    venv = settings.state_dir / f"bench-{peer.name}-venv"
    python, marker = venv / "bin" / "python", venv / ".installed"
    if marker.is_file() and marker.read_text() == "\n".join(pins):
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise PeerUnavailable(f"could not make the {peer.title} virtualenv in {venv}: "
                              f"{(exc.stderr or '').strip().splitlines()[-1:] or exc}") from None
    marker.write_text("\n".join(pins))
    return python


def _group(settings: Settings, peer: Peer) -> str:
    return f"{settings.namespace}bench-{peer.name}-{uuid.uuid4().hex[:6]}"


def _sink(settings: Settings, source: str, peer: Peer, partitions: int) -> str:
    sink = f"{source}.{peer.name}-{uuid.uuid4().hex[:6]}"
    create_topics(make_admin(settings), [TopicSpec(sink, partitions)])
    return sink


def per_message(settings: Settings, peer: Peer, python: Path, source: str, partitions: int, n: int,
                max_seconds: float) -> Measure:
    """One run of a per-message peer (Quix Streams) over the pre-produced events, bounded to ``n``
    events and ``max_seconds``, with its own group and sink."""
    sink, group = _sink(settings, source, peer, partitions), _group(settings, peer)
    out = _run(peer, [str(python), str(peer.app), settings.bootstrap, source, sink, group, str(n), str(max_seconds)],
               max_seconds + 180)
    return Measure(int(out["events"]), float(out["seconds"]))


def throughput(settings: Settings, peer: Peer, python: Path, source: str, partitions: int, total: int,
               warmup_s: float, window_s: float, timeout: float = 300) -> Measure:
    """One run of a batched peer over the ``total`` pre-produced events in ``source``: its own group
    and sink, the steady window of ``window_s`` after ``warmup_s`` timed inside the application.
    Every event it reports done must have its prediction on the sink."""
    sink, group = _sink(settings, source, peer, partitions), _group(settings, peer)
    args = {"mode": "throughput", "bootstrap": settings.bootstrap, "source": source, "sink": sink, "group": group,
            "total": total, "warmup_s": warmup_s, "window_s": window_s, "timeout_s": timeout,
            "datadir": str(settings.state_dir / f"bench-{peer.name}-data"), **_batching(settings)}
    out = _run(peer, [str(python), str(peer.app), json.dumps(args)], timeout + 120)
    produced = topic_size(settings, sink)
    if produced < out["done"]:
        raise PeerFailed(f"{peer.title} reported {out['done']:,} events done, but {produced:,} predictions are on "
                         f"its sink {sink}")
    return Measure(int(out["events"]), float(out["seconds"]), full_window=bool(out["full"]))


def _batching(settings: Settings, max_wait_ms: int | None = None) -> dict[str, int]:
    """A batched peer takes batches as ridestream's runtime does: up to its batch size, waiting up
    to its batch wait for them."""
    return {"max_records": settings.batch_size, "max_wait_ms": max_wait_ms or settings.batch_max_wait_ms}


def _run(peer: Peer, command: list[str], timeout: float) -> dict:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PeerFailed(f"{peer.title} did not finish in {timeout:.0f} s: {_tail(exc.stderr)}") from None
    if done.returncode != 0:
        raise PeerFailed(f"{peer.title} exited with {done.returncode}: {_tail(done.stderr)}")
    for line in reversed(done.stdout.splitlines()):  # its JSON line (Faust's console may prefix it with escapes)
        try:
            return json.loads(line[line.index("{"):])
        except ValueError:
            continue
    raise PeerFailed(f"{peer.title} printed no measure: {_tail(done.stdout)} {_tail(done.stderr)}")


def _tail(stderr: str | bytes | None) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    return " | ".join(text.strip().splitlines()[-3:]) or "no output"


def starter(peer: Peer, python: Path):
    """A ``start`` for :func:`bench.fleet.latency`: the peer as a service on the namespace's contract
    topics (``rides.events`` → ``rides.predictions.tip``), with the batch wait the bench gives
    ridestream's own process there (``RIDESTREAM_BATCH_MAX_WAIT_MS`` of :func:`bench.fleet._service_env`)."""
    return partial(_serve, peer, python)


def _serve(peer: Peer, python: Path, scoped: Settings, n: int = 1, service: str = "tip") -> list[subprocess.Popen]:
    from bench.fleet import _service_env

    wait = int(_service_env(scoped)["RIDESTREAM_BATCH_MAX_WAIT_MS"])
    procs = []
    for _ in range(n):
        args = {"mode": "serve", "bootstrap": scoped.bootstrap, "source": scoped.topics.events,
                "sink": scoped.topics.predictions(service), "group": _group(scoped, peer), **_batching(scoped, wait),
                "datadir": str(scoped.state_dir / f"bench-{peer.name}-data")}
        procs.append(subprocess.Popen([str(python), str(peer.app), json.dumps(args)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
    return procs
