"""The mail server's SMTP decisions over a real socket, without Ray.

The mail server stores with the real user desk (``LocalUsers``, the real database) as in production; the sender
pools it kicks are recorders, so this test is about the mail server alone. The end-to-end tests run the senders.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from email.message import EmailMessage

import pytest
from django.db import OperationalError

from messaging.intake.smtp.server import MailHandler, idempotency_key, mailbox_of, smtp_protocol
from messaging.intake.user_store import LocalUsers, UserStore
from messaging.runtime.config import Config
from messaging.runtime.pool import stable_index
from tests.waiting import wait_until
from web.delivery.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


class SwitchableUsers(LocalUsers):
    """The real user desk; ``down`` makes every store fail as a database gone away would."""

    down = False
    gate: threading.Event | None = None  # set: every store waits for it to open (a database that hangs)

    async def acall(self, idx, method, *args, timeout=None):
        if self.down:
            raise OperationalError("could not connect to server")
        return await super().acall(idx, method, *args, timeout=timeout)

    def call(self, idx, method, *args, timeout=None):
        if self.down:
            raise OperationalError("could not connect to server")
        if self.gate is not None:
            assert self.gate.wait(30), "the test never let the store go on"
        return super().call(idx, method, *args, timeout=timeout)


@pytest.fixture
def serve(dns):
    """Start a mail server (real socket, real handler) with config overrides; returns (port, handler, pool)."""
    started = []

    def start(user_pools=None, **overrides):
        overrides.setdefault("dns_nameservers", dns.nameservers)
        config = Config(email_domain="beaver.test", smtp_max_message_size=20_000, **overrides)
        pool = SwitchableUsers(config, user_pools or {})
        handler = MailHandler(config, pool)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        listening = asyncio.run_coroutine_threadsafe(
            loop.create_server(lambda: smtp_protocol(handler, config), host="127.0.0.1", port=0), loop
        ).result(10)
        started.append((loop, thread, listening))
        return listening.sockets[0].getsockname()[1], handler, pool

    yield start
    for loop, thread, listening in started:
        loop.call_soon_threadsafe(listening.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def server(serve):
    return serve()


def mail(to, body="Snow at the pass.", subject="Trail", sender="amy@example.org", message_id=None):
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    if message_id:
        m["Message-ID"] = message_id
    m.set_content(body)
    return m


def test_accepts_and_stores_before_250(server, make_user):
    port, handler, _ = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        refused = s.send_message(mail(f"{user.username}@beaver.test"))
    assert refused == {}
    row = Message.objects.get(user=user)
    assert row.status == "received" and row.sender == "amy@example.org" and "Snow at the pass." in row.text


class KickRecorder:
    """A sender pool (the satellites): records the kicks it is sent."""

    kind, size = "satellite", 2

    def __init__(self):
        self.kicks: list[tuple] = []

    def notify(self, idx, method, *args):
        self.kicks.append((idx, method, *args))
        return True


def test_the_mail_server_kicks_the_users_satellite_once_the_mail_is_stored(serve, make_user):
    """The user desk names the sender; the mail server kicks it once the mail is stored (gathered kicks)."""
    satellites = KickRecorder()
    port, handler, pool = serve(user_pools={"satellite": satellites})
    assert isinstance(handler.store, UserStore)
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.send_message(mail(f"{user.username}@beaver.test"))
    row = Message.objects.get(user=user)
    deadline = time.monotonic() + 10
    while not satellites.kicks and time.monotonic() < deadline:  # made on the server's loop after the 250
        time.sleep(0.01)
    assert satellites.kicks == [(stable_index(f"user:{user.id}", 2), "deliver_many", [row.id])]


def test_a_retried_mail_is_stored_once(server, make_user):
    port, _, _ = server
    user = make_user()
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.send_message(mail(f"{user.username}@beaver.test", message_id="<same@example.org>"))
    assert Message.objects.filter(user=user).count() == 1


def test_relay_unknown_and_blocked_are_refused_at_rcpt(server, make_user):
    port, _, _ = server
    user = make_user(blocked=["pest@example.org"])
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        code, text = s.rcpt("someone@elsewhere.test")
        assert code == 550 and b"5.7.1" in text
        code, text = s.rcpt("ghost@beaver.test")
        assert code == 550 and b"5.1.1" in text
        s.rset()
        s.mail("pest@example.org")
        code, text = s.rcpt(f"{user.username}@beaver.test")
        assert code == 550 and b"5.7.1" in text
    assert not Message.objects.exists()


def test_quota_refuses_at_data(server, make_user):
    port, _, _ = server
    user = make_user(quota=0)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s, pytest.raises(smtplib.SMTPDataError) as err:
        s.send_message(mail(f"{user.username}@beaver.test"))
    assert err.value.smtp_code == 552
    assert Message.objects.get(user=user).status == "rejected"


def test_too_large_is_552(server, make_user):
    port, _, _ = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s, pytest.raises(smtplib.SMTPException) as err:
        s.send_message(mail(f"{user.username}@beaver.test", body="x" * 50_000))
    assert "552" in str(err.value)
    assert not Message.objects.filter(user=user).exists()


def test_a_store_that_fails_means_451_not_250(server, make_user):
    port, _, pool = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        assert s.rcpt(f"{user.username}@beaver.test")[0] == 250
        pool.down = True
        code, _ = s.data(mail(f"{user.username}@beaver.test").as_bytes())
    assert code == 451
    assert not Message.objects.filter(user=user).exists()


def test_a_store_slower_than_its_timeout_means_451_and_the_late_store_is_not_stored_twice(serve, make_user):
    """SMTP_STORE_TIMEOUT: a store that hangs is answered 451 in time (the sender retries); when it goes through
    after all, the retry finds the copy stored and the mail is stored once."""
    port, handler, pool = serve(smtp_store_timeout=0.5)
    user = make_user()
    pool.gate = threading.Event()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        assert s.rcpt(f"{user.username}@beaver.test")[0] == 250
        code, reply = s.data(mail(f"{user.username}@beaver.test", message_id="<late@example.org>").as_bytes())
    assert code == 451, reply
    pool.gate.set()
    wait_until(lambda: Message.objects.filter(user=user).exists(), what="the late store to go through")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        assert s.send_message(mail(f"{user.username}@beaver.test", message_id="<late@example.org>")) == {}
    assert Message.objects.filter(user=user).count() == 1


def test_draining_turns_new_sessions_away_with_421(server, make_user):
    port, handler, _ = server
    handler.draining = True
    with pytest.raises(smtplib.SMTPConnectError) as err:
        smtplib.SMTP("127.0.0.1", port, timeout=10)
    assert err.value.smtp_code == 421


def test_idempotency_key():
    assert idempotency_key(b"x", "<a@b>", "Bob@X") == "smtp:<a@b>:bob@x"
    assert idempotency_key(b"x", "", "bob@x") != idempotency_key(b"y", "", "bob@x")
    assert idempotency_key(b"x", "", "bob@x") == idempotency_key(b"x", "", "bob@x")


def test_idempotency_key_never_cuts_a_long_message_id():
    long_id = "<" + "x" * 300 + "@example.org>"
    keys = {idempotency_key(b"x", long_id, mailbox) for mailbox in ("ann@beaver.test", "bob@beaver.test")}
    assert len(keys) == 2 and all(len(k) <= 255 for k in keys)
    assert idempotency_key(b"x", long_id, "ann@beaver.test") == idempotency_key(b"y", long_id, "ann@beaver.test")
    assert len(idempotency_key(b"x", "<a@b>", "a" * 64 + "@" + "d" * 250)) <= 255


def test_a_long_message_id_reaches_every_recipient(server, make_user):
    port, _, _ = server
    ann, bob = make_user(), make_user()
    to = f"{ann.username}@beaver.test, {bob.username}@beaver.test"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        assert s.send_message(mail(to, message_id="<" + "x" * 300 + "@example.org>")) == {}
    assert Message.objects.filter(user=ann).count() == 1
    assert Message.objects.filter(user=bob).count() == 1


def test_one_copy_per_mailbox_however_it_is_spelled(server, make_user):
    port, _, _ = server
    user = make_user()
    name = user.username
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        for n in range(60):
            assert s.rcpt(f"{name}+{n}@beaver.test")[0] == 250
        assert s.rcpt(f"{name.upper()}@BEAVER.test")[0] == 250
        assert s.data(mail(f"{name}@beaver.test").as_bytes())[0] == 250
    assert Message.objects.filter(user=user).count() == 1


def test_recipients_past_the_cap_get_452(server, make_user):
    port, handler, _ = server
    cap = handler.config.smtp_max_recipients
    users = [make_user() for _ in range(cap + 1)]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        for user in users[:cap]:
            assert s.rcpt(f"{user.username}@beaver.test")[0] == 250
        code, text = s.rcpt(f"{users[cap].username}@beaver.test")
        assert code == 452 and b"4.5.3" in text
        assert s.data(mail("many@beaver.test").as_bytes())[0] == 250
    assert Message.objects.count() == cap


def test_only_what_a_device_can_receive_is_stored(server, make_user):
    port, handler, _ = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.send_message(mail(f"{user.username}@beaver.test", body="word " * 3_000))
    text = Message.objects.get(user=user).text
    from messaging.satellite.networks import LARGEST_PACKET_BUDGET  # 270: a RockBLOCK MT message

    assert 0 < len(text.encode()) <= handler.config.max_packets * LARGEST_PACKET_BUDGET


def raw_session(port: int, lines: list[bytes]) -> list[bytes]:
    """Speak SMTP line by line with bytes smtplib would not send; returns each reply's first line."""
    import socket

    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        replies.append(reader.readline())
        for line in lines:
            sock.sendall(line + b"\r\n")
            reply = reader.readline()
            while reply[3:4] == b"-":
                reply = reader.readline()
            replies.append(reply)
    return replies


def test_undecodable_and_nul_bytes_never_fail_the_mail(server, make_user):
    """A lone surrogate from a non-UTF-8 MAIL FROM is stored as U+FFFD; a NUL in a recipient is no mailbox."""
    port, _, _ = server
    user = make_user()
    body = f"To: {user.username}@beaver.test\r\nSubject: hi\r\n\r\nSnow.\r\n.".encode()
    replies = raw_session(
        port,
        [
            b"EHLO client.test",
            b"MAIL FROM:<\xff@example.org> SMTPUTF8",
            b"RCPT TO:<de\x00mo@beaver.test>",
            f"RCPT TO:<{user.username}@beaver.test>".encode(),
            b"DATA",
            body,
            b"QUIT",
        ],
    )
    codes = [r[:3] for r in replies]
    assert codes[2:7] == [b"250", b"550", b"250", b"354", b"250"], replies
    row = Message.objects.get(user=user)
    assert (row.status, row.sender) == ("received", "\ufffd@example.org")


def test_a_7000_byte_line_is_taken_not_bounced(server, make_user):
    port, _, _ = server
    user = make_user()
    html = "<p>" + "Trail report " * 540 + "</p>"  # one line of about 7,000 bytes, as generated HTML mail has
    assert len(html) > 7000
    raw = (
        f"From: amy@example.org\r\nTo: {user.username}@beaver.test\r\nSubject: Long\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        s.rcpt(f"{user.username}@beaver.test")
        code, _ = s.data(raw.encode())
    assert code == 250
    assert "Trail report" in Message.objects.get(user=user).text


def test_bare_lf_and_8bit_bodies_are_taken(server, make_user):
    port, _, _ = server
    user = make_user()
    raw = f"From: amy@example.org\nTo: {user.username}@beaver.test\nSubject: 8bit\n\nSchnee am Pass, Grüße\n".encode()
    replies = raw_session(
        port,
        [
            b"EHLO client.test",
            b"MAIL FROM:<amy@example.org> BODY=8BITMIME",
            f"RCPT TO:<{user.username}@beaver.test>".encode(),
            b"DATA",
            raw + b"\r\n.",
            b"QUIT",
        ],
    )
    assert [r[:3] for r in replies[2:6]] == [b"250", b"250", b"354", b"250"], replies
    assert "Grüße" in Message.objects.get(user=user).text


def test_empty_data_is_a_clear_554_not_a_python_error(server, make_user):
    port, _, _ = server
    user = make_user()
    replies = raw_session(
        port,
        [b"EHLO client.test", b"MAIL FROM:<amy@example.org>", f"RCPT TO:<{user.username}@beaver.test>".encode()]
        + [b"DATA", b"."],
    )
    assert replies[-1].startswith(b"554 5.6.0") and b"Error" not in replies[-1], replies
    assert not Message.objects.filter(user=user).exists()


def test_an_unexpected_handler_error_is_a_temporary_451(server):
    _, handler, _ = server
    reply = asyncio.run(handler.handle_exception(KeyError("boom")))
    assert reply.startswith("451 4.3.0") and "KeyError" not in reply


def test_too_many_mime_parts_are_refused_before_parsing(server, make_user):
    port, handler, _ = server
    user = make_user()
    parts = "".join("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(handler.config.smtp_max_mime_parts))
    raw = f"To: {user.username}@beaver.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n{parts}--b--\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        s.rcpt(f"{user.username}@beaver.test")
        code, text = s.data(raw.encode())
    assert code == 554 and b"MIME parts" in text
    assert not Message.objects.filter(user=user).exists()


def test_deep_nesting_is_read_up_to_the_cap():
    from messaging.intake.smtp.parse import MAX_MIME_DEPTH, parse_inbound

    raw = "Subject: deep\r\n"
    for level in range(MAX_MIME_DEPTH + 10):
        raw += f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'
    raw += "Content-Type: text/plain\r\n\r\nburied\r\n"
    mail = parse_inbound(raw.encode())
    assert "deeply nested part" in mail.dropped_attachments


def connect_from(address: str, port: int):
    import socket

    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_slow_sessions_from_one_client_never_shut_out_another(serve, make_user):
    """Slowloris: a client holds as many sessions as it may, dribbling bytes and never finishing a command.
    Its next session gets 421; a normal sender from another address still delivers; the slow sessions are
    closed by the idle timeout."""
    port, _, _ = serve(smtp_max_sessions_per_client=5, smtp_idle_timeout=2.0)
    user = make_user()
    slow = [connect_from("127.0.0.2", port) for _ in range(5)]
    try:
        for sock in slow:
            assert sock.recv(1024).startswith(b"220")
            sock.sendall(b"EHL")  # never finishes the line
        extra = connect_from("127.0.0.2", port)
        assert extra.recv(1024).startswith(b"421 4.7.0")
        extra.close()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            assert s.send_message(mail(f"{user.username}@beaver.test")) == {}
        assert Message.objects.filter(user=user).count() == 1
        for sock in slow:  # each is closed by the idle timeout: recv returns b""
            data = b"x"
            while data:
                data = sock.recv(1024)
    finally:
        for sock in slow:
            sock.close()


def test_the_idle_timeout_counts_from_the_last_command(serve):
    """A session that keeps sending commands outlives SMTP_IDLE_TIMEOUT; once it stops, it is closed about that
    long after its last command, not before."""
    port, _, _ = serve(smtp_idle_timeout=1.0)
    sock = connect_from("127.0.0.1", port)
    try:
        assert sock.recv(1024).startswith(b"220")
        opened = last = time.monotonic()
        while last - opened < 2.5:  # commands every 0.3 s, over two and a half timeouts
            time.sleep(0.3)  # the client's pace: what the timeout is about
            last = time.monotonic()
            sock.sendall(b"NOOP\r\n")
            assert sock.recv(1024).startswith(b"250"), "closed while commands kept coming"
        data = b"x"
        while data:  # recv returns b"" once the server closed the session
            data = sock.recv(1024)
        assert 0.9 <= time.monotonic() - last, "closed before the idle timeout after the last command"
    finally:
        sock.close()


def test_one_rate_limited_recipient_makes_the_whole_mail_come_again(serve, make_user):
    """DATA has one answer for all recipients: when one copy could not be stored (its sender is over the
    hourly limit for that mailbox) the answer is 451, never 250; the copies stored meanwhile are not stored
    twice when the sender tries again."""
    port, _, _ = serve(inbound_per_sender_per_hour=1, user_cache_seconds=600)  # RCPT answers from its recent yes
    ann, bob = make_user(), make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        assert s.send_message(mail(f"{ann.username}@beaver.test")) == {}
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s, pytest.raises(smtplib.SMTPDataError) as err:
        s.send_message(mail(f"{ann.username}@beaver.test, {bob.username}@beaver.test", message_id="<two@example.org>"))
    assert err.value.smtp_code == 451
    assert Message.objects.filter(user=ann).count() == 1, "the limited copy is not stored"
    assert Message.objects.filter(user=bob).count() == 1, "the other copy is, once"


def test_a_from_forged_under_p_reject_is_refused_and_not_stored(server, dns, make_user):
    port, _, _ = server
    user = make_user()
    dns.add_txt("_dmarc.bank.test", "v=DMARC1; p=reject")
    dns.add_txt("bank.test", "v=spf1 ip4:192.0.2.1 -all")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s, pytest.raises(smtplib.SMTPDataError) as err:
        s.send_message(mail(f"{user.username}@beaver.test", sender="ceo@bank.test"), from_addr="ceo@bank.test")
    assert err.value.smtp_code == 550 and b"5.7.1" in err.value.smtp_error
    assert not Message.objects.filter(user=user).exists()


def test_an_spf_passing_mail_is_stored_with_its_verdict(server, dns, make_user):
    port, _, _ = server
    user = make_user()
    dns.add_txt("_dmarc.good.test", "v=DMARC1; p=reject")
    dns.add_txt("good.test", "v=spf1 ip4:127.0.0.1 -all")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        assert s.send_message(mail(f"{user.username}@beaver.test", sender="amy@good.test")) == {}
    row = Message.objects.get(user=user)
    assert row.status == "received"
    assert row.authentication.startswith("spf=pass smtp.mailfrom=good.test") and "dmarc=pass" in row.authentication


def test_a_block_holds_on_the_from_and_on_the_vouched_sender(server, dns, make_user):
    """A block holds on the From and on the address sender authentication vouches for (the envelope sender,
    unless DMARC passed): neither a blocked From with another envelope nor a blocked envelope gets through."""
    port, _, _ = server
    user = make_user(blocked=["pest@nodmarc.test"])
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s, pytest.raises(smtplib.SMTPDataError) as err:
        s.send_message(mail(f"{user.username}@beaver.test", sender="pest@nodmarc.test"), from_addr="bounce@else.test")
    assert err.value.smtp_code == 550
    row = Message.objects.get(user=user)
    assert row.status == "rejected" and row.authentication.startswith("spf=none")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("pest@nodmarc.test")
        assert s.rcpt(f"{user.username}@beaver.test")[0] == 550, "the envelope sender is refused at RCPT already"


def test_a_parser_failure_is_a_permanent_554_not_a_451_retried_forever(server, make_user, monkeypatch):
    """Parsing is deterministic: should it ever raise something unexpected, the same bytes fail again on every
    retry, so the answer is permanent (the sender learns), never a 451 that keeps the mail coming back."""
    import messaging.intake.smtp.server as mailserver

    def broken(raw, limit):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(mailserver, "read_mail", broken)
    port, _, _ = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s, pytest.raises(smtplib.SMTPDataError) as err:
        s.send_message(mail(f"{user.username}@beaver.test"))
    assert err.value.smtp_code == 554 and b"RecursionError" not in err.value.smtp_error
    assert not Message.objects.filter(user=user).exists()


def test_an_unreadable_message_is_refused_without_sender_checks(server, dns, make_user):
    """Parsing comes first in the message's worker thread: mail that cannot be read costs no DNS lookups."""
    port, _, _ = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("mx.sender.test")
        s.mail("amy@sender.test")
        s.rcpt(f"{user.username}@beaver.test")
        code, text = s.data(b"")
    assert code == 554 and b"could not be read" in text
    assert dns.queries == [], "no SPF or DMARC lookup for a message refused anyway"


def test_mailbox_of():
    assert mailbox_of("Demo+trail@Beaver.Test", "beaver.test") == "demo@beaver.test"
    assert mailbox_of("<DEMO@beaver.test>", "beaver.test") == "demo@beaver.test"
    assert mailbox_of("demo@elsewhere.test", "beaver.test") is None
    assert mailbox_of("not an address", "beaver.test") is None


def test_a_monthly_quota_holds_across_two_mail_servers_each_with_its_own_cache(serve, make_user):
    """Two mail servers (each its own user desk and cache) take mail for one mailbox through real SMTP sessions:
    the quota is counted again where the mail is stored, so the second server's stale count does not pass it."""
    here, _, _ = serve(user_cache_seconds=60)
    there, _, _ = serve(user_cache_seconds=60)
    user = make_user(quota=2)
    to = f"{user.username}@beaver.test"
    for port, n in ((here, 1), (there, 2)):  # each server has counted the mailbox once and accepted once
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            assert s.send_message(mail(to, message_id=f"<q{n}@example.org>")) == {}
    with smtplib.SMTP("127.0.0.1", here, timeout=10) as s, pytest.raises(smtplib.SMTPDataError) as err:
        s.send_message(mail(to, message_id="<q3@example.org>"))  # here's cache still says 1 this month
    assert err.value.smtp_code == 552
    assert Message.objects.filter(user=user).exclude(status="rejected").count() == 2


def outcome(parse, path):
    """What ``parse(path)`` returns, or the type of what it raises (aiosmtpd's parse raises on a few paths)."""
    try:
        return parse(path)
    except Exception as exc:
        return type(exc)


def test_a_plain_path_is_parsed_as_aiosmtpd_parses_it():
    """The mail server's own parse of MAIL and RCPT paths gives exactly aiosmtpd's results, on plain paths (its
    fast form) and on every other form (handed to aiosmtpd), with and without a local-part limit."""
    import random

    from aiosmtpd.smtp import SMTP

    from messaging.intake.smtp.server import DrainableSMTP, plain_path

    rng = random.Random(15)
    locals_ = [
        "amy",
        "a.b",
        "a+tag",
        "o'neil",
        "x_y-z",
        "a..b",
        ".a",
        "a.",
        '"a b"',
        "ü",
        "a(b)",
        "a!#$%&*/=?^`{|}~",
        "A",
    ]
    domains = ["example.org", "b.c", "EXAMPLE.ORG", "a-b.c", "b.", "[1.2.3.4]", "ex ample.org", "bücher.de", "x", ""]
    tails = ["", " SIZE=123", "  BODY=8BITMIME SMTPUTF8", "\tSIZE=1 ", "x", " (comment) SIZE=1", "(c)", "   ", " ="]
    fronts = ["<{}>", " <{}>", "{}", "<{}", "<@route:{}>"]
    paths = ["", "<>", "<> SIZE=1"]
    for _ in range(2000):
        path = rng.choice(fronts).format(f"{rng.choice(locals_)}@{rng.choice(domains)}") + rng.choice(tails)
        paths.append("x" * rng.choice([0, 70]) + path if rng.random() < 0.1 else path)
    for limit in (0, 64):
        ours, theirs = object.__new__(DrainableSMTP), object.__new__(SMTP)
        ours.local_part_limit = theirs.local_part_limit = limit
        for path in paths:
            theirs_outcome = outcome(theirs._getaddr, path)
            if isinstance(theirs_outcome, type):  # aiosmtpd's parser failed: to us a malformed path
                assert ours._getaddr(path) == (None, None), path
            else:
                assert ours._getaddr(path) == theirs_outcome, path
    assert plain_path("<amy@example.org>") == ("amy@example.org", "")
    assert plain_path("<a.b+tag@mail.example.org> SIZE=1024 BODY=8BITMIME") == (
        "a.b+tag@mail.example.org",
        "SIZE=1024 BODY=8BITMIME",
    )


def test_a_cut_off_path_is_malformed_not_a_temporary_error(server):
    """aiosmtpd's parser fails on a path cut off after ``@``; that is the client's error (553), not ours (a 451
    would have it retry the same thing for days)."""
    port, _, _ = server
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<amy@")[0] == 553
        assert s.docmd("MAIL FROM:<amy@example.org>")[0] == 250
        assert s.docmd("RCPT TO:<a@")[0] == 553
