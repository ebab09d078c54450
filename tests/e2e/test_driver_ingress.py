"""runbackend with a local Ray: Serve's HTTP ingress or the mail servers not coming up is one clear line and a clean
exit; a driver stopped with SIGTERM or killed with SIGKILL leaves no process and no port behind, so a fresh start
works.

Each test runs ``manage.py runbackend`` as a subprocess with a Ray of its own (the file's name sorts before the
tests that start the shared session Ray, so the two do not run at once).
"""

from __future__ import annotations

import signal
import socket

import pytest

from .backend_proc import Backend, backend_env, healthz, port_free, smtp_send, stack_ports
from .conftest import wait_until

pytestmark = pytest.mark.e2e


def assert_nothing_left(backend: Backend, ports: list[int]) -> None:
    wait_until(lambda: not backend.survivors(), timeout=60, interval=0.5, what="the stack's processes to end")
    wait_until(lambda: all(port_free(p) for p in ports), timeout=30, interval=0.5, what="the stack's ports to free")


def last_line_with_a_port_taken(tmp_path, env: dict[str, str], port: int, host: str) -> tuple[str, str]:
    """runbackend with another process on ``port`` (bound on ``host``): it must exit non-zero after stopping what it
    started, leaving no process and none of its other ports. Returns its last line and its whole output."""
    squatter = socket.socket()  # "another service" on the port
    squatter.bind((host, port))
    squatter.listen()
    backend = Backend(env, tmp_path / "runbackend.log")
    try:
        code = backend.wait(timeout=240)
        out = backend.output
        assert code != 0, out[-3000:]
        assert "Stopping what was started" in out
        assert_nothing_left(backend, [p for p in stack_ports(env) if p != port])
        return out.strip().splitlines()[-1], out
    finally:
        squatter.close()
        backend.kill_all()


def test_a_taken_haproxy_port_is_one_line_and_an_exit_that_leaves_nothing(tmp_path):
    env = backend_env(tmp_path / "data", SERVE_START_TIMEOUT="25")
    stats = int(env["SERVE_HAPROXY_STATS_PORT"])
    last, out = last_line_with_a_port_taken(tmp_path, env, stats, "127.0.0.1")
    assert "HTTP ingress not answering on 127.0.0.1:" in last, out[-3000:]
    assert f"port {stats} (HAProxy stats) is taken" in last, last


def test_a_taken_smtp_port_is_one_line_and_an_exit_that_leaves_nothing(tmp_path):
    env = backend_env(tmp_path / "data", ACTOR_START_TIMEOUT="15")
    smtp = int(env["SMTP_LISTEN_PORT"])
    last, out = last_line_with_a_port_taken(tmp_path, env, smtp, "")  # on every address
    assert "courier not up after" in last, out[-3000:]
    assert f":{smtp} is taken by another process (SMTP_LISTEN_PORT)" in last, last
    assert "Traceback" not in out, out[-3000:]


def test_sigkill_then_sigterm_of_the_driver_leave_nothing_and_a_fresh_start_works(tmp_path):
    env = backend_env(tmp_path / "data")
    ports = stack_ports(env)
    first = Backend(env, tmp_path / "first.log")
    second = None
    try:
        first.wait_ready()
        assert healthz(env) == 200
        first.signal(signal.SIGKILL)  # no clean-up code of ours runs
        assert first.wait() == -signal.SIGKILL
        assert_nothing_left(first, ports)

        second = Backend(env, tmp_path / "second.log")  # the same ports
        second.wait_ready()
        assert healthz(env) == 200
        smtp_send(env, "after a restart")
        second.signal(signal.SIGTERM)
        assert second.wait() == 0, second.output[-3000:]
        assert "Stopped." in second.output
        assert_nothing_left(second, ports)
    finally:
        first.kill_all()
        if second is not None:
            second.kill_all()


def test_a_sigterm_to_the_whole_process_group_stops_in_bounded_time_and_leaves_nothing(tmp_path):
    """`timeout`, a service manager or a terminal signals the driver's whole process group, Ray's own processes
    (GCS, raylet) included: the driver must not wait forever on a Ray that is going away under it."""
    import os

    from web.delivery.management.commands.runbackend import STOP_DEADLINE

    env = backend_env(tmp_path / "data")
    ports = stack_ports(env)
    backend = Backend(env, tmp_path / "run.log", own_group=True)
    try:
        backend.wait_ready()
        backend.note_processes()
        os.killpg(backend.proc.pid, signal.SIGTERM)
        backend.wait(timeout=STOP_DEADLINE + 60)
        assert_nothing_left(backend, ports)
    finally:
        backend.kill_all()
