"""A local stand-in for Twilio's REST API and its SMS webhooks, on loopback only.

Speaks the wire format of ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded,
HTTP basic auth, JSON message resource or Twilio's JSON error) so the real ``twilio`` SDK can talk
to it, and signs simulated inbound webhooks the way Twilio does. Control API for other processes:
``POST /_sandbox/inbound`` (JSON ``{webhook_url, public_url, from, to, body}``) and
``GET /_sandbox/messages``. Run alone with ``python -m messaging.sandbox.fake_twilio --port 8791``.
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import hmac
import json
import logging
import math
import random
import re
import signal
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from messaging.config import Config
from messaging.phones import is_e164
from messaging.smsio import TWILIO_BODY_LIMIT, sign

from .recorded import snapshot, wait_on

log = logging.getLogger(__name__)

SANDBOX_ACCOUNT_SID = "ACsandbox" + "0" * 25
SANDBOX_AUTH_TOKEN = "sandbox-token"
API_VERSION = "2010-04-01"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}

_MESSAGES = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages\.json")
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = set("^{}\\[~]|€\f")
_FAULT_TEXT = {429: (20429, "Too Many Requests"), 500: (20500, "Internal Server Error")}

# --------------------------------------------------------------------------- wire format (pure)


def new_sid(prefix: str = "SM") -> str:
    """A Twilio-shaped SID: two-letter prefix and 32 hex digits."""
    return prefix + uuid.uuid4().hex


def rfc2822_now() -> str:
    """The current time as Twilio writes dates (``Thu, 30 Jul 2015 20:12:31 +0000``)."""
    return email.utils.format_datetime(datetime.now(UTC))


def num_segments(body: str) -> int:
    """How many SMS parts ``body`` takes: GSM-7 160/153 septets, else UCS-2 70/67 units."""
    if all(ch in _GSM7 or ch in _GSM7_EXT for ch in body):
        units, single, multi = sum(2 if ch in _GSM7_EXT else 1 for ch in body), 160, 153
    else:
        units, single, multi = sum(2 if ord(ch) > 0xFFFF else 1 for ch in body), 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's JSON error document."""
    info = f"https://www.twilio.com/docs/errors/{code}"
    return {"code": code, "message": message, "more_info": info, "status": status}


def message_resource(*, account_sid: str, from_: str, to: str, body: str, sid: str) -> dict[str, Any]:
    """The JSON message resource Twilio answers a create with (status ``queued``)."""
    now = rfc2822_now()
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": str(num_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
        "to": to,
        "uri": uri,
    }


def validate_create(form: dict[str, str]) -> tuple[int, str] | None:
    """Twilio's (code, message) for a create request it would refuse, or None if acceptable."""
    to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
    if not to:
        return 21604, "A 'To' phone number is required."
    if not from_ and not form.get("MessagingServiceSid"):
        return 21603, "A 'From' phone number is required."
    if not body and not form.get("MediaUrl"):
        return 21602, "Message body is required."
    if not is_e164(to):
        return 21211, f"Invalid 'To' Phone Number: {to}"
    if len(body) > TWILIO_BODY_LIMIT:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    return None


def inbound_form(*, account_sid: str, from_: str, to: str, body: str, sid: str) -> dict[str, str]:
    """The form fields of Twilio's incoming-SMS webhook (location fields left empty)."""
    form = dict.fromkeys(("ToCountry", "ToState", "ToCity", "ToZip", "FromCountry", "FromState"), "")
    form |= {
        "FromCity": "",
        "FromZip": "",
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "MessageSid": sid,
        "NumMedia": "0",
    }
    form |= {"SmsStatus": "received", "NumSegments": str(num_segments(body)), "ApiVersion": API_VERSION}
    return form | {"AccountSid": account_sid, "From": from_, "To": to, "Body": body}


def basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header, or None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


# --------------------------------------------------------------------------- HTTP plumbing


def _sent_sid(response: requests.Response) -> str:
    """The MessageSid of the webhook form that produced ``response``."""
    body = response.request.body or ""
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    return parse_qs(text).get("MessageSid", [""])[0]


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeTwilio/1.0"
    fake: FakeTwilio  # set on a per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake twilio http: " + format, *args)

    def _send_json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _not_found(self) -> None:
        self._send_json(404, error_body(404, 20404, f"The requested resource {self.path} was not found"))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_sandbox/messages":
            self._send_json(200, self.fake.messages)
            return
        self._not_found()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_sandbox/inbound":
            self._control_inbound()
            return
        match = _MESSAGES.fullmatch(path)
        if match is None:
            self._not_found()
            return
        fault = self.fake._take_fault()
        if fault is not None:
            status, retry_after = fault
            code, text = _FAULT_TEXT.get(status, (20000 + status, "Service Unavailable"))
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
            self._send_json(status, error_body(status, code, text), headers)
            return
        if not self._authorised(match.group(1)):
            return
        parsed = parse_qs(self._body().decode("utf-8"), keep_blank_values=True)
        form = {key: values[0] for key, values in parsed.items()}
        refused = validate_create(form)
        if refused is not None:
            self._send_json(400, error_body(400, *refused))
            return
        resource = self.fake._record(form)
        self._send_json(201, resource)

    def _authorised(self, path_sid: str) -> bool:
        creds = basic_auth(self.headers.get("Authorization"))
        ok = (
            creds is not None
            and hmac.compare_digest(creds[0], self.fake.account_sid)
            and hmac.compare_digest(creds[1].encode(), self.fake.auth_token.encode())
        )
        if not ok:
            challenge = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            self._send_json(401, error_body(401, 20003, "Authenticate"), challenge)
            return False
        if path_sid != self.fake.account_sid:
            self._not_found()
            return False
        return True

    def _control_inbound(self) -> None:
        try:
            doc = json.loads(self._body() or b"{}")
            args = {k: str(doc[k]) for k in ("webhook_url", "from", "to", "body")}
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json(400, {"error": f"need JSON with webhook_url, from, to, body: {exc}"})
            return
        try:
            public_url = str(doc.get("public_url") or args["webhook_url"])
            response = self.fake.simulate_inbound(
                webhook_url=args["webhook_url"],
                public_url=public_url,
                from_=args["from"],
                to=args["to"],
                body=args["body"],
            )
        except requests.RequestException as exc:
            self._send_json(502, {"error": f"webhook unreachable: {type(exc).__name__}: {exc}"})
            return
        result = {"message_sid": _sent_sid(response), "status_code": response.status_code}
        self._send_json(200, result | {"body": response.text})


class FakeTwilio:
    """Fake Twilio REST API on a real loopback socket, in a background thread.

    Accepted messages are kept (thread-safe) as the JSON resources returned to the client.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        account_sid: str = SANDBOX_ACCOUNT_SID,
        auth_token: str = SANDBOX_AUTH_TOKEN,
    ) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"FakeTwilio listens on loopback only, not {host!r}")
        self.host = host
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._requested_port = port
        self._cond = threading.Condition()
        self._messages: list[dict[str, Any]] = []
        self._fail_next: list[tuple[int, float | None]] = []
        self._error_rate = 0.0
        self._error_status = 503
        self._rng = random.Random()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle --------------------------------------------------------------

    def start(self) -> FakeTwilio:
        handler = type("BoundHandler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer((self.host, self._requested_port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fake-twilio", daemon=True
        )
        self._thread.start()
        log.info("fake twilio listening on %s account=%s", self.base_url, self.account_sid)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        log.info("fake twilio stopped")

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeTwilio is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to give TwilioSender as ``api_base_url``."""
        return f"http://{self.host}:{self.port}"

    # records ----------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Copies of the accepted outbound message resources, oldest first."""
        return snapshot(self._cond, self._messages)

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until ``predicate(messages)`` holds; return the messages. TimeoutError otherwise."""
        return wait_on(self._cond, self._messages, predicate, timeout)

    def _record(self, form: dict[str, str]) -> dict[str, Any]:
        resource = message_resource(
            account_sid=self.account_sid,
            from_=form.get("From", ""),
            to=form["To"],
            body=form.get("Body", ""),
            sid=new_sid("SM"),
        )
        with self._cond:
            self._messages.append(resource)
            self._cond.notify_all()
        log.info("fake twilio accepted sid=%s to=%s", resource["sid"], resource["to"])
        return dict(resource)

    # faults -----------------------------------------------------------------

    def set_faults(self, error_rate: float = 0.0, status: int = 503, seed: int | None = None) -> None:
        """Answer a random share ``error_rate`` of sends with HTTP ``status`` (0 turns it off)."""
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        with self._cond:
            self._error_rate, self._error_status = error_rate, status
            self._rng = random.Random(seed)

    def fail_next(self, n: int, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``n`` sends with HTTP ``status`` (and a ``Retry-After`` header if given)."""
        with self._cond:
            self._fail_next.extend([(status, retry_after)] * n)

    def _take_fault(self) -> tuple[int, float | None] | None:
        with self._cond:
            if self._fail_next:
                return self._fail_next.pop(0)
            if self._error_rate and self._rng.random() < self._error_rate:
                return self._error_status, None
        return None

    # inbound ----------------------------------------------------------------

    def simulate_inbound(
        self, *, webhook_url: str, public_url: str, from_: str, to: str, body: str
    ) -> requests.Response:
        """POST a signed incoming-SMS webhook to ``webhook_url`` like Twilio, signed for ``public_url``."""
        sid = new_sid("SM")
        form = inbound_form(account_sid=self.account_sid, from_=from_, to=to, body=body, sid=sid)
        headers = {
            "X-Twilio-Signature": sign(auth_token=self.auth_token, public_url=public_url, params=form),
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        with requests.Session() as session:
            session.trust_env = False  # loopback: never through a proxy
            response = session.post(webhook_url, data=form, headers=headers, timeout=15)
        log.info("fake twilio inbound sid=%s webhook status=%s", sid, response.status_code)
        return response


def main(argv: list[str] | None = None) -> None:
    """Run the fake until SIGINT/SIGTERM. Credentials: flags, else TWILIO_* env, else sandbox ones."""
    config = Config.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--account-sid", default=config.twilio_account_sid or SANDBOX_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=config.twilio_auth_token or SANDBOX_AUTH_TOKEN)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    fake = FakeTwilio(host=args.host, port=args.port, account_sid=args.account_sid, auth_token=args.auth_token)
    fake.start()
    print(f"fake twilio on {fake.base_url}", flush=True)
    try:
        done.wait()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
