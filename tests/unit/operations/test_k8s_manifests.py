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

from messaging.runtime.config import Config
from messaging.runtime.podlabel import LABEL_KEY, LABEL_VALUE
from messaging.sandbox.stack import sandboxed
from tests.paths import REPO_ROOT

K8S = REPO_ROOT / "k8s"
CRD_SCHEMA = K8S / "schemas" / "raycluster-v1.schema.json"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
KUBERAY_KINDS = {("ray.io/v1", "RayCluster")}
# cert-manager's CRDs are not bundled here: a Certificate is checked field by field (test_smtp_certificate_*).
CERT_MANAGER_KINDS = {("cert-manager.io/v1", "Certificate")}
DJANGO_VARS = {"DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DJANGO_DEBUG"}
SECRET_VARS = {name.upper() for name in Config().secret_names()} | {"DJANGO_SECRET_KEY", "DATABASE_URL"}
KUBERAY_INJECTED = {"RAY_ADDRESS"}  # KubeRay sets it in every Ray container (head: 127.0.0.1:6379)
PLACEHOLDER = "CHANGE-ME"

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
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


BUILTIN = [item for item in DOCS if (item[1]["apiVersion"], item[1]["kind"]) not in KUBERAY_KINDS | CERT_MANAGER_KINDS]


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
    assert routes["/sms"]["name"] == routes["/swarm"]["name"] == routes["/rockblock"]["name"] == "spacebeaver-serve"
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


# cert-manager.io/v1 Certificate: the spec fields this project may use (a typo is an unknown field, which the
# API server would refuse) and the keys of the Secret it writes.
CERTIFICATE_SPEC_FIELDS = {"secretName", "dnsNames", "issuerRef", "privateKey", "duration", "renewBefore", "usages"}
CERT_MANAGER_SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}
HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def test_smtp_certificate_fields_by_hand() -> None:
    cert = one("Certificate", "spacebeaver-smtp-tls")
    spec = cert["spec"]
    assert set(spec) <= CERTIFICATE_SPEC_FIELDS, sorted(set(spec) - CERTIFICATE_SPEC_FIELDS)
    assert "namespace" not in cert["metadata"]  # the kustomization's, like the pods that mount it
    assert spec["dnsNames"] and all(HOST_NAME.match(name) for name in spec["dnsNames"])
    assert spec["secretName"]
    issuer = spec["issuerRef"]
    assert set(issuer) <= {"name", "kind", "group"} and issuer["name"]
    assert issuer.get("kind", "Issuer") in {"Issuer", "ClusterIssuer"}
    assert issuer.get("group", "cert-manager.io") == "cert-manager.io"
    key = spec.get("privateKey", {})
    assert set(key) <= {"algorithm", "size", "rotationPolicy", "encoding"}
    assert key.get("algorithm", "RSA") in {"RSA", "ECDSA", "Ed25519"}
    assert key.get("rotationPolicy", "Never") in {"Always", "Never"}
    deploy = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert all(name in deploy for name in spec["dnsNames"]), "docs/deploy.md names the MX host of the certificate"


def test_smtp_certificate_is_mounted_where_the_config_points_in_every_ray_pod() -> None:
    secret_name = one("Certificate", "spacebeaver-smtp-tls")["spec"]["secretName"]
    cert_file, key_file = Path(CONFIG.smtp_tls_cert_file), Path(CONFIG.smtp_tls_key_file)
    assert cert_file.parent == key_file.parent and cert_file.is_absolute()
    assert {cert_file.name, key_file.name} == {"tls.crt", "tls.key"} <= CERT_MANAGER_SECRET_KEYS
    for pod in RAY_PODS:
        volumes = {v["name"]: v for v in pod["spec"]["volumes"] if v.get("secret", {}).get("secretName") == secret_name}
        assert len(volumes) == 1, "the certificate's Secret is a volume of every Ray pod"
        (volume,) = volumes.values()
        assert "items" not in volume["secret"] and "optional" not in volume["secret"]
        mounts = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
        assert len(mounts) == 1
        (mount,) = mounts
        assert mount["mountPath"] == str(cert_file.parent) and mount.get("readOnly") is True
        assert "subPath" not in mount, "a subPath mount is never updated on renewal"


def test_every_container_has_requests_and_limits() -> None:
    for pod in ALL_PODS:
        for container in pod["spec"]["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]


# CoreV1Api method prefix -> RBAC verb (the ones a labeller could plausibly use).
API_VERBS = {"read": "get", "list": "list", "watch": "watch", "patch": "patch", "replace": "update"}
API_VERBS |= {"create": "create", "delete": "delete"}


def kube_api_calls(path: Path) -> set[tuple[str, str]]:
    """(verb, resource) of every ``CoreV1Api`` call in a module: methods called on ``self._api``."""
    import ast

    calls = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        if isinstance(target, ast.Attribute) and target.attr == "_api":
            match = re.fullmatch(r"([a-z]+)_namespaced_([a-z_]+)", node.func.attr)
            assert match, f"unexpected Kubernetes API call {node.func.attr}"
            verb, kind = match.groups()
            calls.add((API_VERBS[verb], kind.replace("_", "") + "s"))
    return calls


def test_role_grants_exactly_the_api_calls_the_pod_labeler_makes() -> None:
    calls = kube_api_calls(REPO_ROOT / "messaging" / "runtime" / "podlabel.py")
    assert calls == {("patch", "pods")}
    role, binding = one("Role"), one("RoleBinding")
    granted = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""], "core API group only"
        # Not narrowable to our own pod: KubeRay names pods with a random suffix (see rbac.yaml).
        assert "resourceNames" not in rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        granted |= {(verb, resource) for verb in rule["verbs"] for resource in rule["resources"]}
    assert granted == calls
    assert of_kind("ClusterRole") == [] and of_kind("ClusterRoleBinding") == []
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
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


# --- network policy ----------------------------------------------------------------------------

NAMESPACE = KUSTOMIZATION["namespace"]
RAY_CLUSTER = RAYCLUSTER["metadata"]["name"]
# Ray's ports that run code for whoever reaches them: GCS, Ray Client, dashboard (job API), and a sample of
# the rest (dashboard agent, raylet / object manager / worker ports, which Ray picks at random).
RAY_PORTS = (6379, 10001, 8265, 52365, 20000, 45678)
RAY_CLIENT_PORT = 10001
METRICS_PORT = 8080


def ray_pod_labels(template: dict[str, Any], node_type: str, group: str) -> dict[str, str]:
    """The labels KubeRay gives a Ray pod: the template's, plus ones a template cannot override."""
    kuberay = {"ray.io/cluster": RAY_CLUSTER, "ray.io/node-type": node_type, "ray.io/group": group}
    return {"ray.io/is-ray-node": "yes", **template["metadata"]["labels"], **kuberay}


HEAD_LABELS = ray_pod_labels(HEAD_POD, "head", "headgroup")
WORKER_LABELS = [ray_pod_labels(g["template"], "worker", g["groupName"]) for g in WORKER_GROUPS]
# KubeRay's Redis cleanup Job (GCS fault tolerance) runs a pod built from the head pod's template.
CLEANUP_LABELS = {**HEAD_LABELS, "ray.io/node-type": "redis-cleanup"}


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions)."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: dict[str, Any], source: dict[str, Any]) -> bool:
    """``source``: {"namespace": ns or None (outside the cluster), "labels": pod labels or None}."""
    if "ipBlock" in peer:
        return True  # an address range: assume it covers the source (it covers everyone's traffic)
    if source["namespace"] is None:
        return False
    if "namespaceSelector" in peer:
        if peer["namespaceSelector"] != {} and source["namespace"] != NAMESPACE:
            return False  # a namespace label selector: none of ours would name other namespaces
    elif source["namespace"] != NAMESPACE:
        return False  # a bare podSelector means pods of the policy's own namespace
    return selector_matches(peer.get("podSelector", {}), source["labels"])


def ingress_allowed(pod_labels: dict[str, str], port: int, source: dict[str, Any]) -> bool:
    """Whether the NetworkPolicies let ``source`` connect to TCP ``port`` of a pod in our namespace."""
    policies = [
        p
        for p in of_kind("NetworkPolicy")
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"]["podSelector"], pod_labels)
    ]
    if not policies:
        return True  # no policy selects the pod: all traffic allowed
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(peer_matches(peer, source) for peer in peers):
                return True
    return False


def pod(labels: dict[str, str], namespace: str | None = NAMESPACE) -> dict[str, Any]:
    return {"namespace": namespace, "labels": labels}


INTERNET = {"namespace": None, "labels": None}
OTHER_NAMESPACE = pod({"app.kubernetes.io/name": "spacebeaver-backend", "ray.io/cluster": RAY_CLUSTER}, "elsewhere")
BACKEND = pod(BACKEND_POD["metadata"]["labels"])
ADMIN = pod(ADMIN_POD["metadata"]["labels"])
REDIS = pod(REDIS_POD["metadata"]["labels"])
STRANGER = pod({"app": "something-else"})


def docs_job_labels() -> dict[str, str]:
    """The pod labels of the maintenance Job that docs/deploy.md shows (manage.py upgrade)."""
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    (job,) = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "Job"]
    kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)
    return job["spec"]["template"]["metadata"]["labels"]


def test_network_policies_validate_and_are_applied() -> None:
    policies = {p["metadata"]["name"]: p for p in of_kind("NetworkPolicy")}
    assert set(policies) == {"spacebeaver-ray", "spacebeaver-redis"}
    for policy in policies.values():
        assert policy["apiVersion"] == "networking.k8s.io/v1"
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(policy, version, strict=True)
    # The evaluator the tests below use is strict, so they mean something: an open rule would be caught.
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}, {})
    assert peer_matches({"ipBlock": {"cidr": "0.0.0.0/0"}}, INTERNET)
    assert not peer_matches({"podSelector": {}}, INTERNET)
    assert not peer_matches({"podSelector": {}}, OTHER_NAMESPACE)
    assert peer_matches({"namespaceSelector": {}}, OTHER_NAMESPACE)
    assert ingress_allowed({"no": "policy"}, 6379, INTERNET)


def test_network_policy_selects_every_ray_pod_and_no_other() -> None:
    (ray_policy,) = [p for p in of_kind("NetworkPolicy") if p["metadata"]["name"] == "spacebeaver-ray"]
    selector = ray_policy["spec"]["podSelector"]
    for labels in [HEAD_LABELS, *WORKER_LABELS]:
        assert selector_matches(selector, labels)
    for other in (BACKEND, ADMIN, REDIS):
        assert not selector_matches(selector, other["labels"])
    assert ray_policy["spec"]["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize("port", RAY_PORTS)
def test_ray_ports_are_reached_by_our_ray_pods_only(port: int) -> None:
    for target in [HEAD_LABELS, *WORKER_LABELS]:
        for ray_pod in [HEAD_LABELS, *WORKER_LABELS]:
            assert ingress_allowed(target, port, pod(ray_pod))
        for outsider in (INTERNET, OTHER_NAMESPACE, ADMIN, REDIS, STRANGER):
            assert not ingress_allowed(target, port, outsider), (port, outsider)
        # The driver and the maintenance Jobs: Ray Client, nothing else.
        for client in (BACKEND, pod(docs_job_labels())):
            assert ingress_allowed(target, port, client) is (port == RAY_CLIENT_PORT), (port, client)


def test_no_everyone_rule_covers_a_ray_port() -> None:
    public = {CONFIG.smtp_listen_port, CONFIG.serve_http_port, METRICS_PORT}
    assert of_kind("NetworkPolicy")
    for policy in of_kind("NetworkPolicy"):
        for rule in policy["spec"]["ingress"]:
            peers = rule.get("from") or []
            open_to_all = not peers or any(
                "ipBlock" in peer or peer.get("namespaceSelector") is not None for peer in peers
            )
            if open_to_all:
                ports = {p["port"] for p in rule.get("ports") or []}
                assert ports and ports <= public, f"{policy['metadata']['name']}: {rule}"


def test_mail_webhooks_and_metrics_still_arrive_from_outside() -> None:
    smtp = one("Service", "spacebeaver-smtp")["spec"]["ports"][0]["targetPort"]
    serve = one("Service", "spacebeaver-serve")["spec"]["ports"][0]["targetPort"]
    assert (smtp, serve) == (CONFIG.smtp_listen_port, CONFIG.serve_http_port)
    labelled = {**WORKER_LABELS[0], LABEL_KEY: LABEL_VALUE}
    assert any(selector_matches(p["spec"]["podSelector"], labelled) for p in of_kind("NetworkPolicy"))
    for source in (INTERNET, OTHER_NAMESPACE, STRANGER):
        for target in (labelled, {**HEAD_LABELS, LABEL_KEY: LABEL_VALUE}):
            assert ingress_allowed(target, smtp, source)
            assert ingress_allowed(target, serve, source)  # the ingress controller, in its own namespace
            assert ingress_allowed(target, METRICS_PORT, source)  # Prometheus
    # The admin (behind the same Ingress) is not restricted.
    assert ingress_allowed(ADMIN["labels"], 8000, INTERNET)


def test_redis_is_reached_by_the_ray_pods_only() -> None:
    port = one("Service", "spacebeaver-redis")["spec"]["ports"][0]["port"]
    redis = REDIS["labels"]
    for ray_pod in (HEAD_LABELS, CLEANUP_LABELS, *WORKER_LABELS):
        assert ingress_allowed(redis, port, pod(ray_pod))
    for outsider in (INTERNET, OTHER_NAMESPACE, ADMIN, BACKEND, STRANGER, pod(docs_job_labels())):
        assert not ingress_allowed(redis, port, outsider)


# --- image and versions ------------------------------------------------------------------------


def dockerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((REPO_ROOT / "Dockerfile").read_bytes()))


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
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
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
