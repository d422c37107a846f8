"""The FastStream peer: the tip model applied per batch through FastStream's documented batch
subscriber on its confluent-kafka backend — ``@broker.subscriber(..., batch=True, max_records=…)``
on ``faststream.confluent.KafkaBroker`` — and its batch publisher (``broker.publisher(..., batch=True)``
the handler publishing one ``KafkaPublishMessage`` per prediction, keyed by ride). The batch
publisher awaits each message's delivery, so the handler returns — and the batch is acknowledged —
after its predictions are.

It runs in its own virtualenv (see :mod:`bench.peers`), with the project's root on ``sys.path`` for
the contract and the model. One JSON argument (:mod:`bench.peers`): in ``throughput`` mode it reads
the pre-produced events until the steady window is over and prints its measure
(:func:`bench.peer_kit.report`); in ``serve`` mode it runs until SIGTERM.

    python bench/faststream_app.py '{"mode": "throughput", "bootstrap": …}'
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faststream import FastStream  # noqa: E402
from faststream.confluent import KafkaBroker, KafkaPublishMessage  # noqa: E402
from faststream.confluent.message import KafkaMessage  # noqa: E402

from bench import peer_kit  # noqa: E402


def main(args: dict) -> None:
    model = peer_kit.tip_model()
    clock = peer_kit.window(args)
    broker = KafkaBroker(args["bootstrap"])
    publisher = broker.publisher(args["sink"], batch=True)
    done = [0]

    def decoder(batch: KafkaMessage) -> list[Any]:  # the body of a batch: the values' bytes
        return peer_kit.validated(batch.body)

    @broker.subscriber(args["source"], group_id=args["group"], auto_offset_reset="earliest", batch=True,
                       max_records=args["max_records"], polling_interval=args["max_wait_ms"] / 1000, decoder=decoder)
    async def score(events: list[Any]) -> None:
        if clock is not None and clock.first is None:
            clock.tick(0)
        await publisher.publish(*(KafkaPublishMessage(value, key=key) for key, value in peer_kit.score(model, events)))
        done[0] += len(events)
        if clock is not None:
            clock.tick(done[0])

    async def measure() -> None:
        async with broker:
            await broker.start()
            deadline = time.monotonic() + args["timeout_s"]
            while not clock.over and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        peer_kit.report(clock, done[0])

    asyncio.run(FastStream(broker).run() if clock is None else measure())


if __name__ == "__main__":
    main(peer_kit.arguments())
