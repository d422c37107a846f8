"""The Faust peer (faust-streaming): the tip model applied per batch by an agent that takes batches
with ``stream.take(max_, within=…)``, as Faust's documentation shows, and sends each prediction,
keyed by ride, to the sink topic with ``Topic.send``. Faust acknowledges an event once the agent has
taken it and commits acknowledged offsets in the background (every ``broker_commit_interval``);
its sends are buffered by its producer — Faust's defaults, as a user gets them.

It runs in its own virtualenv (see :mod:`bench.peers`), with the project's root on ``sys.path`` for
the contract and the model. One JSON argument (:mod:`bench.peers`): in ``throughput`` mode it reads
the pre-produced events until the steady window is over, prints its measure
(:func:`bench.peer_kit.report`) and stops its worker as SIGTERM does; in ``serve`` mode it runs
until SIGTERM.

    python bench/faust_app.py '{"mode": "throughput", "bootstrap": …}'
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust  # noqa: E402

from bench import peer_kit  # noqa: E402


def main(args: dict) -> None:
    model = peer_kit.tip_model()
    clock = peer_kit.window(args)
    app = faust.App(args["group"], broker=f"kafka://{args['bootstrap']}", datadir=args["datadir"],
                    web_enabled=False, consumer_auto_offset_reset="earliest")
    source = app.topic(args["source"], key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    sink = app.topic(args["sink"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state = {"done": 0, "reported": False}

    @app.agent(source)
    async def score(stream):
        async for values in stream.take(args["max_records"], within=args["max_wait_ms"] / 1000):
            if clock is not None and clock.first is None:
                clock.tick(0)
            for key, value in peer_kit.score(model, peer_kit.validated(values)):
                await sink.send(key=key, value=value)
            state["done"] += len(values)
            if clock is not None and clock.tick(state["done"]) and not state["reported"]:
                state["reported"] = True
                peer_kit.report(clock, state["done"])
                os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful stop: flush, commit, leave

    faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(peer_kit.arguments())
