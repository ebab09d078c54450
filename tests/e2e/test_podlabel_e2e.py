"""The mail server labels its pod ``mail-ingress=present``, which the SMTP Service selects.

A real ``MailServer`` in a Ray actor of its own (its own Ray namespace and port, not the shared stack's; without
the courier's senders, which would sweep the shared stack's outbox) runs as if in a pod: the kubelet's environment
(KUBERNETES_SERVICE_HOST/PORT), the downward API's POD_NAME and POD_NAMESPACE, and a mounted ServiceAccount token
and CA, all pointing at the local fake API server (HTTPS on 127.0.0.1). The actor finds it with the same in-cluster
configuration it uses on Kubernetes, over a real socket.
"""

from __future__ import annotations

import dataclasses
import smtplib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from messaging.operations.kinds import sender_pools
from messaging.runtime.podlabel import LABEL_KEY, LABEL_VALUE
from messaging.runtime.pool import NamedPool
from tests.fakes.fake_kube_api import FakeKubeApi

from .conftest import free_port, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-not-a-secret"
NAMESPACE = "spacebeaver"
POD = "spacebeaver-workers-e2e01"


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(token=TOKEN, tls=True) as api:
        api.add_pod(POD, NAMESPACE, labels={"ray.io/cluster": "spacebeaver", "ray.io/group": "workers"})
        yield api


def smtp_greets(port: int) -> bool:
    """True once a real SMTP session opens with 220 (not 421) on the port."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            return client.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


def labelled(kube: FakeKubeApi) -> bool:
    return kube.labels(POD, NAMESPACE).get(LABEL_KEY) == LABEL_VALUE


def label_adds(kube: FakeKubeApi) -> int:
    """PATCH requests that set the label (made by the mail servers under test)."""
    bodies = [r.json() for r in kube.requests if r.method == "PATCH"]
    return sum(1 for b in bodies if isinstance(b, dict) and b.get("metadata", {}).get("labels", {}).get(LABEL_KEY))


@pytest.fixture
def mail_servers(e2e, kube: FakeKubeApi, tmp_path: Path):
    """Make mail servers in pod ``NAMESPACE/POD`` as far as they can tell (each its own port); killed afterwards.
    Restarted by Ray when one dies, as a courier is."""
    from messaging.intake.smtp.server import MailServer

    namespace = f"podlabel-{uuid.uuid4().hex[:8]}"
    account = kube.write_service_account(tmp_path / "serviceaccount", NAMESPACE)
    made = []

    def make(name: str):
        config = dataclasses.replace(e2e.config, smtp_listen_port=free_port(), ray_namespace=namespace)
        actor = (
            ray.remote(max_restarts=-1)(MailServer)
            .options(name=name, namespace=namespace, num_cpus=0, runtime_env={"env_vars": kube.pod_env(POD, NAMESPACE)})
            .remote(
                config, sender_pools({"courier": NamedPool("courier", 1, namespace)}), service_account_dir=str(account)
            )
        )
        made.append(actor)
        return actor, config

    try:
        yield make
    finally:
        for actor in made:
            ray.kill(actor, no_restart=True)


@pytest.fixture
def mail_server(mail_servers):
    return mail_servers("mailserver_podlabel")


def test_label_follows_the_listening_socket_through_drain_and_crash_restart(kube: FakeKubeApi, mail_server) -> None:
    actor, config = mail_server
    port = config.smtp_listen_port

    wait_until(lambda: smtp_greets(port), timeout=60, what="the SMTP greeting")
    wait_until(lambda: labelled(kube), timeout=30, what=f"{LABEL_KEY}={LABEL_VALUE} on the pod")
    patches = [r for r in kube.requests if r.method == "PATCH"]
    assert patches and patches[0].headers["content-type"] == "application/merge-patch+json"

    stats = ray.get(actor.drain.remote(), timeout=30)
    assert stats["draining"] is True
    wait_until(lambda: not labelled(kube), timeout=30, what="the label gone after drain")
    assert not smtp_greets(port)  # still listening, but new sessions get 421

    # A crash: Ray restarts the actor (max_restarts=-1); the new one listens and labels the pod again.
    ray.kill(actor, no_restart=False)
    wait_until(lambda: smtp_greets(port), timeout=60, what="the SMTP greeting after the restart")
    wait_until(lambda: labelled(kube), timeout=30, what="the label back after the restart")
    assert kube.labels(POD, NAMESPACE)["ray.io/cluster"] == "spacebeaver"  # the other labels untouched


def test_a_mail_server_asked_to_relabel_puts_back_the_label_another_on_its_pod_took_off(kube, mail_servers) -> None:
    """An upgrade from the version with mail servers of their own: the retired mail server on a pod drains (its
    label removal is the pod's) beside the courier that stays; the courier is then asked to label the pod again."""
    staying, config = mail_servers("courier_podlabel")
    retired, _ = mail_servers("mailserver_retired")
    for actor in (staying, retired):
        ray.get(actor.start.remote(), timeout=60)
    # Both have labelled the pod (one add alone labels it: the other's could still come after the drain's remove)
    wait_until(lambda: label_adds(kube) >= 2, timeout=30, what="the pod labelled by both")
    ray.get(retired.drain.remote(close_listener=True), timeout=30)
    wait_until(lambda: not labelled(kube), timeout=30, what="the label off after the retired one's drain")
    assert ray.get(staying.relabel.remote(), timeout=30) is True
    wait_until(lambda: labelled(kube), timeout=30, what="the label back on the pod")
    assert smtp_greets(config.smtp_listen_port), "the one that stays still takes mail"
    ray.get(staying.drain.remote(), timeout=30)
    assert ray.get(staying.relabel.remote(), timeout=30) is False, "a draining mail server never asks again"
