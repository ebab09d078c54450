"""A local stand-in for Twilio's REST API and its SMS webhooks, on loopback only.

Speaks the wire format of ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded,
HTTP basic auth, JSON message resource or Twilio's JSON error) and of the Messages list,
``GET`` on the same path (filters ``To``, ``From``, ``DateSent``, ``DateSent<``, ``DateSent>``;
``PageSize``, ``Page``, ``PageToken``; Twilio's paging envelope, newest first), so the real
``twilio`` SDK can talk to it, and signs simulated inbound webhooks the way Twilio does. An inbound
message is kept (and listed) even when its webhook fails, as Twilio keeps it. Control API for other
processes: ``POST /_sandbox/inbound`` (JSON ``{webhook_url, public_url, from, to, body}``) and
``GET /_sandbox/messages``. Like Twilio it speaks HTTP/1.1 and keeps connections alive (every answer, errors
included, has a ``Content-Length``); ``connections_opened`` counts the connections clients made, so a test can
tell a pooled client from one that connects per request. Run alone with
``python -m messaging.sandbox.fake_twilio --port 8791``.
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
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from messaging.core.phones import is_e164
from messaging.core.redact import mask_phone
from messaging.runtime.config import Config
from messaging.sandbox.gathering import Gathering
from messaging.sandbox.loopback import KeepAliveHandler, LoopbackService
from messaging.sandbox.recorded import snapshot, wait_on
from messaging.sms.twilio import TWILIO_BODY_LIMIT, sign

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
LIST_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

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


def message_resource(
    *,
    account_sid: str,
    from_: str,
    to: str,
    body: str,
    sid: str,
    direction: str = "outbound-api",
    status: str = "queued",
) -> dict[str, Any]:
    """The JSON message resource: as Twilio answers a create with (``outbound-api``, ``queued``, not
    sent yet), or as it lists a message it received (``inbound``, ``received``, sent now)."""
    now = rfc2822_now()
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": now if direction == "inbound" else None,
        "date_updated": now,
        "direction": direction,
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": str(num_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
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


def parse_date_filter(value: str) -> date | datetime:
    """A ``DateSent`` filter value: ``YYYY-MM-DD`` (what Twilio documents) or ``YYYY-MM-DDTHH:MM:SSZ``
    (what the SDK writes for a datetime). ValueError otherwise."""
    value = value.strip()
    if len(value) == 10:
        return date.fromisoformat(value)
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _sent_at(resource: dict[str, Any]) -> datetime | None:
    raw = resource.get("date_sent")
    return email.utils.parsedate_to_datetime(raw) if raw else None


def matches_filters(resource: dict[str, Any], filters: dict[str, str]) -> bool:
    """Does a message resource pass the list filters? Dates: ``DateSent`` the same day, ``DateSent>`` on or
    after, ``DateSent<`` on or before (a day compares by day, a time by time); unsent messages never match one."""
    if "To" in filters and resource["to"] != filters["To"]:
        return False
    if "From" in filters and resource["from"] != filters["From"]:
        return False
    for name, holds in (
        ("DateSent", lambda a, b: a == b),
        ("DateSent>", lambda a, b: a >= b),
        ("DateSent<", lambda a, b: a <= b),
    ):
        if name not in filters:
            continue
        sent = _sent_at(resource)
        if sent is None:
            return False
        bound = parse_date_filter(filters[name])
        mine = sent if isinstance(bound, datetime) else sent.astimezone(UTC).date()
        if not holds(mine, bound):
            return False
    return True


def newest_first(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Twilio lists messages most recent first (by date sent, else date created; later records first on a tie)."""

    def when(r: dict[str, Any]) -> datetime:
        return _sent_at(r) or email.utils.parsedate_to_datetime(r["date_created"])

    return sorted(reversed(resources), key=when, reverse=True)


def list_page(
    *, account_sid: str, resources: list[dict[str, Any]], query: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """(status, JSON) for a Messages list request: Twilio's paging envelope, or its JSON error."""
    path = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"
    filters = {k: query[k] for k in LIST_FILTERS if query.get(k)}
    try:
        for name in ("DateSent", "DateSent<", "DateSent>"):
            if name in filters:
                parse_date_filter(filters[name])
        size = int(query.get("PageSize") or DEFAULT_PAGE_SIZE)
        page = int(query.get("Page") or 0)
        if size < 1 or page < 0:
            raise ValueError("PageSize and Page must be positive")
    except ValueError as exc:
        return 400, error_body(400, 20001, f"Invalid list parameter: {exc}")
    size = min(size, MAX_PAGE_SIZE)
    listed = [r for r in newest_first(resources) if matches_filters(r, filters)]
    token = query.get("PageToken") or ""
    after = [i for i, r in enumerate(listed) if "PA" + r["sid"] == token]
    start = after[0] + 1 if after else page * size  # a token names the last record of the page before
    records = listed[start : start + size]

    def uri(**extra: object) -> str:
        return f"{path}?{urlencode(filters | {'PageSize': size} | extra)}"

    more = start + size < len(listed)
    return 200, {
        "messages": [dict(r) for r in records],
        "end": start + len(records) - 1 if records else start,
        "first_page_uri": uri(Page=0),
        "next_page_uri": uri(Page=page + 1, PageToken="PA" + records[-1]["sid"]) if more and records else None,
        "page": page,
        "page_size": size,
        "previous_page_uri": uri(Page=page - 1) if page > 0 else None,
        "start": start,
        "uri": uri(Page=page, **({"PageToken": token} if token else {})),
    }


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


class WebhookUnreachable(requests.ConnectionError):
    """The simulated webhook could not be posted; Twilio has the message all the same (``message_sid``)."""

    def __init__(self, message_sid: str, cause: requests.RequestException) -> None:
        super().__init__(f"webhook unreachable: {type(cause).__name__}: {cause}")
        self.message_sid = message_sid


def _sent_sid(response: requests.Response) -> str:
    """The MessageSid of the webhook form that produced ``response``."""
    body = response.request.body or ""
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    return parse_qs(text).get("MessageSid", [""])[0]


class _Handler(KeepAliveHandler):
    """HTTP/1.1 with keep-alive, as Twilio's API answers."""

    server_version = "FakeTwilio/1.0"

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
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away (e.g. it timed out)

    def _body(self) -> bytes:
        """This request's body (read by ``do_POST`` before anything else)."""
        return self._raw_body

    def _not_found(self) -> None:
        self._send_json(404, error_body(404, 20404, f"The requested resource {self.path} was not found"))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/_sandbox/messages":
            self._send_json(200, self.fake.messages)
            return
        match = _MESSAGES.fullmatch(parts.path)
        if match is None:
            self._not_found()
            return
        if not self._authorised(match.group(1)):
            return
        query = {key: values[0] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        status, doc = self.fake.list_messages(query)
        self._send_json(status, doc)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        # whatever the answer, the next request on this kept-alive connection starts after this body
        self._raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/_sandbox/inbound":
            self._control_inbound()
            return
        match = _MESSAGES.fullmatch(path)
        if match is None:
            self._not_found()
            return
        self.fake._gathering.arrive()
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
            sid = getattr(exc, "message_sid", "")
            self._send_json(502, {"error": f"webhook unreachable: {type(exc).__name__}: {exc}", "message_sid": sid})
            return
        result = {"message_sid": _sent_sid(response), "status_code": response.status_code}
        self._send_json(200, result | {"body": response.text})


class FakeTwilio(LoopbackService):
    """Fake Twilio REST API on a real loopback socket, in a background thread.

    Accepted messages are kept (thread-safe) as the JSON resources returned to the client, and so are the
    inbound messages it "received" (:meth:`simulate_inbound`); the Messages list shows both.
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
        self._cond = threading.Condition()
        self._init_service(host, port)
        self._messages: list[dict[str, Any]] = []
        self._inbound: list[dict[str, Any]] = []
        self._list_queries: list[dict[str, str]] = []
        self._fail_next: list[tuple[int, float | None]] = []
        self._error_rate = 0.0
        self._error_status = 503
        self._rng = random.Random()
        self._gathering = Gathering()  # see gather()

    # lifecycle --------------------------------------------------------------

    def _handler(self) -> type[KeepAliveHandler]:
        return _Handler

    def start(self) -> FakeTwilio:
        super().start()
        log.info("fake twilio listening on %s account=%s", self.base_url, self.account_sid)
        return self

    def stop(self) -> None:
        if self._server is not None:
            super().stop()
            log.info("fake twilio stopped")

    @property
    def base_url(self) -> str:
        """What to give TwilioSender as ``api_base_url``."""
        return f"http://{self.host}:{self.port}"

    # records ----------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Copies of the accepted outbound message resources, oldest first."""
        return snapshot(self._cond, self._messages)

    @property
    def inbound_messages(self) -> list[dict[str, Any]]:
        """Copies of the inbound message resources (what Twilio received for our numbers), oldest first."""
        return snapshot(self._cond, self._inbound)

    @property
    def list_queries(self) -> list[dict[str, str]]:
        """The query of every Messages list request answered, oldest first."""
        return snapshot(self._cond, self._list_queries)

    def list_messages(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer a Messages list request (``query``: its query-string parameters)."""
        with self._cond:
            resources = [dict(r) for r in self._messages + self._inbound]
            self._list_queries.append(dict(query))
        return list_page(account_sid=self.account_sid, resources=resources, query=query)

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
        log.info("fake twilio accepted sid=%s to=%s", resource["sid"], mask_phone(resource["to"]))
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

    def gather(self, calls: int | None) -> None:
        """Hold each Messages create call until ``calls`` of them are in flight together, then answer them all, so
        a test sees how many connections that many concurrent callers use; ``None`` answers each at once again."""
        self._gathering.hold(calls)

    # inbound ----------------------------------------------------------------

    def receive_inbound(self, *, from_: str, to: str, body: str) -> dict[str, Any]:
        """Twilio receives a text for ``to``: keep it (listed as ``inbound``) and return its resource."""
        resource = message_resource(
            account_sid=self.account_sid,
            from_=from_,
            to=to,
            body=body,
            sid=new_sid("SM"),
            direction="inbound",
            status="received",
        )
        with self._cond:
            self._inbound.append(resource)
            self._cond.notify_all()
        return dict(resource)

    def simulate_inbound(
        self, *, webhook_url: str, public_url: str, from_: str, to: str, body: str
    ) -> requests.Response:
        """Receive a text (:meth:`receive_inbound`), then POST a signed incoming-SMS webhook to ``webhook_url``
        like Twilio, signed for ``public_url``. Raises :class:`WebhookUnreachable` (a ``requests``
        error) when the post fails; the message stays received and listed, as at Twilio."""
        sid = self.receive_inbound(from_=from_, to=to, body=body)["sid"]
        form = inbound_form(account_sid=self.account_sid, from_=from_, to=to, body=body, sid=sid)
        headers = {
            "X-Twilio-Signature": sign(auth_token=self.auth_token, public_url=public_url, params=form),
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        try:
            with requests.Session() as session:
                session.trust_env = False  # loopback: never through a proxy
                response = session.post(webhook_url, data=form, headers=headers, timeout=15)
        except requests.RequestException as exc:
            log.info("fake twilio inbound sid=%s webhook unreachable: %s", sid, type(exc).__name__)
            raise WebhookUnreachable(sid, exc) from exc
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
