"""The loopback DNS fake answers like an authoritative server, over UDP and TCP, through real dnspython."""

from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from messaging.sandbox.fake_dns import FakeDNS


@pytest.fixture
def server():
    with FakeDNS() as fake:
        yield fake


def resolver_for(fake: FakeDNS) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [fake.host]
    resolver.port = fake.port
    resolver.lifetime = 5
    return resolver


def test_serves_txt_records_and_nxdomain_otherwise(server):
    server.add_txt("Example.org", "v=spf1 ip4:127.0.0.1 -all")
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    resolver = resolver_for(server)

    answer = resolver.resolve("example.org", "TXT")
    assert [b"".join(r.strings) for r in answer] == [b"v=spf1 ip4:127.0.0.1 -all"]
    assert answer.response.flags & dns.flags.AA
    assert b"".join(resolver.resolve("_DMARC.example.org.", "TXT")[0].strings) == b"v=DMARC1; p=reject"
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nothing.example.org", "TXT")
    with pytest.raises(dns.resolver.NoAnswer):  # the name exists, not with that type
        resolver.resolve("example.org", "A")
    assert ("example.org", "TXT", "udp") in server.queries


def test_a_name_with_names_below_it_exists(server):
    server.add_txt("sel._domainkey.example.org", "v=DKIM1; p=")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver_for(server).resolve("_domainkey.example.org", "TXT")


def test_other_record_types(server):
    server.add_record("mx.example.org", "A", "127.0.0.2")
    server.add_record("example.org", "MX", "10 mx.example.org.")
    resolver = resolver_for(server)
    assert [r.address for r in resolver.resolve("mx.example.org", "A")] == ["127.0.0.2"]
    assert [r.exchange.to_text() for r in resolver.resolve("example.org", "MX")] == ["mx.example.org."]


def test_record_ttls_and_the_zone_soa_in_negative_answers(server):
    server.add_txt("example.org", "v=spf1 -all", ttl=5)
    server.add_record("example.org", "SOA", "ns.example.org. admin.example.org. 1 3600 600 86400 7", ttl=30)
    resolver = resolver_for(server)
    assert resolver.resolve("example.org", "TXT").rrset.ttl == 5
    query = dns.message.make_query("nothing.example.org", "TXT")
    response = dns.query.udp(query, server.host, port=server.port, timeout=5)
    assert response.rcode() == dns.rcode.NXDOMAIN
    [soa] = response.authority
    assert soa.name.to_text() == "example.org." and soa.ttl == 30 and soa[0].minimum == 7
    response = dns.query.udp(
        dns.message.make_query("nothing.else.test", "TXT"), server.host, port=server.port, timeout=5
    )
    assert response.rcode() == dns.rcode.NXDOMAIN and not response.authority  # no zone of ours: no SOA


def test_long_txt_records_are_split_and_truncated_over_udp_then_served_over_tcp(server):
    key = "v=DKIM1; k=rsa; p=" + "A" * 1500  # longer than any UDP answer: the client retries over TCP
    server.add_txt("big._domainkey.example.org", key)

    query = dns.message.make_query("big._domainkey.example.org", "TXT")
    over_udp = dns.query.udp(query, server.host, port=server.port, timeout=5)
    assert over_udp.flags & dns.flags.TC and not over_udp.answer
    over_tcp = dns.query.tcp(query, server.host, port=server.port, timeout=5)
    strings = over_tcp.answer[0][0].strings
    assert all(len(s) <= 255 for s in strings) and b"".join(strings).decode() == key

    answer = resolver_for(server).resolve("big._domainkey.example.org", "TXT")  # dnspython falls back by itself
    assert b"".join(answer[0].strings).decode() == key
    assert ("big._domainkey.example.org", "TXT", "tcp") in server.queries


def test_servfail_and_unresponsive(server):
    server.add_txt("example.org", "v=spf1 -all")
    server.servfail("broken.example.org")
    query = dns.message.make_query("broken.example.org", "TXT")
    assert dns.query.udp(query, server.host, port=server.port, timeout=5).rcode() == dns.rcode.SERVFAIL

    server.unresponsive = True
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query("example.org", "TXT"), server.host, port=server.port, timeout=0.5)


def test_stop_releases_the_port():
    fake = FakeDNS().start()
    port = fake.port
    assert port > 0
    fake.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))  # free again
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
