"""Who really sent it: SPF, DKIM and DMARC for inbound mail.

Plain synchronous code (no Ray, no Django), safe to call from a worker thread: the mail server calls
:func:`authenticate` in a worker thread once per message (after parsing it), then uses the pure decisions:

- :func:`decision`: ``"reject"`` (the From domain publishes ``p=reject`` and the mail fails DMARC alignment),
  ``"quarantine"`` (``p=quarantine`` and fails) or ``"accept"``. Trouble on our side (DNS down, a lookup timing
  out) is never a failure: it gives ``temperror`` and the mail is accepted, as a sensible MTA does.
- :func:`sender_to_match`: the address blocked senders (and any allow-list) are matched on: the From
  address when DMARC passed for its domain, else the envelope sender (a blocked sender can forge a From,
  but a From that passed DMARC is the domain's word).

Libraries: ``pyspf`` (SPF, RFC 7208), ``dkimpy`` (DKIM, RFC 6376), ``dnspython`` (all lookups, through one
:class:`Resolver` pointed at ``DNS_NAMESERVERS``), ``publicsuffixlist`` (the organizational domain for
DMARC's relaxed alignment). DMARC (RFC 7489) is evaluated here from the ``_dmarc.<domain>`` TXT record: tags
``p``, ``sp``, ``adkim``, ``aspf`` and ``pct``. With ``pct`` below 100 the next less strict policy is applied
(``reject`` -> ``quarantine`` -> ``none``): we never refuse mail its domain asked to refuse only in part.

Every lookup is bounded: each goes to the resolver with at most ``lookup_timeout`` seconds, and each of the
three checks (SPF, DKIM, DMARC) has ``check_budget`` seconds in all, so :func:`authenticate` returns within
about three budgets however DNS behaves, and never raises.

Wiring into the mail server (``messaging/intake/smtp/server.py``), for whoever does it:

1. ``MailHandler.__init__``: ``self.resolver = Resolver.from_config(config.dns_nameservers)`` (a bad value
   raises :class:`ConfigError` naming ``DNS_NAMESERVERS``: the actor refuses to start, fail closed).
2. ``handle_DATA``, before building the messages::

       auth = await asyncio.to_thread(
           authenticate, raw, mail_from=envelope.mail_from or "", client_ip=session.peer[0],
           helo=session.host_name or "", resolver=self.resolver)
       if decision(auth) == "reject":
           return REJECT_REPLY  # "550 5.7.1 ..." : nothing is stored, nothing costs the user a packet

   ``"quarantine"`` is accepted and marked (``dmarc=fail (p=quarantine)`` in the stored summary); a per-user
   setting that refuses quarantined mail answers ``QUARANTINE_REPLY`` (550 5.7.1). ``temperror`` is accepted.
   Log the decision once per message (its id, the summary; no addresses). With DNS down each call can take
   about ``lookup_timeout`` per check (2 s each, ~6 s): the default thread pool of ``asyncio.to_thread`` is
   small (cores + 4), so give the checks their own ``ThreadPoolExecutor`` (e.g. 32 threads) via
   ``loop.run_in_executor`` so a slow resolver does not queue every session behind it.
3. Each ``CombinedMessage`` carries ``authentication=auth.summary()`` (stored in ``Message.authentication``,
   shown in the admin; prefix ``"quarantined; "`` for quarantined mail if you want it visible there), and the
   blocked-sender check (``routing.decide``: ``msg.sender.lower() in user.blocked``) is made on
   ``sender_to_match(auth, mail.sender, envelope.mail_from or "")`` instead of ``msg.sender``: carry it as a
   separate field (e.g. ``match_sender``) so the device still shows the From.
4. ``session.peer`` is the client's (ip, port); with a proxy in front, use the address it reports.
5. RCPT time has no From yet: ``check_recipient`` keeps matching the envelope sender there; DATA decides
   again on ``sender_to_match``.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dkim
import dns.exception
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

from messaging.runtime.config import ConfigError, Nameserver, parse_nameservers  # noqa: F401  (ConfigError: callers catch it here)

log = logging.getLogger("messaging.intake.smtp.authentication")

REJECT_REPLY = "550 5.7.1 Message refused: it fails its domain's DMARC policy (p=reject)"
QUARANTINE_REPLY = "550 5.7.1 Message refused: it fails its domain's DMARC policy (p=quarantine)"

LOOKUP_TIMEOUT = 2.0  # seconds for one DNS lookup
CHECK_BUDGET = 3.0  # seconds for all the lookups of one check (SPF, DKIM or DMARC)
MAX_SIGNATURES = 5  # DKIM signatures looked at per message
MAX_FROM_DOMAINS = 5  # distinct From domains evaluated per message
SUMMARY_LENGTH = 500  # Message.authentication holds this many characters
CACHE_SIZE = 10_000  # DNS answers one resolver (one mail server) keeps, least recently used dropped first
CACHE_MAX_TTL = 3600.0  # seconds at most an answer is kept, whatever its TTL
NEGATIVE_TTL = 300.0  # seconds at most "no such name" / "no such record" is kept (RFC 2308 5: 1-3 hours at most)

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


class DnsTempError(Exception):
    """A lookup that could not be answered now (timeout, no reachable server, SERVFAIL, budget spent)."""


# --- the resolver -------------------------------------------------------------------------------------------


class _Budget:
    """The time one check may still spend on DNS."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def cache_lifetime(ttl: float, *, negative: bool, max_ttl: float, negative_ttl: float) -> float:
    """How long (seconds) an answer is kept: its TTL (for a negative answer, the one dnspython gives from the
    SOA in it, RFC 2308, or 300 s without one), at most ``max_ttl``, and a negative one at most
    ``negative_ttl``."""
    return max(0.0, min(ttl, negative_ttl if negative else max_ttl, max_ttl))


class AnswerCache(dns.resolver.LRUCache):
    """dnspython's bounded, thread-safe LRU cache of answers, each kept no longer than :func:`cache_lifetime`.

    dnspython puts only real answers in it: records, "no record of that type" (NOERROR, no data) and NXDOMAIN.
    Timeouts, SERVFAIL and other failures are never cached, so trouble is asked about again next time."""

    def __init__(
        self, max_size: int = CACHE_SIZE, *, max_ttl: float = CACHE_MAX_TTL, negative_ttl: float = NEGATIVE_TTL
    ):
        super().__init__(max_size)
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl

    def put(self, key, value: dns.resolver.Answer) -> None:
        now = time.time()  # the clock dnspython's cache expires answers by
        keep = cache_lifetime(
            value.expiration - now,
            negative=value.rrset is None,
            max_ttl=self.max_ttl,
            negative_ttl=self.negative_ttl,
        )
        if keep <= 0:
            return
        value.expiration = now + keep
        super().put(key, value)


class Resolver:
    """DNS lookups for the checks, with bounded time. ``nameservers`` empty: the system resolver
    (``/etc/resolv.conf``; if there is none, every lookup is a temporary error). Thread-safe: one instance
    serves every session of a mail server.

    Answers are cached in the instance (:class:`AnswerCache`; ``cache_size=0``: none), so mail from a domain
    seen a moment ago costs no DNS round trip: the verdicts are the same, the answers honour their TTLs."""

    def __init__(
        self,
        nameservers: Sequence[Nameserver] = (),
        *,
        lookup_timeout: float = LOOKUP_TIMEOUT,
        check_budget: float = CHECK_BUDGET,
        cache_size: int = CACHE_SIZE,
        negative_ttl: float = NEGATIVE_TTL,
        max_ttl: float = CACHE_MAX_TTL,
    ):
        self.nameservers = tuple(nameservers)
        self.lookup_timeout = lookup_timeout
        self.check_budget = check_budget
        self.cache = AnswerCache(cache_size, max_ttl=max_ttl, negative_ttl=negative_ttl) if cache_size > 0 else None
        self._resolver: dns.resolver.Resolver | None
        if self.nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(ns.host, ns.port) for ns in self.nameservers]
            self._resolver = resolver
        else:
            try:
                self._resolver = dns.resolver.Resolver()
            except dns.exception.DNSException as exc:  # no /etc/resolv.conf: lookups are temporary errors
                log.warning("no system DNS resolver (%s): sender checks will give temperror", exc)
                self._resolver = None
        if self._resolver is not None:
            self._resolver.timeout = min(1.0, lookup_timeout)  # per try at one server; then the next / a retry
            self._resolver.lifetime = lookup_timeout
            self._resolver.retry_servfail = False
            self._resolver.use_edns(0, 0, 1232)
            self._resolver.cache = self.cache

    @classmethod
    def from_config(cls, value: str, **kwargs) -> Resolver:
        """From ``Config.dns_nameservers``; :class:`ConfigError` for a bad value."""
        return cls(parse_nameservers(value), **kwargs)

    def budget(self) -> _Budget:
        return _Budget(self.check_budget)

    def lookup(self, name: str, rdtype: str, budget: _Budget, max_lifetime: float | None = None) -> list:
        """The rdatas of ``name``/``rdtype``; ``[]`` if the name or the type does not exist.
        :class:`DnsTempError` when there is no answer now."""
        if self._resolver is None:
            raise DnsTempError("no DNS resolver configured")
        lifetime = min(self.lookup_timeout, budget.remaining())
        if max_lifetime is not None:
            lifetime = min(lifetime, max_lifetime)
        if lifetime <= 0.01:
            raise DnsTempError("time for DNS lookups spent")
        cached = self._cached(name, rdtype)
        if cached is not None:
            return cached
        try:
            answer = self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False, lifetime=lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.resolver.YXDOMAIN as exc:
            raise DnsTempError(f"{type(exc).__name__}") from None
        except dns.exception.DNSException as exc:  # timeout, no server answered, SERVFAIL, REFUSED
            raise DnsTempError(f"{type(exc).__name__}: {exc}") from None
        except (OSError, ValueError) as exc:  # a socket or name error below dnspython
            raise DnsTempError(f"{type(exc).__name__}: {exc}") from None
        return list(answer.rrset) if answer.rrset is not None else []

    def _cached(self, name: str, rdtype: str) -> list | None:
        """The answer dnspython's resolve would take from the cache (records, none of that type, or NXDOMAIN, under
        the keys it uses), without its resolution: a cached NXDOMAIN costs it an exception whose message spells
        the name out, and most mail comes from domains asked about a moment ago. None: not cached."""
        if self.cache is None:
            return None
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            return None  # resolve says what is wrong with the name
        answer = self.cache.get((qname, dns.rdatatype.from_text(rdtype), dns.rdataclass.IN))
        if answer is not None:
            return list(answer.rrset) if answer.rrset is not None else []
        answer = self.cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        if answer is not None and answer.response.rcode() == dns.rcode.NXDOMAIN:
            return []
        return None

    def txt(self, name: str, budget: _Budget) -> list[bytes]:
        """Each TXT record of ``name``, its strings joined."""
        return [b"".join(rdata.strings) for rdata in self.lookup(name, "TXT", budget)]


# --- the result ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthResult:
    spf: str = "none"
    spf_domain: str = ""  # the domain SPF checked: the envelope sender's, or the HELO name for a null sender
    spf_identity: str = "mailfrom"  # "mailfrom" or "helo"
    dkim: str = "none"
    dkim_domain: str = ""  # d= of the signature reported (a passing, aligned one first)
    dmarc: str = "none"
    dmarc_policy: str = ""  # the policy that applies to the From domain ("none", "quarantine", "reject"), "" if none
    header_from: str = ""  # the From domain
    aligned_pass: bool = False  # DMARC passed: SPF or DKIM passed for a domain aligned with the From
    details: tuple[str, ...] = field(default=(), compare=False)  # why, for logs (no addresses)

    def summary(self) -> str:
        """An ``Authentication-Results``-style line, e.g. ``spf=pass smtp.mailfrom=example.org; dkim=pass
        header.d=example.org; dmarc=pass (p=reject) header.from=example.org``; at most 500 characters."""
        parts = []
        spf_part = f"spf={self.spf}"
        if self.spf_domain:
            spf_part += f" smtp.{self.spf_identity}={self.spf_domain}"
        parts.append(spf_part)
        dkim_part = f"dkim={self.dkim}"
        if self.dkim_domain:
            dkim_part += f" header.d={self.dkim_domain}"
        parts.append(dkim_part)
        dmarc_part = f"dmarc={self.dmarc}"
        if self.dmarc_policy:
            dmarc_part += f" (p={self.dmarc_policy})"
        if self.header_from:
            dmarc_part += f" header.from={self.header_from}"
        parts.append(dmarc_part)
        text = "; ".join(parts)
        return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 3] + "..."


def decision(result: AuthResult) -> str:
    """``"reject"`` only when the From domain's policy is ``p=reject`` and DMARC fails (never on temperror or
    none); ``"quarantine"`` for a ``p=quarantine`` failure; else ``"accept"``."""
    if result.dmarc == "fail":
        if result.dmarc_policy == "reject":
            return "reject"
        if result.dmarc_policy == "quarantine":
            return "quarantine"
    return "accept"


def sender_to_match(result: AuthResult, header_from: str, envelope_from: str) -> str:
    """The address blocked senders and allow-lists are matched on, lower-cased: the From address when DMARC
    passed for its domain, else the envelope sender (``""`` for a null sender)."""
    address = (header_from or "").strip().lower()
    if result.dmarc == "pass" and result.aligned_pass and address and _domain_of(address) == result.header_from:
        return address
    return (envelope_from or "").strip().strip("<>").lower()


# --- helpers ------------------------------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_psl: PublicSuffixList | None = None
_psl_lock = threading.Lock()


def _normal_domain(domain: str) -> str:
    """The lower-case ASCII form of a domain name; ``""`` if it is not one."""
    text = domain.strip().rstrip(".").lower()
    if not text:
        return ""
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    labels = text.split(".")
    if len(text) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return ""
    return text


def _domain_of(address: str) -> str:
    _, _, domain = address.strip().strip("<>").rpartition("@")
    return _normal_domain(domain) if "@" in address else ""


def organizational_domain(domain: str) -> str:
    """The registrable domain (public suffix + one label), e.g. ``mail.example.co.uk`` -> ``example.co.uk``."""
    global _psl
    if _psl is None:
        with _psl_lock:
            if _psl is None:
                _psl = PublicSuffixList()
    return _psl.privatesuffix(domain) or domain


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    if not domain or not from_domain:
        return False
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def _from_domains(raw: bytes) -> list[str]:
    """The distinct domains of the From header's addresses (every From header), in order."""
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        values = [str(v) for v in headers.get_all("From") or []]
    except Exception:  # an unreadable header block: no From domain to evaluate
        return []
    domains: list[str] = []
    for _, address in email.utils.getaddresses(values):
        domain = _domain_of(address) if "@" in address else ""
        if domain and domain not in domains:
            domains.append(domain)
    return domains


# --- SPF (pyspf, its lookups through our resolver) ----------------------------------------------------------

_spf_context = threading.local()
_pyspf_lookup: Callable = spf.DNSLookup_dnspython  # pyspf's own (dnspython) lookup, for other callers


def _spf_dns_lookup(name, qtype, strict=True, timeout=30):
    """pyspf's DNS hook (module-wide): in a thread running :func:`check_spf`, lookups go to that call's
    resolver and budget; elsewhere pyspf's own lookup is used unchanged."""
    context = getattr(_spf_context, "value", None)
    if context is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    resolver, budget = context
    rdtype = "TXT" if qtype == "SPF" else qtype
    try:
        rdatas = resolver.lookup(name, rdtype, budget, max_lifetime=timeout)
    except DnsTempError as exc:
        raise spf.TempError(f"DNS {exc}") from None
    out = []
    for rdata in rdatas:
        if rdtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif rdtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))))
        elif rdtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(omit_final_dot=True)))
        elif rdtype == "TXT":
            out.append(((name, qtype), list(rdata.strings)))
    return out


spf.DNSLookup = _spf_dns_lookup


def check_spf(client_ip: str, mail_from: str, helo: str, resolver: Resolver) -> tuple[str, str, str]:
    """``(result, identity, domain)``: SPF for the envelope sender (or ``postmaster@HELO`` for a null
    sender) and the client IP."""
    mail_from = (mail_from or "").strip().strip("<>")
    helo = (helo or "").strip()
    identity = "mailfrom" if mail_from else "helo"
    domain = _domain_of(mail_from) if mail_from else _normal_domain(helo)
    if not domain:
        return "none", identity, ""
    try:
        ipaddress.ip_address(client_ip)
    except ValueError:
        return "permerror", identity, domain
    budget = resolver.budget()
    _spf_context.value = (resolver, budget)
    try:
        query = spf.query(
            i=client_ip,
            s=mail_from or f"postmaster@{domain}",
            h=helo or domain,
            timeout=resolver.lookup_timeout,
            querytime=resolver.check_budget,
        )
        result, _, _ = query.check()
    except spf.TempError:
        result = "temperror"
    except Exception as exc:  # a library error on odd input: no verdict to give
        log.debug("SPF check error: %s: %s", type(exc).__name__, exc)
        result = "permerror"
    finally:
        _spf_context.value = None
    result = {"error": "temperror", "unknown": "permerror", "ambiguous": "permerror"}.get(result, result)
    return (result if result in RESULTS else "permerror"), identity, domain


# --- DKIM (dkimpy, its key lookups through our resolver) ----------------------------------------------------


class _DebugLogger(logging.LoggerAdapter):
    """dkimpy logs a bad signature (a missing key, say) as an error; for us it is a verdict, not an error."""

    def log(self, level, msg, *args, **kwargs):
        super().log(logging.DEBUG, msg, *args, **kwargs)


_dkim_log = _DebugLogger(logging.getLogger("messaging.intake.smtp.authentication.dkim"), {})


@dataclass(frozen=True)
class DkimSignature:
    domain: str
    result: str  # pass, fail, temperror, permerror


def may_be_signed(raw: bytes) -> bool:
    """False when no header line can be a ``DKIM-Signature``: the name is nowhere before the first empty line
    (where dkimpy ends the header block, with LF or CRLF lines). Most mail is unsigned: dkimpy need not split it."""
    ends = [at for at in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if at != -1]
    return b"dkim-signature" in raw[: min(ends, default=len(raw))].lower()


def check_dkim(raw: bytes, resolver: Resolver) -> list[DkimSignature]:
    """Each DKIM signature's domain and result (the first :data:`MAX_SIGNATURES`)."""
    if not may_be_signed(raw):
        return []
    budget = resolver.budget()

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        records = resolver.txt(name.decode("ascii", "replace"), budget)  # DnsTempError passes through
        return records[0] if records else None

    try:
        verifier = dkim.DKIM(raw, logger=_dkim_log, minkey=1024, timeout=resolver.lookup_timeout)
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    except Exception as exc:  # a message dkimpy cannot even split into headers and body
        log.debug("DKIM parse error: %s: %s", type(exc).__name__, exc)
        return []
    signatures = []
    for index in range(min(count, MAX_SIGNATURES)):
        verifier.domain = None
        try:
            ok = verifier.verify(idx=index, dnsfunc=txt)
            result = "pass" if ok else "fail"
        except DnsTempError:
            result = "temperror"
        except dkim.ValidationError:  # e.g. the body hash does not match: the signature does not hold
            result = "fail"
        except dkim.DKIMException:  # a malformed signature or key record
            result = "permerror"
        except Exception as exc:  # anything else dkimpy trips on: this signature gives no verdict
            log.debug("DKIM verify error: %s: %s", type(exc).__name__, exc)
            result = "permerror"
        domain = verifier.domain.decode("ascii", "replace") if isinstance(verifier.domain, bytes) else ""
        signatures.append(DkimSignature(_normal_domain(domain), result))
    return signatures


# --- DMARC --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmarcRecord:
    policy: str  # p (or sp) as applies to the From domain: none, quarantine, reject
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


def parse_dmarc(text: bytes | str) -> dict[str, str] | None:
    """The tags of a DMARC record (lower-case names), or None if it is not one (``v=DMARC1`` first)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if not sep:  # an empty part (a trailing ";") or junk: skipped
            continue
        tags.setdefault(name.strip().lower(), value.strip())
    if not tags or next(iter(tags)) != "v" or tags["v"].upper() != "DMARC1":
        return None
    return tags


def dmarc_record(from_domain: str, resolver: Resolver, budget: _Budget) -> DmarcRecord | None:
    """The DMARC record that applies to ``from_domain`` (its own, else its organizational domain's with
    ``sp``), or None. :class:`DnsTempError` when DNS cannot answer."""
    org = organizational_domain(from_domain)
    for domain, subdomain in ((from_domain, False), (org, True)):
        if subdomain and domain == from_domain:
            break
        records = [tags for tags in (parse_dmarc(t) for t in resolver.txt(f"_dmarc.{domain}", budget)) if tags]
        if len(records) != 1:  # none, or several: no policy here (RFC 7489 6.6.3)
            continue
        tags = records[0]
        policy = tags.get("p", "").lower()
        if subdomain and tags.get("sp", "").lower() in ("none", "quarantine", "reject"):
            policy = tags["sp"].lower()
        if policy not in ("none", "quarantine", "reject"):
            policy = "none"
        try:
            pct = max(0, min(100, int(tags.get("pct", "100"))))
        except ValueError:
            pct = 100
        return DmarcRecord(
            policy=policy,
            adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
            aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
            pct=pct,
        )
    return None


_LESS_STRICT = {"reject": "quarantine", "quarantine": "none", "none": "none"}
# Which of several From domains' verdicts is reported: the one that refuses most.
_SEVERITY = {
    ("fail", "reject"): 6,
    ("fail", "quarantine"): 5,
    ("fail", "none"): 4,
    ("temperror", ""): 3,
    ("permerror", ""): 2,
    ("none", ""): 1,
}


def _dmarc_for(
    from_domain: str,
    spf_result: str,
    spf_domain: str,
    signatures: list[DkimSignature],
    resolver: Resolver,
    budget: _Budget,
) -> tuple[str, str]:
    """``(result, policy)`` of DMARC for one From domain."""
    try:
        record = dmarc_record(from_domain, resolver, budget)
    except DnsTempError:
        return "temperror", ""
    if record is None:
        return "none", ""
    policy = record.policy if record.pct >= 100 else _LESS_STRICT[record.policy]
    dkim_aligned = [s for s in signatures if _aligned(s.domain, from_domain, record.adkim)]
    spf_aligned = _aligned(spf_domain, from_domain, record.aspf)
    if any(s.result == "pass" for s in dkim_aligned) or (spf_aligned and spf_result == "pass"):
        return "pass", policy
    # No aligned pass: if an aligned check could not be made for want of DNS, that is our trouble, not a failure.
    if any(s.result == "temperror" for s in dkim_aligned) or (spf_aligned and spf_result == "temperror"):
        return "temperror", policy
    return "fail", policy


def authenticate(raw: bytes, *, mail_from: str, client_ip: str, helo: str, resolver: Resolver) -> AuthResult:
    """SPF for the envelope sender and client IP, every DKIM signature, and DMARC for the From domain.
    Never raises; DNS trouble gives ``temperror``."""
    try:
        return _authenticate(raw, mail_from=mail_from, client_ip=client_ip, helo=helo, resolver=resolver)
    except Exception as exc:  # a bug or a library surprise must not fail the SMTP session: no verdict
        log.warning("sender authentication failed: %s: %s", type(exc).__name__, exc)
        return AuthResult(spf="temperror", dkim="temperror", dmarc="temperror", details=(type(exc).__name__,))


def _authenticate(raw: bytes, *, mail_from: str, client_ip: str, helo: str, resolver: Resolver) -> AuthResult:
    spf_result, spf_identity, spf_domain = check_spf(client_ip, mail_from, helo, resolver)
    signatures = check_dkim(raw, resolver)
    from_domains = _from_domains(raw)

    dmarc, policy, header_from = "none", "", ""
    if from_domains:
        budget = resolver.budget()
        verdicts = [
            (d, *_dmarc_for(d, spf_result, spf_domain, signatures, resolver, budget))
            for d in from_domains[:MAX_FROM_DOMAINS]
        ]
        if len(from_domains) > MAX_FROM_DOMAINS:
            verdicts.append((from_domains[MAX_FROM_DOMAINS], "permerror", ""))
        header_from, dmarc, policy = verdicts[0]
        worst = max(verdicts, key=lambda v: _SEVERITY.get((v[1], v[2] if v[1] == "fail" else ""), 0))
        if _SEVERITY.get((worst[1], worst[2] if worst[1] == "fail" else ""), 0) > 0:
            header_from, dmarc, policy = worst
    aligned_pass = dmarc == "pass"

    # The signature reported: a passing one aligned with the From first, then any pass, then the first.
    reported = None
    if signatures:
        passing = [s for s in signatures if s.result == "pass"]
        aligned = [s for s in passing if header_from and _aligned(s.domain, header_from, "r")]
        order = ("temperror", "fail", "permerror")
        failing = sorted(signatures, key=lambda s: order.index(s.result) if s.result in order else len(order))
        reported = (aligned or passing or failing)[0]
    return AuthResult(
        spf=spf_result,
        spf_domain=spf_domain,
        spf_identity=spf_identity,
        dkim=reported.result if reported else "none",
        dkim_domain=reported.domain if reported else "",
        dmarc=dmarc,
        dmarc_policy=policy,
        header_from=header_from,
        aligned_pass=aligned_pass,
        details=tuple(f"dkim {s.domain}={s.result}" for s in signatures),
    )
