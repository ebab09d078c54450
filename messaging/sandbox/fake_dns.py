"""A small authoritative DNS server on loopback: the sandbox's DNS for the sender checks, and the tests'.

Speaks real DNS (dnspython's wire format) over UDP and TCP on one ephemeral port of 127.0.0.1. It serves only
the records a test gives it, authoritatively: the record if the name has one of the asked type, an empty
answer (NOERROR) if the name exists with other types only (or has names below it), NXDOMAIN otherwise.

    with FakeDNS() as server:
        server.add_txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
        server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
        resolver = Resolver.from_config(server.nameservers)   # "127.0.0.1:<port>"

Over UDP an answer larger than the query's size (512 bytes, or its EDNS payload) is sent truncated (TC), so a
client retries over TCP as with a real server. ``servfail(name)`` answers SERVFAIL for a name;
``unresponsive = True`` makes the server read queries and answer none (a resolver that times out).
Records have a TTL of 60 s unless given one (``ttl=``). A zone's SOA (``add_record("example.org", "SOA", ...)``)
goes in the authority section of its negative answers, so a resolver caches them for the SOA minimum (RFC 2308).
Every query is recorded in ``queries`` as ``(name, type, transport)``.
"""

from __future__ import annotations

import socketserver
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

TTL = 60


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text.lower().rstrip(".") + ".")


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = False


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = False


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.fake.answer(data, udp=True)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TCPHandler(socketserver.StreamRequestHandler):
    timeout = 5

    def handle(self) -> None:
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            (length,) = struct.unpack("!H", head)
            data = self.rfile.read(length)
            if len(data) < length:
                return
            reply = self.server.fake.answer(data, udp=False)
            if reply is None:
                return
            self.wfile.write(struct.pack("!H", len(reply)) + reply)
            self.wfile.flush()


class FakeDNS:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.unresponsive = False
        self.queries: list[tuple[str, str, str]] = []
        self._records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = {}
        self._ttls: dict[tuple[dns.name.Name, int], int] = {}
        self._servfail: set[dns.name.Name] = set()
        self._lock = threading.Lock()
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    # --- records ---

    def add_txt(self, name: str, text: str | bytes, ttl: int = TTL) -> None:
        """One TXT record; text longer than 255 bytes is split into several strings, as zone files do."""
        data = text.encode() if isinstance(text, str) else text
        chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
        rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
        self._add(name, rdata, ttl)

    def add_record(self, name: str, rdtype: str, text: str, ttl: int = TTL) -> None:
        """Any record from its zone-file text, e.g. ``add_record("mx.example.org", "A", "127.0.0.1")``."""
        self._add(name, dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text), ttl)

    def _add(self, name: str, rdata: dns.rdata.Rdata, ttl: int) -> None:
        key = (_name(name), rdata.rdtype)
        with self._lock:
            self._records.setdefault(key, []).append(rdata)
            self._ttls[key] = ttl  # an RRset has one TTL: the last one given

    def remove(self, name: str) -> None:
        """Every record of ``name``."""
        owner = _name(name)
        with self._lock:
            for key in [k for k in self._records if k[0] == owner]:
                del self._records[key]
                self._ttls.pop(key, None)

    def servfail(self, name: str) -> None:
        with self._lock:
            self._servfail.add(_name(name))

    # --- the server ---

    @property
    def nameservers(self) -> str:
        """The ``DNS_NAMESERVERS`` value that points at this server."""
        return f"{self.host}:{self.port}"

    def start(self) -> FakeDNS:
        for _ in range(20):  # the UDP port is picked by the OS; the TCP one must be the same port
            udp = _UDPServer((self.host, 0), _UDPHandler)
            port = udp.server_address[1]
            try:
                tcp = _TCPServer((self.host, port), _TCPHandler)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP")
        self.port = port
        for server in (udp, tcp):
            server.fake = self
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeDNS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- answering ---

    def _soa_above(self, owner: dns.name.Name) -> dns.rrset.RRset | None:
        """The SOA of the closest zone holding ``owner`` (called with the lock held), or None."""
        zone = owner
        while True:
            key = (zone, dns.rdatatype.SOA)
            if key in self._records:
                return dns.rrset.from_rdata_list(zone, self._ttls.get(key, TTL), self._records[key])
            if zone == dns.name.root:
                return None
            zone = zone.parent()

    def answer(self, wire: bytes, *, udp: bool) -> bytes | None:
        """The reply to one query in wire format; None to answer nothing."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not a DNS message: dropped, like a real server
        if self.unresponsive:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        owner = question.name.canonicalize()
        with self._lock:
            self.queries.append(
                (owner.to_text(omit_final_dot=True), dns.rdatatype.to_text(question.rdtype), "udp" if udp else "tcp")
            )
            rdatas = list(self._records.get((owner, question.rdtype), []))
            ttl = self._ttls.get((owner, question.rdtype), TTL)
            exists = any(name == owner or name.is_subdomain(owner) for name, _ in self._records)
            failing = owner in self._servfail
            soa = self._soa_above(owner)
        if failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif rdatas:
            response.answer.append(dns.rrset.from_rdata_list(owner, ttl, rdatas))
        else:
            if not exists:
                response.set_rcode(dns.rcode.NXDOMAIN)
            if soa is not None:
                response.authority.append(soa)
        if not udp:
            return response.to_wire()
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()
