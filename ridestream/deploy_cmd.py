"""``ridestream deploy …``: roll a model version out in the running fleet, through the deployment
plan on ``rides.control`` that every replica follows (docs/deployments.md)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from ridestream.console import out
from shared.errors import RidestreamError

if TYPE_CHECKING:  # annotations only: the command line imports these when a command runs
    from shared.contract.control import DeploymentPlan
    from shared.kafka.settings import Settings

app = typer.Typer(help="Roll model versions out in the running fleet: canary, shadow, A/B; promote, roll back.",
                  no_args_is_help=True)

SERVICE_ARG = typer.Argument(..., help="duration, tip or cost")
VERSION_OPT = typer.Option(..., "--version", help="the candidate: VERSION, or NAME=VERSION for the duration service")


class DeployError(RidestreamError):
    """A deployment command that cannot be carried out as asked."""


def _service(service: str) -> str:
    from shared.contract.topics import SERVICES

    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
    return service


def _duration_s(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: expected a duration such as 90s, 10m or 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _steps(text: str) -> list[float]:
    try:
        steps = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected percentages such as 5,25,50,100") from None
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(steps):
        raise typer.BadParameter(f"{text!r}: steps are rising percentages in (0, 100], such as 5,25,50,100")
    return steps


def _connect() -> Settings:
    from shared.contract.topics import create_topics
    from shared.kafka.clients import ensure_reachable, make_admin
    from shared.kafka.settings import load_settings

    settings = load_settings()
    admin = make_admin(settings)
    ensure_reachable(admin, settings)
    names = {settings.topics.control, settings.topics.control_audit, settings.topics.model_quality}
    create_topics(admin, [s for s in settings.topic_specs() if s.name in names])
    return settings


def _stable_versions(service: str, current: DeploymentPlan | None) -> dict[str, str]:
    """What serves now: the plan in force, else each model's champion in the model store."""
    from consumers.services import SERVICE_SPECS
    from shared.ml.artifacts import resolve

    if current is not None:
        return dict(current.stable)
    spec = SERVICE_SPECS[service]
    return {name: resolve(name).name for name in spec.model_names}


def _begin(service: str, strategy: str, version: list[str], **options) -> tuple[Settings, DeploymentPlan]:
    from consumers.control import ControlWriter, latest_plans
    from consumers.rollout import start_plan
    from consumers.services import SERVICE_SPECS, choose_versions
    from shared.contract.topics import create_topics
    from shared.kafka.clients import make_admin
    from shared.ml.artifacts import load_model
    from shared.ml.registry import resolve_version

    service = _service(service)
    settings = _connect()
    current = latest_plans(settings).get(service)
    if current is not None and current.state == "active":
        raise DeployError(f"{service} already has an active {current.strategy} plan ({current.plan_id}): "
                          f"`ridestream deploy promote {service}` or `ridestream deploy rollback {service}` first")
    stable = _stable_versions(service, current)
    chosen = choose_versions(SERVICE_SPECS[service], version)
    for name, v in chosen.items():
        if "/" in v:
            raise DeployError(f"{v}: a deployment names a version in the model store, not a folder "
                              "(every replica loads it from its own store)")
        chosen[name] = resolve_version(name, v)  # an alias moves; the plan keeps what it names now
        load_model(name, chosen[name])  # refused here with its reason before any replica sees it
    candidate = {**stable, **chosen}
    if candidate == stable:
        raise DeployError(f"{service} already serves {', '.join(f'{n} {v}' for n, v in sorted(stable.items()))}")
    if strategy == "shadow":
        admin = make_admin(settings)
        create_topics(admin, [settings.shadow_spec(service)])
    plan = start_plan(service, strategy, stable, candidate, current, **options)
    writer = ControlWriter(settings, "cli")
    writer.plan(plan, "plan", f"{strategy} of {', '.join(f'{n} {v}' for n, v in sorted(chosen.items()))}")
    writer.close()
    out.print(f"{service}: plan {plan.plan_id} in force — {_summary(plan)}")
    return settings, plan


@app.command()
def canary(
    service: str = SERVICE_ARG, version: list[str] = VERSION_OPT,
    steps: str = typer.Option("5,25,50,100", help="the candidate's share of rides at each step, in %"),
    interval: str = typer.Option("10m", help="how long each step is held and judged (90s, 10m, 1h)"),
    max_mae_ratio: float = typer.Option(1.10, help="roll back when the candidate's online MAE exceeds the stable's by this factor"),
    min_samples: int = typer.Option(200, help="judged rides per side before any decision"),
) -> None:
    """A share of rides (sticky per ride) to the candidate, stepped up while online MAE holds."""
    _begin(service, "canary", version, steps=_steps(steps), interval_s=_duration_s(interval),
           max_mae_ratio=max_mae_ratio, min_samples=min_samples)


@app.command()
def shadow(service: str = SERVICE_ARG, version: list[str] = VERSION_OPT) -> None:
    """The candidate scores every event beside the stable, to rides.predictions.SERVICE.shadow only."""
    _begin(service, "shadow", version)


@app.command()
def ab(
    service: str = SERVICE_ARG, version: list[str] = VERSION_OPT,
    share: float = typer.Option(50.0, min=0.0, max=100.0, help="riders in B (the candidate), in %"),
    min_samples: int = typer.Option(200, help="judged rides per variant before a verdict"),
) -> None:
    """Riders split by a salted hash of rider_id (else ride_id): A the stable, B the candidate."""
    _begin(service, "ab", version, share=share, min_samples=min_samples)


@app.command()
def rolling(
    service: str = SERVICE_ARG, version: list[str] = VERSION_OPT,
    timeout: str = typer.Option("2m", help="longest wait for one replica to swap before everything rolls back"),
) -> None:
    """Move the replicas to the candidate one at a time, each seen healthy before the next; then promote."""
    from consumers.control import ControlWriter
    from consumers.rollout import roll

    settings, plan = _begin(service, "rolling", version)
    writer = ControlWriter(settings, "cli")
    try:
        done = roll(settings, plan, writer.plan, lambda text: out.print(f"{service}: {text}"), _duration_s(timeout))
        if done.state == "promoted":
            from shared.ml.registry import set_alias

            for name, v in done.stable.items():
                set_alias(name, "champion", v)
    finally:
        writer.close()
    out.print(f"{service}: plan {done.plan_id} — {_summary(done)}")
    if done.state != "promoted":
        raise typer.Exit(1)


@app.command()
def bluegreen(service: str = SERVICE_ARG, version: list[str] = VERSION_OPT) -> None:
    """A second full set of replicas (the idle colour) runs the candidate warm on the same events;
    `deploy switch` makes it live."""
    settings, plan = _begin(service, "bluegreen", version)
    live = plan.live
    idle = "green" if live == "blue" else "blue"
    group = settings.group_id(service, idle)
    out.print(f"{service}: {live} is live; start the {idle} replicas (group {group}): "
              f"ridestream consume {service} --colour {idle}; then ridestream deploy switch {service}")


@app.command()
def switch(
    service: str = SERVICE_ARG,
    timeout: str = typer.Option("1m", help="longest wait for the live colour's replicas to stop and report"),
) -> None:
    """Make the idle colour live (and, run again, switch back) at a cut-over both colours agree on:
    every event answered once across the switch."""
    from consumers.control import ControlWriter, latest_plans
    from consumers.rollout import AuditTail, group_replicas, switched, switching

    service = _service(service)
    settings = _connect()
    current = latest_plans(settings).get(service)
    if current is None or current.strategy != "bluegreen" or current.state != "active":
        raise DeployError(f"{service} has no active blue/green plan: `ridestream deploy bluegreen {service} --version V`")
    old = current.live or "blue"
    new = "green" if old == "blue" else "blue"
    writer = ControlWriter(settings, "cli")
    tail = AuditTail(settings)
    try:
        stop = switching(current, f"switching from {old} to {new}")
        old_group = settings.group_id(service, old)
        replicas = group_replicas(settings, service, group=old_group)
        writer.plan(stop, "switch")
        out.print(f"{service}: {old} stops answering ({len(replicas)} replicas)…")
        reports: dict[str, dict[str, int]] = {}

        def reported(record) -> bool:
            if record.action == "cutover" and record.plan_id == stop.plan_id:
                reports[record.actor] = record.detail.get("offsets", {})
            return all(f"replica {r}" in reports for r in replicas)

        if not tail.wait(reported, _duration_s(timeout)):
            missing = [r for r in replicas if f"replica {r}" not in reports]
            resumed = switched(stop, old, dict(current.cutover), f"switch abandoned: {', '.join(missing)} did not stop")
            writer.plan(resumed, "switch")
            raise DeployError(f"{', '.join(missing)} of {old} did not report within {timeout}: {old} stays live")
        cutover = _cutover(settings, old_group, reports)
        live = switched(stop, new, cutover, f"{new} is live from the offsets where {old} stopped")
        writer.plan(live, "switch", cutover=cutover)
    finally:
        tail.close()
        writer.close()
    out.print(f"{service}: {new} is live from {cutover}")


def _cutover(settings: Settings, group: str, reports: dict[str, dict[str, int]]) -> dict[str, int]:
    """Each partition's offset where the stopped colour's answers end: what its replicas reported,
    and for a partition none of them held, the group's committed offset (0 if it never committed)."""
    from confluent_kafka import TopicPartition

    from shared.kafka.clients import make_consumer

    cutover = {p: o for offsets in reports.values() for p, o in offsets.items()}
    topic = settings.topics.events
    consumer = make_consumer(settings, group)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        missing = [TopicPartition(topic, p) for p in partitions if str(p) not in cutover]
        for tp in consumer.committed(missing, timeout=10) if missing else []:
            cutover[str(tp.partition)] = max(tp.offset, 0)
    finally:
        consumer.close()
    return cutover


def _end(service: str, action: str) -> None:
    from consumers.control import ControlWriter, latest_plans
    from consumers.rollout import promoted, rolled_back

    service = _service(service)
    settings = _connect()
    current = latest_plans(settings).get(service)
    if current is None or current.state != "active":
        raise DeployError(f"{service} has no active plan to {action}")
    if current.strategy == "bluegreen":
        serves = current.colours.get(current.live or "blue")
        wanted = current.candidate if action == "promote" else current.stable
        if serves != wanted:
            raise DeployError(f"the live colour ({current.live or 'blue'}) does not serve the "
                              f"{'candidate' if action == 'promote' else 'stable'}: "
                              f"`ridestream deploy switch {service}` first")
    writer = ControlWriter(settings, "cli")
    if action == "promote":
        from shared.ml.registry import set_alias

        plan = promoted(current, "promoted by hand")
        for name, version in plan.stable.items():  # checked here first: a refusal leaves the plan as it is
            set_alias(name, "champion", version)
        writer.plan(plan, "promote")
    else:
        plan = rolled_back(current, "rolled back by hand")
        writer.plan(plan, "rollback")
    writer.close()
    out.print(f"{service}: plan {plan.plan_id} — {_summary(plan)}")


@app.command()
def promote(service: str = SERVICE_ARG) -> None:
    """End the plan with the candidate serving every rider; its champion alias moves."""
    _end(service, "promote")


@app.command()
def rollback(service: str = SERVICE_ARG) -> None:
    """End the plan with the stable serving every rider, at once (it never stopped being loaded)."""
    _end(service, "rollback")


@app.command()
def history(service: str = SERVICE_ARG, reports: bool = typer.Option(False, help="also the replicas' periodic reports")) -> None:
    """Every plan change and decision for SERVICE, oldest first (rides.control.audit)."""
    from consumers.control import audit_history

    service = _service(service)
    settings = _connect()
    table = Table("time", "plan", "action", "actor", "reason")
    for record in audit_history(settings, service):
        if record.action == "report" and not reports:
            continue
        table.add_row(record.at.strftime("%Y-%m-%d %H:%M:%S"), str(record.plan_id), record.action, record.actor,
                      record.reason or _detail(record.detail))
    out.print(table)


@app.command()
def status(
    service: str = typer.Argument(None, help="one service (default: all)"),
    watch: bool = typer.Option(False, "--watch", help="refresh every 2 s until Ctrl-C"),
) -> None:
    """The plan in force per service, the share each variant really served, online MAE and
    samples per variant, and the analysis so far."""
    from shared.contract.topics import SERVICES

    services = [_service(service)] if service else list(SERVICES)
    settings = _connect()
    if not watch:
        out.print(_status(settings, services))
        return
    with Live(_status(settings, services), console=out, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(2)
                live.update(_status(settings, services))
        except KeyboardInterrupt:
            pass


def _status(settings: Settings, services: list[str]) -> Group:
    from consumers.analysis import Stats, ab_verdict, canary_verdict
    from consumers.control import audit_history, latest_plans, read_to_end
    from consumers.rollout import judged_model
    from consumers.services import SERVICE_SPECS
    from shared.contract.control import ModelQuality

    plans = latest_plans(settings)
    quality: dict[str, ModelQuality] = {}
    for msg in read_to_end(settings, settings.topics.model_quality):
        if msg.value():
            try:
                q = ModelQuality.model_validate_json(msg.value())
            except ValueError:
                continue
            quality[q.key] = q
    audit = audit_history(settings)
    tables = []
    for service in services:
        plan = plans.get(service)
        title = f"{service}: " + (_summary(plan) if plan else "no plan — each model's champion serves")
        table = Table("variant", "model", "version", "share served", "online MAE", "samples", "stage", title=title,
                      title_justify="left")
        served = _served(audit, service, plan.plan_id if plan else -1)
        total = sum(served.values())

        def share(variant: str) -> str:
            return f"{100 * served.get(variant, 0) / total:.1f} %" if total else "—"  # no replica report yet

        rows = []
        if plan is not None and plan.state == "active":
            model, stable_v, cand_v, stage = judged_model(plan)
            sides = {"canary": ("stable", "candidate"), "ab": ("a", "b"), "shadow": ("stable", "shadow"),
                     "rolling": ("stable", "candidate")}
            left, right = sides.get(plan.strategy or "", ("stable", "candidate"))
            figures = {}
            for variant, version in ((left, stable_v), (right, cand_v)):
                q = quality.get(f"{service}/{version}/{variant}/{stage}")
                figures[variant] = Stats(q.n, q.mae, q.sd) if q else Stats(0, 0.0, 0.0)
                rows.append((variant, model, version, share(variant),
                             f"{q.mae:.3f}" if q else "—", str(q.n) if q else "0", stage))
            if plan.strategy == "canary":
                verdict, reason = canary_verdict(figures[left], figures[right], plan.min_samples, plan.max_mae_ratio)
                decision = f"analysis: {verdict} — {reason}"
            elif plan.strategy == "ab":
                verdict, detail = ab_verdict(figures[left], figures[right], plan.min_samples)
                decision = f"verdict: {verdict} — {_detail(detail)}"
            elif plan.strategy == "shadow":
                decision = f"shadow vs stable on the same rides: {_shadow_pairing(audit, service, plan.plan_id)}"
            else:
                decision = f"moved so far: {', '.join(plan.replicas) or 'none'}"
        else:
            versions = plan.stable if plan else {n: _champion(n) for n in SERVICE_SPECS[service].model_names}
            for name, version in sorted(versions.items()):
                stage = "p50" if name == "dynamic_duration" else "request"
                q = quality.get(f"{service}/{version}/none/{stage}")
                rows.append(("—", name, version, "100 %", f"{q.mae:.3f}" if q else "—", str(q.n) if q else "0", stage))
            decision = ""
        for row in rows:
            table.add_row(*row)
        tables.append(table)
        if decision:
            tables.append(decision)
    return Group(*tables)


def _served(audit, service: str, plan_id: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in audit:
        if record.service == service and record.action == "report" and record.plan_id == plan_id:
            for variant, n in record.detail.get("predictions", {}).items():
                counts[variant] = counts.get(variant, 0) + int(n)
    return counts


def _shadow_pairing(audit, service: str, plan_id: int) -> str:
    """The replicas' paired figures: the difference shadow − stable on the same events, and the cost."""
    n = total = total_sq = 0.0
    stable_s = shadow_s = 0.0
    for record in audit:
        if record.service == service and record.action == "report" and record.plan_id == plan_id:
            pair = record.detail.get("shadow", {})
            n += pair.get("n", 0)
            total += pair.get("sum", 0.0)
            total_sq += pair.get("sum_sq", 0.0)
            stable_s += pair.get("stable_s", 0.0)
            shadow_s += pair.get("shadow_s", 0.0)
    if not n:
        return "no report from a replica yet"
    mean = total / n
    spread = max(total_sq / n - mean * mean, 0.0) ** 0.5
    extra = f"{100 * shadow_s / stable_s:.0f} % more scoring time per batch" if stable_s else ""
    return f"mean difference {mean:+.3f} (sd {spread:.3f}) over {int(n)} predictions; {extra}"


def _champion(name: str) -> str:
    from shared.ml.artifacts import resolve

    try:
        return resolve(name).name
    except RidestreamError:
        return "?"


def _summary(plan: DeploymentPlan) -> str:
    versions = ", ".join(f"{n} {v}" for n, v in sorted(plan.stable.items()))
    if plan.state != "active":
        return f"{plan.state.replace('_', ' ')}; serving {versions}"
    changed = ", ".join(f"{n} {v}" for n, v in sorted(plan.candidate.items()) if plan.stable.get(n) != v)
    if plan.strategy == "canary":
        return (f"canary of {changed}: {plan.share:g} % of rides (step {plan.step + 1} of {len(plan.steps)}: "
                f"{','.join(f'{s:g}' for s in plan.steps)}, {plan.interval_s:g}s each); stable {versions}")
    if plan.strategy == "ab":
        return f"A/B: A = {versions}, B = {changed} for {plan.share:g} % of riders"
    if plan.strategy == "rolling":
        return f"rolling update to {changed}: {len(plan.replicas)} replica(s) moved; from {versions}"
    return f"shadow of {changed} beside {versions}"


def _detail(detail: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in detail.items() if not isinstance(v, dict | list))
