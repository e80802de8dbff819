"""The Kubernetes manifests of deploy/k8s/: the kustomize base and the production overlay are
rendered here (no kustomize binary: a small renderer of the subset they use, which refuses any
other kustomization field), every document is validated against the Kubernetes 1.30 schema
(kubernetes-validate ships the schemas: offline), and the hub's own rules are checked."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from crm.hub import SERVICES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
LAYERS = {"base": K8S / "base", "production": K8S / "overlays" / "production"}
# The brief of issue 17: these run two replicas in the base.
SCALED_IN_BASE = {"gateway", "contacts", "connectors", "tasks"}

Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as these patches use it: maps merge, lists of named maps (containers,
    ports, env) merge by ``name``, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in [*base, *patch])
    ):
        merged = [copy.deepcopy(x) for x in base]
        by_name = {x["name"]: i for i, x in enumerate(merged)}
        for item in patch:
            if item["name"] in by_name:
                merged[by_name[item["name"]]] = _merge(merged[by_name[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def render(directory: Path) -> list[Doc]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Kustomization"
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "patches"}
    assert not unsupported, f"the test's renderer does not apply {unsupported}: extend it first"
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        docs.extend(render(path) if path.is_dir() else _load(path))
    for patch_entry in kustomization.get("patches", []):
        assert set(patch_entry) == {"path"}, "only strategic-merge patch files, targeted by name"
        for patch in _load(directory / patch_entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            hits = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == key]
            assert len(hits) == 1, f"patch {patch_entry['path']} targets {key}: {len(hits)} matches"
            docs[hits[0]] = _merge(docs[hits[0]], patch)
    return docs


@pytest.fixture(scope="module", params=sorted(LAYERS))
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return render(LAYERS[request.param])


def _of(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _containers(deployment: Doc) -> list[Doc]:
    containers: list[Doc] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def _readme_settings() -> set[str]:
    """Every CRM_* name in the first column of the README's configuration table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n#", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `CRM_"):
            names.update(re.findall(r"CRM_[A-Z0-9_]+", line.split("|")[1]))
    return names


def test_every_document_is_valid_for_kubernetes_1_30(docs: list[Doc]) -> None:
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_names_are_unique(docs: list[Doc]) -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys))


def test_one_deployment_per_process_running_a_crm_run_command(docs: list[Doc]) -> None:
    deployments = _of(docs, "Deployment")
    assert set(deployments) == {f"crm-{p}" for p in ("gateway", *SERVICES)}
    for name, dep in deployments.items():
        (container,) = _containers(dep)
        assert container["args"][0] == name.removeprefix("crm-")  # entrypoint: `crm run`
    (connectors,) = _containers(deployments["crm-connectors"])
    assert connectors["args"] == ["connectors", "--port", "8001"]


def test_every_deployment_has_probes_resources_settings_and_a_locked_down_container(
    docs: list[Doc],
) -> None:
    for name, dep in _of(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        for c in _containers(dep):
            assert "readinessProbe" in c and "livenessProbe" in c, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
            refs = {next(iter(r)): r[next(iter(r))]["name"] for r in c["envFrom"]}
            assert refs == {"configMapRef": "crm-config", "secretRef": "crm-secrets"}, name
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            data_dir = _of(docs, "ConfigMap")["crm-config"]["data"]["CRM_DATA_DIR"]
            assert "emptyDir" in volumes[mounts[data_dir]], f"{name}: CRM_DATA_DIR must be writable"


def test_every_process_is_probed_on_its_own_health_endpoints(docs: list[Doc]) -> None:
    """Every ``crm run`` process serves /health and /ready (tests/e2e/test_split_mode.py): the
    gateway on its HTTP port, connectors on the ingress port, the services on their health port."""
    deployments = _of(docs, "Deployment")
    (gateway,) = _containers(deployments["crm-gateway"])
    assert gateway["ports"] == [{"name": "http", "containerPort": 8000}]
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    (connectors,) = _containers(deployments["crm-connectors"])
    assert connectors["ports"] == [{"name": "hooks", "containerPort": 8001}]
    assert connectors["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "hooks"}
    assert connectors["livenessProbe"]["httpGet"] == {"path": "/health", "port": "hooks"}
    for service in ("contacts", "deals", "tasks", "analytics"):
        (c,) = _containers(deployments[f"crm-{service}"])
        assert c["args"] == [service, "--port", "9000"]
        assert c["ports"] == [{"name": "health", "containerPort": 9000}]
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
        assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": "health"}


def test_a_disruption_budget_for_every_scaled_deployment(docs: list[Doc]) -> None:
    budgets = list(_of(docs, "PodDisruptionBudget").values())
    for name, dep in _of(docs, "Deployment").items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        if dep["spec"]["replicas"] > 1:
            assert len(covering) == 1, f"{name}: {len(covering)} budgets"
            assert covering[0]["spec"]["minAvailable"] < dep["spec"]["replicas"], name
        else:
            assert not covering, f"{name}: a budget on one replica blocks node drains"


def test_replicas_of_the_base_and_the_overlay() -> None:
    for layer, minimum in (("base", 2), ("production", 2)):
        replicas = {n: d["spec"]["replicas"] for n, d in _of(render(LAYERS[layer]), "Deployment").items()}
        for process in SCALED_IN_BASE:
            assert replicas[f"crm-{process}"] >= minimum, (layer, process)
        assert all(r >= 1 for r in replicas.values())
    production = _of(render(LAYERS["production"]), "Deployment")
    assert production["crm-gateway"]["spec"]["replicas"] == 3  # the overlay's patch was applied
    (gateway,) = _containers(production["crm-gateway"])
    assert gateway["resources"]["limits"]["cpu"] == "2"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"  # and merged, not replaced


def test_configmap_and_secret_hold_only_settings_of_the_readme_table(docs: list[Doc]) -> None:
    table = _readme_settings()
    assert {"CRM_SECRET_KEY", "CRM_RABBIT_URL", "CRM_QUEUE_TYPE"} <= table  # the parser found it
    config = _of(docs, "ConfigMap")["crm-config"]["data"]
    secret = _of(docs, "Secret")["crm-secrets"]["stringData"]
    for key in [*config, *secret]:
        assert key in table, f"{key} is not in README.md's configuration table"
    assert not set(config) & set(secret)
    assert config["CRM_QUEUE_TYPE"] == "quorum"
    assert {"CRM_NAMESPACE", "CRM_PUBLIC_URL", "CRM_BROKER_TIMEOUT_S"} <= set(config)
    assert {"CRM_SECRET_KEY", "CRM_ROOT_TOKEN", "CRM_RABBIT_URL", "CRM_MONGO_URL"} <= set(secret)
    assert all("REPLACE-ME" in value for value in secret.values()), "the Secret is a template"


def test_every_crm_variable_a_container_sets_is_a_setting(docs: list[Doc]) -> None:
    fields = {f"CRM_{name.upper()}" for name in Settings.model_fields}
    config = _of(docs, "ConfigMap")["crm-config"]["data"]
    secret = _of(docs, "Secret")["crm-secrets"]["stringData"]
    for key in [*config, *secret]:
        assert key in fields, key
    for dep in _of(docs, "Deployment").values():
        for c in _containers(dep):
            for env in c.get("env", []):
                assert env["name"] in fields, env["name"]


def test_services_and_ingress_reach_the_pods(docs: list[Doc]) -> None:
    deployments = _of(docs, "Deployment")
    services = _of(docs, "Service")
    assert set(services) == {"crm-gateway", "crm-connectors"}
    for name, svc in services.items():
        dep = deployments[name]
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        port_names = {p["name"] for c in _containers(dep) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    (gateway,) = _containers(deployments["crm-gateway"])
    env = {e["name"]: e["value"] for e in gateway["env"]}
    assert env["CRM_CONNECTORS_URL"] == "http://crm-connectors:8001"
    (ingress,) = _of(docs, "Ingress").values()
    public_host = _of(docs, "ConfigMap")["crm-config"]["data"]["CRM_PUBLIC_URL"].split("://")[1]
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] == public_host
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] == "crm-gateway"


def test_no_home_made_database_or_broker(docs: list[Doc]) -> None:
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
