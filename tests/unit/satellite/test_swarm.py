"""HiveClient against a real FakeHive over loopback sockets, plus the pure helpers of messaging.satellite.swarm."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from messaging.core.errors import PermanentDeliveryError, TemporaryDeliveryError
from messaging.sandbox.fake_hive import FakeHive
from messaging.satellite.swarm import (
    MAX_DATA_BYTES,
    HiveAuthError,
    HiveClient,
    HivePacket,
    check_send_data,
    error_for_response,
    hive_error_message,
    parse_retry_after,
)

PASSWORD = "pw-Zq81-do-not-log"


def packets_of(client: HiveClient, count: int = 100) -> list[HivePacket]:
    """The readable packets of one fetch."""
    return client.fetch_batch(count)[0]


KNOWN_DEVICES = {101, 102}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def hive() -> Iterator[FakeHive]:
    fake = FakeHive(username="beaver", password=PASSWORD, devices=KNOWN_DEVICES, seed=7).start()
    yield fake
    fake.stop()


@pytest.fixture
def client(hive: FakeHive) -> Iterator[HiveClient]:
    c = HiveClient(hive.base_url, "beaver", PASSWORD, timeout=5)
    yield c
    c.close()


# -- pure helpers -------------------------------------------------------------------------------


def test_packet_from_json_maps_names_and_ignores_extra_fields() -> None:
    wire = {
        "packetId": 11,
        "messageId": 22,
        "deviceType": 1,
        "deviceId": 101,
        "deviceName": "tile",
        "direction": 1,
        "dataType": 6,
        "userApplicationId": 3,
        "organizationId": 44,
        "len": 5,
        "data": b64(b"hello"),
        "ackPacketId": 0,
        "status": 0,
        "hiveRxTime": "2021-12-26T07:44:26.374Z",
        "somethingNew": [1, 2],
    }
    packet = HivePacket.from_json(wire)
    assert (packet.packet_id, packet.message_id, packet.device_id) == (11, 22, 101)
    assert (packet.user_application_id, packet.organization_id, packet.len) == (3, 44, 5)
    assert (packet.hive_rx_time, packet.status, packet.ack_packet_id) == ("2021-12-26T07:44:26.374Z", 0, 0)
    device_packet = packet.device_packet()
    assert device_packet.payload() == b"hello"
    assert (device_packet.key, device_packet.device_id) == ("hive:11", 101)


@pytest.mark.parametrize("missing", ["packetId", "deviceId", "data"])
def test_packet_from_json_requires_ids_and_data(missing: str) -> None:
    wire = {"packetId": 1, "deviceId": 2, "data": b64(b"x")}
    del wire[missing]
    with pytest.raises(ValueError, match=missing):
        HivePacket.from_json(wire)


@pytest.mark.parametrize("bad", [{"packetId": "abc"}, {"packetId": True}, {"deviceId": 1.5}, {"data": 7}])
def test_packet_from_json_rejects_wrong_types(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HivePacket.from_json({"packetId": 1, "deviceId": 2, "data": b64(b"x"), **bad})


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, TemporaryDeliveryError), (503, TemporaryDeliveryError), (429, TemporaryDeliveryError),
     (408, TemporaryDeliveryError), (401, TemporaryDeliveryError), (400, PermanentDeliveryError),
     (403, PermanentDeliveryError), (404, PermanentDeliveryError)],
)  # fmt: skip
def test_error_for_response_classifies_status(status: int, kind: type[Exception]) -> None:
    error = error_for_response("send", status, '{"message": "device 9 not found"}')
    assert type(error) is kind
    assert "device 9 not found" in str(error) and str(status) in str(error)


def test_error_message_falls_back_to_text() -> None:
    assert hive_error_message("<html> Bad   Gateway </html>") == "<html> Bad Gateway </html>"
    assert hive_error_message('{"error": "Bad Request"}') == "Bad Request"


def test_check_send_data_limits() -> None:
    assert check_send_data(b64(b"a" * MAX_DATA_BYTES)) == MAX_DATA_BYTES
    for bad in (b64(b"a" * (MAX_DATA_BYTES + 1)), "not base64!", ""):
        with pytest.raises(PermanentDeliveryError):
            check_send_data(bad)


# -- client against the fake Hive ---------------------------------------------------------------


def test_fetch_and_ack_round_trip(hive: FakeHive, client: HiveClient) -> None:
    sent = requests.post(
        f"{hive.base_url}/_sandbox/device_send", json={"deviceId": 101, "data": b64(b"hi there")}, timeout=5
    ).json()
    packets, _ = client.fetch_batch()
    assert [p.packet_id for p in packets] == [sent["packetId"]]
    packet = packets[0]
    assert packet.device_id == 101 and packet.message_id == sent["messageId"] != packet.packet_id
    assert packet.device_packet().payload() == b"hi there" and packet.len == 8 and packet.direction == 1
    assert packet.hive_rx_time

    client.ack(packet.packet_id)
    assert packets_of(client) == []
    assert hive.acked_ids() == {packet.packet_id}
    assert hive.logins == 1  # logged in once, lazily, and the session was reused


def test_fetch_honours_count_and_keeps_order(hive: FakeHive, client: HiveClient) -> None:
    ids = [hive.device_send(102, b64(bytes([i])))["packetId"] for i in range(5)]
    assert [p.packet_id for p in packets_of(client, count=3)] == ids[:3]
    client.ack(ids[0])
    assert [p.packet_id for p in packets_of(client, count=10)] == ids[1:]


def test_double_ack_is_counted_and_unknown_ack_is_permanent(hive: FakeHive, client: HiveClient) -> None:
    packet = hive.device_send(101, b64(b"x"))
    client.ack(packet["packetId"])
    client.ack(packet["packetId"])
    state = requests.get(f"{hive.base_url}/_sandbox/state", timeout=5).json()
    assert state["duplicate_acks"] == 1 and state["acked"] == 1 and state["pending"] == 0
    with pytest.raises(PermanentDeliveryError, match="not found"):
        client.ack(packet["messageId"])  # a messageId is not a packetId


def test_relogin_after_session_expiry(hive: FakeHive, client: HiveClient) -> None:
    hive.device_send(101, b64(b"a"))
    assert len(packets_of(client)) == 1
    requests.post(f"{hive.base_url}/_sandbox/expire_sessions", timeout=5).raise_for_status()
    assert len(packets_of(client)) == 1
    assert hive.logins == 2


def test_concurrent_calls_after_expiry_log_in_once_more(hive: FakeHive, client: HiveClient) -> None:
    client.login()
    hive.expire_sessions()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(packets_of(client))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == [[]] * 4
    assert hive.logins == 2


def test_wrong_password_raises_auth_error(hive: FakeHive) -> None:
    with HiveClient(hive.base_url, "beaver", "wrong", timeout=5) as bad:
        with pytest.raises(HiveAuthError) as info:
            packets_of(bad)
    assert isinstance(info.value, PermanentDeliveryError)
    assert hive.logins == 0


def test_send_returns_packet_id_and_fake_records_it(hive: FakeHive, client: HiveClient) -> None:
    data = b64(b"\x0a\x03abc")
    packet_id = client.send(device_type=1, device_id=102, user_application_id=65000, data_b64=data)
    record = hive.wait_for_to_device(lambda p: p["packetId"] == packet_id, timeout=1)
    assert (record["deviceId"], record["deviceType"], record["userApplicationId"]) == (102, 1, 65000)
    assert record["data"] == data and record["len"] == 5 and record["receivedAt"] > 0
    assert hive.to_device(101) == []


def test_send_to_unknown_device_is_permanent(hive: FakeHive, client: HiveClient) -> None:
    with pytest.raises(PermanentDeliveryError, match="device 999 not found") as info:
        client.send(device_type=1, device_id=999, user_application_id=0, data_b64=b64(b"x"))
    assert not isinstance(info.value, HiveAuthError)
    assert hive.to_device() == []


def test_oversize_payload_is_refused_by_client_and_by_fake(hive: FakeHive, client: HiveClient) -> None:
    big = b64(b"z" * (MAX_DATA_BYTES + 1))
    with pytest.raises(PermanentDeliveryError):
        client.send(device_type=1, device_id=101, user_application_id=0, data_b64=big)
    assert hive.logins == 0  # refused before any network call
    with requests.Session() as raw:
        raw.post(f"{hive.base_url}/login", data={"username": "beaver", "password": PASSWORD}, timeout=5)
        body = {"deviceType": 1, "deviceId": 101, "userApplicationId": 0, "data": big}
        resp = raw.post(f"{hive.base_url}/api/v1/messages", json=body, timeout=5)
    assert resp.status_code == 400 and "at most 192" in resp.json()["message"]
    assert hive.to_device() == []


def test_api_without_session_is_401(hive: FakeHive) -> None:
    resp = requests.get(f"{hive.base_url}/api/v1/messages", params={"count": 1, "status": 0}, timeout=5)
    assert resp.status_code == 401


def test_503_fault_is_temporary_and_loses_nothing(hive: FakeHive, client: HiveClient) -> None:
    packet = hive.device_send(101, b64(b"keep me"))
    requests.post(f"{hive.base_url}/_sandbox/faults", json={"error_rate": 1.0, "status": 503}, timeout=5)
    with pytest.raises(TemporaryDeliveryError) as info:
        packets_of(client)
    assert info.value.retry_after is None
    with pytest.raises(TemporaryDeliveryError):
        client.send(device_type=1, device_id=101, user_application_id=0, data_b64=b64(b"x"))
    hive.clear_faults()
    assert [p.packet_id for p in packets_of(client)] == [packet["packetId"]]
    assert hive.to_device() == []  # the faulted send had no effect


def test_429_sets_retry_after(hive: FakeHive, client: HiveClient) -> None:
    hive.set_faults(error_rate=1.0, status=429, retry_after=7)
    with pytest.raises(TemporaryDeliveryError) as info:
        client.send(device_type=1, device_id=101, user_application_id=0, data_b64=b64(b"x"))
    assert info.value.retry_after == 7.0


def test_partial_fault_rate_is_reproducible_with_a_seed(hive: FakeHive, client: HiveClient) -> None:
    def outcomes() -> list[bool]:
        hive.set_faults(error_rate=0.5, status=500, seed=42)
        results = []
        for _ in range(20):
            try:
                packets_of(client)
                results.append(True)
            except TemporaryDeliveryError:
                results.append(False)
        return results

    first = outcomes()
    assert first == outcomes()
    assert 0 < first.count(False) < 20


def test_hanging_hive_times_out_as_temporary(hive: FakeHive) -> None:
    hive.set_faults(timeout_rate=1.0, delay=10)
    with HiveClient(hive.base_url, "beaver", PASSWORD, timeout=0.3) as impatient:
        with pytest.raises(TemporaryDeliveryError, match="Timeout"):
            packets_of(impatient)


def test_connection_refused_is_temporary(hive: FakeHive, client: HiveClient) -> None:
    assert packets_of(client) == []  # leaves a pooled keep-alive connection behind
    hive.stop()
    with pytest.raises(TemporaryDeliveryError, match="ConnectionError"):
        packets_of(client)
    with pytest.raises(TemporaryDeliveryError):
        HiveClient(hive.base_url, "beaver", PASSWORD, timeout=2).login()


def test_restart_keeps_port_and_state(hive: FakeHive, client: HiveClient) -> None:
    packet = hive.device_send(101, b64(b"survives"))
    hive.stop()
    hive.start()
    assert [p.packet_id for p in packets_of(client)] == [packet["packetId"]]


def test_secrets_never_logged(hive: FakeHive, client: HiveClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hive.device_send(101, b64(b"a"))
    client.ack(packets_of(client)[0].packet_id)
    hive.expire_sessions()
    client.send(device_type=1, device_id=101, user_application_id=0, data_b64=b64(b"b"))
    cookie = client._cookies.get("JSESSIONID")
    assert cookie and "packet acked" in caplog.text
    assert PASSWORD not in caplog.text and cookie not in caplog.text


class _PushReceiver(BaseHTTPRequestHandler):
    received: list[tuple[str | None, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.headers.get("X-Swarm-Secret"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_push_mode_posts_each_packet_with_secret() -> None:
    _PushReceiver.received = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _PushReceiver)
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/swarm"
    try:
        with FakeHive(push_url=url, push_secret="s3cret") as fake:
            first = fake.device_send(5, b64(b"one"))
            second = fake.device_send(5, b64(b"two"))
            fake.wait_for(lambda h: h.push_delivered == 2, timeout=5)
            assert fake.pending() == [first, second]  # pushed packets still wait for polling + ack
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert _PushReceiver.received == [("s3cret", first), ("s3cret", second)]


def test_malformed_items_are_kept_with_their_ids_for_a_dead_letter(hive: FakeHive, client: HiveClient) -> None:
    bad = hive.device_send_malformed(42, data=12345)
    good = hive.device_send(42, "aGk=")
    packets, malformed = client.fetch_batch()
    assert [p.packet_id for p in packets] == [good["packetId"]]
    [item] = malformed
    assert (item.packet_id, item.device_id, item.key()) == (bad["packetId"], 42, f"hive:{bad['packetId']}")
    assert "12345" in item.raw and "data" in item.reason


def test_an_item_without_a_usable_id_gets_a_stable_digest_key() -> None:
    from messaging.satellite.swarm import malformed

    a, b = malformed({"packetId": "x"}, "bad"), malformed({"packetId": "x"}, "bad")
    assert a.packet_id is None and a.key() == b.key() and a.key().startswith("hive-malformed:")
    assert malformed(["not", "an", "object"], "bad").packet_id is None


def test_calling_threads_each_reuse_one_kept_alive_connection(hive: FakeHive, client: HiveClient) -> None:
    from messaging.delivery.base import SEND_THREADS
    from messaging.intake.satellite_poll import ACK_CONCURRENCY
    from tests.lockstep import in_lockstep

    threads = SEND_THREADS + ACK_CONCURRENCY  # a sender actor's satellite sends and acks at once
    packets = [hive.device_send(101, b64(b"up")) for _ in range(threads * 2)]

    def call(thread: int, round_: int) -> None:
        if round_ == 0:
            client.send(device_type=1, device_id=101, user_application_id=0, data_b64=b64(b"down"))
        else:
            client.ack(packets[thread * 2 + round_ - 1]["packetId"])

    hive.gather(threads)  # every call of a round in flight at once
    in_lockstep(threads, 3, call)
    assert len(hive.to_device()) == threads and len(hive.acked_ids()) == threads * 2
    assert hive.state()["connections"] <= threads, "one connection per thread, kept alive, not one per call"


def test_set_cookies_reads_each_name_and_value_without_attributes() -> None:
    from urllib3 import HTTPHeaderDict

    from messaging.satellite.swarm import set_cookies

    headers = HTTPHeaderDict()
    headers.add("Set-Cookie", "JSESSIONID=AB12; Path=/hive; HttpOnly")
    headers.add("Set-Cookie", "AWSALB=x=y; Expires=Tue, 01 Dec 2026 10:00:00 GMT; Path=/")
    headers.add("Set-Cookie", "broken")
    assert set_cookies(headers) == {"JSESSIONID": "AB12", "AWSALB": "x=y"}


class _RedirectingLogin(BaseHTTPRequestHandler):
    """A login that answers 302 with the session cookie, as a form login does; API calls need that cookie."""

    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"[]") -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(302, {"Location": "/hive/home", "Set-Cookie": "JSESSIONID=S1; Path=/hive"}, b"")

    def do_GET(self) -> None:
        cookie = self.headers.get("Cookie") or ""
        if self.path == "/hive/home":
            self._answer(200, {"Set-Cookie": "AWSALB=lb; Path=/"}, b"home")
        elif "JSESSIONID=S1" in cookie and "AWSALB=lb" in cookie:
            self._answer(200, {"Content-Type": "application/json"})
        else:
            self._answer(401, {}, b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_login_that_redirects_is_followed_and_every_cookie_sent_back() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RedirectingLogin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with HiveClient(f"http://127.0.0.1:{server.server_address[1]}/hive", "beaver", PASSWORD, timeout=5) as c:
            assert packets_of(c) == []
    finally:
        server.shutdown()
        server.server_close()
