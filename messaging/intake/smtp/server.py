"""The mail server actor: SMTP intake for ``@EMAIL_DOMAIN`` on a real socket (aiosmtpd).

``MailHandler`` holds the SMTP decisions and stores through the user desk (in this process, ``LocalUsers``); it
runs without Ray in unit tests. ``MailServer`` owns the listening socket, on the event loop of the process that runs it
(a courier, ``operations/courier.py``, beside that process's senders). The reply
to DATA is ``250`` only after the message is stored for every recipient; if that fails or takes too long the reply
is ``451`` so the sending server retries (the idempotency key makes the retry harmless).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from messaging.core.addresses import MAILBOX_NAME, mailbox_username
from messaging.core.redact import mask_email
from messaging.core.types import Channel, CombinedMessage, Direction, Protocol
from messaging.intake.smtp.authentication import (
    REJECT_REPLY,
    AuthResult,
    Resolver,
    authenticate,
    decision,
    sender_to_match,
)
from messaging.intake.smtp.parse import (
    InboundMail,
    MailParseError,
    count_mime_parts,
    device_text,
    parse_inbound,
)
from messaging.intake.smtp.tls import ReloadingContext
from messaging.intake.user_store import LocalUsers, UserStore
from messaging.routing.decisions import SMTP_REPLIES, Verdict
from messaging.runtime.config import Config
from messaging.runtime.podlabel import PodLabeler
from messaging.runtime.pool import NamedPool
from messaging.satellite.networks import LARGEST_PACKET_BUDGET

log = logging.getLogger("messaging.intake.smtp.server")

TEMPFAIL = "451 4.3.0 Temporary failure storing the message, please try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
RCPT_CACHE_SIZE = 10_000
AUTH_THREADS = 32  # sender checks (SPF/DKIM/DMARC) waiting on DNS at once per mail server


class NotStored(Exception):
    """A mail read and checked but not stored (the database, or SMTP_STORE_TIMEOUT): answered 451."""


def reply_for(verdict: Verdict) -> str:
    code, text = SMTP_REPLIES[verdict]
    return f"{code} {text}"


def temporary_reply(verdict: Verdict) -> str:
    """The reply for a recipient whose copy was not stored: its verdict's own 4xx, else a plain 451."""
    code, _ = SMTP_REPLIES.get(verdict, (451, ""))
    return reply_for(verdict) if 400 <= code < 500 else TEMPFAIL


MESSAGE_ID_IN_KEY = 128  # longer Message-IDs are hashed into the key (the column holds 255 characters)
KEY_LENGTH = 255


def idempotency_key(raw: bytes, message_id: str, mailbox: str) -> str:
    """``smtp:<Message-ID or digest>:<mailbox>``: a retried delivery of the same mail to the same mailbox stores
    nothing new. ``mailbox`` is the resolved one (``username@domain``: tags and case removed). Nothing is ever
    cut off: a long Message-ID, or a whole key too long for the column, is hashed, so two different
    (message, mailbox) pairs never share a key."""
    ident = message_id.strip()
    if not ident:
        ident = "sha256:" + hashlib.sha256(raw).hexdigest()
    elif len(ident) > MESSAGE_ID_IN_KEY:
        ident = "sha256:" + _digest(ident)
    key = f"smtp:{ident}:{mailbox.lower()}"
    return key if len(key) <= KEY_LENGTH else "smtp:sha256:" + _digest(key)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def store_limit(max_packets: int) -> int:
    """How much of a mail's text is worth storing: what at most ``max_packets`` packets carry to a device
    (the codec trims anything longer anyway), not the whole body of a 1 MB mail."""
    return max_packets * LARGEST_PACKET_BUDGET


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8", "surrogatepass")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


@functools.lru_cache(maxsize=RCPT_CACHE_SIZE)
def mailbox_of(address: str, domain: str) -> str | None:
    """The resolved mailbox (``username@domain``) of a recipient address of ``domain``, else None. Cached: it
    is asked at RCPT and again at DATA, and a mailbox gets mail from many senders."""
    username = mailbox_username(address, domain)
    return f"{username}@{domain}".lower() if username else None


def read_mail(raw: bytes, limit: int) -> tuple[InboundMail, str]:
    """The parsed mail and the text stored for the device (at most ``limit`` bytes). Raises MailParseError."""
    mail = parse_inbound(raw)
    return mail, clip(device_text(mail), limit)


class MailHandler:
    """aiosmtpd handler: RCPT and DATA decisions; ``users`` decides and stores (``LocalUsers``)."""

    def __init__(
        self,
        config: Config,
        users: Any,
        clock: Callable[[], float] = time.monotonic,
        local: Callable[[Any, list[int]], bool] | None = None,
    ):
        """``local``: takes the kicks meant for the senders of this very process (``UserStore``)."""
        self.config = config
        self.users = users
        self.store = UserStore(config, users, local=local)
        self.clock = clock
        self._recipients_ok: dict[tuple[str, str], float] = {}  # (rcpt, sender) -> when the user desk said yes
        self.resolver = Resolver.from_config(config.dns_nameservers)  # a bad DNS_NAMESERVERS refuses to start
        # Parsing and the sender checks, one worker thread per message: CPU work off the event loop, and DNS
        # waits (each bounded) in threads of their own, so a slow resolver never holds up other sessions.
        self._checks = ThreadPoolExecutor(max_workers=AUTH_THREADS, thread_name_prefix="mailauth")
        self.sessions = 0
        self.sessions_by_client: dict[str, int] = {}
        self.in_flight = 0
        self.accepted = 0
        self.draining = False

    # -- sessions -----------------------------------------------------------------------------------
    def session_refusal(self, client: str) -> str | None:
        """The reply that turns a new session away (draining, too many sessions), or None to take it."""
        if self.draining:
            return SHUTTING_DOWN
        if self.sessions >= self.config.smtp_max_sessions:
            return "421 4.7.0 Too many connections; try again later"
        if self.sessions_by_client.get(client, 0) >= self.config.smtp_max_sessions_per_client:
            return "421 4.7.0 Too many connections from your address; try again later"
        return None

    def session_opened(self, client: str) -> None:
        self.sessions += 1
        self.sessions_by_client[client] = self.sessions_by_client.get(client, 0) + 1

    def session_closed(self, client: str) -> None:
        self.sessions -= 1
        left = self.sessions_by_client.get(client, 1) - 1
        if left > 0:
            self.sessions_by_client[client] = left
        else:
            self.sessions_by_client.pop(client, None)

    def _take(self, raw: bytes, session: Session, envelope: Envelope) -> tuple[AuthResult, list | None]:
        """In a worker thread, the whole of a mail's work off the event loop: parse it (:class:`MailParseError`
        if unreadable: then no sender checks are made), check its sender, and store a copy per mailbox
        (:class:`NotStored` if that failed). Returns the checks and the store's results, which are None when
        DMARC refused the mail (nothing stored)."""
        mail, text = read_mail(raw, store_limit(self.config.max_packets))
        auth = self._authenticate(raw, session, envelope)
        if decision(auth) == "reject":  # a forged From under p=reject: nothing stored, nothing paid
            return auth, None
        sender = mail.sender or (envelope.mail_from or "").lower()
        match_sender = sender_to_match(auth, mail.sender, envelope.mail_from or "")
        messages = [
            CombinedMessage(
                direction=Direction.TO_DEVICE,
                protocol=Protocol.EMAIL,
                sender=sender,
                recipient=mailbox,
                text=text,
                subject=mail.subject,
                idempotency_key=idempotency_key(raw, mail.message_id, mailbox),
                external_id=mail.message_id,
                authentication=auth.summary(),
                match_sender=match_sender,
            )
            for mailbox in dict.fromkeys(self._mailbox(rcpt) or rcpt.lower() for rcpt in envelope.rcpt_tos)
        ]
        try:
            return auth, self.store.store([(self.users.index_for(m.routing_key()), m) for m in messages])
        except Exception as exc:  # not stored (database trouble, too slow): the sender must retry
            raise NotStored(f"from {mask_email(sender)}: {type(exc).__name__}: {exc}") from exc

    def _authenticate(self, raw: bytes, session: Session, envelope: Envelope) -> AuthResult:
        """SPF, DKIM and DMARC for one message (in a worker thread: DNS lookups block, each one bounded)."""
        peer = session.peer if isinstance(session.peer, tuple) else ("",)
        return authenticate(
            raw,
            mail_from=envelope.mail_from or "",
            client_ip=str(peer[0]),
            helo=session.host_name or "",
            resolver=self.resolver,
        )

    async def handle_EHLO(self, server, session: Session, envelope: Envelope, hostname: str, responses: list[str]):
        """The EHLO reply without AUTH: nobody logs in to an MX (aiosmtpd would offer it once STARTTLS is done)."""
        session.host_name = hostname
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's hook for an error in any command: a temporary answer, never one naming the exception."""
        if isinstance(error, TLSSetupException):  # a client that cannot do our TLS (a scanner, an old server)
            log.info("STARTTLS handshake failed: %s", error.__cause__ or error)
            return "454 4.7.0 TLS not available"  # not sent: aiosmtpd closes the connection
        log.error("SMTP session error: %s: %s", type(error).__name__, error, exc_info=error)
        return "451 4.3.0 Temporary error; please try again later"

    def _known_good(self, address: str, sender: str) -> bool:
        """Did the user desk accept this recipient for this sender within USER_CACHE_SECONDS? (RCPT is
        advisory: DATA decides again, so a recent yes spares a Ray call per message.)"""
        said_yes = self._recipients_ok.get((address, sender))
        return said_yes is not None and self.clock() - said_yes < self.config.user_cache_seconds

    def _remember_good(self, address: str, sender: str) -> None:
        if len(self._recipients_ok) >= RCPT_CACHE_SIZE:
            self._recipients_ok.clear()
        self._recipients_ok[(address, sender)] = self.clock()

    def _mailbox(self, address: str) -> str | None:
        """The resolved mailbox (``username@domain``) of a recipient of ours, else None."""
        return mailbox_of(address, self.config.email_domain)

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, rcpt_options) -> str:
        mailbox = self._mailbox(address)
        if mailbox is None:
            return "550 5.7.1 Relaying denied: we only accept mail for our own domain"
        if not MAILBOX_NAME.fullmatch(mailbox.partition("@")[0]):
            return reply_for(Verdict.UNKNOWN_RECIPIENT)  # no mailbox of ours can have that name
        # One copy per mailbox: demo+1@, DEMO@ and demo@ are one device, and each copy costs packets.
        taken = {self._mailbox(rcpt) for rcpt in envelope.rcpt_tos}
        if mailbox in taken:
            return "250 2.1.5 OK (already a recipient)"
        if len(taken) >= self.config.smtp_max_recipients:
            return "452 4.5.3 Too many recipients; send the rest in another transaction"
        rcpt, sender = address.lower(), (envelope.mail_from or "").lower()
        if not self._known_good(rcpt, sender):
            try:
                verdict = await self.users.acall(
                    self.users.index_for(rcpt),
                    "check_recipient",
                    address,
                    envelope.mail_from or "",
                    timeout=self.config.smtp_store_timeout,
                )
            except Exception as exc:  # pool down, or the lookup failed (e.g. the database): a temporary answer
                log.warning("RCPT %s: lookup failed: %s: %s", mask_email(address), type(exc).__name__, exc)
                return "451 4.3.0 Temporary failure looking up the mailbox, please try again later"
            if verdict is not Verdict.ACCEPT:
                return reply_for(verdict)
            self._remember_good(rcpt, sender)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        self.in_flight += 1
        try:
            parts, most = count_mime_parts(raw), self.config.smtp_max_mime_parts
            if parts > most:
                return f"554 5.6.0 Message has too many MIME parts ({parts}; the limit is {most})"
            loop = asyncio.get_running_loop()
            try:  # off the event loop, so other sessions go on meanwhile (the checks never raise)
                auth, results = await loop.run_in_executor(self._checks, self._take, raw, session, envelope)
            except MailParseError as exc:
                return f"554 5.6.0 Message could not be read: {exc}"
            except NotStored as exc:
                log.warning("DATA %s: not stored: answering 451", exc)
                return TEMPFAIL
            except Exception as exc:  # a parser bug: the same bytes fail the same way, so a retry cannot help
                log.error("DATA: message unreadable (%s)", type(exc).__name__, exc_info=exc)
                return "554 5.6.0 Message could not be read"
            if results is None:
                log.info("DATA refused by DMARC: %s", auth.summary())
                return REJECT_REPLY
            self.store.kick(results)
            unstored = [r for r in results if not r.stored]
            if unstored:  # e.g. a rate limit: the sender tries again later (the stored copies dedupe by key)
                return temporary_reply(unstored[0].verdict)
            accepted = [r for r in results if r.verdict is Verdict.ACCEPT]
            if not accepted:  # every recipient refused it at DATA time (blocked sender, quota)
                return reply_for(results[0].verdict)
            self.accepted += 1
            ids = ",".join(str(r.message_id) for r in accepted)
            return f"250 2.0.0 OK: stored as {ids}"
        finally:
            self.in_flight -= 1


# A path as nearly every server sends it: ``<local@domain>``, an ASCII dot-atom local part and a host name, then
# nothing or the parameters after spaces. aiosmtpd parses every path with the email package's header parser (and
# makes a typing.Protocol class per call): about 0.35 ms a MAIL or RCPT here, a sixth of the CPU of a mail taken.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(?=[^ \t(])|(?=[^ \t(])|[ \t]*$)"
)


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) of a MAIL or RCPT argument in the plain form above, exactly as aiosmtpd's own parse
    gives them; None for any other form (quoted local parts, address literals, comments, non-ASCII, a null path),
    which aiosmtpd parses."""
    found = PLAIN_PATH.match(arg)
    return (found.group(1), arg[found.end() :]) if found else None


class DrainableSMTP(SMTP):
    """aiosmtpd's SMTP protocol that counts sessions (in all and per client address), turns new ones away
    while draining or past the session limits (``421``, so the sender tries again later), and takes lines
    as long as the message size limit allows (long generated HTML lines are common; RFC 5321's 1,000 would
    bounce them)."""

    def __init__(self, handler: MailHandler, **kwargs) -> None:
        self.line_length_limit = max(SMTP.line_length_limit, kwargs.get("data_size_limit") or 0)
        super().__init__(handler, **kwargs)

    def connection_made(self, transport) -> None:
        if self._original_transport is not None:  # STARTTLS done: the same session, now encrypted
            super().connection_made(transport)
            return
        handler: MailHandler = self.event_handler
        peer = transport.get_extra_info("peername")
        self._client = peer[0] if isinstance(peer, tuple) and peer else "?"
        refusal = handler.session_refusal(self._client)
        if refusal:
            self._refused = True
            transport.write(f"{refusal}\r\n".encode())
            transport.close()
            return
        self._refused = False
        handler.session_opened(self._client)
        super().connection_made(transport)

    def connection_lost(self, exc) -> None:
        if getattr(self, "_refused", False):
            return
        self.event_handler.session_closed(self._client)
        super().connection_lost(exc)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer (``SMTP._reset_timeout``, pinned aiosmtpd 1.4.6), moved without a new timer per
        command: each command moves the deadline; the one timer, when it goes off before it, waits the rest."""
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        timer = self._timeout_handle
        if timer is None or timer.cancelled() or timer.when() > self._idle_deadline:
            if timer is not None:
                timer.cancel()
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_timer)

    def _idle_timer(self) -> None:
        if self.loop.time() < self._idle_deadline:  # a command came since the timer was set
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_timer)
        else:
            self._timeout_cb()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's parse of a MAIL or RCPT path (``SMTP._getaddr``, pinned aiosmtpd 1.4.6), the plain form
        without the header parser; the same results (a test compares the two on many paths), except that a path
        its parser fails on is malformed."""
        plain = plain_path(arg) if arg else None
        if plain is None:
            try:
                return super()._getaddr(arg)
            except IndexError:  # the header parser on a cut-off path (``<a@``): malformed (553), not a 451 to retry
                return None, None
        address, rest = plain
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest


def smtp_protocol(handler: MailHandler, config: Config, tls: ReloadingContext | None = None) -> DrainableSMTP:
    """One SMTP session's protocol object, with the limits from the config. With ``tls`` (SMTP_TLS_CERT_FILE and
    SMTP_TLS_KEY_FILE set) EHLO offers STARTTLS with the current certificate; it stays optional for the sender
    (opportunistic, as on port 25: a server that cannot do TLS still delivers)."""
    return DrainableSMTP(
        handler,
        tls_context=tls.current() if tls is not None else None,
        require_starttls=False,
        data_size_limit=config.smtp_max_message_size,
        enable_SMTPUTF8=True,
        hostname=config.email_domain,
        ident="Space Beaver ESMTP",
        timeout=config.smtp_idle_timeout,
        command_call_limit=config.smtp_command_limit or None,
    )


class MailServer:
    """Owns the SMTP listening socket (SO_REUSEPORT, so several processes on one node share the port). Made on the
    event loop of the process that runs it (a Ray actor's ``__init__``), which it starts listening on at once."""

    def __init__(
        self,
        config: Config,
        senders: dict[Channel, NamedPool],
        service_account_dir: str | None = None,
        local: Callable[[Any, list[int]], bool] | None = None,
    ):
        """``senders``: the sender pools by channel, whom the user desk names to kick; ``local`` takes the kicks
        for this process's own senders without a Ray call. ``service_account_dir``: where the pod's ServiceAccount
        token and CA are (default: where the kubelet mounts them); the end-to-end test points it at a local fake
        API server's."""
        self.config = config
        self.handler = MailHandler(config, LocalUsers(config, senders), local=local)
        self.tls = ReloadingContext.from_config(config)  # certificate files that do not load refuse to start
        self.server: asyncio.base_events.Server | None = None
        self.labeler = PodLabeler.from_env(service_account_dir=service_account_dir)
        self._labelling: asyncio.Task | None = None
        self._ingress_wanted = True  # until drain: take SMTP traffic from the Service once listening
        # Ray runs __init__ on the actor's event loop: listen at once, also after a crash-restart.
        self._ready = asyncio.get_running_loop().create_task(self._listen())

    async def start(self) -> str:
        """Wait until the socket listens; returns ``host:port``."""
        await asyncio.shield(self._ready)
        return f"{self.config.smtp_listen_host}:{self.config.smtp_listen_port}"

    async def _listen(self) -> None:
        # e.g. the port is held by something else: keep trying, loudly, 0.5 s apart doubling up to 30 s
        await AsyncRetrying(
            retry=retry_if_exception_type(OSError),
            wait=wait_exponential(multiplier=0.5, max=30.0),
            before_sleep=self._cannot_listen,
        )(self._bind)
        if self._ingress_wanted and self._labelling is None:
            # Listening: ask the Service for traffic. In the background, retried until the API server
            # confirms it, so neither SMTP nor start() waits for Kubernetes.
            self._labelling = asyncio.get_running_loop().create_task(self.labeler.keep_added())

    def _cannot_listen(self, state: RetryCallState) -> None:
        log.error(
            "SMTP cannot listen on %s:%s: %s; retrying in %.0fs",
            self.config.smtp_listen_host,
            self.config.smtp_listen_port,
            state.outcome.exception(),
            state.upcoming_sleep,
        )

    async def relabel(self) -> bool:
        """Ask for the pod's ingress label again while listening and not draining: another process on this pod
        took it off (an earlier version's mail server retired beside this one). Returns whether it asked."""
        if not self._ingress_wanted or self.server is None:
            return False
        if self._labelling is not None:
            self._labelling.cancel()
        self._labelling = asyncio.get_running_loop().create_task(self.labeler.keep_added())
        return True

    async def _unlabel(self) -> None:
        """Take the ingress label off for good: no add still retrying may put it back afterwards."""
        self._ingress_wanted = False
        if self._labelling is not None:
            self._labelling.cancel()
        await self.labeler.remove_async()  # a later request: an add in flight gives way to it

    async def _bind(self) -> None:
        if self.server is None:
            cfg = self.config
            loop = asyncio.get_running_loop()
            self.server = await loop.create_server(
                lambda: smtp_protocol(self.handler, cfg, self.tls),
                host=cfg.smtp_listen_host,
                port=cfg.smtp_listen_port,
                reuse_port=True,
            )
            log.info(
                "SMTP listening on %s:%s for @%s (STARTTLS %s)",
                cfg.smtp_listen_host,
                cfg.smtp_listen_port,
                cfg.email_domain,
                f"with {cfg.smtp_tls_cert_file}" if self.tls else "off",
            )
        return f"{self.config.smtp_listen_host}:{self.config.smtp_listen_port}"

    async def drain(self, close_listener: bool = False) -> dict:
        """Stop taking new sessions; let sessions in flight finish (follow with ``stats``).

        The pod's ingress label goes first, so the Service stops sending us connections. New sessions
        that still arrive get ``421``; with ``close_listener`` (other mail servers share the port) the
        listening socket is closed instead, so the kernel hands new connections to the others.
        """
        await self._unlabel()
        self.handler.draining = True
        if close_listener and self.server is not None:
            self.server.close()
        return await self.stats()

    async def stop(self) -> None:
        if self._ingress_wanted:  # stopped without a drain: no label on a pod that stops listening
            await self._unlabel()
        if self.server is not None:
            self.server.close()
            self.server = None

    async def stats(self) -> dict:
        h = self.handler
        if h.draining:  # the kicks still gathered go now: when a drain sees nothing in flight, none is left
            h.store.flush()
        return {
            "sessions": h.sessions,
            "in_flight": h.in_flight,
            "accepted": h.accepted,
            "draining": h.draining,
        }

    async def ping(self) -> str:
        return "ok"
