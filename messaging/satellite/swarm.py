"""Synchronous client for the Swarm Hive HTTP API (the satellite side of the backend).

Wire format (base URL is ``SWARM_HIVE_URL``, e.g. ``https://bumblebee.hive.swarm.space/hive``):

* ``POST {base}/login`` form ``username``, ``password`` -> session cookie (``JSESSIONID``).
* ``GET {base}/api/v1/messages?count=N&status=0`` -> JSON list of device->cloud packets not yet acked.
* ``POST {base}/api/v1/messages/rxack/{packetId}`` -> ``{"packetId": id, "status": "OK"}``.
* ``POST {base}/api/v1/messages`` JSON ``{deviceType, deviceId, userApplicationId, data}``
  -> ``{"packetId": id, "status": "OK"}``.

The client logs in lazily and, when a call answers 401 (or redirects to the login page), logs in
again once and retries that call. Failures are mapped to :mod:`messaging.core.errors`:
timeouts, connection errors, 5xx, 408 and 429 are temporary (``retry_after`` from ``Retry-After``);
other 4xx are permanent; a refused login raises :class:`HiveAuthError`. Delivery is at least once:
a send that timed out may have been accepted, so a retry can duplicate it.

It is deliberately synchronous; async callers use ``asyncio.to_thread``. It never logs the password
or the session cookie. HTTP goes through urllib3's pools directly (not ``requests``): a packet sent or acked
is one call, and the per-call CPU is what counts here.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from dataclasses import dataclass, fields
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlencode, urljoin

import urllib3

from messaging.core.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError, parse_retry_after
from messaging.runtime.config import Config
from messaging.runtime.http import HostPool
from messaging.satellite.transport import DevicePacket, MalformedItem, SatelliteNetwork

logger = logging.getLogger(__name__)

MAX_DATA_BYTES = 192  # the Hive rejects larger user payloads
KEY_PREFIX = "hive"  # idempotency keys of Swarm packets: "hive:<packetId>:<index>" since the first release
DIRECTION_FROM_DEVICE = 1
STATUS_NEW = 0
STATUS_ACKED = 1
_RELOGIN_STATUSES = frozenset({301, 302, 303, 307, 308, 401})
_MAX_ERROR_TEXT = 300
_MAX_LOGIN_REDIRECTS = 5
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"


class HiveAuthError(PermanentDeliveryError):
    """The Hive refused our login: wrong username/password or a disabled account."""


# attribute name -> JSON key on the wire
_WIRE_NAMES = {
    "packet_id": "packetId",
    "message_id": "messageId",
    "device_type": "deviceType",
    "device_id": "deviceId",
    "direction": "direction",
    "data_type": "dataType",
    "user_application_id": "userApplicationId",
    "organization_id": "organizationId",
    "len": "len",
    "data": "data",
    "ack_packet_id": "ackPacketId",
    "status": "status",
    "hive_rx_time": "hiveRxTime",
}
_REQUIRED = ("packet_id", "device_id", "data")


def _as_int(key: str, value: Any) -> int:
    """A JSON number or digit string as int; anything else is a ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{key}: expected an integer, got {type(value).__name__}")


@dataclass(frozen=True, kw_only=True)
class HivePacket:
    """One packet as the Hive reports it. ``data`` is the base64 payload, left opaque here."""

    packet_id: int
    message_id: int = 0
    device_type: int = 0
    device_id: int
    direction: int = DIRECTION_FROM_DEVICE
    data_type: int = 0
    user_application_id: int = 0
    organization_id: int = 0
    len: int = 0
    data: str
    ack_packet_id: int = 0
    status: int = STATUS_NEW
    hive_rx_time: str = ""

    @classmethod
    def from_json(cls, d: Any) -> HivePacket:
        """Build from a Hive JSON object; extra keys are ignored, missing ids/data raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"packet: expected a JSON object, got {type(d).__name__}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = _WIRE_NAMES[f.name]
            raw = d.get(key)
            if raw is None:
                if f.name in _REQUIRED:
                    raise ValueError(f"packet: missing {key}")
                continue
            if f.name in ("data", "hive_rx_time"):
                if not isinstance(raw, str):
                    raise ValueError(f"{key}: expected a string, got {type(raw).__name__}")
                values[f.name] = raw
            else:
                values[f.name] = _as_int(key, raw)
        return cls(**values)

    def device_packet(self) -> DevicePacket:
        """The packet as intake reads any network's (its idempotency keys start with "hive:", as always)."""
        key = f"{KEY_PREFIX}:{self.packet_id}"
        return DevicePacket(key=key, device_id=self.device_id, packet_id=self.packet_id, data=self.data)


def malformed(item: Any, reason: str) -> MalformedItem:
    """A Hive item that is not a packet we can read, with its packet and device ids when those are readable."""
    ids = {}
    for key in ("packetId", "deviceId"):
        try:
            ids[key] = _as_int(key, item.get(key)) if isinstance(item, dict) else None
        except ValueError:
            ids[key] = None
    return MalformedItem.of(
        KEY_PREFIX, item, reason, packet_id=ids["packetId"], device_id=ids["deviceId"], source="Hive"
    )


def read_items(items: list[Any]) -> tuple[list[HivePacket], list[MalformedItem]]:
    """The packets among Hive JSON items (a fetch answer or a push), and the items that are not readable."""
    packets, bad = [], []
    for item in items:
        try:
            packets.append(HivePacket.from_json(item))
        except ValueError as exc:
            bad.append(malformed(item, str(exc)))
    return packets, bad


def hive_error_message(text: str) -> str:
    """The human-readable reason from a Hive error body (JSON ``message``/``error`` or raw text)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "status"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:_MAX_ERROR_TEXT]
    return " ".join(text.split())[:_MAX_ERROR_TEXT] or "(empty body)"


def error_for_response(
    op: str, status: int, text: str, retry_after: str | None = None, now: float | None = None
) -> DeliveryError:
    """Map a non-2xx Hive answer to a temporary or permanent delivery error."""
    reason = hive_error_message(text)
    message = f"hive {op}: HTTP {status}: {reason}"
    if status in (401, 408, 429) or status >= 500 or status < 400:
        return TemporaryDeliveryError(message, retry_after=parse_retry_after(retry_after, now))
    return PermanentDeliveryError(message)


def check_send_data(data_b64: str) -> int:
    """Decoded size of an outgoing payload; PermanentDeliveryError if not base64 or too large."""
    try:
        size = len(base64.b64decode(data_b64, validate=True))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise PermanentDeliveryError("hive send: data is not valid base64") from exc
    if size == 0:
        raise PermanentDeliveryError("hive send: empty payload")
    if size > MAX_DATA_BYTES:
        raise PermanentDeliveryError(f"hive send: payload is {size} bytes, the limit is {MAX_DATA_BYTES}")
    return size


def _json_body(resp: urllib3.BaseHTTPResponse, op: str) -> Any:
    try:
        return json.loads(resp.data)
    except ValueError as exc:
        raise TemporaryDeliveryError(f"hive {op}: HTTP {resp.status} with a non-JSON body") from exc


def _text(resp: urllib3.BaseHTTPResponse) -> str:
    return resp.data.decode("utf-8", "replace")


def set_cookies(headers: Any) -> dict[str, str]:
    """The ``name=value`` pairs a response's ``Set-Cookie`` headers set (read by the standard library's cookie
    parser; attributes such as Path ignored, a header it cannot read skipped)."""
    cookies = {}
    for header in headers.getlist("Set-Cookie"):
        jar = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        cookies.update({name: morsel.value for name, morsel in jar.items()})
    return cookies


class HiveClient:
    """Session-based client for one Hive account. Safe to share between threads.

    It speaks HTTP through urllib3's connection pools (each calling thread reuses a kept-alive connection):
    a call costs a fraction of the CPU a ``requests`` session spends per request, and the sender actors make
    one call per packet sent and per packet acked."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 15) -> None:
        self._base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._http = HostPool(self._base_url)
        self._cookies: dict[str, str] = {}  # replaced whole, never changed in place: threads read it unlocked
        self._login_lock = threading.Lock()
        self._generation = 0  # bumped on every successful login

    @classmethod
    def from_config(cls, config: Config, timeout: float = 15) -> HiveClient:
        """A client for ``SWARM_HIVE_URL`` / ``SWARM_USERNAME`` / ``SWARM_PASSWORD``."""
        return cls(config.swarm_hive_url, config.swarm_username, config.swarm_password, timeout=timeout)

    def __repr__(self) -> str:
        return f"HiveClient({self._base_url!r}, user={self._username!r})"

    def __enter__(self) -> HiveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.clear()

    def login(self) -> None:
        """Log in now (normally lazy). HiveAuthError if refused, TemporaryDeliveryError if unreachable."""
        with self._login_lock:
            self._login_locked()

    def fetch_batch(self, count: int = 100) -> tuple[list[HivePacket], list[MalformedItem]]:
        """Device->cloud packets not yet acked (at most ``count``), and the items among them that are not
        packets we can read (kept, so the caller can store them as dead letters and ack them)."""
        query = urlencode({"count": count, "status": STATUS_NEW})
        resp = self._call("fetch", "GET", f"/api/v1/messages?{query}")
        items = _json_body(resp, "fetch")
        if not isinstance(items, list):
            raise TemporaryDeliveryError(f"hive fetch: expected a JSON list, got {type(items).__name__}")
        packets, bad = read_items(items)
        for item in bad:
            logger.error("hive packet malformed packet_id=%s: %s", item.packet_id, item.reason)
        for packet in packets:
            logger.debug(
                "hive packet fetched packet_id=%d message_id=%d device_id=%d len=%d",
                packet.packet_id,
                packet.message_id,
                packet.device_id,
                packet.len,
            )
        return packets, bad

    def ack(self, packet_id: int) -> None:
        """Acknowledge a fetched packet so the Hive stops returning it."""
        self._call("ack", "POST", f"/api/v1/messages/rxack/{int(packet_id)}")
        logger.debug("hive packet acked packet_id=%d", packet_id)  # its message's line said it was stored

    def send(self, *, device_type: int, device_id: int, user_application_id: int, data_b64: str) -> int:
        """Queue a cloud->device packet; returns the Hive packetId."""
        check_send_data(data_b64)
        body = {
            "deviceType": int(device_type),
            "deviceId": int(device_id),
            "userApplicationId": int(user_application_id),
            "data": data_b64,
        }
        try:
            resp = self._call("send", "POST", "/api/v1/messages", body=json.dumps(body).encode(), content_type=_JSON)
        except PermanentDeliveryError as exc:
            logger.warning("hive send rejected device_id=%d: %s", device_id, exc)
            raise
        answer = _json_body(resp, "send")
        try:
            packet_id = _as_int("packetId", answer.get("packetId") if isinstance(answer, dict) else None)
        except ValueError as exc:
            raise TemporaryDeliveryError(f"hive send: answer has no packetId: {answer!r:.200}") from exc
        logger.debug("hive packet sent packet_id=%d device_id=%d", packet_id, device_id)  # the message's line says
        return packet_id

    # -- plumbing ---------------------------------------------------------------------------------

    def _login_locked(self) -> None:
        self._cookies = {}
        form = urlencode({"username": self._username, "password": self._password}).encode()
        resp = self._send_once("login", "POST", self._base_url + "/login", body=form, content_type=_FORM)
        for _ in range(_MAX_LOGIN_REDIRECTS):  # a form login may redirect (to the home page); follow it, as browsers do
            location = resp.headers.get("Location")
            if resp.status not in _RELOGIN_STATUSES - {401} or not location:
                break
            resp = self._send_once("login", "GET", urljoin(self._base_url + "/login", location))
        status = resp.status
        if 200 <= status < 300:
            self._generation += 1
            logger.info("hive login ok user=%s", self._username)
            return
        error = error_for_response("login", status, _text(resp), resp.headers.get("Retry-After"))
        if isinstance(error, TemporaryDeliveryError) and status != 401:
            raise error
        logger.error("hive login refused user=%s status=%d", self._username, status)
        raise HiveAuthError(f"hive login refused for user {self._username!r}: HTTP {status}")

    def _session_generation(self) -> int:
        with self._login_lock:
            if self._generation == 0:
                self._login_locked()
            return self._generation

    def _relogin(self, stale_generation: int) -> None:
        with self._login_lock:
            if self._generation == stale_generation:  # nobody else has renewed it meanwhile
                self._login_locked()

    def _send_once(
        self, op: str, method: str, url: str, body: bytes | None = None, content_type: str | None = None
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if cookies := self._cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
        try:
            resp = self._http.request(
                method, url, body=body, headers=headers, timeout=self._timeout, retries=False, redirect=False
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TemporaryDeliveryError(f"hive {op}: {type(exc).__name__}: {exc}") from exc
        if new := set_cookies(resp.headers):
            self._cookies = {**self._cookies, **new}
        return resp

    def _call(
        self, op: str, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> urllib3.BaseHTTPResponse:
        """One API call with lazy login and a single re-login when the session has expired."""
        generation = self._session_generation()
        url = self._base_url + path
        resp = self._send_once(op, method, url, body, content_type)
        if resp.status in _RELOGIN_STATUSES:
            logger.info("hive session expired during %s (HTTP %d), logging in again", op, resp.status)
            self._relogin(generation)
            resp = self._send_once(op, method, url, body, content_type)
        if 200 <= resp.status < 300:
            return resp
        raise error_for_response(op, resp.status, _text(resp), resp.headers.get("Retry-After"))


class SwarmNetwork(SatelliteNetwork):
    """Swarm behind the satellite transport interface: the Hive is polled for device packets (and may push
    them to ``/swarm``), each acked once stored; to-device packets go out through the Hive's send API."""

    name = "swarm"
    packet_budget = MAX_DATA_BYTES
    polled = True

    def __init__(self, client: HiveClient, *, device_type: int, user_application_id: int) -> None:
        self.client = client
        self.device_type = device_type
        self.user_application_id = user_application_id

    @classmethod
    def from_config(cls, config: Config) -> SwarmNetwork:
        return cls(
            HiveClient.from_config(config),
            device_type=config.swarm_device_type,
            user_application_id=config.swarm_user_application_id,
        )

    @staticmethod
    def parse_device_id(text: str) -> int:
        """A Swarm device id: a positive decimal integer (the Hive's deviceId)."""
        value = str(text).strip()
        if not value.isdigit() or int(value) <= 0:
            raise ValueError(f"a Swarm device id is a positive number, not {value[:40]!r}")
        return int(value)

    def send(self, device_id: int, payload: bytes) -> str:
        data = base64.b64encode(payload).decode("ascii")
        packet_id = self.client.send(
            device_type=self.device_type,
            device_id=device_id,
            user_application_id=self.user_application_id,
            data_b64=data,
        )
        return str(packet_id)

    def fetch_batch(self, count: int) -> tuple[list[DevicePacket], list[MalformedItem]]:
        packets, bad = self.client.fetch_batch(count)
        return [p.device_packet() for p in packets], bad

    def ack(self, packet_id: int) -> None:
        self.client.ack(packet_id)

    @staticmethod
    def read_push(payload: Any) -> tuple[list[DevicePacket], list[MalformedItem]]:
        """The packets of a ``/swarm`` push (one packet JSON, or a list), and the items that are not readable."""
        packets, bad = read_items(payload if isinstance(payload, list) else [payload])
        return [p.device_packet() for p in packets], bad

    def close(self) -> None:
        self.client.close()
