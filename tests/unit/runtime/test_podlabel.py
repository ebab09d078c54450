"""PodLabeler drives the real kubernetes client against a local fake API server (127.0.0.1)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from messaging.runtime.podlabel import (
    LABEL_KEY,
    LABEL_VALUE,
    MERGE_PATCH,
    PodLabeler,
    PodRef,
    backoff_delays,
    label_patch,
    pod_from_env,
)
from tests.fakes.fake_kube_api import FakeKubeApi
from tests.waiting import eventually

TOKEN = "test-token-not-a-secret"
POD = PodRef(name="spacebeaver-raycluster-workers-abc12", namespace="spacebeaver")
PATH = f"/api/v1/namespaces/{POD.namespace}/pods/{POD.name}"


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(token=TOKEN) as api:
        api.add_pod(POD.name, POD.namespace, labels={"ray.io/cluster": "spacebeaver"})
        yield api


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def labeler_for(kube: FakeKubeApi, pod: PodRef = POD, **options: Any) -> PodLabeler:
    options.setdefault("sleep", RecordingSleep())
    return PodLabeler.with_token(kube.url, TOKEN, pod, **options)


# --- pure parts -------------------------------------------------------------------------------


def test_pod_from_env_needs_name_namespace_and_service_host() -> None:
    env = {"POD_NAME": "p", "POD_NAMESPACE": "ns", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert pod_from_env(env) == PodRef("p", "ns")
    for missing in env:
        assert pod_from_env({k: v for k, v in env.items() if k != missing}) is None
    assert pod_from_env({**env, "POD_NAME": "  "}) is None


def test_label_patch_sets_and_deletes_with_null() -> None:
    assert label_patch(True) == {"metadata": {"labels": {LABEL_KEY: LABEL_VALUE}}}
    assert label_patch(False) == {"metadata": {"labels": {LABEL_KEY: None}}}


def test_backoff_doubles_up_to_cap() -> None:
    assert backoff_delays(5, 0.5, 3.0) == [0.5, 1.0, 2.0, 3.0]
    assert backoff_delays(1, 0.5, 3.0) == []


# --- against the fake API server ---------------------------------------------------------------


def test_add_sends_merge_patch_and_label_appears(kube: FakeKubeApi) -> None:
    labeler = labeler_for(kube)
    assert labeler.enabled
    assert labeler.add() is True

    (request,) = kube.requests
    assert request.method == "PATCH"
    assert request.path == PATH
    assert request.headers["content-type"] == MERGE_PATCH
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.json() == {"metadata": {"labels": {"mail-ingress": "present"}}}
    labels = kube.labels(POD.name, POD.namespace)
    assert labels == {"ray.io/cluster": "spacebeaver", "mail-ingress": "present"}
    assert kube.pod(POD.name, POD.namespace)["metadata"]["resourceVersion"] == "2"


def test_remove_sends_null_and_label_disappears(kube: FakeKubeApi) -> None:
    labeler = labeler_for(kube)
    labeler.add()
    assert labeler.remove() is True

    assert kube.requests[-1].json() == {"metadata": {"labels": {"mail-ingress": None}}}
    assert kube.requests[-1].headers["content-type"] == MERGE_PATCH
    assert kube.labels(POD.name, POD.namespace) == {"ray.io/cluster": "spacebeaver"}


def test_remove_when_absent_is_fine_and_add_is_idempotent(kube: FakeKubeApi) -> None:
    labeler = labeler_for(kube)
    assert labeler.remove() is True
    assert labeler.add() is True
    assert labeler.add() is True
    assert kube.labels(POD.name, POD.namespace)[LABEL_KEY] == LABEL_VALUE


def test_server_errors_are_retried_with_backoff_then_succeed(kube: FakeKubeApi) -> None:
    sleep = RecordingSleep()
    labeler = labeler_for(kube, attempts=4, base_delay=0.25, max_delay=1.0, sleep=sleep)
    kube.fail_next(2, status=500)
    assert labeler.add() is True
    assert len(kube.requests) == 3
    assert sleep.calls == [0.25, 0.5]
    assert kube.labels(POD.name, POD.namespace)[LABEL_KEY] == LABEL_VALUE


def test_conflict_is_retried(kube: FakeKubeApi) -> None:
    labeler = labeler_for(kube)
    kube.fail_next(1, status=409)
    assert labeler.remove() is True
    assert len(kube.requests) == 2


def test_persistent_errors_are_logged_not_raised(kube: FakeKubeApi, caplog: pytest.LogCaptureFixture) -> None:
    sleep = RecordingSleep()
    labeler = labeler_for(kube, attempts=3, base_delay=0.1, sleep=sleep)
    kube.fail_next(10, status=503)
    with caplog.at_level(logging.WARNING, logger="messaging.runtime.podlabel"):
        assert labeler.add() is False
    assert len(kube.requests) == 3
    assert sleep.calls == [0.1, 0.2]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "503" in errors[0].getMessage() and POD.name in errors[0].getMessage()
    assert TOKEN not in caplog.text
    assert LABEL_KEY not in kube.labels(POD.name, POD.namespace)


def test_unknown_pod_is_not_retried(kube: FakeKubeApi, caplog: pytest.LogCaptureFixture) -> None:
    sleep = RecordingSleep()
    labeler = labeler_for(kube, pod=PodRef("gone", POD.namespace), sleep=sleep)
    with caplog.at_level(logging.ERROR, logger="messaging.runtime.podlabel"):
        assert labeler.add() is False
    assert len(kube.requests) == 1
    assert sleep.calls == []
    assert "404" in caplog.text


def test_wrong_token_is_an_error_not_an_exception(kube: FakeKubeApi) -> None:
    labeler = PodLabeler.with_token(kube.url, "wrong", POD, sleep=RecordingSleep())
    assert labeler.add() is False
    assert len(kube.requests) == 1  # 401 is not worth retrying


def test_unreachable_api_server_is_swallowed() -> None:
    with FakeKubeApi() as stopped:
        url = stopped.url
    sleep = RecordingSleep()
    labeler = PodLabeler.with_token(url, TOKEN, POD, attempts=2, base_delay=0.01, sleep=sleep, request_timeout=2)
    assert labeler.add() is False
    assert sleep.calls == [0.01]


async def _add_and_remove(labeler: PodLabeler) -> tuple[bool, bool]:
    return await labeler.add_async(), await labeler.remove_async()


def test_async_wrappers_reach_the_server(kube: FakeKubeApi) -> None:
    import asyncio

    assert asyncio.run(_add_and_remove(labeler_for(kube))) == (True, True)
    assert [r.json()["metadata"]["labels"][LABEL_KEY] for r in kube.requests] == [LABEL_VALUE, None]


# --- outside a pod ------------------------------------------------------------------------------


def test_outside_a_pod_is_a_noop_that_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    labeler = PodLabeler.from_env({"PATH": "/usr/bin"})
    assert not labeler.enabled
    with caplog.at_level(logging.INFO, logger="messaging.runtime.podlabel"):
        assert labeler.add() is False
        assert labeler.remove() is False
        assert labeler.add() is False
    assert len(caplog.records) == 1
    assert "disabled" in caplog.records[0].getMessage()


def test_pod_env_without_service_account_files_is_a_noop(caplog: pytest.LogCaptureFixture) -> None:
    """POD_NAME etc. set but no token mounted (automountServiceAccountToken: false)."""
    env = {
        "POD_NAME": "p",
        "POD_NAMESPACE": "ns",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    with caplog.at_level(logging.INFO, logger="messaging.runtime.podlabel"):
        labeler = PodLabeler.from_env(env)
        assert labeler.add() is False
    assert not labeler.enabled
    assert "no in-cluster config" in caplog.text and "token file does not exist" in caplog.text


# --- last request wins -------------------------------------------------------------------------


def test_remove_supersedes_an_add_pausing_between_retries(kube: FakeKubeApi) -> None:
    """A drain's remove while the add waits to retry: the add stops, no retry puts the label back."""
    import threading
    import time

    labeler = PodLabeler.with_token(kube.url, TOKEN, POD, attempts=4, base_delay=30.0, max_delay=30.0)
    kube.fail_next(1, status=503)
    added: list[bool] = []
    adder = threading.Thread(target=lambda: added.append(labeler.add()))
    adder.start()
    deadline = time.monotonic() + 10
    while len(kube.requests) < 1 and time.monotonic() < deadline:  # the add's first attempt
        time.sleep(0.01)

    assert labeler.remove() is True
    adder.join(timeout=10)
    assert added == [False]
    assert [r.json()["metadata"]["labels"][LABEL_KEY] for r in kube.requests] == [LABEL_VALUE, None]
    assert LABEL_KEY not in kube.labels(POD.name, POD.namespace)


def test_async_requests_count_in_the_order_they_were_made(kube: FakeKubeApi) -> None:
    """An add asked for before a remove never runs after it, even if its thread starts later."""
    import asyncio

    labeler = labeler_for(kube)

    async def add_then_remove() -> tuple[bool, bool]:
        add = labeler.add_async()  # asked for first, awaited (so run) only after the remove
        removed = await labeler.remove_async()
        return await add, removed

    assert asyncio.run(add_then_remove()) == (False, True)
    assert [r.json()["metadata"]["labels"][LABEL_KEY] for r in kube.requests] == [None]
    assert LABEL_KEY not in kube.labels(POD.name, POD.namespace)


def test_keep_added_tries_again_until_the_api_server_confirms(kube: FakeKubeApi) -> None:
    import asyncio

    sleep = RecordingSleep()
    labeler = labeler_for(kube, attempts=2, sleep=sleep)
    kube.fail_next(5, status=503)  # two rounds of two attempts fail, the third round's first try too
    assert asyncio.run(labeler.keep_added(base_delay=0.01, max_delay=0.02)) is True
    assert len(kube.requests) == 6
    assert kube.labels(POD.name, POD.namespace)[LABEL_KEY] == LABEL_VALUE


def test_keep_added_gives_way_to_a_later_remove(kube: FakeKubeApi) -> None:
    import asyncio

    labeler = labeler_for(kube, attempts=1)
    kube.fail_next(1, status=503)

    async def drain_while_adding() -> tuple[bool, bool]:
        adding = asyncio.ensure_future(labeler.keep_added(base_delay=0.05, max_delay=0.05))
        await eventually(lambda: kube.requests, what="the first label request")
        removed = await labeler.remove_async()
        return await asyncio.wait_for(adding, timeout=10), removed

    assert asyncio.run(drain_while_adding()) == (False, True)
    assert [r.json()["metadata"]["labels"][LABEL_KEY] for r in kube.requests] == [LABEL_VALUE, None]
    assert LABEL_KEY not in kube.labels(POD.name, POD.namespace)


def test_keep_added_outside_a_pod_returns_at_once() -> None:
    import asyncio

    labeler = PodLabeler.from_env({"PATH": "/usr/bin"})
    assert asyncio.run(asyncio.wait_for(labeler.keep_added(base_delay=60), timeout=10)) is False


# --- in-cluster configuration, the way a pod finds the API server ---------------------------------


@pytest.fixture
def tls_kube() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(token=TOKEN, tls=True) as api:
        api.add_pod(POD.name, POD.namespace, labels={"ray.io/cluster": "spacebeaver"})
        yield api


def test_in_cluster_config_reaches_the_api_server_over_tls(tls_kube: FakeKubeApi, tmp_path: Any) -> None:
    """from_env with KUBERNETES_SERVICE_HOST/PORT and a mounted token + CA, as in a pod."""
    account = tls_kube.write_service_account(tmp_path / "serviceaccount", POD.namespace)
    labeler = PodLabeler.from_env(tls_kube.pod_env(POD.name, POD.namespace), service_account_dir=str(account))
    assert labeler.enabled
    assert labeler.add() is True
    assert tls_kube.labels(POD.name, POD.namespace)[LABEL_KEY] == LABEL_VALUE
    assert tls_kube.requests[0].headers["authorization"].lower() == f"bearer {TOKEN}"
    assert labeler.remove() is True
    assert LABEL_KEY not in tls_kube.labels(POD.name, POD.namespace)


def test_in_cluster_config_refuses_a_server_it_does_not_trust(tls_kube: FakeKubeApi, tmp_path: Any) -> None:
    account = tls_kube.write_service_account(tmp_path / "serviceaccount", POD.namespace)
    with FakeKubeApi(token=TOKEN, tls=True) as stranger:  # another CA
        (account / "ca.crt").write_bytes(stranger.ca_cert.read_bytes())
    labeler = PodLabeler.from_env(
        tls_kube.pod_env(POD.name, POD.namespace), service_account_dir=str(account), attempts=1
    )
    assert labeler.add() is False
    assert tls_kube.requests == []
    assert LABEL_KEY not in tls_kube.labels(POD.name, POD.namespace)
