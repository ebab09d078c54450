"""A local fake of RockBLOCK's web services: a real HTTP server on loopback speaking Ground Control's wire format.

* ``POST /rockblock/MT`` (form body or query) ``imei``, ``username``, ``password``, ``data`` (hex), ``flush`` ->
  ``OK,<mtId>``, or ``FAILED,<code>,<text>``: 10 bad credentials, 11 unknown IMEI, 12 no line rental,
  13 no credit, 14 bad hex, 15 longer than 270 bytes, 16 no data, 99 system error. Each accepted message is
  queued for its IMEI and charged one credit per 50 bytes.
* Mobile-originated messages: ``device_send`` (or ``POST /rockblock/_sandbox/device_send`` JSON ``{"imei",
  "data" (hex), "latitude"?, "longitude"?, "cep"?}``) builds the post Ground Control would make, with its
  ``momsn`` (wrapping at 65535), ``transmit_time`` and an RS256 ``JWT`` signed by this fake's own key (the
  sandbox sets ``ROCKBLOCK_JWT_PUBLIC_KEY_FILE`` to ``public_key_file``), and POSTs it form-encoded to
  ``mo_url`` from a background thread, in order, retrying until our webhook answers 200, as they do.

It speaks HTTP/1.1 with keep-alive; ``connections_opened`` (``connections`` in the state) counts the connections
clients made. Sandbox control API: ``GET /rockblock/_sandbox/to_device[?imei=N]`` (queued MT messages),
``GET /rockblock/_sandbox/state``, ``POST /rockblock/_sandbox/faults`` JSON ``{"error_rate", "status"
(an HTTP status, 99 for FAILED,99, or 0: hang ``delay`` seconds, then 504), "delay", "seed"}``,
``POST /rockblock/_sandbox/account`` JSON ``{"credits": int | null, "no_line_rental": [imei, ...]}``.

Run standalone: ``python -m messaging.sandbox.fake_rockblock --port 8793 --mo-url http://127.0.0.1:8000/rockblock``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import queue
import random
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from messaging.sandbox.gathering import Gathering
from messaging.sandbox.loopback import KeepAliveHandler, LoopbackService
from messaging.sandbox.recorded import snapshot, wait_on

BASE_PATH = "/rockblock"
MT_LIMIT = 270
CREDIT_BYTES = 50
MO_RETRY_SECONDS = 0.5  # Ground Control retries a post our webhook did not take; the fake retries quickly
FAILED = {
    10: "Invalid login credentials",
    11: "No RockBLOCK with this IMEI found on your account",
    12: "RockBLOCK has no line rental",
    13: "Your account has insufficient credit",
    14: "Could not decode hex data",
    15: "Data too long",
    16: "No data",
    99: "System Error",
}


class FakeRockBlock(LoopbackService):
    """The fake RockBLOCK web services plus their inspectable, thread-safe state."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "sandbox",
        password: str = "sandbox",
        imeis: set[int] | None = None,
        *,
        mo_url: str | None = None,
        credits: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.username, self.password = username, password
        self.imeis = None if imeis is None else {int(i) for i in imeis}
        self.mo_url = mo_url
        self.credits = credits  # None: unlimited
        self.credits_used = 0
        self.no_line_rental: set[int] = set()
        self._cond = threading.Condition(threading.RLock())
        self._init_service(host, port)
        self._mt_ids = itertools.count(4_000_001 + random.randrange(10**6) * 100)
        self._momsn: dict[int, int] = {}
        self._to_device: list[dict[str, Any]] = []
        self._mo_sent: list[dict[str, Any]] = []
        self.mo_attempts = 0
        self._error_rate, self._error_status, self._delay = 0.0, 503, 30.0
        self._rng = random.Random(seed)
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._key_dir = tempfile.TemporaryDirectory(prefix="fake-rockblock-")
        self.public_key_file = Path(self._key_dir.name) / "sandbox_jwt_public_key.pem"
        self.public_key_file.write_bytes(
            self._private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self._mo_queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._gathering = Gathering()  # see gather()

    # -- lifecycle --------------------------------------------------------------------------------

    def _handler(self) -> type[KeepAliveHandler]:
        return _Handler

    def start(self) -> FakeRockBlock:
        self._stopping.clear()
        return super().start()

    def _background(self) -> list:
        return [self._mo_loop]

    def _on_stop(self) -> None:
        self._stopping.set()
        self._mo_queue.put(None)

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}{BASE_PATH}"

    # -- Python control API -----------------------------------------------------------------------

    def device_send(
        self,
        imei: int,
        payload: bytes,
        *,
        latitude: float | None = 52.3867,
        longitude: float | None = 0.2938,
        cep: int = 8,
        transmit_time: datetime | None = None,
    ) -> dict[str, str]:
        """Make the post Ground Control would make for a message from ``imei`` and queue it for ``mo_url``.
        Returns the posted fields (JWT included)."""
        with self._cond:
            momsn = self._momsn.get(int(imei), -1) + 1
            self._momsn[int(imei)] = momsn % 65536
        fields = self.mo_fields(
            imei, payload, momsn=momsn % 65536, latitude=latitude, longitude=longitude, cep=cep, when=transmit_time
        )
        self._mo_queue.put(fields)
        return fields

    def mo_fields(
        self,
        imei: int,
        payload: bytes,
        *,
        momsn: int,
        latitude: float | None = None,
        longitude: float | None = None,
        cep: int = 8,
        when: datetime | None = None,
    ) -> dict[str, str]:
        """The signed fields of one MO post (not sent)."""
        fields = {
            "imei": str(imei),
            "serial": str(10_000 + int(imei) % 90_000),
            "momsn": str(momsn),
            "transmit_time": (when or datetime.now(UTC)).strftime("%y-%m-%d %H:%M:%S"),
            "data": payload.hex(),
        }
        if latitude is not None and longitude is not None:
            fields.update(
                iridium_latitude=f"{latitude:.4f}", iridium_longitude=f"{longitude:.4f}", iridium_cep=str(cep)
            )
        claims = {"iss": "Rock 7", "iat": int(time.time()), **fields}
        fields["JWT"] = jwt.encode(claims, self._private_key, algorithm="RS256")
        return fields

    def to_device(self, imei: int | None = None) -> list[dict[str, Any]]:
        """MT messages accepted (optionally only those for ``imei``), oldest first: ``imei``, ``mtId``, ``data``."""
        with self._cond:
            return [dict(m) for m in self._to_device if imei is None or m["imei"] == int(imei)]

    def mo_delivered(self) -> list[dict[str, Any]]:
        """MO posts our webhook took (answered 200), in order."""
        return snapshot(self._cond, self._mo_sent)

    def wait_for_mo(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        return wait_on(self._cond, self._mo_sent, lambda posts: len(posts) >= count, timeout)

    def set_faults(
        self, error_rate: float = 1.0, status: int = 503, seed: int | None = None, delay: float = 30.0
    ) -> None:
        """That fraction of MT calls answers HTTP ``status``, or ``FAILED,99`` when ``status`` is 99, or (status 0)
        hangs ``delay`` seconds and then answers 504: a client with a shorter timeout sees a timeout. A faulted
        call has no effect."""
        with self._cond:
            self._error_rate, self._error_status, self._delay = error_rate, status, delay
            if seed is not None:
                self._rng.seed(seed)

    def gather(self, calls: int | None) -> None:
        """Hold each MT call until ``calls`` of them are in flight together, then answer them all, so a test sees
        how many connections that many concurrent callers use; ``None`` answers each at once again."""
        self._gathering.hold(calls)

    def clear_faults(self) -> None:
        self.set_faults(0.0)

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {
                "to_device": len(self._to_device),
                "mo_delivered": len(self._mo_sent),
                "mo_pending": self._mo_queue.qsize(),
                "mo_attempts": self.mo_attempts,
                "credits": self.credits,
                "credits_used": self.credits_used,
                "connections": self.connections_opened,
            }

    # -- the MT API -------------------------------------------------------------------------------

    def _mt(self, form: dict[str, str]) -> tuple[int, str]:
        with self._cond:
            hang = self._error_rate and self._error_status == 0 and self._rng.random() < self._error_rate
            delay = self._delay
        if hang:  # outside the lock: other calls go on meanwhile
            self._stopping.wait(delay)
            return 504, "Gateway Timeout"
        with self._cond:
            if self._error_rate and self._error_status != 0 and self._rng.random() < self._error_rate:
                if self._error_status == 99:
                    return 200, f"FAILED,99,{FAILED[99]}"
                return self._error_status, "Service Unavailable"
            if form.get("username") != self.username or form.get("password") != self.password:
                return 200, f"FAILED,10,{FAILED[10]}"
            imei_text = form.get("imei", "")
            imei = int(imei_text) if imei_text.isdigit() else None
            if imei is None or (self.imeis is not None and imei not in self.imeis):
                return 200, f"FAILED,11,{FAILED[11]}"
            if imei in self.no_line_rental:
                return 200, f"FAILED,12,{FAILED[12]}"
            data = form.get("data", "")
            if not data:
                return 200, f"FAILED,16,{FAILED[16]}"
            try:
                payload = bytes.fromhex(data)
            except ValueError:
                return 200, f"FAILED,14,{FAILED[14]}"
            if len(payload) > MT_LIMIT:
                return 200, f"FAILED,15,{FAILED[15]}"
            cost = max(1, math.ceil(len(payload) / CREDIT_BYTES))
            if self.credits is not None and self.credits < cost:
                return 200, f"FAILED,13,{FAILED[13]}"
            if self.credits is not None:
                self.credits -= cost
            self.credits_used += cost
            mt_id = next(self._mt_ids)
            if form.get("flush") == "yes":
                self._to_device = [m for m in self._to_device if m["imei"] != imei]
            self._to_device.append({"imei": imei, "mtId": mt_id, "data": data, "credits": cost})
            self._cond.notify_all()
            return 200, f"OK,{mt_id}"

    # -- MO posts to our webhook --------------------------------------------------------------------

    def _mo_loop(self) -> None:
        session = requests.Session()
        while True:
            fields = self._mo_queue.get()
            if fields is None:
                return
            while not self._stopping.is_set():
                if self.mo_url is None:
                    self._stopping.wait(MO_RETRY_SECONDS)
                    continue
                with self._cond:
                    self.mo_attempts += 1
                try:
                    status = session.post(self.mo_url, data=fields, timeout=10).status_code
                except requests.RequestException:
                    status = 0
                if status == 200:
                    with self._cond:
                        self._mo_sent.append(dict(fields))
                        self._cond.notify_all()
                    break
                self._stopping.wait(MO_RETRY_SECONDS)


class _Handler(KeepAliveHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _reply(self, status: int, body: str | Any, content_type: str = "text/plain") -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away (e.g. it timed out)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == f"{BASE_PATH}/_sandbox/to_device":
            imei = int(query["imei"]) if query.get("imei", "").isdigit() else None
            return self._reply(200, self.fake.to_device(imei), "application/json")
        if url.path == f"{BASE_PATH}/_sandbox/state":
            return self._reply(200, self.fake.state(), "application/json")
        return self._reply(404, "Not Found")

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        body = self._body()
        if url.path == f"{BASE_PATH}/MT":
            form = {k: v[-1] for k, v in parse_qs(url.query).items()}
            form.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()})
            self.fake._gathering.arrive()
            return self._reply(*self.fake._mt(form))
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return self._reply(400, "bad JSON")
        if url.path == f"{BASE_PATH}/_sandbox/device_send":
            try:
                fields = self.fake.device_send(
                    int(payload["imei"]),
                    bytes.fromhex(payload["data"]),
                    latitude=payload.get("latitude", 52.3867),
                    longitude=payload.get("longitude", 0.2938),
                    cep=int(payload.get("cep", 8)),
                )
            except (KeyError, TypeError, ValueError) as exc:
                return self._reply(400, f"bad device_send: {exc}")
            return self._reply(200, fields, "application/json")
        if url.path == f"{BASE_PATH}/_sandbox/faults":
            self.fake.set_faults(
                float(payload.get("error_rate", 0)),
                int(payload.get("status", 503)),
                delay=float(payload.get("delay", 30)),
            )
            return self._reply(200, {"ok": True}, "application/json")
        if url.path == f"{BASE_PATH}/_sandbox/account":
            with self.fake._cond:
                if "credits" in payload:
                    self.fake.credits = payload["credits"]
                if "no_line_rental" in payload:
                    self.fake.no_line_rental = {int(i) for i in payload["no_line_rental"]}
            return self._reply(200, self.fake.state(), "application/json")
        return self._reply(404, "Not Found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8793)
    parser.add_argument("--mo-url", default=None, help="where MO posts go (our /rockblock webhook)")
    args = parser.parse_args()
    fake = FakeRockBlock(args.host, args.port, mo_url=args.mo_url).start()
    print(f"fake RockBLOCK on {fake.base_url}; JWT public key in {fake.public_key_file}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
