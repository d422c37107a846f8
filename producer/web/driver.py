"""The backend's simulator playing the driver for rides requested from the rider page: it calls
the same driver endpoints a real driver app calls (start, progress, complete), through the app
itself, with the ride compressed in time (``speedup`` simulated minutes per real minute)."""

from __future__ import annotations

import asyncio
import logging
import random

import httpx
import numpy as np

from shared.data.meter import meter_fare

log = logging.getLogger("ridestream.web")


class Driver:
    def __init__(self, app, speedup: float = 60.0, steps: int = 5, max_rides: int = 1000):
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://backend")
        self.speedup = speedup
        self.steps = steps
        self.max_rides = max_rides
        self.tasks: set[asyncio.Task] = set()

    def play(self, ride_id: str, request: dict, estimate_min: float) -> bool:
        """Drive the ride in the background; False (not driven) while ``max_rides`` are on the road."""
        if len(self.tasks) >= self.max_rides:
            return False
        task = asyncio.get_running_loop().create_task(self._drive(ride_id, request, estimate_min))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _post(self, path: str, body: dict | None = None) -> None:
        r = await self.client.post(path, json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"{path}: {r.status_code} {r.text}")

    async def _drive(self, ride_id: str, request: dict, estimate_min: float) -> None:
        rng = random.Random(ride_id)
        duration = max(estimate_min, 1.0) * rng.uniform(0.75, 1.35)  # traffic the estimate did not know
        distance = float(request["trip_distance_mi"])
        minute_s = 60.0 / self.speedup  # real seconds per simulated minute
        try:
            await asyncio.sleep(rng.uniform(1.0, 2.0) * minute_s)  # the driver arrives
            await self._post(f"/v1/rides/{ride_id}/start")
            for step in range(1, self.steps + 1):
                await asyncio.sleep(duration / (self.steps + 1) * minute_s)
                elapsed = duration * step / (self.steps + 1)
                done = distance * step / (self.steps + 1)
                await self._post(f"/v1/rides/{ride_id}/progress", {
                    "elapsed_min": round(elapsed, 2), "distance_done_mi": round(done, 3),
                    "distance_left_mi": round(distance - done, 3)})
            await asyncio.sleep(duration / (self.steps + 1) * minute_s)
            fare = float(meter_fare(np.array([distance]), np.array([duration]), np.array([request["pickup_zone"]]),
                                    np.array([request["dropoff_zone"]]))[0])
            tip = round(fare * rng.choice([0.15, 0.2, 0.25]), 2) if request["payment_type"] == 1 else 0.0
            fare = round(fare, 2)
            await self._post(f"/v1/rides/{ride_id}/complete", {
                "duration_min": round(duration, 2), "fare_amount": fare, "tip_amount": tip,
                "total_amount": round(fare + tip + 3.3, 2)})  # + the usual surcharges and tax
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — one ride's driver failing is logged, never the service's problem
            log.warning("simulated driver of %s stopped: %s", ride_id, exc)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()
