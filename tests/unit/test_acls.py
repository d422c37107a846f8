"""The fleet's ACLs (no broker): each principal gets exactly what it uses, under the namespace."""

from __future__ import annotations

from shared.kafka.acls import FLEET_PRINCIPALS, Grant, fleet_grants
from shared.kafka.settings import Settings
from tests.unit.test_k8s import needs_kubectl, objects, of_kind


def grants(namespace: str = "") -> list[Grant]:
    return fleet_grants(Settings(namespace=namespace, _env_file=None))


def test_every_principal_has_grants_and_none_twice():
    g = grants()
    assert {x.principal for x in g} == set(FLEET_PRINCIPALS)
    assert len(g) == len(set(g)) and g == sorted(g)


def test_a_service_writes_only_its_own_predictions_and_joins_only_its_own_groups():
    for service in ("duration", "tip", "cost"):
        mine = [x for x in grants() if x.principal == service]
        written = {x.name for x in mine if x.resource == "topic" and x.operation == "WRITE"}
        assert written == {f"rides.predictions.{service}", f"rides.predictions.{service}.shadow", "rides.events.dlq",
                           "rides.control.audit", f"ridestream-{service}-state-changelog"}
        assert {(x.name, x.pattern) for x in mine if x.resource == "group"} == {(f"ridestream-{service}", "prefixed")}
        assert not [x for x in mine if x.pattern == "prefixed" and x.resource == "topic"]
        assert not [x for x in mine if x.resource == "cluster"]


def test_the_namespace_prefixes_every_resource():
    g = grants("staging.")
    assert all(x.name.startswith("staging.") for x in g)
    assert Grant("tip", "topic", "literal", "staging.rides.events", "READ") in g


def test_a_grant_round_trips_through_an_acl_binding():
    for x in grants()[:10]:
        assert Grant.of(x.binding()) == x


@needs_kubectl
def test_the_strimzi_user_may_do_everything_acl_apply_grants():
    """deploy/k8s runs the whole fleet as one Strimzi KafkaUser: its ACLs must cover every grant
    `ridestream acl apply` makes to the fleet's principals, or a pod would be refused."""
    (user,) = of_kind(objects("production"), "KafkaUser")
    acls = user["spec"]["authorization"]["acls"]
    kinds = {"topic": "topic", "group": "group", "transactional_id": "transactionalId"}

    def covered(g: Grant) -> bool:
        for acl in acls:
            r = acl["resource"]
            if r["type"] != kinds[g.resource] or g.operation.replace("_", "").lower() not in {
                    op.lower() for op in acl["operations"]}:
                continue
            if r.get("patternType", "literal") == "prefix" and g.name.startswith(r["name"]):
                return True
            if r.get("patternType", "literal") == "literal" and g.pattern == "literal" and g.name == r["name"]:
                return True
        return False

    missing = [g for g in grants() if not covered(g)]
    assert not missing, missing
