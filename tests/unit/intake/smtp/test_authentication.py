"""SPF, DKIM and DMARC of inbound mail against a real DNS server on loopback (messaging/sandbox/fake_dns.py).

Mail is DKIM-signed here with dkimpy and a freshly generated RSA key; the key, SPF and DMARC records are
served by the fake. Nothing reaches outside DNS.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from messaging.intake.smtp.authentication import (
    NEGATIVE_TTL,
    AuthResult,
    ConfigError,
    Nameserver,
    Resolver,
    authenticate,
    cache_lifetime,
    decision,
    may_be_signed,
    parse_dmarc,
    parse_nameservers,
    sender_to_match,
)
from messaging.runtime.config import Config
from messaging.sandbox.fake_dns import FakeDNS
from tests.waiting import wait_until

GENEROUS = 30.0  # seconds: a sanity bound that "returns at all", not a speed claim


@pytest.fixture(scope="module")
def key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@pytest.fixture
def server(key):
    """example.org: SPF for 127.0.0.1 only, a DKIM key at sel._domainkey, DMARC p=reject."""
    with FakeDNS() as fake:
        fake.add_txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
        fake.add_txt("sel._domainkey.example.org", key[1])
        fake.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
        fake.add_txt("evil.test", "v=spf1 ip4:127.0.0.1 -all")  # the forger's own domain passes SPF
        yield fake


@pytest.fixture
def resolver(server):
    return Resolver.from_config(server.nameservers)


def mail(from_header="Alice <alice@example.org>", body="How is the trail?\r\n", extra="") -> bytes:
    return (
        f"From: {from_header}\r\nTo: demo@example.com\r\nSubject: Hi\r\n"
        f"Message-ID: <1@example.org>\r\n{extra}\r\n{body}"
    ).encode()


def signed(raw: bytes, key, domain=b"example.org", selector=b"sel") -> bytes:
    header = dkim.sign(raw, selector, domain, key[0], include_headers=[b"from", b"to", b"subject", b"message-id"])
    return header + raw


def check(raw, resolver, mail_from="alice@example.org", client_ip="127.0.0.1", helo="mx.example.org"):
    return authenticate(raw, mail_from=mail_from, client_ip=client_ip, helo=helo, resolver=resolver)


# --- DKIM ---


def test_dkim_signed_mail_passes_and_aligned_dmarc_accepts(resolver, key):
    # The client is not in example.org's SPF (spf=fail): the aligned DKIM signature alone passes DMARC.
    result = check(signed(mail(), key), resolver, client_ip="192.0.2.7")
    assert (result.dkim, result.dkim_domain) == ("pass", "example.org")
    assert result.spf == "fail"
    assert (result.dmarc, result.dmarc_policy, result.header_from) == ("pass", "reject", "example.org")
    assert result.aligned_pass
    assert decision(result) == "accept"
    assert sender_to_match(result, "Alice@Example.org", "bounce-123@lists.other.test") == "alice@example.org"


def test_a_tampered_body_fails_dkim_and_is_rejected_under_p_reject(resolver, key):
    raw = signed(mail(), key).replace(b"How is the trail?", b"Send me your password")
    result = check(raw, resolver, client_ip="192.0.2.7")
    assert (result.dkim, result.dkim_domain) == ("fail", "example.org")
    assert result.dmarc == "fail" and not result.aligned_pass
    assert decision(result) == "reject"
    assert sender_to_match(result, "alice@example.org", "alice@example.org") == "alice@example.org"  # envelope


def test_a_signature_whose_key_is_missing_fails(resolver, key):
    result = check(signed(mail(), key, selector=b"gone"), resolver, client_ip="192.0.2.7")
    assert (result.dkim, result.dkim_domain) == ("fail", "example.org")
    assert decision(result) == "reject"


def test_unsigned_mail_has_no_dkim_result(resolver):
    assert check(mail(), resolver).dkim == "none"


# --- SPF ---


def test_spf_passes_for_the_listed_ip_and_fails_for_another(resolver):
    good = check(mail(), resolver, client_ip="127.0.0.1")
    assert (good.spf, good.spf_identity, good.spf_domain) == ("pass", "mailfrom", "example.org")
    assert good.dmarc == "pass" and decision(good) == "accept"  # aligned SPF pass is enough for DMARC
    assert check(mail(), resolver, client_ip="::ffff:127.0.0.1").spf == "pass"  # a dual-stack listener's form
    bad = check(mail(), resolver, client_ip="127.0.0.2")
    assert bad.spf == "fail"
    assert decision(bad) == "reject"


def test_spf_softfail_neutral_none_and_the_helo_for_a_null_sender(server, resolver):
    server.add_txt("soft.test", "v=spf1 ip4:10.9.9.9 ~all")
    server.add_txt("neutral.test", "v=spf1 ?all")
    server.add_txt("mx.relay.test", "v=spf1 ip4:127.0.0.1 -all")
    assert check(mail(), resolver, mail_from="a@soft.test").spf == "softfail"
    assert check(mail(), resolver, mail_from="a@neutral.test").spf == "neutral"
    assert check(mail(), resolver, mail_from="a@norecord.test").spf == "none"
    bounce = check(mail(), resolver, mail_from="", helo="mx.relay.test")
    assert (bounce.spf, bounce.spf_identity, bounce.spf_domain) == ("pass", "helo", "mx.relay.test")


def test_spf_include_and_mx_lookups_go_to_our_resolver(server, resolver):
    server.add_txt("inc.test", "v=spf1 include:example.org mx -all")
    server.add_record("inc.test", "MX", "10 mx.inc.test.")
    server.add_record("mx.inc.test", "A", "127.0.0.9")
    assert check(mail(), resolver, mail_from="a@inc.test", client_ip="127.0.0.1").spf == "pass"  # the include
    assert check(mail(), resolver, mail_from="a@inc.test", client_ip="127.0.0.9").spf == "pass"  # the MX
    assert check(mail(), resolver, mail_from="a@inc.test", client_ip="127.0.0.8").spf == "fail"


# --- DMARC ---


def test_forged_from_with_no_aligned_pass_is_rejected(resolver, key):
    # SPF passes, but for the forger's own domain; the only DKIM signature is the forger's: nothing aligned.
    raw = signed(mail(from_header="CEO <ceo@example.org>"), key)  # signed by example.org, but...
    raw = raw.replace(b"How is the trail?", b"Wire the money")  # ...altered: the signature no longer holds
    result = check(raw, resolver, mail_from="bounce@evil.test")
    assert (result.spf, result.spf_domain) == ("pass", "evil.test")
    assert (result.dmarc, result.dmarc_policy, result.header_from) == ("fail", "reject", "example.org")
    assert decision(result) == "reject"
    assert sender_to_match(result, "ceo@example.org", "Bounce@Evil.test") == "bounce@evil.test"


def test_quarantine_policy_failure_is_accepted_but_marked(server, resolver):
    server.add_txt("q.test", "v=spf1 ip4:127.0.0.1 -all")
    server.add_txt("_dmarc.q.test", "v=DMARC1; p=quarantine; rua=mailto:d@q.test")
    result = check(mail(from_header="x@q.test"), resolver, mail_from="bounce@evil.test")
    assert (result.dmarc, result.dmarc_policy) == ("fail", "quarantine")
    assert decision(result) == "quarantine"
    assert "dmarc=fail (p=quarantine) header.from=q.test" in result.summary()


def test_no_dmarc_record_means_none_and_accept(resolver):
    result = check(mail(from_header="x@nodmarc.test"), resolver, mail_from="bounce@evil.test", client_ip="192.0.2.1")
    assert (result.dmarc, result.dmarc_policy) == ("none", "")
    assert decision(result) == "accept"
    assert sender_to_match(result, "x@nodmarc.test", "bounce@evil.test") == "bounce@evil.test"


def test_subdomain_policy_and_relaxed_versus_strict_alignment(server, resolver, key):
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; sp=quarantine")
    server.remove("_dmarc.example.org")
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; sp=quarantine")
    raw = signed(mail(from_header="x@news.example.org"), key)  # d=example.org, From in a subdomain
    relaxed = check(raw, resolver, mail_from="b@evil.test")
    assert (relaxed.dmarc, relaxed.dmarc_policy, relaxed.header_from) == ("pass", "quarantine", "news.example.org")

    server.remove("_dmarc.example.org")
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; adkim=s")
    resolver.cache.flush()  # the old record's TTL over (the cache itself: see the caching tests below)
    strict = check(raw, resolver, mail_from="b@evil.test")
    assert (strict.dmarc, strict.dmarc_policy) == ("fail", "reject")  # sp absent: p applies to subdomains
    assert decision(strict) == "reject"


def test_pct_below_100_applies_the_next_less_strict_policy(server, resolver):
    server.remove("_dmarc.example.org")
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; pct=50")
    result = check(mail(), resolver, mail_from="b@evil.test")
    assert (result.dmarc, result.dmarc_policy) == ("fail", "quarantine")
    assert decision(result) == "quarantine"


def test_several_from_domains_are_judged_by_the_one_that_fails(resolver):
    raw = mail(from_header="friend@nodmarc.test, CEO <ceo@example.org>")
    result = check(raw, resolver, mail_from="bounce@evil.test")
    assert (result.dmarc, result.header_from) == ("fail", "example.org")
    assert decision(result) == "reject"


def test_a_dkim_key_dns_cannot_give_is_temperror_not_a_reject(server, resolver, key):
    server.servfail("sel._domainkey.example.org")
    result = check(signed(mail(), key), resolver, client_ip="192.0.2.7")
    assert result.dkim == "temperror" and result.dmarc == "temperror"
    assert decision(result) == "accept"


def test_parse_dmarc():
    assert parse_dmarc(b"v=DMARC1; p=reject; sp=none;") == {"v": "DMARC1", "p": "reject", "sp": "none"}
    assert parse_dmarc("p=reject; v=DMARC1") is None  # v must come first
    assert parse_dmarc("v=spf1 -all") is None


# --- summary, decisions ---


def test_summary_is_an_authentication_results_line(resolver, key):
    result = check(signed(mail(), key), resolver)
    assert result.summary() == (
        "spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org; "
        "dmarc=pass (p=reject) header.from=example.org"
    )
    assert AuthResult().summary() == "spf=none; dkim=none; dmarc=none"
    long = AuthResult(header_from="a" * 600)
    assert len(long.summary()) == 500


def test_decision_and_sender_to_match_are_pure():
    assert decision(AuthResult(dmarc="fail", dmarc_policy="reject")) == "reject"
    assert decision(AuthResult(dmarc="fail", dmarc_policy="quarantine")) == "quarantine"
    assert decision(AuthResult(dmarc="fail", dmarc_policy="none")) == "accept"
    for dmarc in ("temperror", "none", "permerror", "pass"):
        assert decision(AuthResult(dmarc=dmarc, dmarc_policy="reject")) == "accept"
    passed = AuthResult(dmarc="pass", dmarc_policy="reject", header_from="example.org", aligned_pass=True)
    assert sender_to_match(passed, "Alice@example.org", "x@other.test") == "alice@example.org"
    assert sender_to_match(passed, "alice@elsewhere.test", "X@other.test") == "x@other.test"  # not that From
    assert sender_to_match(AuthResult(dmarc="none"), "alice@example.org", "<X@Other.test>") == "x@other.test"
    assert sender_to_match(AuthResult(dmarc="fail"), "alice@example.org", "") == ""


# --- DNS trouble ---


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_dns_gives_temperror_and_accepts(key):
    resolver = Resolver.from_config(f"127.0.0.1:{closed_port()}", lookup_timeout=0.5, check_budget=1.0)
    started = time.monotonic()
    result = check(signed(mail(), key), resolver)
    assert time.monotonic() - started < GENEROUS
    assert (result.spf, result.dkim, result.dmarc) == ("temperror", "temperror", "temperror")
    assert decision(result) == "accept"
    assert sender_to_match(result, "alice@example.org", "bounce@evil.test") == "bounce@evil.test"


def test_a_dns_server_that_never_answers_gives_temperror_within_the_budget(server, key):
    server.unresponsive = True
    resolver = Resolver([Nameserver(server.host, server.port)], lookup_timeout=0.3, check_budget=0.6)
    started = time.monotonic()
    result = check(signed(mail(), key), resolver)
    assert time.monotonic() - started < GENEROUS
    assert (result.spf, result.dkim, result.dmarc) == ("temperror", "temperror", "temperror")
    assert decision(result) == "accept"


def test_garbage_never_raises(resolver):
    for raw in (b"", b"\x00\xff\xfe", b"From: \r\n\r\n", b"DKIM-Signature: v=1; garbage\r\nFrom: a@x.test\r\n\r\nx"):
        result = authenticate(raw, mail_from="not an address", client_ip="not an ip", helo="", resolver=resolver)
        assert isinstance(result, AuthResult)
        assert decision(result) == "accept"
    # A malformed signature is no pass: under the From domain's p=reject the mail is refused.
    raw = b"DKIM-Signature: v=1; garbage\r\nFrom: a@example.org\r\n\r\nx"
    result = authenticate(raw, mail_from="a@example.org", client_ip="192.0.2.1", helo="", resolver=resolver)
    assert (result.dkim, result.spf, result.dmarc) == ("permerror", "fail", "fail")
    assert decision(result) == "reject"


def test_concurrent_checks_use_their_own_resolver(server, resolver, key):
    """The SPF hook is per thread: a check on a dead resolver never borrows a live one, nor the reverse."""
    dead = Resolver.from_config(f"127.0.0.1:{closed_port()}", lookup_timeout=0.3, check_budget=0.6)
    raw = signed(mail(), key)
    results: dict[str, list[str]] = {"live": [], "dead": []}

    def run(name, which):
        for _ in range(3):
            results[name].append(check(raw, which).spf)

    threads = [threading.Thread(target=run, args=("live", resolver)), threading.Thread(target=run, args=("dead", dead))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GENEROUS)
    assert results == {"live": ["pass"] * 3, "dead": ["temperror"] * 3}


# --- the answer cache ---


def asked(server, name: str) -> int:
    return sum(1 for query in server.queries if query[0] == name)


def test_a_second_message_from_the_same_domain_asks_dns_nothing_new(server, resolver, key):
    server.remove("example.org")
    server.add_txt("example.org", "v=spf1 include:_spf.example.net -all")  # SPF with an include: two lookups
    server.add_txt("_spf.example.net", "v=spf1 ip4:127.0.0.1 -all")
    raw = signed(mail(), key)
    first = check(raw, resolver)
    assert (first.spf, first.dkim, first.dmarc) == ("pass", "pass", "pass")
    looked_up = {query[0] for query in server.queries}
    assert {"example.org", "_spf.example.net", "sel._domainkey.example.org", "_dmarc.example.org"} <= looked_up
    count = len(server.queries)
    second = check(signed(mail(body="Second message\r\n"), key), resolver)
    assert second == first
    assert len(server.queries) == count, f"asked again: {server.queries[count:]}"


def test_no_such_name_and_no_such_record_are_cached_too(server, resolver):
    server.add_record("mx.nodmarc.test", "A", "192.0.2.7")  # nodmarc.test exists (a name below it), no TXT
    raw = mail(from_header="x@nodmarc.test")
    first = check(raw, resolver, mail_from="bounce@nothere.test")  # NXDOMAIN for SPF, no record for DMARC
    assert (first.spf, first.dmarc) == ("none", "none")
    assert asked(server, "nothere.test") == 1 and asked(server, "_dmarc.nodmarc.test") == 1
    count = len(server.queries)
    assert check(raw, resolver, mail_from="bounce@nothere.test") == first
    assert len(server.queries) == count


def test_a_cached_answer_is_read_without_a_resolution(server, resolver):
    """Records, no record of the type, and no such name: asked once, then read from the cache as they are, without
    dnspython's resolution (which spells a cached NXDOMAIN out in an exception each time)."""
    server.add_txt("here.test", "v=spf1 -all")
    server.add_record("mx.here.test", "A", "192.0.2.7")
    resolutions = []
    resolve = resolver._resolver.resolve
    resolver._resolver.resolve = lambda *args, **kwargs: resolutions.append(args) or resolve(*args, **kwargs)
    names = [("here.test", "TXT"), ("mx.here.test", "TXT"), ("nothere.test", "TXT"), ("nothere.test", "A")]
    first = [resolver.lookup(name, rdtype, resolver.budget()) for name, rdtype in names]
    assert [len(answer) for answer in first] == [1, 0, 0, 0]
    assert len(resolutions) == 3  # a name known not to exist is not resolved again for another type
    asked_before = len(server.queries)
    assert [resolver.lookup(name, rdtype, resolver.budget()) for name, rdtype in names] == first
    assert len(resolutions) == 3 and len(server.queries) == asked_before


def test_a_cached_answer_never_changes_a_verdict(server, resolver, key):
    """Good, forged and tampered mail, each twice and interleaved: the cached resolver judges as an uncached one."""
    uncached = Resolver.from_config(server.nameservers, cache_size=0)
    cases = [
        (signed(mail(), key), "alice@example.org", "127.0.0.1"),
        (mail(), "b@evil.test", "127.0.0.1"),  # forged From, p=reject
        (signed(mail(), key).replace(b"How is the trail?", b"Wire me money"), "alice@example.org", "192.0.2.9"),
        (mail(from_header="x@nodmarc.test"), "alice@example.org", "192.0.2.9"),
    ]
    for _ in range(2):
        for raw, mail_from, ip in cases:
            cached = check(raw, resolver, mail_from=mail_from, client_ip=ip)
            assert cached == check(raw, uncached, mail_from=mail_from, client_ip=ip)
            assert cached.summary() == check(raw, uncached, mail_from=mail_from, client_ip=ip).summary()
    verdicts = [decision(check(raw, resolver, mail_from=m, client_ip=ip)) for raw, m, ip in cases]
    assert verdicts == ["accept", "reject", "reject", "accept"]


def test_an_answer_is_asked_again_when_its_ttl_is_over(server, resolver):
    server.add_txt("short.test", "v=spf1 -all", ttl=1)
    raw = mail(from_header="x@short.test")
    assert check(raw, resolver, mail_from="a@short.test").spf == "fail"
    server.remove("short.test")
    server.add_txt("short.test", "v=spf1 ip4:127.0.0.1 -all", ttl=1)
    wait_until(lambda: check(raw, resolver, mail_from="a@short.test").spf == "pass")
    assert asked(server, "short.test") >= 2


def test_a_negative_answer_is_kept_for_its_soa_minimum(server, resolver):
    """RFC 2308: NXDOMAIN is cached for the SOA's minimum (here 1 s; without a SOA it would be 300 s)."""
    server.add_record("late.test", "SOA", "ns.late.test. admin.late.test. 1 3600 600 86400 1", ttl=60)
    raw = mail(from_header="x@late.test")
    assert check(raw, resolver, mail_from="a@late.test").dmarc == "none"
    server.add_txt("_dmarc.late.test", "v=DMARC1; p=reject")
    wait_until(lambda: check(raw, resolver, mail_from="a@late.test").dmarc == "fail")


def test_a_negative_answer_without_a_soa_is_kept_at_most_the_cap(server):
    resolver = Resolver.from_config(server.nameservers, negative_ttl=1)
    raw = mail(from_header="x@late.test")
    assert check(raw, resolver, mail_from="a@late.test").dmarc == "none"
    server.add_txt("_dmarc.late.test", "v=DMARC1; p=reject")
    wait_until(lambda: check(raw, resolver, mail_from="a@late.test").dmarc == "fail")


def test_dns_trouble_is_not_cached(server, key):
    """A timeout or SERVFAIL gives temperror and is asked again next time: it never stands in for an answer."""
    resolver = Resolver.from_config(server.nameservers, lookup_timeout=0.3, check_budget=0.6)
    raw = signed(mail(), key)
    server.unresponsive = True
    assert (check(raw, resolver).spf, check(raw, resolver).dkim) == ("temperror", "temperror")
    server.unresponsive = False
    assert (check(raw, resolver).spf, check(raw, resolver).dkim) == ("pass", "pass")

    server.servfail("_dmarc.flaky.test")
    raw = mail(from_header="x@flaky.test")
    assert check(raw, resolver, mail_from="b@evil.test").dmarc == "temperror"
    assert check(raw, resolver, mail_from="b@evil.test").dmarc == "temperror"
    assert asked(server, "_dmarc.flaky.test") == 2, "SERVFAIL is asked again"


def test_cache_lifetime():
    assert cache_lifetime(60, negative=False, max_ttl=3600, negative_ttl=300) == 60
    assert cache_lifetime(86400, negative=False, max_ttl=3600, negative_ttl=300) == 3600
    assert cache_lifetime(3600, negative=True, max_ttl=3600, negative_ttl=300) == 300
    assert cache_lifetime(1, negative=True, max_ttl=3600, negative_ttl=300) == 1
    assert cache_lifetime(-1, negative=False, max_ttl=3600, negative_ttl=300) == 0
    assert NEGATIVE_TTL == 300


# --- configuration ---


def test_dns_nameservers_parses_ip_and_port():
    assert parse_nameservers("") == [] and parse_nameservers("  ") == []
    assert parse_nameservers("127.0.0.1:5353, 10.0.0.2") == [Nameserver("127.0.0.1", 5353), Nameserver("10.0.0.2")]
    assert parse_nameservers("[::1]:5353,::1,[2001:db8::1]") == [
        Nameserver("::1", 5353),
        Nameserver("::1", 53),
        Nameserver("2001:db8::1", 53),
    ]
    assert Config.from_env({"DNS_NAMESERVERS": "127.0.0.1:5353"}).dns_nameservers == "127.0.0.1:5353"
    assert Config().dns_nameservers == ""


@pytest.mark.parametrize(
    "value",
    ["dns.google", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:x", "1.2.3.4,,5.6.7.8", "[::1", "[::1]x"],
)
def test_bad_dns_nameservers_is_a_clear_error(value):
    with pytest.raises(ConfigError, match="DNS_NAMESERVERS"):
        Resolver.from_config(value)


def test_a_bad_signature_is_a_verdict_not_an_error_in_the_log(resolver, key, caplog):
    caplog.set_level("INFO")
    result = check(signed(mail(), key, selector=b"gone"), resolver, client_ip="192.0.2.7")
    assert result.dkim == "fail"
    assert [r for r in caplog.records if r.levelno >= 30] == []


def test_may_be_signed_looks_for_the_header_in_the_header_block_only(key):
    assert may_be_signed(signed(mail(), key))
    assert may_be_signed(signed(mail(), key).replace(b"\r\n", b"\n"))
    assert may_be_signed(b"Subject: x\r\n folded\r\ndkim-signature : v=1\r\n\r\nbody")  # any case, any place
    assert not may_be_signed(mail())
    assert not may_be_signed(mail(body="DKIM-Signature: in the body is no header\r\n"))
    assert not may_be_signed(mail().replace(b"\r\n", b"\n") + b"\nDKIM-Signature: v=1\n")
