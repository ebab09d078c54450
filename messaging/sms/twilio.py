"""SMS over Twilio: inbound webhook checking and parsing (pure), and the outbound sender.

Webhook signatures
    Twilio signs each webhook (``X-Twilio-Signature``) over the URL *it* requested plus the sorted
    form fields. Behind an ingress / load balancer the URL our process sees (``http://pod:8000/sms``)
    is not that URL, so we always validate against the configured public URL
    (``TWILIO_WEBHOOK_PUBLIC_URL``, e.g. ``https://sms.example.com/sms``), exactly as entered in
    the Twilio console, query string included. The validator accepts it with or without the
    default port.

Outbound, and listing what Twilio received
    :class:`TwilioSender` (Messages create) and :class:`TwilioInbox` (Messages list, for the
    reconciliation sweep in ``reconcile.py``) drive the real ``twilio.rest.Client``. To aim it at
    another host (the local fake in tests and the sandbox) it is given an HTTP client that rewrites
    the scheme and host of every ``*.twilio.com`` request URL to ``api_base_url``; the SDK itself is
    untouched.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
import urllib3
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from messaging.core.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError, parse_retry_after
from messaging.core.phones import normalise_phone
from messaging.core.redact import mask_phone
from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.runtime.config import TWILIO_DEFAULT_API_BASE_URL
from messaging.runtime.http import HostPool

log = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Twilio refuses bodies over 1600 characters (error 21617). We count UTF-16 code units, as a
# UCS-2 SMS does, so characters outside the BMP (most emoji) count twice: never over the limit.
TWILIO_BODY_LIMIT = 1600
TRIM_MARKER = " [...trimmed]"

_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")


class BadWebhook(ValueError):
    """The request is not a well-formed Twilio SMS webhook."""


# --------------------------------------------------------------------------- signatures


def sign(*, auth_token: str, public_url: str, params: dict[str, str]) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for ``params`` posted to ``public_url``."""
    return RequestValidator(auth_token).compute_signature(public_url, params)


def validate_signature(*, auth_token: str, public_url: str, params: dict[str, str], signature: str) -> bool:
    """True if ``signature`` is Twilio's signature of ``params`` posted to ``public_url``.

    ``public_url`` must be the URL configured in Twilio (``TWILIO_WEBHOOK_PUBLIC_URL``), not the
    one this process was reached at: behind an ingress the two differ.
    """
    if not auth_token or not public_url or not signature:
        return False
    return bool(RequestValidator(auth_token).validate(public_url, params, signature))


# --------------------------------------------------------------------------- inbound parsing


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or not str(value).strip():
        raise BadWebhook(f"Twilio webhook is missing {name!r}")
    return str(value).strip()


def _phone(params: dict[str, str], name: str) -> str:
    raw = _required(params, name)
    number = normalise_phone(raw)
    if number is None:
        raise BadWebhook(f"Twilio webhook field {name!r} is not an E.164 phone number: {raw!r}")
    return number


def parse_inbound_sms(params: dict[str, str]) -> CombinedMessage:
    """Turn Twilio's inbound-SMS form fields into a message for the user's device.

    Uses ``MessageSid`` (``SmsSid`` for old webhooks), ``From``, ``To``, ``Body`` and ``NumMedia``.
    Media cannot go over the satellite link; their count is noted in the text instead.
    Raises :class:`BadWebhook` when a field is missing or malformed.
    """
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    sid = str(sid).strip()
    if not sid:
        raise BadWebhook("Twilio webhook is missing 'MessageSid'")
    if not _SID.fullmatch(sid):
        raise BadWebhook(f"Twilio webhook 'MessageSid' is malformed: {sid!r}")
    sender = _phone(params, "From")
    recipient = _phone(params, "To")

    raw_media = str(params.get("NumMedia") or "0").strip()
    if not raw_media.isdigit():
        raise BadWebhook(f"Twilio webhook 'NumMedia' is not a count: {raw_media!r}")
    num_media = int(raw_media)
    body = params.get("Body")
    if body is None and num_media == 0:
        raise BadWebhook("Twilio webhook is missing 'Body'")
    text = str(body or "")
    if num_media:
        note = f"[{num_media} media dropped]"
        text = f"{text} {note}" if text else note

    return CombinedMessage(
        direction=Direction.TO_DEVICE,
        protocol=Protocol.SMS,
        sender=sender,
        recipient=recipient,
        text=text,
        idempotency_key=f"twilio:{sid}",
        external_id=sid,
    )


@dataclass(frozen=True)
class ListedMessage:
    """One message as Twilio's Messages list API returns it (the fields the reconciliation needs)."""

    sid: str
    from_: str
    to: str
    body: str
    num_media: str
    direction: str  # "inbound", "outbound-api", "outbound-reply", "outbound-call"
    date_sent: datetime | None

    def webhook_fields(self) -> dict[str, str]:
        """The form fields Twilio's incoming-SMS webhook carries for this message, so that
        :func:`parse_inbound_sms` makes the very message (same key) the webhook would have."""
        return {
            "MessageSid": self.sid,
            "From": self.from_,
            "To": self.to,
            "Body": self.body,
            "NumMedia": self.num_media or "0",
        }


# --------------------------------------------------------------------------- outbound helpers (pure)


def _utf16_units(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def trim_body(body: str, limit: int = TWILIO_BODY_LIMIT) -> str:
    """``body`` unchanged if it fits Twilio's limit, else cut to fit with :data:`TRIM_MARKER` appended."""
    if sum(_utf16_units(ch) for ch in body) <= limit:
        return body
    room = limit - len(TRIM_MARKER)
    kept: list[str] = []
    used = 0
    for ch in body:
        used += _utf16_units(ch)
        if used > room:
            break
        kept.append(ch)
    return "".join(kept) + TRIM_MARKER


def is_twilio_base_url(api_base_url: str) -> bool:
    """True if ``api_base_url`` is Twilio's own API (no rewriting needed)."""
    return api_base_url.strip().rstrip("/").lower() == TWILIO_DEFAULT_API_BASE_URL


def rewrite_twilio_url(url: str, api_base_url: str) -> str:
    """Move a request URL on any ``*.twilio.com`` host onto ``api_base_url`` (scheme, host, path prefix)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host != "twilio.com" and not host.endswith(".twilio.com"):
        return url
    base = urlsplit(api_base_url.strip())
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, parts.fragment))


def delivery_error(exc: TwilioException, retry_after: float | None = None) -> DeliveryError:
    """Map an error answer from Twilio onto our retry policy.

    429 and 5xx are temporary; other 4xx (21211 invalid To, 21610 unsubscribed, 20003 bad
    credentials...) are permanent. Anything unexpected (a 3xx, no status) is temporary: a retry
    may duplicate an SMS, a dead letter loses it.
    """
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    if isinstance(exc, TwilioServiceException):
        text = exc.detail or exc.title
    elif isinstance(exc, TwilioRestException):
        text = exc.msg
    else:
        text = str(exc)
    described = f"Twilio HTTP {status} code {code}: {text}"
    if isinstance(status, int) and 400 <= status < 500 and status != 429:
        return PermanentDeliveryError(described)
    if status is None and not isinstance(exc, TwilioRestException | TwilioServiceException):
        return PermanentDeliveryError(f"Twilio client error: {text}")
    return TemporaryDeliveryError(described, retry_after=retry_after)


# --------------------------------------------------------------------------- outbound I/O


class _BaseUrlHttpClient(HttpClient):
    """The SDK's HTTP client, over urllib3's kept-alive connection pools, optionally re-aimed at ``base_url``;
    remembers each thread's last headers.

    It does what the SDK's ``TwilioHttpClient`` does (form or JSON body, basic auth, no retries, no redirects
    unless asked) for about half its CPU per request, the SMS sender making one request per text. Network
    failures are raised as ``requests`` errors, as the SDK's client raises them. The SDK's exceptions drop
    response headers, so ``Retry-After`` is read from here.
    """

    def __init__(self, base_url: str | None, timeout: float) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), False, timeout)
        self.base_url = base_url
        self._local = threading.local()
        self._http = HostPool(base_url or TWILIO_DEFAULT_API_BASE_URL)

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        self._local.headers = None
        if self.base_url is not None:
            url = rewrite_twilio_url(url, self.base_url)
        if params:
            url += ("&" if urlsplit(url).query else "?") + urlencode(params, doseq=True)
        sent = dict(headers or {})
        body = None
        if data is not None and sent.get("Content-Type") in ("application/json", "application/scim+json"):
            body = json.dumps(data).encode()
        elif data:
            body = urlencode(data, doseq=True).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if auth is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        seconds = timeout if timeout is not None else self.timeout
        try:
            response = self._http.request(
                method.upper(),
                url,
                body=body,
                headers=sent,
                timeout=urllib3.Timeout(connect=seconds, read=seconds),
                retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)
                if allow_redirects
                else False,
                redirect=allow_redirects,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # refused is a NewConnectionError, which urllib3 derives from its connect timeout
            timed_out = isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError)
            if timed_out and not isinstance(exc, urllib3.exceptions.NewConnectionError):
                raise requests.Timeout(f"{type(exc).__name__}: {exc}") from exc
            raise requests.ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        self._local.headers = response.headers
        return TwilioResponse(response.status, response.data.decode("utf-8", "replace"), response.headers)

    def last_header(self, name: str) -> str | None:
        headers = getattr(self._local, "headers", None)
        return headers.get(name) if headers is not None else None


def _sdk_client(
    account_sid: str, auth_token: str, api_base_url: str, timeout: float
) -> tuple[Client, _BaseUrlHttpClient, str]:
    """The SDK client (re-aimed at ``api_base_url`` unless that is Twilio), its HTTP client, and the base URL."""
    api_base_url = api_base_url.strip() or TWILIO_DEFAULT_API_BASE_URL
    base = None if is_twilio_base_url(api_base_url) else api_base_url.rstrip("/")
    http = _BaseUrlHttpClient(base, timeout=timeout)
    return Client(account_sid, auth_token, http_client=http), http, base or TWILIO_DEFAULT_API_BASE_URL


class _TwilioApi:
    """The official SDK's client for one account, re-aimed at ``api_base_url`` unless that is Twilio's."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base_url: str = TWILIO_DEFAULT_API_BASE_URL,
        timeout: float = 15,
    ) -> None:
        self._client, self._http, self.api_base_url = _sdk_client(account_sid, auth_token, api_base_url, timeout)

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(api_base_url={self.api_base_url!r})"


class TwilioSender(_TwilioApi):
    """Sends SMS through Twilio's Messages API with the official SDK. Thread-safe."""

    def send(self, *, from_: str, to: str, body: str) -> str:
        """Send one SMS; return Twilio's message SID.

        Bodies over 1600 characters are trimmed (see :func:`trim_body`). Raises
        :class:`TemporaryDeliveryError` (retry; ``retry_after`` from Twilio when given) or
        :class:`PermanentDeliveryError` (dead-letter). A timeout after the request was sent is
        temporary too, so a retry may rarely send twice: we prefer that to losing the message.
        """
        text = trim_body(body)
        if text != body:
            log.info("sms body trimmed to=%s from_len=%d", mask_phone(to), len(body))
        try:
            message = self._client.messages.create(from_=from_, to=to, body=text)
        except (TwilioRestException, TwilioServiceException) as exc:
            retry_after = parse_retry_after(self._http.last_header("Retry-After"))
            error = delivery_error(exc, retry_after)
            log.warning("sms send failed to=%s kind=%s: %s", mask_phone(to), type(error).__name__, error)
            raise error from exc
        except requests.RequestException as exc:
            log.warning("sms send failed to=%s kind=network: %s", mask_phone(to), type(exc).__name__)
            raise TemporaryDeliveryError(f"Twilio unreachable: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a 2xx whose body is not JSON: we cannot tell if it was sent
            raise TemporaryDeliveryError(f"Twilio answered with an unreadable body: {exc}") from exc
        except TwilioException as exc:
            raise delivery_error(exc) from exc
        sid = message.sid
        if not sid:
            raise TemporaryDeliveryError("Twilio accepted the message but returned no SID")
        # The message's own line (outbox/store.py) says it was sent, with this SID as its remote id.
        log.debug("sms accepted by twilio sid=%s to=%s status=%s", sid, mask_phone(to), message.status)
        return sid


class TwilioUnavailable(RuntimeError):
    """Twilio's Messages list could not be read now (network, 5xx, 429, bad credentials...)."""


class TwilioInbox(_TwilioApi):
    """Lists the messages Twilio received for a number, with the official SDK (Messages list). Thread-safe."""

    PAGE_SIZE = 200  # records per request; the SDK follows ``next_page_uri`` for the rest

    def sent_to(self, number: str, since: datetime) -> list[ListedMessage]:
        """Every message Twilio lists with ``To`` = ``number`` sent on or after the UTC day of ``since``.

        Twilio's ``DateSent>`` filter takes a day (``DateSent>=YYYY-MM-DD``), so this may return
        messages older than ``since``: the caller filters. All pages are read. Raises
        :class:`TwilioUnavailable` when the list cannot be read.
        """
        day = since.astimezone(UTC).strftime("%Y-%m-%d")
        try:
            records = self._client.messages.stream(to=number, date_sent_after=day, page_size=self.PAGE_SIZE)
            return [
                ListedMessage(
                    sid=str(r.sid or ""),
                    from_=str(r.from_ or ""),
                    to=str(r.to or ""),
                    body=str(r.body or ""),
                    num_media=str(r.num_media or "0"),
                    direction=str(r.direction or ""),
                    date_sent=r.date_sent if isinstance(r.date_sent, datetime) else None,
                )
                for r in records
            ]
        except (TwilioException, requests.RequestException, ValueError) as exc:
            # not the exception's text: it may carry the request URL, with the full number in it
            status = getattr(exc, "status", None) or next(
                (a.status_code for a in exc.args if isinstance(getattr(a, "status_code", None), int)), None
            )
            what = f"HTTP {status}" if status else type(exc).__name__
            raise TwilioUnavailable(f"listing messages to {mask_phone(number)} failed: {what}") from exc
