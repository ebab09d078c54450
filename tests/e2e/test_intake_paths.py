"""Hive intake details end to end: push webhook, dead letters, two pollers, the admin through Serve."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from messaging.core.codec import encode_from_device
from messaging.core.types import Protocol

from .conftest import wait_until

pytestmark = pytest.mark.e2e


def test_undecodable_packet_is_dead_lettered_then_acked(e2e, new_user):
    from web.delivery.models import Message

    user = new_user()
    device_id = user.devices.get().device_id
    packet = e2e.box.hive.device_send(device_id, base64.b64encode(b"\xff\x00 not a protobuf").decode())
    wait_until(lambda: packet["packetId"] in e2e.box.hive.acked_ids(), what="dead letter acked")
    row = Message.objects.get(idempotency_key=f"hive:{packet['packetId']}")
    assert row.status == "dead" and "undecodable" in row.last_error and row.device.device_id == device_id


def test_malformed_hive_item_is_dead_lettered_and_acked_beside_a_good_packet(e2e, new_user):
    """An item whose fields cannot be read (``data`` not a string) never holds back its neighbour, and is not
    fetched again forever: stored as a dead letter with the raw item, then acked."""
    from web.delivery.models import Message

    user = new_user()
    device_id = user.devices.get().device_id
    bad = e2e.box.hive.device_send_malformed(device_id, data=12345)
    data = encode_from_device([("beside the bad one", Protocol.EMAIL, "friend@example.org")])
    good = e2e.box.hive.device_send(device_id, base64.b64encode(data).decode())
    wait_until(lambda: {bad["packetId"], good["packetId"]} <= e2e.box.hive.acked_ids(), what="both acked")
    dead = Message.objects.get(idempotency_key=f"hive:{bad['packetId']}")
    assert dead.status == "dead" and "malformed" in dead.last_error and "12345" in dead.text
    assert Message.objects.get(idempotency_key=f"hive:{good['packetId']}:0").status in ("received", "sending", "sent")


def test_two_pollers_store_each_packet_once(e2e, new_user):
    from web.delivery.models import Message

    assert e2e.config.pool_size >= 2, "both couriers poll the same Hive"
    user = new_user()
    device_id = user.devices.get().device_id
    ids = []
    for i in range(10):
        data = encode_from_device([(f"note {i}", Protocol.EMAIL, f"friend{i}@example.org")])
        ids.append(e2e.box.hive.device_send(device_id, base64.b64encode(data).decode())["packetId"])
    wait_until(lambda: set(ids) <= e2e.box.hive.acked_ids(), what="all packets acked")
    keys = list(Message.objects.filter(device__device_id=device_id).values_list("idempotency_key", flat=True))
    assert sorted(keys) == sorted(f"hive:{i}:0" for i in ids)
    wait_until(
        lambda: len([m for m in e2e.box.relay.messages if m["mail_from"].startswith(user.username)]) >= 10,
        what="ten mails at the relay",
    )
    sent = [m for m in e2e.box.relay.messages if m["mail_from"].startswith(user.username)]
    assert len(sent) == 10, "each device message mailed exactly once"


def test_hive_push_webhook(e2e, new_user):
    from web.delivery.models import Message

    user = new_user()
    device_id = user.devices.get().device_id
    data = base64.b64encode(encode_from_device([("pushed", Protocol.EMAIL, "a@example.org")])).decode()
    packet = {
        "packetId": 88000001,
        "messageId": 1,
        "deviceType": 1,
        "deviceId": device_id,
        "dataType": 6,
        "userApplicationId": 0,
        "len": 10,
        "data": data,
        "status": 0,
        "hiveRxTime": "2026-11-23T10:00:00",
    }
    url = f"{e2e.base_url}/swarm"
    assert requests.post(url, json=packet, headers={"X-Swarm-Secret": "wrong"}, timeout=30).status_code == 403
    assert not Message.objects.filter(idempotency_key="hive:88000001:0").exists()
    secret = {"X-Swarm-Secret": e2e.config.swarm_webhook_secret}
    assert requests.post(url, data="{not json", headers=secret, timeout=30).status_code == 400
    for _ in range(2):  # a re-delivered push stores nothing new
        r = requests.post(url, data=json.dumps(packet), headers=secret, timeout=30)
        assert r.status_code == 200
    assert Message.objects.filter(idempotency_key="hive:88000001:0", user=user).count() == 1
    # one unreadable item in a push is stored as a dead letter; its neighbour is stored as usual
    broken = dict(packet, packetId=88000002, data=None)
    neighbour = dict(packet, packetId=88000003)
    r = requests.post(url, data=json.dumps([broken, neighbour]), headers=secret, timeout=30)
    assert r.status_code == 200 and r.json() == {"stored": 1, "dead_lettered": 1}
    assert Message.objects.get(idempotency_key="hive:88000002").status == "dead"
    assert Message.objects.filter(idempotency_key="hive:88000003:0", user=user).count() == 1


def test_admin_is_served(e2e):
    r = requests.get(f"{e2e.base_url}/admin/login/", timeout=30)
    assert r.status_code == 200 and "csrfmiddlewaretoken" in r.text
    css = requests.get(f"{e2e.base_url}/static/admin/css/base.css", timeout=30)
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert requests.get(f"{e2e.base_url}/healthz", timeout=30).json() == {"ok": True}
