"""deploy/k8s, offline: each overlay renders (kubectl kustomize), every object validates against
the schemas in deploy/schemas (kubeconform), and the objects refer to each other correctly."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ridestream.autoscale import ACTIVATION_LAG_THRESHOLDS, LAG_THRESHOLDS
from shared.contract.topics import SERVICES
from shared.kafka.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["local", "production"]
SCHEMAS = ROOT / "deploy" / "schemas"
# Secrets you create before applying (docs/kubernetes.md, "Before you apply"); every other Secret
# referenced must be rendered or made by Strimzi from a rendered resource
OPERATOR_SECRETS = {"ridestream-postgres": {"url"}}
WORKLOADS = {"Deployment", "Job", "CronJob"}

KUBECTL = shutil.which("kubectl")
KUBECONFORM = next((str(p) for p in (ROOT / ".venv" / "bin" / "kubeconform",) if p.exists()), None) \
    or shutil.which("kubeconform")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
needs_kubeconform = pytest.mark.skipif(KUBECONFORM is None, reason="kubeconform is not installed "
                                       "(`make kubeconform` builds it where Go is installed)")


@cache
def rendered(overlay: str) -> str:
    proc = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def objects(overlay: str) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(rendered(overlay)) if o]


def of_kind(objs: list[dict], *kinds: str) -> list[dict]:
    return [o for o in objs if o["kind"] in kinds]


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    return spec["jobTemplate"]["spec"]["template"]["spec"] if obj["kind"] == "CronJob" else spec["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    spec = obj["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else spec["template"]
    return template["metadata"].get("labels", {})


def settings_of(objs: list[dict]) -> Settings:
    """The settings the pods get: the rendered ridestream-config ConfigMap, read as the pods do."""
    (config,) = [o for o in of_kind(objs, "ConfigMap") if o["metadata"]["name"].startswith("ridestream-config")]
    env = {k: v for k, v in config["data"].items() if k.startswith(("RIDESTREAM_", "KAFKA_"))}
    saved = dict(os.environ)
    try:
        for var in [v for v in os.environ if v.startswith(("RIDESTREAM_", "KAFKA_"))]:
            del os.environ[var]
        os.environ.update(env)
        return Settings(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders(overlay):
    kinds = {o["kind"] for o in objects(overlay)}
    assert {"Deployment", "PodDisruptionBudget", "ScaledObject", "CronJob", "Job", "Service", "ConfigMap"} <= kinds


@needs_kubectl
@needs_kubeconform
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kept_schemas(overlay):
    proc = _kubeconform(rendered(overlay))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Skipped: 0" in proc.stdout and "Invalid: 0" in proc.stdout, proc.stdout


@needs_kubeconform
def test_kubeconform_rejects_what_the_schemas_forbid():
    bad = """apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: x}
  maxReplicaCount: "six"
  triggers: [{type: kafka, metadata: {topic: t}}]
  lagThreshhold: 5
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: y}
spec: {selector: {}, template: {spec: {containers: [{name: c, image: i, livenessProbe: {httpGet: {path: /healthz}}}]}}}
"""
    proc = _kubeconform(bad)
    assert proc.returncode != 0 and "Invalid: 2" in proc.stdout, proc.stdout


def _kubeconform(documents: str) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECONFORM, "-strict", "-summary", "-schema-location",
                           f"{SCHEMAS}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", "-"],
                          input=documents, capture_output=True, text=True, check=False)


def test_the_schemas_say_where_they_came_from():
    sources = (SCHEMAS / "SOURCES.md").read_text()
    for schema in SCHEMAS.glob("*.json"):
        assert f"`{schema.name}`" in sources
    assert "kubernetes-validate" in sources and "kedacore/keda" in sources and "strimzi" in sources


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cross_references(overlay):
    objs = objects(overlay)
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    settings = settings_of(objs)
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(objs, "ConfigMap")}
    secrets = _available_secrets(objs)

    for obj in of_kind(objs, *WORKLOADS):
        where = f"{obj['kind']} {obj['metadata']['name']}"
        spec = pod_spec(obj)
        for c in spec.get("initContainers", []) + spec["containers"]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in configmaps, where
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secrets, where
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in secrets.get(ref["name"], ()), f"{where}: Secret {ref['name']}/{ref['key']}"
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in configmaps.get(ref["name"], {}), where
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])}, where
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                assert vol["secret"]["secretName"] in secrets, where
            if "persistentVolumeClaim" in vol:
                assert ("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]) in names, where
        assert spec["serviceAccountName"] and ("ServiceAccount", spec["serviceAccountName"]) in names

    deployments = {d["metadata"]["name"]: d for d in of_kind(objs, "Deployment")}
    for d in deployments.values():
        assert _matches(d["spec"]["selector"]["matchLabels"], pod_labels(d)), d["metadata"]["name"]
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        matched = [n for n, d in deployments.items() if _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(d))]
        assert len(matched) == 1, (pdb["metadata"]["name"], matched)
    for svc in of_kind(objs, "Service"):
        matched = [d for d in deployments.values() if _matches(svc["spec"]["selector"], pod_labels(d))]
        assert len(matched) == 1, svc["metadata"]["name"]
        served = {p.get("name") for c in pod_spec(matched[0])["containers"] for p in c.get("ports", [])}
        assert all(p["targetPort"] in served for p in svc["spec"]["ports"]), svc["metadata"]["name"]

    for service in SERVICES:  # a Deployment, a PDB and a ScaledObject per service
        assert f"ridestream-{service}" in deployments
        assert ("PodDisruptionBudget", f"ridestream-{service}") in names
    for so in of_kind(objs, "ScaledObject"):
        target = so["spec"]["scaleTargetRef"]["name"]
        assert target in deployments
        service = target.removeprefix("ridestream-")
        assert so["spec"]["maxReplicaCount"] <= settings.events_partitions
        assert so["spec"]["minReplicaCount"] >= 1
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka" and meta["topic"] == settings.topics.events
        assert meta["consumerGroup"] == settings.group_id(service)
        assert meta["bootstrapServers"] == settings.bootstrap
        assert int(meta["lagThreshold"]) == LAG_THRESHOLDS[service]
        assert int(meta["activationLagThreshold"]) == ACTIVATION_LAG_THRESHOLDS[service]
        assert meta["allowIdleConsumers"] == "false"
        major, minor = (int(x) for x in meta["version"].split(".")[:2])
        assert (major, minor) >= (2, 1)  # Kafka 4 serves no older protocol (KIP-896)
        if "authenticationRef" in trigger:
            assert ("TriggerAuthentication", trigger["authenticationRef"]["name"]) in names
    for auth in of_kind(objs, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            assert ref["key"] in secrets.get(ref["name"], ()), ref
        for ref in auth["spec"].get("configMapTargetRef", []):
            assert ref["key"] in configmaps.get(ref["name"], {}), ref


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_drain_within_their_grace_and_probe_what_they_serve(overlay):
    objs = objects(overlay)
    settings = settings_of(objs)
    for obj in of_kind(objs, "Deployment"):
        spec = pod_spec(obj)
        assert spec["terminationGracePeriodSeconds"] > settings.drain_timeout_s
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
        c = spec["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            port = (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
            assert port in ports or port in ports.values(), (obj["metadata"]["name"], kind)
        component = pod_labels(obj)["app.kubernetes.io/component"]
        if component in SERVICES:
            assert c["args"] == ["consume", component]
            assert ports["http"] == settings.metrics_port  # the port that serves the probes
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            # liveness gives up no sooner than the stall limit the service itself applies
            live = c["livenessProbe"]
            assert live["periodSeconds"] * live["failureThreshold"] <= settings.stall_timeout_s
            cache_dir = str(settings.compiled_dir)
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert any(cache_dir.startswith(path) for path in mounts)
            assert all("emptyDir" in v for v in spec["volumes"] if v["name"] in mounts.values()
                       and v["name"] == "state")


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_batch_scoring_is_hourly_on_postgresql_and_topics_are_made(overlay):
    objs = objects(overlay)
    (cron,) = of_kind(objs, "CronJob")
    assert cron["spec"]["schedule"] == "0 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    c = pod_spec(cron)["containers"][0]
    assert c["args"][0] == "score-batch" and "--db" in c["args"]
    db = next(e for e in c["env"] if e["name"] == "RIDESTREAM_RESULTS_DB")
    assert db["valueFrom"]["secretKeyRef"]["name"] in OPERATOR_SECRETS
    jobs = {pod_spec(j)["containers"][0]["args"][0]: pod_spec(j) for j in of_kind(objs, "Job")}
    assert "topics" in jobs
    if overlay == "production":  # training writes to the model store: only where it is a volume
        train = jobs["train"]["containers"][0]
        store = settings_of(objs).model_store
        assert any(m["mountPath"] == str(store) and not m.get("readOnly") for m in train["volumeMounts"])


@needs_kubectl
def test_strimzi_topics_and_user_match_the_contract():
    objs = objects("production")
    settings = settings_of(objs)
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(objs, "KafkaTopic")}
    for spec in settings.topic_specs():
        got = topics.pop(spec.name)
        assert got["partitions"] == spec.partitions and got["replicas"] == spec.replication_factor
        assert {k: str(v) for k, v in got["config"].items()} == spec.config()
    assert not topics
    (user,) = of_kind(objs, "KafkaUser")
    assert user["metadata"]["name"] == settings.sasl_username and user["spec"]["authentication"]["type"] == "scram-sha-512"
    prefixes = {(a["resource"]["type"], a["resource"].get("name")) for a in user["spec"]["authorization"]["acls"]}
    assert ("topic", "rides.") in prefixes and ("group", "ridestream-") in prefixes


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_are_rendered(overlay):
    objs = objects(overlay)
    assert not of_kind(objs, "Secret")
    for cm in of_kind(objs, "ConfigMap"):
        assert not any("PASSWORD" in k.upper() or "password" in str(v) for k, v in cm.get("data", {}).items())


def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _available_secrets(objs: list[dict]) -> dict[str, set[str]]:
    """Secret name → keys: rendered ones, those Strimzi makes (a KafkaUser's, with `password`; a
    cluster's CA, with `ca.crt`) and the ones the operator creates."""
    out = {o["metadata"]["name"]: set(o.get("data", {})) | set(o.get("stringData", {})) for o in of_kind(objs, "Secret")}
    for user in of_kind(objs, "KafkaUser"):
        out[user["metadata"]["name"]] = {"password", "sasl.jaas.config"}
    for obj in of_kind(objs, "KafkaUser", "KafkaTopic"):
        out[f"{obj['metadata']['labels']['strimzi.io/cluster']}-cluster-ca-cert"] = {"ca.crt", "ca.p12", "ca.password"}
    return {**out, **OPERATOR_SECRETS}
