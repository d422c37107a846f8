"""SSE fan-out: one Kafka follower per replica hands each prediction to the clients that follow
its ride (and to every ``/v1/stream`` client), without ever waiting for a client.

Each client has a bounded queue of frames. A client too slow to take them is never waited for:
a ride's follower loses its queue and resyncs from the ride's predictions held in the table
(:meth:`producer.web.table.RideTable.since`, so it misses nothing the table holds); an operator
stream is closed (its client reconnects). A disconnect removes the client and what it held.
"""

from __future__ import annotations

import asyncio
from collections import deque

from producer.web.table import Cursor, Landed


class Client:
    """One SSE connection: ``ride_id`` None follows every ride."""

    def __init__(self, ride_id: str | None, max_queue: int, cursor: Cursor | None = None):
        self.ride_id = ride_id
        self.max_queue = max_queue
        self.pending: deque[Landed] = deque()
        self.stages: deque[bytes] = deque(maxlen=16)  # the ride's stage changes, newest kept
        self.cursor = cursor  # what this ride's client has been sent, per service
        self.wake = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def offer(self, landed: Landed) -> bool:
        """Queue a prediction at once; False if the queue was full (then it is emptied and flagged)."""
        if len(self.pending) >= self.max_queue:
            self.pending.clear()
            self.overflowed = True
            self.wake.set()
            return False
        self.pending.append(landed)
        self.wake.set()
        return True


class Hub:
    def __init__(self, max_queue: int = 256):
        self.max_queue = max_queue
        self.by_ride: dict[str, set[Client]] = {}
        self.everything: set[Client] = set()
        self.overflows = 0
        self.delivered = 0

    @property
    def clients(self) -> int:
        return len(self.everything) + sum(len(c) for c in self.by_ride.values())

    def join(self, ride_id: str | None, cursor: Cursor | None = None) -> Client:
        client = Client(ride_id, self.max_queue, cursor)
        if ride_id is None:
            self.everything.add(client)
        else:
            self.by_ride.setdefault(ride_id, set()).add(client)
        return client

    def leave(self, client: Client) -> None:
        client.closed = True
        client.pending.clear()
        client.stages.clear()
        if client.ride_id is None:
            self.everything.discard(client)
            return
        followers = self.by_ride.get(client.ride_id)
        if followers is not None:
            followers.discard(client)
            if not followers:
                del self.by_ride[client.ride_id]

    def dispatch(self, ride_id: str, landed: Landed) -> None:
        """Hand one prediction to its followers; never blocks."""
        for client in self.by_ride.get(ride_id, ()):
            if client.offer(landed):
                self.delivered += 1
            else:
                self.overflows += 1
        if self.everything:
            for client in list(self.everything):
                if client.offer(landed):
                    self.delivered += 1
                else:
                    self.overflows += 1
                    client.closed = True  # the operator's stream does not resync: it reconnects
