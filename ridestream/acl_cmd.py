"""``ridestream acl …``: each principal of the fleet gets exactly the topics, groups and
transactional ids it uses (:mod:`shared.kafka.acls`)."""

from __future__ import annotations

import typer
from rich.table import Table

from ridestream.console import out
from shared.kafka.acls import apply_grants, current_grants, fleet_grants
from shared.kafka.clients import ensure_reachable, make_admin
from shared.kafka.settings import load_settings

app = typer.Typer(help="Grant and list the fleet's ACLs (one principal per part of the fleet).", no_args_is_help=True)


@app.command()
def apply() -> None:
    """Create the fleet's ACLs that the cluster lacks (idempotent: a second run creates nothing).
    Connect as a principal allowed to manage ACLs (the admin)."""
    settings = load_settings()
    admin = make_admin(settings)
    ensure_reachable(admin, settings)
    created, present = apply_grants(admin, fleet_grants(settings))
    out.print(f"created {created} ACLs, {present} already there")


@app.command()
def show() -> None:
    """The fleet's ACLs as the cluster holds them, one row per principal and resource."""
    settings = load_settings()
    admin = make_admin(settings)
    ensure_reachable(admin, settings)
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for g in current_grants(admin):
        rows.setdefault((g.principal, g.resource, g.pattern, g.name), []).append(g.operation)
    table = Table("principal", "resource", "name", "pattern", "operations")
    for (principal, resource, pattern, name), ops in rows.items():
        table.add_row(principal, resource, name, pattern, ", ".join(sorted(ops)))
    out.print(table)
