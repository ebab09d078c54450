"""Outbound email: build a safe plain-text message (pure) and hand it to the SMTP relay (I/O).

``build_outbound`` validates addresses and cannot produce injected headers; ``RelaySessions.send``
speaks SMTP through smtplib and maps every failure onto the shared delivery errors:
TemporaryDeliveryError (retry later: connection problems, timeouts, 4xx, any refusal before MAIL FROM,
relay auth/TLS trouble 530/534/535/538) or PermanentDeliveryError (dead-letter: other 5xx to
MAIL/RCPT/DATA, a bad address). A timeout after the data was sent is temporary, so a retry may
duplicate (never lose) the message. Once the relay accepted the data, errors on QUIT are ignored.
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import ssl
import threading
import time
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import lru_cache

from messaging.core.addresses import header_address
from messaging.core.errors import PermanentDeliveryError, TemporaryDeliveryError
from messaging.core.redact import mask_email

log = logging.getLogger(__name__)

SUBJECT_MAX = 60
EMPTY_SUBJECT = "(no text)"
# Relay answers about our own credentials/TLS, not about the message: retrying after the
# operator fixes the config must not lose the message, so they count as temporary.
_CONFIG_CODES = {530, 534, 535, 538}
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HINT_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMAIL_IN_TEXT = re.compile(r"[^\s<>()\[\]\"',;:@]+@[A-Za-z0-9.-]+")


def _masked(text: object) -> str:
    """A relay's answer for a log line: the addresses in it masked (a relay often echoes the recipient)."""
    return _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), str(text))


class _HeaderClasses(HeaderRegistry):
    """The stdlib's header registry, except that each header name's class is made once: the stdlib makes a new
    class (``type(...)``) every time a header is set, a fifth of the CPU of building a short mail."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        made = self._made.get(name.lower())
        if made is None:
            made = self._made[name.lower()] = super().__getitem__(name)
        return made


# policy.default with that registry: what outbound mail is built with (sent with policy.SMTP's line endings).
BUILD_POLICY = policy.default.clone(header_factory=_HeaderClasses())


class InvalidRecipient(ValueError):
    """The recipient address can never work (syntax): a permanent error."""


def build_outbound(
    *,
    from_addr: str,
    to_addr: str,
    text: str,
    domain: str,
    message_id_hint: str | None = None,
    subject_text: str | None = None,
) -> EmailMessage:
    """A plain-text utf-8 email from a device message.

    Subject = the first words of ``text`` (or of ``subject_text``, the device's own words when ``text`` has more
    added, such as its position) (at most SUBJECT_MAX chars, one line, "…" when cut).
    With ``message_id_hint`` (e.g. the message's idempotency key) the Message-ID is
    deterministic, so a retried send carries the same id; otherwise it is random.
    Raises InvalidRecipient for a bad ``to_addr`` and ValueError for a bad ``from_addr``.
    """
    try:
        to = _address_header("To", to_addr)
    except ValueError as exc:
        raise InvalidRecipient(f"invalid recipient address: {exc}") from None
    sender = _address_header("From", from_addr)
    msg = EmailMessage(policy=BUILD_POLICY)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject_from_text(text if subject_text is None else subject_text)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id(domain, message_id_hint)
    body = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    msg.set_content(body if body.endswith("\n") else body + "\n", charset="utf-8")
    return msg


def subject_from_text(text: str) -> str:
    """First words of the text on one line, at most SUBJECT_MAX characters."""
    words = _WHITESPACE.sub(" ", _CONTROL.sub(" ", text)).strip()
    if not words:
        return EMPTY_SUBJECT
    if len(words) <= SUBJECT_MAX:
        return words
    cut = words[: SUBJECT_MAX - 1]
    if " " in cut and words[SUBJECT_MAX - 1] != " ":
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + "…"


def message_id(domain: str, hint: str | None = None) -> str:
    """``<...@domain>``: derived from ``hint`` (stable across retries) or random."""
    host = _ascii_domain(domain)
    if not hint:
        return make_msgid(domain=host)
    readable = _HINT_UNSAFE.sub(".", hint).strip(".")[:64] or "msg"
    digest = hashlib.sha256(hint.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"<{readable}.{digest}@{host}>"


class _StaleSession(Exception):
    """A kept session the relay had closed meanwhile; nothing of the message was taken."""


class RelaySessions:
    """SMTP sessions to one relay, kept open from one message to the next (thread-safe).

    A sender sends many messages: a kept session spares a connect, EHLO, STARTTLS and login per message.
    At most ``keep`` idle sessions stay open, none longer than ``idle_seconds``; a kept session that the
    relay closed meanwhile fails at MAIL FROM, before anything was accepted, so the message simply goes
    on a fresh session. ``send`` returns the relay's final reply to DATA (e.g. "2.0.0 Ok: queued as 4Xy7"), any
    address in it masked (a relay often echoes the recipient; the reply is stored and logged as the remote id).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        timeout: float = 30,
        *,
        keep: int = 4,
        idle_seconds: float = 20.0,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._login = (username, password)
        self._starttls = starttls
        self.keep, self.idle_seconds = keep, idle_seconds
        self._idle: list[tuple[float, smtplib.SMTP]] = []
        self._lock = threading.Lock()
        self.opened = 0

    def send(self, msg: EmailMessage) -> str:
        msg_id = str(msg.get("Message-ID", "")).strip()
        try:
            _, mail_from = header_address(str(msg["From"]))
            _, rcpt_to = header_address(str(msg["To"]))
        except (ValueError, TypeError) as exc:
            log.warning("relay rejected locally message_id=%s reason=%s", msg_id, _masked(exc))
            raise PermanentDeliveryError(f"invalid address: {exc}") from None
        data = msg.as_bytes(policy=policy.SMTP)
        try:
            kept = self._take()
            try:
                reply = self._send_on(kept, mail_from, rcpt_to, data, reused=True) if kept else None
            except _StaleSession:
                reply = None
            if reply is None:
                reply = self._send_on(self._open(), mail_from, rcpt_to, data, reused=False)
        except (TemporaryDeliveryError, PermanentDeliveryError) as exc:
            kind = "temporarily" if isinstance(exc, TemporaryDeliveryError) else "permanently"
            log.warning("relay send failed %s message_id=%s error=%s", kind, msg_id, _masked(exc))
            raise
        # The reply is the message's remote id, which its own line (outbox/store.py) logs as sent: the addresses a
        # relay may echo in it are masked there too. The Message-ID comes from the message's key (message_id).
        reply = _masked(reply)
        log.debug("relay accepted message_id=%s relay=%s:%s reply=%s", msg_id, self.host, self.port, reply)
        return reply

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, smtp in idle:
            _close(smtp, polite=True)

    def _take(self) -> smtplib.SMTP | None:
        now = time.monotonic()
        expired = []
        with self._lock:
            while self._idle:
                since, smtp = self._idle.pop()
                if now - since < self.idle_seconds:
                    break
                expired.append(smtp)
            else:
                smtp = None
        for old in expired:
            _close(old, polite=True)
        return smtp

    def _give_back(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append((time.monotonic(), smtp))
                return
        _close(smtp, polite=True)

    def _open(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(timeout=self.timeout)
        try:
            _check_session(smtp.connect(self.host, self.port), "greeting")
            _check_session(smtp.ehlo(), "EHLO")
            if self._starttls:
                _check_session(smtp.starttls(context=ssl.create_default_context()), "STARTTLS")
                _check_session(smtp.ehlo(), "EHLO")
            if self._login[0]:
                smtp.login(*self._login)
        except TemporaryDeliveryError:
            _close(smtp, polite=False)
            raise
        except smtplib.SMTPResponseException as exc:
            _close(smtp, polite=False)
            raise TemporaryDeliveryError(f"relay said {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except (smtplib.SMTPException, OSError) as exc:  # includes timeouts and a missing TLS/AUTH extension
            _close(smtp, polite=False)
            raise TemporaryDeliveryError(f"relay unreachable or connection lost: {type(exc).__name__}: {exc}") from None
        self.opened += 1
        return smtp

    def _send_on(self, smtp: smtplib.SMTP, mail_from: str, rcpt_to: str, data: bytes, *, reused: bool) -> str:
        accepted = False
        try:
            try:
                _check(smtp.mail(mail_from), "MAIL FROM")
            except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                if reused:
                    raise _StaleSession() from exc
                raise
            _check(smtp.rcpt(rcpt_to), "RCPT TO")
            code, reply = smtp.data(data)
            _check((code, reply), "DATA")
            accepted = True
            return _text(reply)
        except smtplib.SMTPResponseException as exc:
            raise classify_smtp_code(exc.smtp_code)(f"relay said {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise TemporaryDeliveryError(f"relay unreachable or connection lost: {type(exc).__name__}: {exc}") from None
        finally:
            if accepted:
                self._give_back(smtp)
            else:
                _close(smtp, polite=False)


def classify_smtp_code(code: int) -> type[TemporaryDeliveryError] | type[PermanentDeliveryError]:
    """Which delivery error an SMTP reply code means."""
    if code in _CONFIG_CODES or code < 500:
        return TemporaryDeliveryError
    return PermanentDeliveryError


def _check_session(response: tuple[int, bytes | str], stage: str) -> None:
    """Refusals before MAIL FROM are about the relay or us, never the message: temporary."""
    code, text = response
    if not 200 <= code < 400:
        raise TemporaryDeliveryError(f"relay said {code} at {stage}: {_text(text)}")


def _check(response: tuple[int, bytes | str], stage: str) -> None:
    code, text = response
    if not 200 <= code < 400:
        raise smtplib.SMTPResponseException(code, f"at {stage}: {_text(text)}")


def _close(smtp: smtplib.SMTP, *, polite: bool) -> None:
    try:
        if polite:
            smtp.quit()
        else:
            smtp.close()
    except (smtplib.SMTPException, OSError):
        smtp.close()


@lru_cache(maxsize=4096)
def _address_header(name: str, addr: str) -> BaseHeader:
    """The ``From``/``To`` header of one checked address, made once per address (a header is immutable; making
    one parses it, and a device writes to the same few people); ValueError for a bad address (not remembered)."""
    return BUILD_POLICY.header_factory(name, _single_address(addr))


def _single_address(addr: str) -> Address:
    name, spec = header_address(addr)
    local, domain = spec.split("@")
    return Address(display_name=_WHITESPACE.sub(" ", _CONTROL.sub(" ", name)).strip(), username=local, domain=domain)


def _ascii_domain(domain: str) -> str:
    name = domain.strip().rstrip(".").lower()
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid domain {domain!r}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"invalid domain {domain!r}")
    return ascii_name


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return str(value).strip()
