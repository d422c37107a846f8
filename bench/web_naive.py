"""The usual model web service, the baseline of ``ridestream bench --web``: one request, one
trip, one single-row scikit-learn ``predict`` in the request's own handler, as a course's Flask
app does it (no batching, no compiled trees). Same model artifact, same features, same uvicorn.

Run as ``python -m bench.web_naive PORT``.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from producer.web.scoring import Trip, trip_columns
from shared.ml.artifacts import build_features, load_model


def make_app() -> FastAPI:
    model = load_model("initial_duration")
    app = FastAPI()

    @app.post("/predict")
    def predict(trip: Trip) -> dict:  # a plain def: FastAPI runs it in its thread pool, like Flask's workers
        X = build_features(model.name, trip_columns([trip]))
        return {"model_version": model.version, "value": round(float(model.estimator.predict(X)[0]), 3)}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(make_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
