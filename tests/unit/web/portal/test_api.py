"""The device lookup API for provisioning tools: id + claim code -> mailbox and phone number."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from web.accounts.models import Device
from web.portal import ratelimit

pytestmark = pytest.mark.django_db
CODE = "ABCD-EFGH-JKMN"


def device(device_id, owner=None, code=CODE):
    row = Device(device_id=device_id, owner=owner, is_active=owner is not None)
    row.set_claim_code(code)
    row.save()
    return row


def lookup(client, body, *, as_json=True):
    if as_json:
        return client.post(reverse("portal:device_lookup"), json.dumps(body), content_type="application/json")
    return client.post(reverse("portal:device_lookup"), body)


def test_the_right_code_returns_the_mailbox_and_phone_number(person):
    owner = person("packer", twilio_number="+14155550177")
    device(9001, owner)
    client = Client(enforce_csrf_checks=True)  # provisioning tools have no CSRF cookie
    response = lookup(client, {"device_id": 9001, "claim_code": "abcd-efgh-jkmn"})
    assert response.status_code == 200
    assert response.json() == {
        "device_id": 9001,
        "claimed": True,
        "mailbox": "packer@example.com",
        "phone_number": "+14155550177",
    }
    form = lookup(client, {"device_id": "9001", "claim_code": CODE}, as_json=False)
    assert form.status_code == 200 and form.json()["mailbox"] == "packer@example.com"


def test_an_unclaimed_device_has_nothing_assigned(client):
    device(9002)
    assert lookup(client, {"device_id": 9002, "claim_code": CODE}).json() == {
        "device_id": 9002,
        "claimed": False,
        "mailbox": None,
        "phone_number": None,
    }


def test_a_wrong_code_reads_exactly_as_an_unknown_id(client, person):
    device(9003, person())
    wrong = lookup(client, {"device_id": 9003, "claim_code": "WRONG-CODE-000"})
    unknown = lookup(client, {"device_id": 9999, "claim_code": CODE})
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.content == unknown.content
    assert "packer" not in wrong.content.decode()


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", json.dumps({"device_id": "x", "claim_code": CODE}).encode(), b"{}"]
)
def test_bad_requests_get_a_clear_400(client, body):
    response = client.post(reverse("portal:device_lookup"), body, content_type="application/json")
    assert response.status_code == 400 and "error" in response.json()


def test_only_post_so_codes_stay_out_of_urls_and_logs(client):
    assert client.get(reverse("portal:device_lookup"), {"device_id": 1, "claim_code": CODE}).status_code == 405


def test_lookups_are_rate_limited(client, monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "lookup-ip", (3, 3600))
    device(9004)
    for _ in range(3):
        assert lookup(client, {"device_id": 9004, "claim_code": "GUESS-GUESS-1"}).status_code == 404
    limited = lookup(client, {"device_id": 9004, "claim_code": CODE})
    assert limited.status_code == 429 and limited["Retry-After"] == "3600"
