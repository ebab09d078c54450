"""runbackend's console a person can read: our start-up progress, the endpoints and a line of what the stack did;
each message's state changes (in the actors' messages-*.log), Ray's, Serve's and HAProxy's INFO lines, aiosmtpd's
session lines and Ray's per-actor placement-group warning in log files instead; warnings still on the console.

Runs ``manage.py runbackend`` as a subprocess with a Ray of its own, at the default LOG_LEVEL (as ``make run``).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from .backend_proc import Backend, backend_env, smtp_send
from .conftest import wait_until

pytestmark = pytest.mark.e2e

# Serve's own line format, behind Ray's "(ActorName pid=N)" prefix: "INFO 2026-11-24 09:15:06,108 controller ..."
SERVE_INFO = re.compile(r"\(\S+ pid=\d+\)\S* INFO \d{4}-\d\d-\d\d ")
SERVE_WARNING = re.compile(r"\(ServeController pid=\d+\)\S* WARNING \d{4}-\d\d-\d\d ")


def test_the_console_has_our_lines_and_warnings_and_ray_info_goes_to_files(tmp_path):
    env = backend_env(tmp_path / "data")
    env.pop("LOG_LEVEL")  # make run: INFO, so every message state change is a line (in the actors' files)
    env["ACTIVITY_INTERVAL"] = "1"
    backend = Backend(env, tmp_path / "runbackend.log")
    try:
        backend.wait_ready()
        smtp_send(env, "console check")
        wait_until(
            lambda: re.search(r"^Last 1s: .*\b1 sent to devices\b", backend.output, re.M),
            timeout=60,
            interval=0.5,
            what="the line of what the stack did on the console",
        )
        backend.signal(signal.SIGINT)
        assert backend.wait() == 0, backend.output[-3000:]
    finally:
        backend.kill_all()

    out = backend.output
    for line in ("Space Beaver backend starting", "Ray: up", "Actors:", "Ready in", "SMTP intake", "Stopped."):
        assert line in out, out
    logs = re.search(
        r"^Logs: this driver's in (\S+); each message's state changes \(messages-\*\.log\), Ray's, Serve's and "
        r"HAProxy's (\S+)/$",
        out,
        re.M,
    )
    assert logs, out
    assert not re.search(r"message \d+ (received|sending|sent)", out), "state changes are not streamed line by line"
    lines = "".join(p.read_text() for p in Path(logs.group(2)).glob("messages-*.log"))
    assert re.search(r"message \d+ received key=smtp:", lines) and re.search(r"message \d+ sent remote_id=", lines)

    assert not [line for line in out.splitlines() if SERVE_INFO.search(line)], out  # Serve, HAProxy manager
    assert " INFO mail.log " not in out, out  # the sandbox relay sink's sessions
    assert "placement group is not recommended" not in out, out
    assert SERVE_WARNING.search(out), out  # a Serve warning (HTTP host reachable only locally) still shows

    driver_log = Path(logs.group(1)).read_text()
    assert "placement group is not recommended" in driver_log
    assert " INFO mail.log " in driver_log
    serve_logs = "".join(p.read_text(errors="replace") for p in Path(logs.group(2), "serve").glob("*.log"))
    assert "Deploying new version of Deployment(name='Webhooks'" in serve_logs
