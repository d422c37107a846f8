"""Who may do what on the cluster: one principal per part of the fleet, each granted exactly the
topics, consumer groups and transactional ids it uses (under the settings' namespace), and
nothing else. ``ridestream acl apply`` creates these bindings (idempotent), ``acl show`` lists them.

The ``admin`` principal (the broker's own, and the operators' for creating topics and ACLs) is a
super user on the local ``--secure`` broker and needs no ACL.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from shared.contract.topics import SERVICES
from shared.errors import RidestreamError
from shared.kafka.settings import Settings

READ, WRITE, DESCRIBE = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
TOPIC, GROUP, TXN = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
FLEET_PRINCIPALS = (*SERVICES, "backend", "operator")


class AclError(RidestreamError):
    """The cluster refused to list or create ACLs."""


@dataclass(frozen=True, order=True)
class Grant:
    principal: str
    resource: str  # "topic", "group", "transactional_id"
    pattern: str  # "literal" or "prefixed"
    name: str
    operation: str  # "READ", "WRITE", …

    def binding(self) -> AclBinding:
        return AclBinding(ResourceType[self.resource.upper()], self.name, ResourcePatternType[self.pattern.upper()],
                          f"User:{self.principal}", "*", AclOperation[self.operation], AclPermissionType.ALLOW)

    @classmethod
    def of(cls, b: AclBinding) -> Grant:
        return cls(b.principal.removeprefix("User:"), b.restype.name.lower(), b.resource_pattern_type.name.lower(),
                   b.name, b.operation.name)


def _grants(principal: str, resource: ResourceType, pattern: ResourcePatternType, names: list[str],
            *operations: AclOperation) -> list[Grant]:
    return [Grant(principal, resource.name.lower(), pattern.name.lower(), n, op.name)
            for n in names for op in operations]


def fleet_grants(settings: Settings) -> list[Grant]:
    """Every ACL the fleet needs, sorted: what each process reads, writes, joins and commits with."""
    t, ns = settings.topics, settings.namespace
    out: list[Grant] = []
    for s in SERVICES:
        # a service reads the events and the plans in force; writes its predictions (and a shadow
        # candidate's), the DLQ, audit records and its state changelog; joins its groups
        # (ridestream-S and a blue/green deployment's ridestream-S-green) and transactions
        out += _grants(s, TOPIC, LITERAL, [t.events, t.control], READ, DESCRIBE)
        out += _grants(s, TOPIC, LITERAL, [t.predictions(s), t.shadow(s), t.dlq, t.control_audit], WRITE, DESCRIBE)
        out += _grants(s, TOPIC, LITERAL, [f"{ns}ridestream-{s}-state-changelog"], READ, WRITE, DESCRIBE)
        out += _grants(s, GROUP, PREFIXED, [f"{ns}ridestream-{s}"], READ, DESCRIBE)
        out += _grants(s, TXN, PREFIXED, [f"{ns}ridestream-{s}"], WRITE, DESCRIBE)
    # the backend publishes events and the initial duration estimates, keeps its rides on the
    # backend state table, follows predictions and plans for the riders' and operators' pages, and
    # reads the services' committed offsets to show their lag
    b = "backend"
    out += _grants(b, TOPIC, LITERAL, [t.events, t.predictions("duration"), t.backend_state], WRITE, DESCRIBE)
    out += _grants(b, TOPIC, LITERAL, [t.backend_state, *(t.predictions(s) for s in SERVICES), t.control,
                                       t.control_audit, t.model_quality], READ, DESCRIBE)
    out += _grants(b, GROUP, PREFIXED, [f"{ns}ridestream-web"], READ, DESCRIBE)
    out += _grants(b, GROUP, PREFIXED, [f"{ns}ridestream-"], DESCRIBE)
    out += _grants(b, TXN, PREFIXED, [f"{ns}ridestream-backend"], WRITE, DESCRIBE)
    # the operator (the evaluator, deploy, replay, offsets, dlq, watch, drift): reads every topic
    # of the contract, creates the ones a command makes on demand (backfill, shadow, ledger), writes
    # plans, audit, model quality, backfills and redriven events; manages the groups' offsets
    o = "operator"
    out += _grants(o, TOPIC, PREFIXED, [f"{ns}rides."], READ, DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
                   AclOperation.CREATE)
    out += _grants(o, TOPIC, LITERAL, [t.control, t.control_audit, t.model_quality, t.events,
                                       f"{t.dlq}.redriven", *(t.backfill(s) for s in SERVICES)], WRITE)
    out += _grants(o, GROUP, PREFIXED, [f"{ns}ridestream-"], READ, DESCRIBE)
    out += _grants(o, TXN, PREFIXED, [f"{ns}ridestream-"], WRITE, DESCRIBE)
    return sorted(set(out))


def current_grants(admin: AdminClient, principals: tuple[str, ...] = FLEET_PRINCIPALS,
                   timeout: float = 30.0) -> list[Grant]:
    """The ALLOW bindings the cluster holds for ``principals``, sorted."""
    query = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    try:
        found = admin.describe_acls(query, request_timeout=timeout).result(timeout=timeout)
    except KafkaException as exc:
        raise AclError(_reason("cannot list the ACLs", exc)) from None
    wanted = {f"User:{p}" for p in principals}
    return sorted(Grant.of(b) for b in found if b.principal in wanted and b.permission_type == AclPermissionType.ALLOW)


def apply_grants(admin: AdminClient, grants: list[Grant], timeout: float = 30.0) -> tuple[int, int]:
    """Create the ``grants`` the cluster lacks. Returns (created, already there): a second run
    creates nothing."""
    have = set(current_grants(admin, tuple(sorted({g.principal for g in grants})), timeout))
    missing = [g for g in grants if g not in have]
    if missing:
        futures = admin.create_acls([g.binding() for g in missing], request_timeout=timeout)
        for future in futures.values():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                raise AclError(_reason("cannot create the ACLs", exc)) from None
    return len(missing), len(grants) - len(missing)


def _reason(what: str, exc: KafkaException) -> str:
    err = exc.args[0]
    text = err.str() if hasattr(err, "str") else str(err)
    if "SECURITY_DISABLED" in getattr(err, "name", lambda: "")() or "No Authorizer" in text:
        return f"{what}: the cluster has no authorizer (start the local one with `ridestream broker start --secure`)"
    return f"{what} ({text}): connect as a principal allowed to manage ACLs (the admin)"
