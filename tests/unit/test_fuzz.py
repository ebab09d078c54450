"""Fuzzing the two parsers that read what strangers send: inbound mail and Hive packets from devices.

Inputs are generated from fixed seeds (``random.Random``), so a failure names the seed that reproduces it:
``generate_mail(random.Random(seed))`` / ``generate_payload(random.Random(seed))``. Each input goes through the
function the server itself calls; the only allowed exception is the project's typed error (``MailParseError``,
``PacketDecodeError``). Every call runs under a wall-clock alarm: ``CALL_LIMIT`` is far above what any call
takes (milliseconds) and only catches pathological hangs (catastrophic backtracking, runaway loops), so it
cannot make the test flaky on a slow machine.
"""

from __future__ import annotations

import base64
import contextlib
import random
import re
import signal
import time
import traceback

import pytest

from messaging.core.codec import PacketDecodeError, encode_from_device
from messaging.core.types import CombinedMessage, Protocol, storable_text
from messaging.intake.smtp.parse import MailParseError, count_mime_parts
from messaging.intake.smtp.server import read_mail, store_limit
from messaging.satellite.transport import DevicePacket
from tests.paths import MAIL_FIXTURES

MAIL_CASES = 10_000
PAYLOAD_CASES = 10_000
CHUNKS = 10  # the cases run in chunks, each its own test, so a failure points at a small range of seeds
CALL_LIMIT = 10.0  # seconds; a hang detector, not a speed assertion (a call takes milliseconds)
LIMIT = store_limit(4)


class CallTimedOut(Exception):
    pass


@contextlib.contextmanager
def time_bound(limit: float = CALL_LIMIT):
    """Interrupt the block (SIGALRM in the main thread) if it runs longer than ``limit`` seconds, and fail it
    also if it returned on its own but took longer (a C call that does not check for signals)."""

    def expire(signum, frame):
        raise CallTimedOut(f"call ran longer than {limit}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if time.monotonic() - started > limit:
        raise CallTimedOut(f"call took {time.monotonic() - started:.1f}s (limit {limit}s)")


# ----------------------------------------------------------------------------------------- mail generator

FIXTURE_MAILS = [path.read_bytes() for path in sorted(MAIL_FIXTURES.glob("*.eml"))]
CHARSETS = [
    "utf-8",
    "UTF-8",
    "us-ascii",
    "iso-8859-1",
    "latin1",
    "windows-1252",
    "iso-2022-jp",
    "shift_jis",
    "gb2312",
    "koi8-r",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "utf-7",
    "utf_8_sig",
    "x-unknown",
    "unknown-8bit",
    "x-no-such-charset",
    "",
    '"',
    '"utf-8',
    "rot13",
    "base64",
    "uu",
    "zlib",
    "hex",
    "idna",
    "punycode",
    "unicode_escape",
    "raw_unicode_escape",
    "mbcs",
    "charset",
    "utf-8\x00",
    "\xff\xfe",
    "a" * 300,
]
TRANSFER_ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "BASE64", "gzip", ""]
TEXT_TYPES = ["text/plain", "text/html", "text/enriched", "text/calendar", "text", "text/", "/", ";", "TEXT/HTML"]
OTHER_TYPES = [
    "application/octet-stream",
    "application/pdf",
    "image/png",
    "message/rfc822",
    "message/delivery-status",
    "application/pgp-signature",
    "message/partial",
    "message/external-body",
    "x-weird/thing",
]
MULTI_TYPES = ["mixed", "alternative", "related", "signed", "digest", "report", "parallel", "x-unknown", ""]
WORDS = [
    "snow",
    "pass",
    "Grüße",
    "日本語",
    "🦫",
    "café",
    "Ñandú",
    "\u200b",
    "\ufeff",
    "\ue000",
    "\ue001",
    "&amp;",
    "&#0;",
    "&#xD800;",
    "&#99999999;",
    "<b>",
    "</p>",
    "<!--",
    "<![CDATA[",
    "<script>",
    "<table><tr><td>",
    "| --- |",
    "* * *",
    "\\*",
    "-- ",
    "> quoted",
    "On Mon, 1 Jan 2024 at 10:00, Amy <amy@example.org> wrote:",
    "-----Original Message-----",
    "From: Bob <bob@example.org>\nSent: Monday\nTo: x\nSubject: y",
    "---------- Forwarded message ---------",
    "Sent from my iPhone",
    "Am 01.01.2024 schrieb Amy:",
    "=?utf-8?B?SGVsbG8=?=",
    "=20",
    "=\n",
    "=ZZ",
]


def swarm_packet_messages(data_b64: str, *, device_id: int, packet_id: int, received_at: float | None = None):
    """The messages of a packet as Swarm hands it over (base64), decoded the way intake decodes it."""
    return DevicePacket(f"hive:{packet_id}", device_id, packet_id, data_b64, received_at=received_at).messages()


def random_bytes(rng: random.Random, most: int = 200) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, most)))


def random_text(rng: random.Random, most_words: int = 40) -> str:
    parts = []
    for _ in range(rng.randint(0, most_words)):
        roll = rng.random()
        if roll < 0.6:
            parts.append(rng.choice(WORDS))
        elif roll < 0.8:
            parts.append("".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(1, 12))))
        elif roll < 0.95:
            parts.append(
                chr(rng.choice([rng.randint(0, 0x1F), rng.randint(0x80, 0x2FFF), rng.randint(0xE000, 0xFFFF)]))
            )
        else:
            parts.append(chr(rng.randint(0x10000, 0x10FFFF)))
        parts.append(rng.choice([" ", " ", " ", "\n", "\r\n", "\r", "\t", ""]))
    return "".join(parts)


def line_ending(rng: random.Random) -> bytes:
    return rng.choice([b"\r\n", b"\r\n", b"\n", b"\n", b"\r", b"\r\r\n"])


def encode_text(rng: random.Random, text: str, charset: str) -> bytes:
    """Body bytes for ``text``: in its declared charset when that works, else in another one (a lie)."""
    for name in (charset, rng.choice(["utf-8", "cp1252", "utf-16", "latin-1"])):
        try:
            return text.encode(name.strip('"'), errors=rng.choice(["strict", "replace", "ignore", "surrogatepass"]))
        except (LookupError, UnicodeError, ValueError, TypeError):
            continue
    return text.encode("utf-8", "surrogatepass")


def body_bytes(rng: random.Random, charset: str) -> bytes:
    roll = rng.random()
    if roll < 0.45:
        data = encode_text(rng, random_text(rng), charset)
    elif roll < 0.55:
        data = random_bytes(rng, 400)
    elif roll < 0.65:  # one very long line, as generated HTML has
        chunk = rng.choice([b"<p>Trail report ", b"x", b"\xc3\xa9", b"&nbsp;", b"> ", b"<td>", b"\xff"])
        data = b"<html><body>" + chunk * rng.randint(100, 12_000 // len(chunk)) + b"</body></html>"
    elif roll < 0.72:  # broken base64
        data = base64.b64encode(random_bytes(rng, 150))
        data = data[: rng.randint(0, len(data))] + rng.choice([b"", b"=", b"===", b"!!", b"\x00", b"\n="])
    elif roll < 0.79:  # broken quoted-printable
        pieces = [b"=", b"=\r\n", b"=4", b"=ZZ", b"=C3=A9", b"=FF", b"abc", b" \r\n", b"=\n", b"=3D"]
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
    elif roll < 0.86:  # NULs and control bytes
        data = b"".join(rng.choice([b"\x00", b"text", b"\x1b[31m", b"\x7f", b"\x0c", b"\xa0"]) for _ in range(50))
    elif roll < 0.93:  # invalid UTF-8 sequences
        data = b"".join(
            rng.choice([b"\xc3", b"\xa9", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"ok"]) for _ in range(60)
        )
    else:
        data = b""
    eol = line_ending(rng)
    return data.replace(b"\n", eol) if eol != b"\n" and rng.random() < 0.5 else data


def header_value(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.4:
        return encode_text(rng, random_text(rng, 8).replace("\n", " "), rng.choice(["utf-8", "latin-1"]))
    if roll < 0.6:  # encoded words, often broken
        charset = rng.choice(CHARSETS)
        kind = rng.choice(["B", "Q", "b", "X", ""])
        payload = rng.choice(
            [base64.b64encode(random_bytes(rng, 30)).decode(), "SGVsbG8", "=C3=A9_x", "###", "", "=?", "?="]
        )
        return f"=?{charset}?{kind}?{payload}?=".encode("utf-8", "surrogatepass") * rng.randint(1, 4)
    if roll < 0.7:
        return random_bytes(rng, 80).replace(b"\n", b" ").replace(b"\r", b" ")
    if roll < 0.8:  # folded over lines, or a folding that is not one
        return b"first" + line_ending(rng) + rng.choice([b" second", b"\tsecond", b"second", b""])
    if roll < 0.9:
        return rng.choice([b"", b" ", b"<", b"<<a@b>>", b"a@b@c", b'"unterminated', b"(comment", b"@", b";", b"<>"])
    return b"x" * rng.randint(900, 5_000)


ADDRESSES = [
    b"Amy <amy@example.org>",
    b"amy@example.org",
    b'"Doe, John" <john@example.org>',
    b"=?utf-8?B?w6lsw6g=?= <e@example.org>",
    b"=?x-unknown?Q?=FF?= <u@example.org>",
    b"<>",
    b"undisclosed-recipients:;",
    b"group: a@b.c, d@e.f;",
    b"M\xc3\xbcller <m\xc3\xbc@b\xc3\xbccher.de>",
    b"\xff\xfe@\xff",
    b"a@b@c",
    b"<amy@example.org",
    b"amy@example.org>",
    b"amy@[127.0.0.1]",
    b'"\\"@example.org',
    b"(c) a (b) @ (c) example.org",
]


def headers(rng: random.Random, *, content_type: bytes | None, cte: str | None) -> list[bytes]:
    out: list[bytes] = []
    for name in (b"From", b"To", b"Reply-To", b"Sender", b"Subject", b"Message-ID", b"Date", b"MIME-Version"):
        count = rng.choice([0, 1, 1, 1, 1, 2])  # missing, once, or duplicated
        for _ in range(count):
            if name in (b"From", b"To", b"Reply-To", b"Sender") and rng.random() < 0.7:
                value = rng.choice(ADDRESSES)
            elif name == b"Message-ID" and rng.random() < 0.6:
                value = rng.choice([b"<a@b>", b"<" + b"x" * rng.randint(1, 400) + b"@y>", b"no brackets", b"<>"])
            elif name == b"Subject" and rng.random() < 0.3:
                value = rng.choice([b"Re: ", b"Fwd: ", b"AW: Re[2]: ", b"RE:RE:RE:", b""]) + header_value(rng)
            else:
                value = header_value(rng)
            out.append(name + b":" + rng.choice([b" ", b"", b"  ", b"\t"]) + value)
    if content_type is not None:
        out.append(b"Content-Type: " + content_type)
    if cte is not None:
        out.append(b"Content-Transfer-Encoding: " + cte.encode())
    if rng.random() < 0.2:
        out.append(
            b"Content-Disposition: "
            + rng.choice([b"attachment", b"inline", b"attachment; filename="])
            + header_value(rng)
        )
    if rng.random() < 0.15:  # junk: no colon, a continuation with nothing before, a NUL, an empty name
        out.append(rng.choice([b"no colon here", b" continuation", b"X-\x00: a", b": empty name", b"\xff\xff: bytes"]))
    rng.shuffle(out)
    return out


def leaf(rng: random.Random, depth: int) -> tuple[bytes, bytes]:
    """(headers, body) of a non-multipart part."""
    charset = rng.choice(CHARSETS)
    roll = rng.random()
    if roll < 0.7:
        ctype = rng.choice(TEXT_TYPES)
    elif roll < 0.8 and depth < 6:
        ctype = "message/rfc822"
    else:
        ctype = rng.choice(OTHER_TYPES)
    params = ""
    if rng.random() < 0.8:
        quote = rng.choice(["", '"'])
        params += f"; charset={quote}{charset}"
    if rng.random() < 0.2:
        name = rng.choice(["report.pdf", "=?utf-8?B?w6k=?=.pdf", "a" * 200, "\x00.exe", ""])
        params += rng.choice([f'; name="{name}"', f"; name*=utf-8''%ZZ{name}", "; name*0=a; name*2=c"])
    cte = rng.choice(TRANSFER_ENCODINGS) if rng.random() < 0.6 else None
    content_type = rng.choice([ctype + params, ctype, params.lstrip("; "), ""]) if rng.random() < 0.9 else None
    head = [] if content_type is None else [b"Content-Type: " + content_type.encode("utf-8", "surrogatepass")]
    if cte is not None:
        head.append(b"Content-Transfer-Encoding: " + cte.encode())
    if rng.random() < 0.25:
        disposition = rng.choice([b"attachment", b"inline", b"attachment; filename*=utf-8''%E2%82", b"form-data"])
        head.append(b"Content-Disposition: " + disposition)
    if ctype == "message/rfc822":
        body = generate_mail(rng, depth + 1)
    else:
        body = body_bytes(rng, charset)
        if cte and cte.lower() == "base64" and rng.random() < 0.6:
            body = base64.encodebytes(body)
    return line_ending(rng).join(head), body


def multipart(rng: random.Random, depth: int) -> tuple[bytes, bytes]:
    """(headers, body) of a multipart, its children generated recursively, its boundaries often broken."""
    boundary = rng.choice(["b", "==boundary==", "x" * 70, "a b", "'()+_,-./:=?", "\u00e9", "-", "b" * 250, ""])
    boundary = f"{boundary}{depth}" if rng.random() < 0.8 else boundary
    declared = rng.choice([f'boundary="{boundary}"', f"boundary={boundary}", "boundary=", 'boundary="', ""])
    if rng.random() < 0.9:
        declared = f'boundary="{boundary}"'
    subtype = rng.choice(MULTI_TYPES)
    head = b"Content-Type: multipart/" + f"{subtype}; {declared}".encode()
    if rng.random() < 0.1:
        head += b"\r\nContent-Transfer-Encoding: " + rng.choice(TRANSFER_ENCODINGS).encode()
    eol = line_ending(rng)
    delimiter = b"--" + boundary.encode()
    body = [rng.choice([b"", b"This is a multi-part message in MIME format." + eol])]
    for _ in range(rng.randint(0, 4)):
        if depth < 25 and rng.random() < 0.3 + (0.6 if depth > 4 and rng.random() < 0.2 else 0):
            child_head, child_body = multipart(rng, depth + 1)
        else:
            child_head, child_body = leaf(rng, depth)
        mark = delimiter if rng.random() < 0.93 else rng.choice([b"--wrong", delimiter[:-1], b"-" + delimiter])
        body.append(
            mark + rng.choice([eol, eol, b" \t" + eol, b"--" + eol]) + child_head + eol + eol + child_body + eol
        )
    closing = rng.random()
    if closing < 0.75:
        body.append(delimiter + b"--" + eol)
    elif closing < 0.85:
        body.append(delimiter + b"-" + eol)  # half a closing delimiter
    # else: unterminated
    if rng.random() < 0.2:
        body.append(b"epilogue " + random_bytes(rng, 40))
    return head, b"".join(body)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Byte flips, truncation, splicing, insertions and duplications of ``data``."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        roll = rng.random()
        if roll < 0.3 and data:
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        elif roll < 0.45:
            del data[rng.randint(0, len(data)) :]
        elif roll < 0.6:
            other = rng.choice(FIXTURE_MAILS)
            start = rng.randint(0, len(other))
            at = rng.randint(0, len(data))
            data[at:at] = other[start : start + rng.randint(0, 400)]
        elif roll < 0.75:
            at = rng.randint(0, len(data))
            data[at:at] = rng.choice([b"\x00", b"\r", b"\n", b"\n\n", b"--", b"=?", b"?=", b"\xff", b"boundary="])
        elif roll < 0.9 and data:
            start = rng.randrange(len(data))
            piece = data[start : start + rng.randint(1, 200)]
            data[start:start] = piece * rng.randint(1, 5)
        elif data:
            start = rng.randrange(len(data))
            del data[start : start + rng.randint(1, 50)]
    return bytes(data)


def generate_mail(rng: random.Random, depth: int = 0) -> bytes:
    """One raw message: generated headers and a leaf or multipart body, a mutated fixture, or random bytes."""
    roll = rng.random()
    if depth == 0 and roll < 0.2:
        return mutate(rng, rng.choice(FIXTURE_MAILS))
    if depth == 0 and roll < 0.25:
        return random_bytes(rng, 600)
    if rng.random() < 0.45:
        part_head, body = multipart(rng, depth)
    else:
        part_head, body = leaf(rng, depth)
    eol = line_ending(rng)
    lines = headers(rng, content_type=None, cte=None)
    if rng.random() < 0.9:
        lines.append(part_head)
    separator = rng.choice([eol + eol, eol + eol, eol, b""])  # sometimes no blank line before the body
    raw = eol.join(lines) + separator + body
    return mutate(rng, raw) if depth == 0 and rng.random() < 0.15 else raw


def check_mail(raw: bytes) -> None:
    """The mail server's path for one message; only MailParseError may come out."""
    with time_bound():
        parts = count_mime_parts(raw)
    assert isinstance(parts, int) and parts >= 0
    with time_bound():
        try:
            mail, text = read_mail(raw, LIMIT)
        except MailParseError:
            return
    assert isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) <= LIMIT
    for value in (mail.sender, mail.subject, mail.message_id, mail.reply_to):
        assert isinstance(value, str) and "\n" not in value and "\r" not in value


def run_cases(first: int, count: int, generate, check) -> None:
    """Generate and check cases ``first .. first+count-1``; fail naming every seed that broke (up to 5)."""
    failures = []
    for seed in range(first, first + count):
        data = generate(random.Random(seed))
        try:
            check(data)
        except Exception as exc:  # anything but the typed error (which check swallows): a finding
            failures.append(f"seed {seed}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-4)}")
            if len(failures) >= 5:
                break
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_generated_mail_never_raises_anything_but_mail_parse_error(chunk):
    size = MAIL_CASES // CHUNKS
    run_cases(chunk * size, size, generate_mail, check_mail)


def test_the_mail_generator_covers_what_it_should():
    """The fuzz is only as good as its inputs: check the generator makes the awkward cases it claims to."""
    mails = [generate_mail(random.Random(seed)) for seed in range(500)]
    assert sum(b"multipart/" in m for m in mails) > 100
    assert sum(b"\x00" in m for m in mails) > 20
    assert sum(any(len(line) > 5_000 for line in m.split(b"\n")) for m in mails) > 10
    assert sum(b"=?" in m for m in mails) > 50
    assert sum(b"\r\n" not in m and b"\n" in m for m in mails) > 50  # bare LF only
    assert sum(m.count(b"Content-Type: multipart/") > 5 for m in mails) > 5  # nested trees


# ----------------------------------------------------------------------------------------- Hive payloads


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def wire_field(rng: random.Random, number: int, depth: int = 0) -> bytes:
    """One protobuf field with a random (sometimes wrong) wire type; length-delimited ones may nest."""
    wire = rng.choice([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7])
    key = varint((number << 3) | wire)
    if wire == 0:
        return key + varint(rng.choice([0, 1, 2, 3, 4, 255, 2**31, 2**32 - 1, 2**63, 2**64 - 1, rng.getrandbits(40)]))
    if wire == 1:
        return key + random_bytes(rng, 8)[:8].ljust(8, b"\0")
    if wire == 5:
        return key + random_bytes(rng, 4)[:4].ljust(4, b"\0")
    if wire == 2:
        if depth < 3 and rng.random() < 0.4:
            body = b"".join(wire_field(rng, rng.choice([1, 3, 5, 2, 9]), depth + 1) for _ in range(rng.randint(0, 4)))
        else:
            body = random_bytes(rng, 60)
        length = len(body) if rng.random() < 0.9 else rng.choice([len(body) + 5, 2**31, 2**64 - 1])
        return key + varint(length) + body
    return key  # group start/end or an invalid wire type


def valid_packet(rng: random.Random) -> bytes:
    """A packet as a device sends it; mostly deliverable, sometimes with an odd protocol or recipient."""
    messages = []
    for _ in range(rng.choice([0, 1, 1, 1, 1, 2, 3])):
        text = random_text(rng, 10)
        to = rng.choice(["amy@example.org", "+15551234567", "a\x00b@c.d", random_text(rng, 2)])
        to = to if rng.random() < 0.9 else rng.choice(["", " ", "\x00"])
        protocol = rng.choice([Protocol.EMAIL, Protocol.SMS]) if rng.random() < 0.9 else rng.choice(list(Protocol))
        messages.append((text, protocol, to))
    return encode_from_device(messages)


def generate_payload(rng: random.Random) -> str:
    """The base64 ``data`` of a Hive packet: random bytes, protobuf-shaped junk, or a mutated valid packet;
    sometimes not base64 at all."""
    roll = rng.random()
    if roll < 0.35:
        data = random_bytes(rng, 300)
    elif roll < 0.55:
        data = b"".join(wire_field(rng, rng.choice([1, 2, 3, 4, 15, 16, 2**29 - 1])) for _ in range(rng.randint(0, 6)))
    elif roll < 0.7:
        data = valid_packet(rng)
    else:
        data = bytearray(valid_packet(rng))
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            if action < 0.4 and data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            elif action < 0.6:
                del data[rng.randint(0, len(data)) :]
            elif action < 0.8:
                at = rng.randint(0, len(data))
                data[at:at] = wire_field(rng, rng.choice([1, 2, 3, 5]))
            else:
                data += valid_packet(rng)  # concatenated packets merge (repeated fields append)
        data = bytes(data)
    encoded = base64.b64encode(data).decode("ascii")
    if rng.random() < 0.05:  # not valid base64: a stray character, missing padding, whitespace
        at = rng.randint(0, len(encoded))
        encoded = encoded[:at] + rng.choice(["!", "=", " ", "\n", "é", "-", "_"]) + encoded[at:]
    return encoded


def check_payload(data_b64: str) -> None:
    with time_bound():
        try:
            messages = swarm_packet_messages(data_b64, device_id=4242, packet_id=99, received_at=1.0)
        except PacketDecodeError:
            return
    assert isinstance(messages, list) and messages
    for message in messages:
        assert isinstance(message, CombinedMessage)
        assert message.protocol in (Protocol.EMAIL, Protocol.SMS) and message.recipient.strip()
        for value in (message.sender, message.recipient, message.text, message.idempotency_key, message.external_id):
            assert storable_text(value) == value, f"not storable: {value!r}"


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_hive_payloads_never_raise_anything_but_packet_decode_error(chunk):
    size = PAYLOAD_CASES // CHUNKS
    run_cases(chunk * size, size, generate_payload, check_payload)


def test_the_payload_generator_covers_what_it_should():
    decoded = rejected = 0
    for seed in range(500):
        try:
            swarm_packet_messages(generate_payload(random.Random(seed)), device_id=1, packet_id=1)
            decoded += 1
        except PacketDecodeError:
            rejected += 1
    assert decoded > 50 and rejected > 200  # both sides of the decoder are exercised


# ----------------------------------------------------------------------------------------- what the fuzz found
# Hostile inputs within SMTP_MAX_MESSAGE_SIZE that crashed the parser or held a worker thread for minutes
# to hours before the bounds in messaging/intake/smtp/parse.py. Each test would fail on the old code: the first with
# a RecursionError, the others at the time bound (the old code took from 40 seconds to hours on them). These
# calls run in a child process: the old code spent its time inside C regular expressions holding the GIL,
# where no alarm or thread can stop it, and a killed child can.

HEAD = b"From: Amy <amy@example.org>\r\nSubject: Hut\r\n"


def _read_in_child(raw: bytes, results) -> None:
    try:
        results.put(("ok", read_mail(raw, LIMIT)))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"[:500]))


def read_bounded(raw: bytes, limit: float = CALL_LIMIT):
    """``read_mail(raw)`` in a forked child; fails if it raises or runs longer than ``limit`` seconds."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_read_in_child, args=(raw, results), daemon=True)
    child.start()
    try:
        outcome, value = results.get(timeout=limit)
    except Exception:  # queue.Empty: still running
        raise CallTimedOut(f"read_mail ran longer than {limit}s") from None
    finally:
        child.kill()
        child.join()
    assert outcome == "ok", value
    return value


def test_a_from_of_nested_comments_is_no_address_not_a_recursion_error():
    mail, text = read_bounded(b"From: " + b"(" * 5_000 + b"\r\nSubject: Hut\r\n\r\nOpen.\r\n")
    assert mail.sender == "" and "Open." in text


@pytest.mark.parametrize(
    "header",
    [
        b"From: " + b"<a@b>, " * 140_000,
        b"From: " + b"," * 400_000,
        b"Subject: " + b"=?utf-8?q?a?= " * 70_000,
        b"Content-Type: text/plain" + b"; a=b" * 150_000,
    ],
    ids=["address-list", "commas", "encoded-words", "content-type-params"],
)
def test_a_megabyte_header_is_read_in_bounded_time(header):
    mail, _ = read_bounded(header.rstrip(b"\r\n") + b"\r\n\r\nOpen.\r\n")
    assert mail.text == "Open."


def html_mail(html: bytes) -> bytes:
    return HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html


def test_deeply_nested_lists_and_quotes_are_read_in_bounded_time():
    _, text = read_bounded(html_mail(b"<p>Meet at the hut.</p>" + b"<ul><li>" * 20_000 + b"x"))
    assert text.startswith("Hut\nMeet at the hut.")
    _, text = read_bounded(html_mail(b"<p>Meet at the hut.</p>" + b"<blockquote><p>x</p>" * 40_000))
    assert text.startswith("Hut\nMeet at the hut.")


@pytest.mark.parametrize("unit", [b"<a ", b"<!--", b"</", b"<?", b"<![CDATA[ >"])
def test_unclosed_markup_is_read_as_text_in_bounded_time(unit):
    _, text = read_bounded(html_mail(b"<p>Meet at the hut.</p>" + unit * (900_000 // len(unit))))
    assert text.startswith("Hut\nMeet at the hut.")


def test_html_still_reads_as_before():
    from messaging.intake.smtp.parse import html_to_text

    html = "<p>1 < 2 and <b>bold</b></p><!--[if mso]><p>m</p><![endif]--><ul><li>a<ul><li>b</li></ul></li></ul>"
    assert html_to_text(html).split() == ["1", "<", "2", "and", "bold", "*", "a", "*", "b"]


def test_many_parts_with_long_content_types_are_read_in_bounded_time():
    """Each part's Content-Type is asked for several times and was parsed anew each time (500 parts: 30 s)."""
    part = b"--b\r\nContent-Type: text/plain" + b"; a=b" * 390 + b"\r\n\r\nOpen.\r\n"
    mail, _ = read_bounded(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * 498 + b"--b--\r\n")
    assert mail.text.startswith("Open.")


REFERENCE_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE)
REFERENCE_DELIMITER = re.compile(rb"^--([^\r\n]{1,200}?)(?:--)?[ \t]*\r?$", re.MULTILINE)


def _count_by_regex_scan(raw: bytes) -> int:
    """count_mime_parts as it was first written: two whole-message regular-expression scans (the reference)."""
    boundaries = {a or b for a, b in REFERENCE_BOUNDARY.findall(raw)}
    if not boundaries:
        return 1
    return sum(1 for token in REFERENCE_DELIMITER.findall(raw) if token in boundaries or token[:-2] in boundaries)


@pytest.mark.parametrize("chunk", range(2))
def test_count_mime_parts_agrees_with_the_regular_expression_scan(chunk):
    """count_mime_parts finds lines with bytes.find (a 1 MB mail: 12 ms of the event loop's time went to the
    regular expressions); it must count exactly what the plain scan counts."""
    from messaging.intake.smtp.parse import declared_boundaries

    edge = [b"", b"--", b"--x\r\n", b"boundary=x\n--x\n--x--", b'BOUNDARY="ab"\n\n--ab\nhi\n--ab--\n', b"\n--a\n"]
    mails = [generate_mail(random.Random(seed)) for seed in range(chunk * 2500, (chunk + 1) * 2500)]
    for raw in [*edge, *FIXTURE_MAILS, *mails]:
        assert count_mime_parts(raw) == _count_by_regex_scan(raw), raw[:200]
        assert declared_boundaries(raw) == {a or b for a, b in REFERENCE_BOUNDARY.findall(raw)}


def _parsed(raw: bytes):
    from messaging.intake.smtp.parse import parse_inbound

    try:
        return parse_inbound(raw)
    except MailParseError as exc:
        return ("MailParseError", str(exc))


@pytest.mark.parametrize("chunk", range(2))
def test_emptied_attachment_bodies_never_change_what_is_read(chunk, monkeypatch):
    """Every mail, however small, its attachments emptied before the parse (as mail over HOLLOW_ABOVE is),
    reads exactly as when parsed whole: fixtures, mutated fixtures and generated trees."""
    from messaging.intake.smtp import parse

    mails = [generate_mail(random.Random(seed)) for seed in range(chunk * 2500, (chunk + 1) * 2500)]
    emptied = 0
    for raw in [*FIXTURE_MAILS, *mails]:
        monkeypatch.setattr(parse, "HOLLOW_ABOVE", 10**12)
        whole = _parsed(raw)
        monkeypatch.setattr(parse, "HOLLOW_ABOVE", 0)
        monkeypatch.setattr(parse, "HOLLOW_PART_MIN", 0)
        emptied += parse.without_attachment_bodies(raw) != raw
        assert _parsed(raw) == whole, raw[:300]
    assert emptied > 20, "the generated mail has attachments to empty"
