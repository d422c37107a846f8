"""Write the JSON Schemas kubeconform validates deploy/k8s against, with no network at test time.

    python deploy/schemas/build.py [--crds ../shared/k8s-crds]

* Core kinds: from the ``kubernetes-validate`` package (PyPI; the version pinned in
  constraints.txt), its ``local-strict`` schemas, each made standalone by copying in the
  definitions it refers to.
* CRDs (KEDA, Strimzi): each served version's ``openAPIV3Schema``, converted as kubeconform's
  ``openapi2jsonschema`` does (int-or-string, nullable, strict: no unknown properties where
  the CRD lists the properties).

File names follow kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}.json``
(``deployment-apps-v1.json``, ``scaledobject-keda-v1alpha1.json``); SOURCES.md says where each
came from.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CORE_KINDS = ["namespace-v1", "serviceaccount-v1", "configmap-v1", "secret-v1", "service-v1",
              "persistentvolumeclaim-v1", "deployment-apps-v1", "job-batch-v1", "cronjob-batch-v1",
              "poddisruptionbudget-policy-v1"]
REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")


def core_schemas() -> tuple[dict[str, Any], str]:
    import kubernetes_validate
    from kubernetes_validate.version import __version__

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    folder = max((p for p in root.iterdir() if p.name.endswith("-local-strict")),
                 key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)])
    defs = json.loads((folder / "_definitions.json").read_text())["$defs"]
    out = {}
    for kind in CORE_KINDS:
        schema = json.loads((folder / f"{kind}.json").read_text())
        needed: dict[str, Any] = {}
        _inline(schema, defs, needed)
        schema["$defs"] = needed
        out[kind] = schema
    return out, f"kubernetes-validate {__version__}, {folder.name}"


def _inline(node: Any, defs: dict[str, Any], needed: dict[str, Any]) -> None:
    """Point every reference at the schema's own ``$defs`` and copy in what it refers to."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and (m := REF.match(ref)):
            node["$ref"] = f"#/$defs/{m.group(1)}"
            if m.group(1) not in needed:
                needed[m.group(1)] = copy.deepcopy(defs[m.group(1)])
                _inline(needed[m.group(1)], defs, needed)
        for value in node.values():
            _inline(value, defs, needed)
    elif isinstance(node, list):
        for value in node:
            _inline(value, defs, needed)


def convert(node: Any) -> Any:
    """openAPIV3Schema → JSON Schema, strict."""
    if isinstance(node, list):
        return [convert(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: convert(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node


def crd_schemas(folder: Path) -> dict[str, tuple[dict[str, Any], str]]:
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served") or "schema" not in version:
                continue
            schema = convert(version["schema"]["openAPIV3Schema"])
            props = schema.setdefault("properties", {})
            props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
            props["kind"] = {"type": "string", "enum": [kind]}
            props["metadata"] = {"type": "object"}
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
            name = f"{kind.lower()}-{group.split('.')[0]}-{version['name']}"
            out[name] = (schema, f"{path.name} ({group}, CRD as published)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", type=Path, default=HERE.parents[1].parent / "shared" / "k8s-crds")
    args = parser.parse_args()
    if not args.crds.is_dir():
        raise SystemExit(f"error: no CRD folder at {args.crds}: pass --crds DIR (the published KEDA and Strimzi CRDs)")
    lines = ["# Where each schema came from", "", "Written by `python deploy/schemas/build.py`; do not edit.", "",
             "| schema | source |", "|---|---|"]
    core, source = core_schemas()
    for name, schema in core.items():
        (HERE / f"{name}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        lines.append(f"| `{name}.json` | {source} |")
    crd_readme = args.crds / "README.md"
    provenance = crd_readme.read_text() if crd_readme.exists() else ""
    for name, (schema, origin) in crd_schemas(args.crds).items():
        (HERE / f"{name}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        lines.append(f"| `{name}.json` | {origin} |")
    commits = re.findall(r"^\| `([^`]+)` \| (.+) \|$", provenance, re.MULTILINE)
    if commits:
        lines += ["", "The CRDs, as their projects publish them:", "", "| files | source |", "|---|---|"]
        lines += [f"| `{f}` | {s} |" for f, s in commits]
    (HERE / "SOURCES.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
