"""POST /rockblock without Ray: the Serve class's handler, the real batcher and user logic, a real database (as in
test_webhooks.py); posts signed with a key of the test's own, as Ground Control signs them with theirs."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from messaging.core.codec import encode_from_device
from messaging.core.types import Protocol
from messaging.intake import rockblock_webhook
from messaging.intake.user_store import LocalUsers
from messaging.intake.webhook_handler import WebhookHandler
from messaging.intake.webhooks import make_app
from messaging.runtime.config import Config
from tests.unit.satellite.test_rockblock import OTHER_PRIVATE, PUBLIC, signed
from web.accounts.models import Device
from web.delivery.models import Message

pytestmark = pytest.mark.django_db(transaction=True)
IMEI = 300434063180550


@pytest.fixture
def config(tmp_path):
    key = tmp_path / "jwt.pem"
    key.write_text(PUBLIC)
    return Config(email_domain="beaver.test", rockblock_jwt_public_key_file=str(key))


def client_for(config, pool) -> TestClient:
    return TestClient(make_app(WebhookHandler(config, pool)), raise_server_exceptions=False)


@pytest.fixture
def webhooks(config):
    return client_for(config, LocalUsers(config, {}))


@pytest.fixture
def device(make_user):
    user = make_user(device=False)
    return Device.objects.create(network="rockblock", device_id=IMEI, owner=user)


def mo(text="on the summit", to="amy@example.org", momsn=7, **extra) -> dict:
    data = encode_from_device([(text, Protocol.EMAIL, to)]).hex()
    return {
        "imei": str(IMEI),
        "serial": "12345",
        "momsn": str(momsn),
        "transmit_time": "26-11-24 09:41:50",
        "iridium_latitude": "52.3867",
        "iridium_longitude": "0.2938",
        "iridium_cep": "8",
        "data": data,
        **extra,
    }


def post(webhooks, fields: dict, *, as_json: bool = False, body: bytes | None = None) -> tuple[int, str]:
    """POST /rockblock through the webhooks' HTTP routes (FastAPI's TestClient)."""
    if body is None:
        body = json.dumps(fields).encode() if as_json else urlencode(fields).encode()
    content_type = "application/json" if as_json else "application/x-www-form-urlencoded"
    response = webhooks.post("/rockblock", content=body, headers={"content-type": content_type})
    return response.status_code, response.text


def test_a_signed_post_is_stored_for_the_device_and_a_redelivery_stores_nothing_new(webhooks, device):
    fields = signed(mo())
    assert post(webhooks, fields)[0] == 200
    (row,) = Message.objects.filter(device=device)
    assert (row.direction, row.protocol, row.recipient, row.text) == (
        "from_device",
        "email",
        "amy@example.org",
        "on the summit",
    )
    assert row.idempotency_key == f"rockblock:{IMEI}:7:261124094150:0"
    assert (row.latitude, row.longitude, row.location_cep_km) == (52.3867, 0.2938, 8.0), "its position is kept"
    assert post(webhooks, fields)[0] == 200
    assert Message.objects.filter(device=device).count() == 1


def test_a_json_post_is_taken_too_and_a_wrapped_momsn_is_a_new_message(webhooks, device):
    assert post(webhooks, signed(mo(momsn=7)), as_json=True)[0] == 200
    later = signed(mo(momsn=7, transmit_time="26-12-30 08:00:00"))  # momsn wrapped round to 7 again
    assert post(webhooks, later, as_json=True)[0] == 200
    assert Message.objects.filter(device=device).count() == 2


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(mo(), id="no JWT"),
        pytest.param(signed(mo(), private=OTHER_PRIVATE), id="another key"),
        pytest.param(
            {**signed(mo()), "data": encode_from_device([("pay me", Protocol.EMAIL, "x@y.z")]).hex()}, id="tampered"
        ),
    ],
)
def test_a_forged_post_is_refused_and_nothing_is_stored(webhooks, device, fields):
    assert post(webhooks, fields) == (403, "forbidden")
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "change",
    [{"data": "zz12"}, {"data": "ffff0102"}, {"momsn": "70000"}, {"transmit_time": "yesterday"}],
    ids=["bad hex", "bad protobuf", "momsn out of range", "bad time"],
)
def test_a_signed_post_that_cannot_be_read_is_a_dead_letter_answered_200_once(webhooks, device, change):
    fields = signed(mo(**change))
    assert post(webhooks, fields)[0] == 200, "taken, so Ground Control does not post it forever"
    assert post(webhooks, fields)[0] == 200
    (row,) = Message.objects.all()
    assert row.status == "dead" and row.last_error


def test_a_body_that_is_not_a_post_is_a_bad_request(webhooks, device):
    assert post(webhooks, {}, as_json=True, body=b"[1, 2")[0] == 400
    assert not Message.objects.exists()


def test_trouble_storing_is_503_so_ground_control_posts_again(config, device):
    class SlowUsers(LocalUsers):
        async def acall(self, idx, method, *args, timeout=None):
            raise TimeoutError("the store did not finish in time")

    webhooks = client_for(config, SlowUsers(config, {}))
    assert post(webhooks, signed(mo()))[0] == 503
    assert post(webhooks, signed(mo(data="zz")))[0] == 503, "a dead letter too is stored before the 200"
    assert not Message.objects.exists()


def test_the_decision_is_pure():
    assert rockblock_webhook.decide(mo(), PUBLIC).forged == "no JWT in the post"
    bad = rockblock_webhook.decide(signed(mo(momsn="x")), PUBLIC).dead_letter
    assert bad is not None and bad.key().startswith("rockblock-malformed:") and "momsn" in bad.reason
    packet = rockblock_webhook.decide(signed(mo()), PUBLIC).packet
    assert packet is not None and packet.device_id == IMEI and packet.encoding == "hex"
