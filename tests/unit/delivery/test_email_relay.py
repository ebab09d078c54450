"""Outbound email: building (pure) and sending over a real socket to the local relay sink."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

import pytest

from messaging.core.errors import PermanentDeliveryError, TemporaryDeliveryError
from messaging.delivery.email_relay import (
    EMPTY_SUBJECT,
    SUBJECT_MAX,
    InvalidRecipient,
    RelaySessions,
    build_outbound,
    classify_smtp_code,
    message_id,
    subject_from_text,
)
from messaging.sandbox.relay_sink import RelaySink, read_records

DOMAIN = "beaver.test"


def outbound(text: str = "Made camp at the lake", to: str = "mum@example.org", **kw):
    return build_outbound(from_addr=f"alice@{DOMAIN}", to_addr=to, text=text, domain=DOMAIN, **kw)


@pytest.fixture
def sink(tmp_path):
    relay = RelaySink(record_path=tmp_path / "relay.jsonl").start()
    yield relay
    relay.stop()


def send_once(msg, *, host: str, port: int, timeout: float = 10, **kw) -> str:
    """One message on a session of its own (none kept)."""
    return RelaySessions(host, port, timeout=timeout, keep=0, **kw).send(msg)


def send(msg, relay: RelaySink, **kw) -> str:
    return send_once(msg, host="127.0.0.1", port=relay.port, timeout=10, **kw)


# --- building --------------------------------------------------------------------------------------


def test_build_outbound_headers_and_body():
    text = "Made camp at the lake. Grüße 🏕️\nAll well."
    msg = outbound(text)
    assert msg["From"] == f"alice@{DOMAIN}"
    assert msg["To"] == "mum@example.org"
    assert msg["Subject"] == "Made camp at the lake. Grüße 🏕️ All well."
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg["Message-ID"].endswith(f"@{DOMAIN}>")
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    reparsed = BytesParser(policy=policy.default).parsebytes(msg.as_bytes())
    assert reparsed.get_content() == text + "\n"


def test_subject_is_first_words_on_one_line():
    text = "word " * 40
    subject = subject_from_text(text)
    assert len(subject) <= SUBJECT_MAX and subject.endswith("…") and "\n" not in subject
    assert text.startswith(subject[:-1])
    assert subject_from_text("  \n ") == EMPTY_SUBJECT
    assert subject_from_text("a" * 100) == "a" * (SUBJECT_MAX - 1) + "…"


def test_text_cannot_inject_headers():
    msg = outbound("hello\r\nBcc: evil@attacker.example\r\nX-Evil: 1\n\nbody")
    wire = msg.as_bytes(policy=policy.SMTP)
    reparsed = BytesParser(policy=policy.default).parsebytes(wire)
    assert "Bcc" not in reparsed and "X-Evil" not in reparsed
    assert reparsed["Subject"] == "hello Bcc: evil@attacker.example X-Evil: 1 body"
    assert sorted(reparsed.keys()) == sorted(
        ["From", "To", "Subject", "Date", "Message-ID", "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
    )


@pytest.mark.parametrize(
    "to",
    [
        "mum@example.org\r\nBcc: evil@attacker.example",
        "mum@example.org\nX: y",
        "a@example.org, b@example.org",
        "no-at-sign",
        "two words@example.org",
        "a@localhost",
        "a@-bad-.example",
        "a@example..org",
        "ü@example.org",
        "a@[127.0.0.1]",
        "",
    ],
)
def test_invalid_recipients_are_rejected(to):
    with pytest.raises(InvalidRecipient):
        outbound(to=to)


def test_bad_sender_is_a_value_error_not_a_recipient_error():
    with pytest.raises(ValueError) as caught:
        build_outbound(
            from_addr="alice@beaver.test\r\nBcc: x@y.example", to_addr="a@b.example", text="x", domain=DOMAIN
        )
    assert not isinstance(caught.value, InvalidRecipient)


def test_display_name_and_idn_recipient():
    msg = outbound(to="Mum <mum@bücher.example>")
    assert msg["To"].addresses[0].addr_spec == "mum@xn--bcher-kva.example"
    assert msg["To"].addresses[0].display_name == "Mum"


def test_a_remembered_address_header_gives_the_same_wire_form_every_time():
    """From and To headers are made once per address and reused: folding one (long, encoded words) must not change
    it, so the tenth mail to someone reads as the first did."""
    long_name = "Jörg Müller-Lüdenscheidt von und zu Großvaterländischen Wanderfreunden <joerg@bücher.example>"
    wires = set()
    for _ in range(3):
        msg = outbound(to=long_name, message_id_hint="k1")
        del msg["Date"]
        wires.add(msg.as_bytes(policy=policy.SMTP))
    assert len(wires) == 1
    wire = wires.pop()
    assert b"=?utf-8?" in wire and b"\r\n =?utf-8?" in wire, "encoded words, folded over two lines"
    assert (
        BytesParser(policy=policy.default).parsebytes(wire)["To"].addresses[0].addr_spec
        == "joerg@xn--bcher-kva.example"
    )


def test_the_build_policy_makes_each_header_class_once_and_the_same_mail_as_the_default():
    from messaging.delivery.email_relay import BUILD_POLICY

    assert BUILD_POLICY.header_factory["Subject"] is BUILD_POLICY.header_factory["subject"]
    msg = outbound("Grüße vom See 🏕️ " * 8, to="Mum Müller <mum@example.org>", message_id_hint="k2")
    again = EmailMessage(policy=policy.default)
    for name, value in msg.items():
        if name.lower() not in ("content-type", "content-transfer-encoding", "mime-version"):
            again[name] = str(value)
    again.set_content(msg.get_content(), charset="utf-8")
    assert msg.as_bytes(policy=policy.SMTP) == again.as_bytes(policy=policy.SMTP)


def test_message_id_from_hint_is_stable_and_distinct():
    first = message_id(DOMAIN, "hive:123:0")
    assert first == message_id(DOMAIN, "hive:123:0")
    assert first != message_id(DOMAIN, "hive.123.0")
    assert first.startswith("<hive.123.0.") and first.endswith(f"@{DOMAIN}>")
    assert message_id(DOMAIN) != message_id(DOMAIN)
    assert outbound(message_id_hint="k1")["Message-ID"] == message_id(DOMAIN, "k1")


@pytest.mark.parametrize(
    ("code", "kind"),
    [(421, TemporaryDeliveryError), (451, TemporaryDeliveryError), (535, TemporaryDeliveryError)]
    + [(550, PermanentDeliveryError), (552, PermanentDeliveryError), (554, PermanentDeliveryError)],
)
def test_classify_smtp_code(code, kind):
    assert classify_smtp_code(code) is kind


# --- sending over a real socket --------------------------------------------------------------------


def test_send_reaches_the_relay_with_the_right_envelope_and_headers(sink, tmp_path):
    msg = outbound("Summit reached ✓", message_id_hint="hive:9:0")
    reply = send(msg, sink)
    [record] = sink.messages
    assert reply.endswith(f"queued as {record['queue_id']}")
    assert record["mail_from"] == f"alice@{DOMAIN}"
    assert record["rcpt_tos"] == ["mum@example.org"]
    assert record["headers"]["Message-ID"] == msg["Message-ID"]
    assert record["headers"]["Subject"] == "Summit reached ✓"
    received = BytesParser(policy=policy.default).parsebytes(record["raw"])
    assert received.get_content().splitlines() == ["Summit reached ✓"]  # CRLF on the wire
    [stored] = read_records(tmp_path / "relay.jsonl")
    assert stored["raw"] == record["raw"] and stored["rcpt_tos"] == ["mum@example.org"]


def test_temporary_relay_failure_then_recovery(sink):
    sink.fail_next(1, code=451)
    with pytest.raises(TemporaryDeliveryError):
        send(outbound(), sink)
    assert sink.messages == []
    send(outbound(), sink)
    assert len(sink.messages) == 1


def test_permanent_relay_failure(sink):
    sink.fail_next(1, code=550)
    with pytest.raises(PermanentDeliveryError):
        send(outbound(), sink)
    assert sink.messages == []


def test_failure_at_data_stage(sink):
    sink.fail_next(1, code=452, stage="data")
    with pytest.raises(TemporaryDeliveryError):
        send(outbound(), sink)
    sink.fail_next(1, code=554, stage="data")
    with pytest.raises(PermanentDeliveryError):
        send(outbound(), sink)
    assert sink.messages == []


def test_connection_refused_is_temporary_and_the_sink_comes_back_on_its_port(sink):
    port = sink.port
    sink.down = True
    with pytest.raises(TemporaryDeliveryError):
        send(outbound(), sink)
    sink.down = False
    assert sink.port == port
    send(outbound(), sink)
    assert len(sink.messages) == 1


def test_silent_server_times_out_as_temporary():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the TCP connection but never greets
        with pytest.raises(TemporaryDeliveryError):
            send_once(outbound(), host="127.0.0.1", port=listener.getsockname()[1], timeout=0.5)


def test_auth_and_starttls_problems_are_temporary():
    relay = RelaySink(credentials=("relay-user", "s3cret")).start()
    try:
        send(outbound(), relay, username="relay-user", password="s3cret")
        assert len(relay.messages) == 1
        for kwargs in ({"username": "relay-user", "password": "wrong"}, {}, {"starttls": True}):
            with pytest.raises(TemporaryDeliveryError):
                send(outbound(), relay, **kwargs)
        assert len(relay.messages) == 1
    finally:
        relay.stop()


def test_wait_for_wakes_on_a_new_message_and_times_out_otherwise(sink):
    with pytest.raises(TimeoutError):
        sink.wait_for(lambda msgs: len(msgs) >= 1, timeout=0.2)
    sender = threading.Thread(target=send, args=(outbound(), sink))
    sender.start()
    messages = sink.wait_for(lambda msgs: len(msgs) >= 1, timeout=10)
    sender.join()
    assert messages[0]["rcpt_tos"] == ["mum@example.org"]


def test_relay_sink_runs_as_a_module(tmp_path):
    record = tmp_path / "relay.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "messaging.sandbox.relay_sink", "--port", "0", "--record", str(record)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("relay sink on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        send_once(outbound("from a subprocess"), host="127.0.0.1", port=port, timeout=10)
        [stored] = read_records(record)  # written before the sink answers DATA
        assert stored["headers"]["Subject"] == "from a subprocess"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# --- kept sessions ---------------------------------------------------------------------------------


def test_kept_session_carries_many_messages(sink):
    relay = RelaySessions("127.0.0.1", sink.port, timeout=10)
    for n in range(3):
        assert "queued as" in relay.send(outbound(f"message {n}"))
    assert relay.opened == 1, "one connect and EHLO for all three"
    assert len(sink.messages) == 3
    relay.close()


def test_a_session_the_relay_dropped_is_replaced_without_losing_the_message(sink):
    relay = RelaySessions("127.0.0.1", sink.port, timeout=10)
    relay.send(outbound("before the relay restarts"))
    sink.down = True  # closes the kept session's connection
    sink.down = False
    relay.send(outbound("after the relay restarts"))
    assert relay.opened == 2
    assert sink.messages[-1]["headers"]["Subject"] == "after the relay restarts"


def test_idle_sessions_expire(sink):
    relay = RelaySessions("127.0.0.1", sink.port, timeout=10, idle_seconds=0)
    relay.send(outbound("one"))
    relay.send(outbound("two"))
    assert relay.opened == 2, "a session idle longer than idle_seconds is closed, not reused"


# --- log lines -------------------------------------------------------------------------------------


class _EchoingRelay:
    """Like many real relays: a refusal that names the recipient, an acceptance that names it too."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        return f"250 2.0.0 Ok: queued as Q1 for <{envelope.rcpt_tos[0]}>"


def test_log_lines_and_remote_id_mask_the_addresses_a_relay_echoes_and_keep_the_message_id(caplog):
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(_EchoingRelay(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with caplog.at_level("DEBUG", logger="messaging.delivery.email_relay"):
            ok = outbound(to="margaret.hill@example.org")
            remote_id = send_once(ok, host="127.0.0.1", port=port, timeout=10)
            refused = outbound(to="nobody.here@example.org")
            with pytest.raises(PermanentDeliveryError):
                send_once(refused, host="127.0.0.1", port=port, timeout=10)
    finally:
        controller.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "messaging.delivery.email_relay"]
    assert len(lines) == 2
    text = "\n".join(lines)
    assert "margaret.hill@example.org" not in text and "nobody.here@example.org" not in text
    assert "m***@example.org" in text and "n***@example.org" in text
    assert str(ok["Message-ID"]).strip() in lines[0] and str(refused["Message-ID"]).strip() in lines[1]
    # The reply is the message's remote id, stored and logged by the outbox as sent: masked too.
    assert remote_id == "2.0.0 Ok: queued as Q1 for <m***@example.org>"
