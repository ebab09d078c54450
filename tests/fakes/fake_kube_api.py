"""A local fake of the Kubernetes API server's pod endpoints, on 127.0.0.1 only.

Speaks the real wire format for what :mod:`messaging.runtime.podlabel` uses:

* ``GET   /api/v1/namespaces/{ns}/pods/{name}`` -> the Pod JSON, or a 404 ``Status``.
* ``PATCH /api/v1/namespaces/{ns}/pods/{name}`` with ``Content-Type``
  ``application/merge-patch+json`` (RFC 7386), ``application/strategic-merge-patch+json``
  (applied like a merge patch: exact for maps such as labels, lists are replaced) or
  ``application/json-patch+json`` (RFC 6902, via the ``jsonpatch`` package). Any other type
  gets 415 like the real server; a malformed patch 400; a failing JSON-patch op 422; an
  invalid label 422. A successful patch bumps ``metadata.resourceVersion``.

Every request is recorded; ``fail_next(n, status)`` answers the next ``n`` requests with an
error ``Status`` (500, 409, ...). With ``token`` set, requests must carry
``Authorization: Bearer <token>`` (the scheme in any case, like the real server) or get 401.

With ``tls=True`` it serves HTTPS with a throwaway self-signed certificate for 127.0.0.1, as
the in-cluster configuration of the kubernetes client insists on (``https://`` +
KUBERNETES_SERVICE_HOST:PORT, verified against the mounted ``ca.crt``).
:meth:`FakeKubeApi.write_service_account` writes what the kubelet mounts into a pod
(``token``, ``ca.crt``, ``namespace``) and :meth:`FakeKubeApi.pod_env` gives the environment
the kubelet and the downward API set, so code under test finds this server exactly the way
it finds the real one.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import re
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch

POD_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[a-z0-9-]+)/pods/(?P<name>[a-z0-9.-]+)$")
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
STATUS_REASONS = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 409: "Conflict", 415: ""}
STATUS_REASONS |= {422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def label_errors(pod: dict[str, Any]) -> list[str]:
    """What the real API server's validation would say about the pod's labels."""
    labels = pod.get("metadata", {}).get("labels") or {}
    errors = []
    for key, value in labels.items():
        if not isinstance(value, str):
            errors.append(f"metadata.labels[{key}]: Invalid value: must be a string")
        elif len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(f"metadata.labels[{key}]: Invalid value: {value!r}")
    return errors


def status_body(code: int, message: str, name: str = "") -> dict[str, Any]:
    """A ``metav1.Status`` failure object, as the API server returns with every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": STATUS_REASONS.get(code, ""),
        "code": code,
    }
    if name:
        body["details"] = {"name": name, "kind": "pods"}
    return body


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A CA-capable self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def make_pod(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A minimal but well-formed Pod object."""
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "resourceVersion": "1",
            "labels": dict(labels or {}),
        },
        "spec": {"containers": [{"name": "ray-worker", "image": "spacebeaver:test"}]},
        "status": {"phase": "Running"},
    }


@dataclass
class RecordedRequest:
    """One request as received; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _State:
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)
    token: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeKubeApi:
    """Run with ``with FakeKubeApi() as api:``; point a client at ``api.url``."""

    def __init__(self, token: str | None = None, tls: bool = False) -> None:
        self._state = _State(token=token)
        state = self._state

        class Handler(_Handler):
            shared = state

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._files = tempfile.TemporaryDirectory(prefix="fake-kube-api-")
        self.ca_cert: Path | None = None
        if tls:
            self.ca_cert, key = self_signed_certificate(Path(self._files.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca_cert, key)
            # Handshake in the request thread, not in the accept loop.
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube-api", daemon=True
        )

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_cert else 'http'}://{self.host}:{self.port}"

    def write_service_account(self, directory: Path, namespace: str) -> Path:
        """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount (needs tls)."""
        assert self.ca_cert is not None and self._state.token is not None, "needs tls=True and a token"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self._state.token)
        (directory / "ca.crt").write_bytes(self.ca_cert.read_bytes())
        (directory / "namespace").write_text(namespace)
        return directory

    def pod_env(self, name: str, namespace: str) -> dict[str, str]:
        """The environment of a container in pod ``namespace/name``: kubelet plus downward API."""
        return {
            "KUBERNETES_SERVICE_HOST": self.host,
            "KUBERNETES_SERVICE_PORT": str(self.port),
            "POD_NAME": name,
            "POD_NAMESPACE": namespace,
        }

    def start(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        self._files.cleanup()

    def __enter__(self) -> FakeKubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_pod(self, name: str, namespace: str, labels: dict[str, str] | None = None) -> None:
        with self._state.lock:
            self._state.pods[(namespace, name)] = make_pod(name, namespace, labels)

    def pod(self, name: str, namespace: str) -> dict[str, Any]:
        with self._state.lock:
            return copy.deepcopy(self._state.pods[(namespace, name)])

    def labels(self, name: str, namespace: str) -> dict[str, str]:
        return self.pod(name, namespace)["metadata"].get("labels") or {}

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` requests with ``status`` and a ``Status`` body."""
        with self._state.lock:
            self._state.faults.extend([status] * count)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)


def _bearer_matches(header: str | None, token: str) -> bool:
    """``Bearer <token>``, the scheme compared case-insensitively (the client's in-cluster
    configuration sends ``bearer``)."""
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and value.strip() == token


class _Handler(BaseHTTPRequestHandler):
    shared: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded requests are the log."""

    def setup(self) -> None:
        super().setup()
        self._secure = True
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self._secure = False  # a client that gave up or did not trust us: nothing to answer

    def handle(self) -> None:
        if self._secure:
            super().handle()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        state = self.shared
        with state.lock:
            headers = {key.lower(): value for key, value in self.headers.items()}
            state.requests.append(RecordedRequest(method, self.path, headers, body))
            fault = state.faults.pop(0) if state.faults else None
            if fault is not None:
                return self._reply(fault, status_body(fault, f"injected fault {fault}"))
            if state.token is not None and not _bearer_matches(self.headers.get("Authorization"), state.token):
                return self._reply(401, status_body(401, "Unauthorized"))
            match = POD_PATH.match(self.path.split("?", 1)[0])
            if match is None:
                return self._reply(404, status_body(404, "the server could not find the requested resource"))
            key = (match["ns"], match["name"])
            pod = state.pods.get(key)
            if pod is None:
                return self._reply(404, status_body(404, f'pods "{key[1]}" not found', key[1]))
            if method == "GET":
                return self._reply(200, pod)
            code, result = self._patched(pod, body)
            if code == 200:
                version = int(pod["metadata"].get("resourceVersion", "0")) + 1
                result["metadata"]["resourceVersion"] = str(version)
                state.pods[key] = result
            return self._reply(code, result)

    def _patched(self, pod: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type not in PATCH_TYPES:
            accepted = ", ".join(PATCH_TYPES)
            message = f"the body of the request was in an unknown format - accepted media types include: {accepted}"
            return 415, status_body(415, message)
        try:
            patch = json.loads(body)
        except ValueError as exc:
            return 400, status_body(400, f"error decoding patch: {exc}")
        if content_type == JSON_PATCH:
            if not isinstance(patch, list):
                return 400, status_body(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            try:
                result = jsonpatch.apply_patch(pod, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                return 422, status_body(422, f"the server rejected our request due to an error in our request: {exc}")
        else:
            if not isinstance(patch, dict):
                return 400, status_body(
                    400, "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            result = merge_patch(pod, patch)
        errors = label_errors(result)
        if errors:
            return 422, status_body(422, "; ".join(errors), pod["metadata"]["name"])
        return 200, result

    def _reply(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code, HTTPStatus(code).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
