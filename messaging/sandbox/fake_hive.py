"""A local fake Swarm Hive: a real HTTP server on loopback that speaks the Hive wire format.

Hive API (base path ``/hive``, so ``base_url = http://127.0.0.1:<port>/hive``):

* ``POST /hive/login`` form ``username``, ``password`` -> 200 and ``Set-Cookie: JSESSIONID=...``; else 401.
* ``GET /hive/api/v1/messages?count=N&status=S`` -> device->cloud packets, oldest first (``status`` 0 =
  not acked, 1 = acked, absent = all). Needs the session cookie, else 401.
* ``POST /hive/api/v1/messages/rxack/{packetId}`` -> ``{"packetId": id, "status": "OK"}``; 404 if unknown.
  Acking twice answers OK again and is counted as a duplicate ack.
* ``POST /hive/api/v1/messages`` JSON ``{deviceType, deviceId, userApplicationId, data}`` ->
  ``{"packetId": id, "status": "OK"}``; unknown device -> 404, bad JSON/base64 or > 192 bytes -> 400.
  Errors are Spring-style JSON: ``{"timestamp", "status", "error", "message", "path"}``.

Sandbox control API (no auth, so tests in another process can drive the fake):

* ``POST /hive/_sandbox/device_send`` JSON ``{"deviceId": int, "data": base64, "deviceType": int?,
  "userApplicationId": int?}`` -> queues a packet as if the device sent it; returns the packet JSON.
* ``POST /hive/_sandbox/device_send_many`` JSON list of such bodies -> queues them in order (a benchmark
  fills the Hive in one request); returns the list of packets.
* ``GET /hive/_sandbox/to_device[?deviceId=N]`` -> JSON list of packets the cloud sent (to that device).
* ``GET /hive/_sandbox/state`` -> ``{"pending", "acked", "sent", "duplicate_acks", "logins", "connections",
  ...}`` (``connections``: how many connections clients opened; a pooled client keeps reusing its own).
* ``POST /hive/_sandbox/faults`` JSON ``{"error_rate": 0..1, "status": 503, "timeout_rate": 0..1,
  "delay": seconds, "retry_after": seconds?, "seed": int?}`` -> fault injection on ``/hive/api/v1``:
  that fraction of calls answers ``status`` (with ``Retry-After`` if given) or hangs ``delay`` seconds
  before answering 504. A faulted call has no effect. ``{}`` clears the faults.
* ``POST /hive/_sandbox/expire_sessions`` -> forgets every session (clients must log in again).

Push mode (our own convention for a Hive webhook): with ``push_url`` set, each new device packet's
JSON is POSTed there with header ``X-Swarm-Secret: <push_secret>``, in order, once, from a background
thread; the packet stays pending for polling whether or not the push succeeded.

Run standalone: ``python -m messaging.sandbox.fake_hive --port 8790``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import itertools
import json
import queue
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from messaging.sandbox.gathering import Gathering
from messaging.sandbox.loopback import KeepAliveHandler, LoopbackService

BASE_PATH = "/hive"
SESSION_COOKIE = "JSESSIONID"
MAX_DATA_BYTES = 192
ORGANIZATION_ID = 65_001
DATA_TYPE_USER = 6  # value seen for user payloads; not verified against Hive docs
Packet = dict[str, Any]  # one packet in wire JSON form
Reply = tuple[int, Any, dict[str, str]]  # status, JSON body, extra headers


@dataclass(frozen=True)
class Faults:
    """Fault injection settings for the /api/v1 endpoints."""

    error_rate: float = 0.0
    status: int = 503
    timeout_rate: float = 0.0
    delay: float = 30.0
    retry_after: float | None = None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decoded_len(data: Any) -> int:
    """Length of a base64 payload; ValueError if it is not a base64 string."""
    if not isinstance(data, str):
        raise ValueError("data must be a base64 string")
    try:
        return len(base64.b64decode(data, validate=True))
    except binascii.Error as exc:
        raise ValueError("data is not valid base64") from exc


def _error(status: int, message: str, path: str) -> Reply:
    body = {
        "timestamp": _now_iso(),
        "status": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
        "path": path,
    }
    return status, body, {}


class FakeHive(LoopbackService):
    """The fake Hive server plus its inspectable, thread-safe state."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "sandbox",
        password: str = "sandbox",
        devices: set[int] | None = None,
        *,
        push_url: str | None = None,
        push_secret: str = "",
        seed: int | None = None,
    ) -> None:
        self.username, self.password = username, password
        self.devices = None if devices is None else {int(d) for d in devices}
        self.push_url, self.push_secret = push_url, push_secret
        self._cond = threading.Condition(threading.RLock())
        self._init_service(host, port)
        # Like the real Hive, packet ids never repeat - not even across fakes sharing one database
        # (the idempotency key is ``hive:<packetId>``): each fake starts at a random point.
        self._packet_ids = itertools.count(40_000_001 + secrets.randbelow(10**9) * 1000)
        self._message_ids = itertools.count(7_000_001)
        self._packets: dict[int, Packet] = {}  # device->cloud, by packetId, in arrival order
        self._ack_counts: Counter[int] = Counter()
        self._to_device: list[Packet] = []
        self._sessions: set[str] = set()
        self.logins = 0
        self.push_delivered = 0
        self.push_failed = 0
        self._faults = Faults()
        self._rng = random.Random(seed)
        self._released = threading.Event()  # set on stop() to end hanging "timeout" faults
        self._push_queue: queue.Queue[Packet | None] = queue.Queue()
        self._gathering = Gathering()  # see gather()

    # -- lifecycle --------------------------------------------------------------------------------

    def _handler(self) -> type[KeepAliveHandler]:
        return _Handler

    def start(self) -> FakeHive:
        self._released.clear()
        return super().start()

    def _background(self) -> list:
        return [self._push_loop] if self.push_url else []

    def _on_stop(self) -> None:
        self._released.set()  # ends hanging "timeout" faults
        if self.push_url:
            self._push_queue.put(None)

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}{BASE_PATH}"

    # -- Python control API -----------------------------------------------------------------------

    def device_send(self, device_id: int, data_b64: str, device_type: int = 1, app_id: int = 0) -> Packet:
        """Queue a packet as if device ``device_id`` had sent it; returns its JSON."""
        size = _decoded_len(data_b64)
        return self._queue(self._packet(device_id, data_b64, size, device_type, app_id))

    def device_send_malformed(self, device_id: int, **fields: Any) -> Packet:
        """Queue an item as a buggy Hive might list it: a packet of ``device_id`` whose fields are then
        overridden by ``fields`` (e.g. ``data=12345``); it keeps its fresh ``packetId`` for the ack."""
        packet = self._packet(device_id, "", 0, 1, 0)
        packet_id = packet["packetId"]
        packet.update(fields)
        return self._queue(packet, key=packet_id)

    def _queue(self, packet: Packet, key: int | None = None) -> Packet:
        with self._cond:
            self._packets[packet["packetId"] if key is None else key] = packet
            if self.push_url:
                self._push_queue.put(dict(packet))  # under the lock: pushes keep packetId order
            self._cond.notify_all()
        return dict(packet)

    def _packet(self, device_id: int, data_b64: Any, size: int, device_type: int, app_id: int) -> Packet:
        with self._cond:
            return {
                "packetId": next(self._packet_ids),
                "messageId": next(self._message_ids),
                "deviceType": int(device_type),
                "deviceId": int(device_id),
                "deviceName": f"sandbox-{int(device_id)}",
                "direction": 1,
                "dataType": DATA_TYPE_USER,
                "userApplicationId": int(app_id),
                "organizationId": ORGANIZATION_ID,
                "len": size,
                "data": data_b64,
                "ackPacketId": 0,
                "status": 0,
                "hiveRxTime": _now_iso(),
            }

    def pending(self) -> list[Packet]:
        """Device->cloud packets not acked yet, oldest first."""
        with self._cond:
            return [dict(p) for p in self._packets.values() if p["status"] == 0]

    def to_device(self, device_id: int | None = None) -> list[Packet]:
        """Packets the cloud sent (optionally only those to ``device_id``), oldest first."""
        with self._cond:
            return [dict(p) for p in self._to_device if device_id is None or p["deviceId"] == device_id]

    def acked_ids(self) -> set[int]:
        with self._cond:
            return set(self._ack_counts)

    def ack_counts(self) -> dict[int, int]:
        with self._cond:
            return dict(self._ack_counts)

    def duplicate_acks(self) -> int:
        with self._cond:
            return sum(n - 1 for n in self._ack_counts.values())

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {
                "pending": sum(1 for p in self._packets.values() if p["status"] == 0),
                "acked": len(self._ack_counts),
                "sent": len(self._to_device),
                "duplicate_acks": self.duplicate_acks(),
                "logins": self.logins,
                "sessions": len(self._sessions),
                "connections": self.connections_opened,
                "push_delivered": self.push_delivered,
                "push_failed": self.push_failed,
            }

    def wait_for(self, condition: Callable[[FakeHive], bool], timeout: float = 5.0) -> None:
        """Block until ``condition(self)`` holds (re-checked on every state change); TimeoutError if not."""
        with self._cond:
            if not self._cond.wait_for(lambda: condition(self), timeout=timeout):
                raise TimeoutError(f"fake hive: condition not met within {timeout}s; state={self.state()}")

    def wait_for_to_device(self, predicate: Callable[[Packet], bool], timeout: float = 5.0) -> Packet:
        """The first cloud->device packet matching ``predicate``, waiting up to ``timeout`` seconds."""
        found: list[Packet] = []

        def match(hive: FakeHive) -> bool:
            found[:] = [p for p in hive.to_device() if predicate(p)][:1]
            return bool(found)

        self.wait_for(match, timeout)
        return found[0]

    def set_faults(
        self,
        error_rate: float = 0.0,
        status: int = 503,
        timeout_rate: float = 0.0,
        delay: float = 30.0,
        retry_after: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Make a fraction of /api/v1 calls fail with ``status`` or hang ``delay`` seconds."""
        if not (0.0 <= error_rate <= 1.0 and 0.0 <= timeout_rate <= 1.0):
            raise ValueError("error_rate and timeout_rate must be within 0..1")
        HTTPStatus(status)  # ValueError for a status that does not exist
        with self._cond:
            self._faults = Faults(error_rate, status, timeout_rate, delay, retry_after)
            if seed is not None:
                self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        self.set_faults()

    def gather(self, calls: int | None) -> None:
        """Hold each /api/v1 call until ``calls`` of them are in flight together, then answer them all, so a test sees
        how many connections that many concurrent callers use; ``None`` answers each at once again."""
        self._gathering.hold(calls)

    def expire_sessions(self) -> None:
        """Forget all sessions, as the real Hive does when they time out."""
        with self._cond:
            self._sessions.clear()

    # -- HTTP behaviour (called by the handler) ---------------------------------------------------

    def _pick_fault(self) -> tuple[str, Faults] | None:
        with self._cond:
            faults = self._faults
            roll = self._rng.random()
        if roll < faults.timeout_rate:
            return "timeout", faults
        if roll < faults.timeout_rate + faults.error_rate:
            return "error", faults
        return None

    def _login(self, form: dict[str, list[str]]) -> tuple[Reply, str | None]:
        user = form.get("username", [""])[0]
        given = form.get("password", [""])[0]
        if user != self.username or not secrets.compare_digest(given.encode(), self.password.encode()):
            return _error(401, "Bad credentials", f"{BASE_PATH}/login"), None
        token = secrets.token_hex(16).upper()
        with self._cond:
            self._sessions.add(token)
            self.logins += 1
            self._cond.notify_all()
        return (200, {"userId": 1, "username": user}, {}), token

    def _has_session(self, token: str | None) -> bool:
        with self._cond:
            return token is not None and token in self._sessions

    def _api_fetch(self, query: dict[str, list[str]]) -> Reply:
        try:
            count = int(query.get("count", ["10"])[0])
            status = int(query["status"][0]) if "status" in query else None
        except ValueError:
            return _error(400, "count and status must be integers", f"{BASE_PATH}/api/v1/messages")
        with self._cond:
            chosen = [p for p in self._packets.values() if status is None or p["status"] == status]
            return 200, [dict(p) for p in chosen[: max(count, 0)]], {}

    def _api_ack(self, raw_id: str) -> Reply:
        path = f"{BASE_PATH}/api/v1/messages/rxack/{raw_id}"
        if not raw_id.isdigit():
            return _error(400, "packetId must be an integer", path)
        packet_id = int(raw_id)
        with self._cond:
            packet = self._packets.get(packet_id)
            if packet is None:
                return _error(404, f"packet {packet_id} not found", path)
            packet["status"] = 1
            self._ack_counts[packet_id] += 1
            self._cond.notify_all()
        return 200, {"packetId": packet_id, "status": "OK"}, {}

    def _api_send(self, body: Any) -> Reply:
        path = f"{BASE_PATH}/api/v1/messages"
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object", path)
        try:
            ids = {k: int(body[k]) for k in ("deviceType", "deviceId", "userApplicationId")}
            size = _decoded_len(body.get("data"))
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, f"invalid message: {exc}", path)
        if size > MAX_DATA_BYTES:
            return _error(400, f"data is {size} bytes; at most {MAX_DATA_BYTES} allowed", path)
        if self.devices is not None and ids["deviceId"] not in self.devices:
            return _error(404, f"device {ids['deviceId']} not found for this user", path)
        with self._cond:
            record = {"packetId": next(self._packet_ids), **ids, "data": body["data"], "len": size}
            record.update(hiveRxTime=_now_iso(), receivedAt=datetime.now(UTC).timestamp())
            self._to_device.append(record)
            self._cond.notify_all()
        return 200, {"packetId": record["packetId"], "status": "OK"}, {}

    def _sandbox(self, method: str, name: str, query: dict[str, list[str]], body: Any) -> Reply:
        path = f"{BASE_PATH}/_sandbox/{name}"
        try:
            if method == "POST" and name == "device_send":
                kind, app = int(body.get("deviceType", 1)), int(body.get("userApplicationId", 0))
                return 200, self.device_send(int(body["deviceId"]), body["data"], kind, app), {}
            if method == "POST" and name == "device_send_many":  # a list of device_send bodies, queued in order
                sent = [
                    self.device_send(
                        int(item["deviceId"]),
                        item["data"],
                        int(item.get("deviceType", 1)),
                        int(item.get("userApplicationId", 0)),
                    )
                    for item in body
                ]
                return 200, sent, {}
            if method == "GET" and name == "to_device":
                device = int(query["deviceId"][0]) if "deviceId" in query else None
                return 200, self.to_device(device), {}
            if method == "GET" and name == "state":
                return 200, self.state(), {}
            if method == "POST" and name == "faults":
                self.set_faults(**(body or {}))
                return 200, {"status": "OK"}, {}
            if method == "POST" and name == "expire_sessions":
                self.expire_sessions()
                return 200, {"status": "OK"}, {}
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, f"bad sandbox request: {exc!r}", path)
        return _error(404, "no such sandbox endpoint", path)

    def _push_loop(self) -> None:
        while (packet := self._push_queue.get()) is not None:
            try:
                headers = {"X-Swarm-Secret": self.push_secret}
                ok = requests.post(self.push_url, json=packet, headers=headers, timeout=10).status_code < 300
            except requests.RequestException:
                ok = False
            with self._cond:
                self.push_delivered += ok
                self.push_failed += not ok
                self._cond.notify_all()


class _Handler(KeepAliveHandler):
    """Routes HTTP requests to the owning FakeHive. HTTP/1.1 keep-alive, like the real service."""

    @property
    def hive(self) -> FakeHive:
        return self.fake

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet; the client logs what matters

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cookie = None
        if self.headers.get("Cookie"):
            jar = SimpleCookie(self.headers["Cookie"])
            cookie = jar[SESSION_COOKIE].value if SESSION_COOKIE in jar else None
        if not url.path.startswith(BASE_PATH + "/"):
            return self._reply(_error(404, "not found", url.path))
        route = url.path[len(BASE_PATH) :]
        if route.startswith("/_sandbox/"):
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                return self._reply(_error(400, "body is not JSON", url.path))
            return self._reply(self.hive._sandbox(method, route[len("/_sandbox/") :], query, body))
        if method == "POST" and route == "/login":
            reply, token = self.hive._login(parse_qs(raw.decode("utf-8", "replace")))
            headers = {"Set-Cookie": f"{SESSION_COOKIE}={token}; Path={BASE_PATH}; HttpOnly"} if token else {}
            return self._reply((reply[0], reply[1], headers))
        if not route.startswith("/api/v1/"):
            return self._reply(_error(404, "not found", url.path))
        self.hive._gathering.arrive()
        fault = self.hive._pick_fault()
        if fault is not None:
            return self._fault(*fault, path=url.path)
        if not self.hive._has_session(cookie):
            return self._reply(_error(401, "Full authentication is required", url.path))
        if method == "GET" and route == "/api/v1/messages":
            return self._reply(self.hive._api_fetch(query))
        if method == "POST" and route.startswith("/api/v1/messages/rxack/"):
            return self._reply(self.hive._api_ack(route.rsplit("/", 1)[1]))
        if method == "POST" and route == "/api/v1/messages":
            try:
                body = json.loads(raw)
            except ValueError:
                return self._reply(_error(400, "body is not JSON", url.path))
            return self._reply(self.hive._api_send(body))
        return self._reply(_error(404, "not found", url.path))

    def _fault(self, kind: str, faults: Faults, path: str) -> None:
        if kind == "timeout":
            self.hive._released.wait(faults.delay)
            return self._reply(_error(504, "injected timeout", path))
        status, body, headers = _error(faults.status, "injected fault", path)
        if faults.retry_after is not None:
            headers["Retry-After"] = f"{faults.retry_after:g}"
        return self._reply((status, body, headers))

    def _reply(self, reply: Reply) -> None:
        status, body, headers = reply
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away (e.g. it timed out)


def main(argv: list[str] | None = None) -> None:
    """Run a fake Hive in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--username", default="sandbox")
    parser.add_argument("--password", default="sandbox")
    parser.add_argument("--devices", default="", help="comma-separated known device ids (default: any)")
    parser.add_argument("--push-url", default=None)
    parser.add_argument("--push-secret", default="")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    devices = {int(d) for d in args.devices.split(",") if d.strip()} or None
    hive = FakeHive(
        args.host,
        args.port,
        args.username,
        args.password,
        devices,
        push_url=args.push_url,
        push_secret=args.push_secret,
        seed=args.seed,
    )
    hive.start()
    print(f"SWARM_HIVE_URL={hive.base_url}", flush=True)
    print(f"SWARM_USERNAME={hive.username}", flush=True)
    print(f"SWARM_PASSWORD={hive.password}  (sandbox credentials)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        hive.stop()


if __name__ == "__main__":
    main()
