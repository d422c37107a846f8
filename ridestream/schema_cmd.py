"""``ridestream schema export``: JSON Schema files of the wire contract, for outside clients."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ridestream.console import out
from shared import PROJECT_ROOT

app = typer.Typer(help="The wire contract as JSON Schema.", no_args_is_help=True)
SCHEMA_DIR = PROJECT_ROOT / "schemas"


def contract_schemas() -> dict[str, str]:
    """File name → JSON Schema text of each message kind of the contract."""
    from pydantic import TypeAdapter

    from shared.contract.backend_state import BackendStateRecord
    from shared.contract.control import AuditRecord, DeploymentPlan, ModelQuality
    from shared.contract.events import Prediction, RideEvent
    from shared.contract.redrive import RedriveRecord
    from shared.contract.state import RideState

    docs = {
        "ride_event.schema.json": (TypeAdapter(RideEvent), "ride event", "rides.events (the key is the ride_id)"),
        "prediction.schema.json": (TypeAdapter(Prediction), "prediction",
                                   "rides.predictions.{duration,tip,cost} (and their .shadow and .backfill topics; the key is the ride_id)"),
        "deployment_plan.schema.json": (TypeAdapter(DeploymentPlan), "deployment plan",
                                        "rides.control (compacted; the key is the service)"),
        "audit_record.schema.json": (TypeAdapter(AuditRecord), "audit record", "rides.control.audit (the key is the service)"),
        "model_quality.schema.json": (TypeAdapter(ModelQuality), "model quality",
                                      "rides.model_quality (compacted; the key is service/model_version/variant/stage)"),
        "redrive_record.schema.json": (TypeAdapter(RedriveRecord), "redrive record",
                                       "rides.events.dlq.redriven (compacted; the key is the source's topic/partition/offset)"),
        "backend_state.schema.json": (TypeAdapter(BackendStateRecord), "web backend state record",
                                      "rides.backend.state (compacted; the key is the ride_id, or idempotency/KEY)"),
        "ride_state.schema.json": (TypeAdapter(RideState), "ride state",
                                   "ridestream-duration-state-changelog (compacted, partitioned like rides.events; "
                                   "the key is the ride_id, a null value forgets the ride)"),
    }
    schemas = {}
    for filename, (adapter, title, topic) in docs.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"ridestream {title}, wire contract version 1",
            "description": f"The value of a message on {topic}, as UTF-8 JSON.",
            **adapter.json_schema(),
        }
        schemas[filename] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return schemas


@app.command()
def export(out_dir: Path = typer.Option(SCHEMA_DIR, "--out", help="where to write the files")) -> None:
    """Write the JSON Schema files (schemas/ by default)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, text in contract_schemas().items():
        (out_dir / filename).write_text(text)
        out.print(f"wrote {out_dir / filename}")
