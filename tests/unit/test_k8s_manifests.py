"""Offline checks of the Kubernetes manifests (k8s/), the Dockerfile and how they fit the code.

Built-in kinds are validated with kubernetes-validate (bundled OpenAPI schemas, strict: unknown
fields fail); the RayCluster against KubeRay's CRD schema (k8s/schemas/) with jsonschema, made
strict the same way. `kubectl kustomize` is not available, so the files listed in
k8s/kustomization.yaml are loaded here directly.
"""

from __future__ import annotations

import copy
import io
import json
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from messaging.config import Config
from messaging.podlabel import LABEL_KEY, LABEL_VALUE
from messaging.sandbox.stack import sandboxed

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CRD_SCHEMA = K8S / "schemas" / "raycluster-v1.schema.json"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
KUBERAY_KINDS = {("ray.io/v1", "RayCluster")}
DJANGO_VARS = {"DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DJANGO_DEBUG"}
SECRET_VARS = {name.upper() for name in Config().secret_names()} | {"DJANGO_SECRET_KEY", "DATABASE_URL"}
KUBERAY_INJECTED = {"RAY_ADDRESS"}  # KubeRay sets it in every Ray container (head: 127.0.0.1:6379)
PLACEHOLDER = "CHANGE-ME"

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
RAY_PIN = next(d.split("==")[1] for d in PYPROJECT["project"]["dependencies"] if re.match(r"ray(\[.*\])?==", d))
PYTHON_MINOR = re.search(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"]).group(1)


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
DOCS = [(name, doc) for name in KUSTOMIZATION["resources"] for doc in load_docs(K8S / name)]
SECRET = load_docs(SECRET_TEMPLATE)[0]


def doc_id(item: tuple[str, dict[str, Any]]) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCS if d["kind"] == kind]


RAYCLUSTER = one("RayCluster")
CONFIGMAP = one("ConfigMap")
CONFIG = Config.from_env({**CONFIGMAP["data"], **SECRET["stringData"]})
HEAD_POD = RAYCLUSTER["spec"]["headGroupSpec"]["template"]
WORKER_GROUPS = RAYCLUSTER["spec"]["workerGroupSpecs"]
RAY_PODS = [HEAD_POD] + [group["template"] for group in WORKER_GROUPS]
BACKEND_POD = one("Deployment", "spacebeaver-backend")["spec"]["template"]
ADMIN_POD = one("Deployment", "spacebeaver-admin")["spec"]["template"]
REDIS_POD = one("Deployment", "spacebeaver-redis")["spec"]["template"]
OUR_PODS = RAY_PODS + [BACKEND_POD, ADMIN_POD]
ALL_PODS = OUR_PODS + [REDIS_POD]


def env_names(container: dict[str, Any]) -> set[str]:
    """Env var names a container gets: explicit env plus every key of its envFrom sources."""
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == CONFIGMAP["metadata"]["name"]
            names |= set(CONFIGMAP["data"])
        if "secretRef" in source:
            assert source["secretRef"]["name"] == SECRET["metadata"]["name"]
            names |= set(SECRET["stringData"])
    return names


def strict_crd_schema(node: Any) -> Any:
    """Reject unknown fields like the API server with fieldValidation=Strict (kubectl's default)."""
    if isinstance(node, dict):
        out = {key: strict_crd_schema(value) for key, value in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict_crd_schema(value) for value in node]
    return node


CRD_VALIDATOR = jsonschema.Draft202012Validator(strict_crd_schema(json.loads(CRD_SCHEMA.read_text())))


# --- files and kustomization -------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_only_existing_files() -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", SECRET_TEMPLATE.name}
    assert set(KUSTOMIZATION["resources"]) == on_disk
    assert SECRET_TEMPLATE.name not in KUSTOMIZATION["resources"]  # apply -k must not clobber real secrets


def test_every_manifest_parses_with_kind_and_name() -> None:
    assert len(DOCS) >= 15
    for name, doc in DOCS:
        assert doc.get("apiVersion") and doc.get("kind"), name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"]), doc_id((name, doc))


def test_namespace_is_the_kustomization_namespace() -> None:
    assert one("Namespace")["metadata"]["name"] == KUSTOMIZATION["namespace"] == SECRET["metadata"]["namespace"]


# --- schema validation -------------------------------------------------------------------------


BUILTIN = [item for item in DOCS if (item[1]["apiVersion"], item[1]["kind"]) not in KUBERAY_KINDS]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", BUILTIN + [(SECRET_TEMPLATE.name, SECRET)], ids=doc_id)
def test_builtin_kinds_validate_against_kubernetes_openapi(item: tuple[str, dict], version: str) -> None:
    kubernetes_validate.validate(item[1], version, strict=True)


def test_kubernetes_validate_rejects_an_unknown_field() -> None:
    broken = copy.deepcopy(one("Deployment", "spacebeaver-admin"))
    broken["spec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_raycluster_validates_against_kuberay_crd_schema() -> None:
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in CRD_VALIDATOR.iter_errors(RAYCLUSTER)]
    assert errors == []


@pytest.mark.parametrize(
    "path, key, value",
    [
        (["spec", "headGroupSpec"], "rayStartParam", {}),  # misspelt field
        (["spec", "gcsFaultToleranceOptions"], "backend", "etcd"),  # not in the enum
        (["spec", "workerGroupSpecs", 0], "replicas", "two"),  # wrong type
    ],
)
def test_crd_schema_rejects_broken_rayclusters(path: list, key: str, value: Any) -> None:
    broken = copy.deepcopy(RAYCLUSTER)
    node = broken
    for step in path:
        node = node[step]
    node[key] = value
    assert not CRD_VALIDATOR.is_valid(broken)


def test_crd_schema_records_its_kuberay_release() -> None:
    readme = (K8S / "schemas" / "README.md").read_text()
    assert "v1.7.0" in readme and CRD_SCHEMA.name in readme


# --- configuration and secrets -----------------------------------------------------------------


def test_every_setting_reaches_every_backend_container() -> None:
    required = {f.name.upper() for f in fields(Config)} | DJANGO_VARS
    for pod in RAY_PODS:
        container = pod["spec"]["containers"][0]
        missing = required - env_names(container) - KUBERAY_INJECTED
        assert not missing, f"{container['name']} lacks {sorted(missing)}"
    backend = BACKEND_POD["spec"]["containers"][0]
    assert not required - env_names(backend)
    admin = ADMIN_POD["spec"]["containers"][0]
    assert not (DJANGO_VARS | {"DATABASE_URL"}) - env_names(admin)


def test_secrets_only_in_the_secret_and_only_placeholders() -> None:
    assert SECRET["kind"] == "Secret"
    assert SECRET_VARS <= set(SECRET["stringData"])
    assert not SECRET_VARS & set(CONFIGMAP["data"])
    for key, value in SECRET["stringData"].items():
        assert PLACEHOLDER in value, f"{key} must be a placeholder in the template"
    assert "data" not in SECRET  # base64 'data' could hide a real value


def test_configmap_is_for_the_cluster() -> None:
    assert "RAY_ADDRESS" not in CONFIGMAP["data"]  # KubeRay / backend.yaml set it per pod
    assert CONFIG.smtp_listen_host == "0.0.0.0" and CONFIG.serve_http_host == "0.0.0.0"
    assert sandboxed(CONFIG) is False, "no sandbox fakes in production (and every credential set)"
    assert all(isinstance(v, str) for v in CONFIGMAP["data"].values())


def test_driver_reaches_the_head_through_ray_client() -> None:
    env = {e["name"]: e.get("value") for e in BACKEND_POD["spec"]["containers"][0]["env"]}
    assert env["RAY_ADDRESS"] == f"ray://{RAYCLUSTER['metadata']['name']}-head-svc:10001"
    head_ports = {p["containerPort"] for p in HEAD_POD["spec"]["containers"][0]["ports"]}
    assert 10001 in head_ports
    assert BACKEND_POD["spec"]["containers"][0]["command"][:3] == ["python", "manage.py", "runbackend"]
    assert one("Deployment", "spacebeaver-backend")["spec"]["replicas"] == 1


# --- services and ingress ----------------------------------------------------------------------


def test_smtp_service_targets_the_listen_port_of_labelled_pods() -> None:
    smtp = one("Service", "spacebeaver-smtp")
    assert smtp["spec"]["type"] == "LoadBalancer"
    (port,) = smtp["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (25, CONFIG.smtp_listen_port)
    selector = smtp["spec"]["selector"]
    assert selector[LABEL_KEY] == LABEL_VALUE
    assert selector["ray.io/cluster"] == RAYCLUSTER["metadata"]["name"]


def test_serve_service_port_is_serve_http_port() -> None:
    serve = one("Service", "spacebeaver-serve")
    (port,) = serve["spec"]["ports"]
    assert port["port"] == port["targetPort"] == CONFIG.serve_http_port
    assert serve["spec"]["selector"]["ray.io/cluster"] == RAYCLUSTER["metadata"]["name"]
    for pod in RAY_PODS:
        ports = {p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        assert {CONFIG.serve_http_port, CONFIG.smtp_listen_port} <= ports


def test_ingress_routes_webhooks_to_serve_and_admin_to_admin_with_tls() -> None:
    ingress = one("Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]
    assert rule["host"] in CONFIGMAP["data"]["DJANGO_ALLOWED_HOSTS"].split(",")
    assert CONFIG.twilio_webhook_public_url == f"https://{rule['host']}/sms"
    routes = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert routes["/sms"]["name"] == routes["/swarm"]["name"] == "spacebeaver-serve"
    assert routes["/admin"]["name"] == "spacebeaver-admin"
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    for backend in routes.values():
        assert backend["port"]["number"] in {p["port"] for p in services[backend["name"]]["spec"]["ports"]}


def test_services_select_the_pods_they_serve() -> None:
    for name, pod in (("spacebeaver-admin", ADMIN_POD), ("spacebeaver-redis", REDIS_POD)):
        selector = one("Service", name)["spec"]["selector"]
        assert selector.items() <= pod["metadata"]["labels"].items()
    pdb = one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert pdb["ray.io/group"] in {group["groupName"] for group in WORKER_GROUPS}


# --- ray pods ----------------------------------------------------------------------------------


def test_ray_pods_have_shm_downward_api_and_service_account() -> None:
    service_account = one("ServiceAccount")["metadata"]["name"]
    for pod in RAY_PODS:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == service_account
        volumes = {v["name"]: v for v in spec["volumes"]}
        container = spec["containers"][0]
        shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        assert len(shm) == 1 and volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory"
        downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
        assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def test_every_container_has_requests_and_limits() -> None:
    for pod in ALL_PODS:
        for container in pod["spec"]["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]


def test_rbac_lets_the_ray_pods_get_and_patch_pods() -> None:
    role, binding = one("Role"), one("RoleBinding")
    assert any("pods" in r["resources"] and {"get", "patch"} <= set(r["verbs"]) for r in role["rules"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (subject,) = binding["subjects"]
    assert subject["name"] == one("ServiceAccount")["metadata"]["name"]
    assert subject["namespace"] == KUSTOMIZATION["namespace"]


def test_gcs_fault_tolerance_uses_the_redis_service_and_secret() -> None:
    options = RAYCLUSTER["spec"]["gcsFaultToleranceOptions"]
    host, port = options["redisAddress"].rsplit(":", 1)
    redis = one("Service", host)
    assert int(port) in {p["port"] for p in redis["spec"]["ports"]}
    ref = options["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == SECRET["metadata"]["name"] and ref["key"] in SECRET["stringData"]
    redis_env = REDIS_POD["spec"]["containers"][0]["env"]
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": ref}} in redis_env


def test_worker_group_has_a_node_per_mail_server() -> None:
    (group,) = WORKER_GROUPS
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["minReplicas"] >= CONFIG.pool_size


# --- image and versions ------------------------------------------------------------------------


def dockerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((ROOT / "Dockerfile").read_bytes()))


def test_dockerfile_base_image_matches_ray_pin_and_python() -> None:
    parser = dockerfile()
    repo, tag = parser.baseimage.split(":")
    assert repo == "rayproject/ray"
    ray_version, python, *variant = tag.split("-")
    assert ray_version == RAY_PIN == RAYCLUSTER["spec"]["rayVersion"]
    assert python == f"py3{PYTHON_MINOR}"
    assert variant in ([], ["cpu"])


def test_dockerfile_installs_the_project_as_the_ray_user() -> None:
    instructions = [(i["instruction"], i["value"]) for i in dockerfile().structure]
    values = lambda kind: [v for k, v in instructions if k == kind]  # noqa: E731
    assert values("USER")[-1] == "ray"
    assert values("WORKDIR")
    assert any(re.search(r"pip install --no-cache-dir \.(\s|$)", run) for run in values("RUN"))
    assert {"2525", "8000"} <= set(" ".join(values("EXPOSE")).split())
    assert "runbackend" in values("CMD")[-1]


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "data", ".pytest_cache"} <= ignored


def test_our_images_carry_the_project_version() -> None:
    images = {c["image"] for pod in OUR_PODS for c in pod["spec"]["containers"]}
    assert len(images) == 1
    (image,) = images
    assert image.rsplit(":", 1)[1] == VERSION
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+", REDIS_POD["spec"]["containers"][0]["image"])


@pytest.mark.xfail(
    not any(d.startswith("gunicorn==") for d in PYPROJECT["project"]["dependencies"]),
    reason="the lead adds gunicorn to pyproject.toml",
    strict=True,
)
def test_admin_server_is_a_pinned_dependency() -> None:
    assert ADMIN_POD["spec"]["containers"][0]["command"][0] == "gunicorn"
    assert any(re.fullmatch(r"gunicorn==\d+\.\d+\.\d+", d) for d in PYPROJECT["project"]["dependencies"])
