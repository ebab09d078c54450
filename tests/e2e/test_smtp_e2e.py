"""Inbound SMTP on the real stack, as real mail servers (and abusive clients) use it: a long-line HTML mail,
an empty DATA, and a slowloris client that holds every session it may."""

from __future__ import annotations

import smtplib
import socket

import pytest

from .conftest import device_texts, wait_until

pytestmark = pytest.mark.e2e

SLOW_CLIENT = "127.0.0.2"  # loopback: the whole 127/8 range reaches the listener on 127.0.0.1


def smtp(e2e) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", e2e.config.smtp_listen_port, timeout=30)


def stored_for(user) -> list:
    from web.delivery.models import Message

    return list(Message.objects.filter(user=user))


def test_a_long_line_html_mail_reaches_the_device(e2e, new_user):
    user = new_user()
    device = user.devices.get()
    html = "<html><body><p>" + "Trail report from the col " * 280 + "</p></body></html>"  # one line
    assert len(html) > 7_000
    raw = (
        f"From: Amy <amy@example.org>\r\nTo: {user.username}@beaver.test\r\nSubject: Conditions\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
    )
    with smtp(e2e) as s:
        s.ehlo()
        s.mail("amy@example.org")
        assert s.rcpt(f"{user.username}@beaver.test")[0] == 250
        code, reply = s.data(raw.encode())
    assert code == 250, reply
    texts = wait_until(lambda: device_texts(e2e, device.device_id), what="the HTML mail at the device")
    assert "Trail report from the col" in "".join(texts) and "<p>" not in "".join(texts)


def test_empty_data_is_answered_554_and_nothing_is_stored(e2e, new_user):
    user = new_user()
    with smtp(e2e) as s:
        s.ehlo()
        s.mail("amy@example.org")
        assert s.rcpt(f"{user.username}@beaver.test")[0] == 250
        code, reply = s.data(b"")
    assert code == 554 and reply.startswith(b"5.6.0"), reply
    assert b"Error" not in reply and b"Traceback" not in reply
    assert stored_for(user) == []


def connect_from(address: str, port: int) -> tuple[socket.socket, bytes]:
    sock = socket.socket()
    sock.settimeout(10)
    try:
        sock.bind((address, 0))
        sock.connect(("127.0.0.1", port))
        return sock, sock.recv(1024)
    except BaseException:
        sock.close()
        raise


def test_a_slowloris_client_is_capped_and_never_shuts_out_other_senders(e2e, new_user):
    """A client opens as many sessions as it may and dribbles bytes without ever finishing a command. Each
    mail server takes at most SMTP_MAX_SESSIONS_PER_CLIENT of them (the kernel spreads connections over the
    mail servers sharing the port), its next session is answered 421 4.7.0, and a normal sender from another
    address still delivers meanwhile."""
    config = e2e.config
    port = config.smtp_listen_port
    user = new_user()
    device = user.devices.get()
    capacity = config.smtp_max_sessions_per_client * config.pool_size  # one mail server per pool member
    slow: list[socket.socket] = []
    try:
        attempts = 0
        while len(slow) < capacity:  # a connection that lands on an already full mail server is turned away
            attempts += 1
            assert attempts <= capacity * 20, f"only {len(slow)} of {capacity} slow sessions were accepted"
            sock, greeting = connect_from(SLOW_CLIENT, port)
            if greeting.startswith(b"220"):
                sock.sendall(b"EHL")  # a command that never ends
                slow.append(sock)
            else:
                assert greeting.startswith(b"421 4.7.0"), greeting
                sock.close()
        for sock in slow:
            sock.sendall(b"O")  # still dribbling: one byte, no end of line
        extra, greeting = connect_from(SLOW_CLIENT, port)
        extra.close()
        assert greeting.startswith(b"421 4.7.0"), greeting
        with smtp(e2e) as s:
            s.ehlo()
            s.mail("amy@example.org")
            assert s.rcpt(f"{user.username}@beaver.test")[0] == 250
            code, reply = s.data(
                f"From: amy@example.org\r\nTo: {user.username}@beaver.test\r\nSubject: Hut\r\n\r\nOpen.\r\n".encode()
            )
        assert code == 250, reply
        wait_until(lambda: device_texts(e2e, device.device_id), what="the normal sender's mail at the device")
    finally:
        for sock in slow:
            sock.close()
    wait_until(  # the slow sessions are gone, so later tests start with every slot free
        lambda: all(st["sessions"] == 0 for st in mail_server_stats(e2e)), what="slow sessions closed"
    )


def mail_server_stats(e2e) -> list[dict]:
    import ray

    from messaging.runtime.pool import member_name

    return [
        ray.get(ray.get_actor(member_name("courier", i), namespace=e2e.config.ray_namespace).stats.remote())
        for i in range(e2e.config.pool_size)
    ]
