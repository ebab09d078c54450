"""The test fake of the Kubernetes API itself (tests/fakes/fake_kube_api.py): the patch content types it takes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from messaging.runtime.podlabel import (
    LABEL_KEY,
    LABEL_VALUE,
    label_patch,
)
from tests.fakes.fake_kube_api import FakeKubeApi
from tests.unit.runtime.test_podlabel import PATH, POD, TOKEN


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(token=TOKEN) as api:
        api.add_pod(POD.name, POD.namespace, labels={"ray.io/cluster": "spacebeaver"})
        yield api


def test_fake_rejects_a_plain_json_content_type(kube: FakeKubeApi) -> None:
    """The fake is strict like the API server, so the Content-Type assertion above means something."""
    import requests

    response = requests.patch(
        kube.url + PATH,
        json=label_patch(True),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 415
    assert LABEL_KEY not in kube.labels(POD.name, POD.namespace)


def test_fake_applies_json_patch(kube: FakeKubeApi) -> None:
    import requests

    ops = [{"op": "add", "path": "/metadata/labels/mail-ingress", "value": "present"}]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json-patch+json"}
    response = requests.patch(kube.url + PATH, json=ops, headers=headers, timeout=5)
    assert response.status_code == 200
    assert response.json()["metadata"]["labels"][LABEL_KEY] == LABEL_VALUE
    bad = [{"op": "remove", "path": "/metadata/labels/absent"}]
    assert requests.patch(kube.url + PATH, json=bad, headers=headers, timeout=5).status_code == 422
