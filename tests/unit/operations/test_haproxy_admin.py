"""HAProxy's admin listeners moved to SERVE_HAPROXY_HOST, the launcher, the start-up failure line, the reaper's
process bookkeeping: pure functions."""

from __future__ import annotations

import os
import subprocess
import sys

from messaging.operations.haproxy_admin import bind_admin_listeners, config_path, launcher_text
from messaging.operations.launch import (
    ActorsNotUp,
    IngressNotAnswering,
    actors_failure,
    ingress_failure,
    serve_failure_detail,
)
from messaging.operations.reaper import descendants, still_running
from tests.paths import REPO_ROOT

# The shape Ray Serve 2.60 renders (haproxy_templates.py), cut down to the sections that bind.
SERVE_CONFIG = """global
    stats socket /tmp/haproxy-serve/n/admin.sock mode 666 level admin expose-fd listeners
defaults
    mode http
frontend prometheus
    bind :9101
    mode http
    http-request use-service prometheus-exporter if { path /metrics }
    no log
frontend http_frontend
    bind *:8000
    # Health check endpoint
backend http-spacebeaver
    server r1 127.0.0.1:30000 check
listen stats
  bind *:8404
  stats enable
"""


def test_stats_and_metrics_move_to_the_host_and_nothing_else_changes():
    out = bind_admin_listeners(SERVE_CONFIG, "127.0.0.1")
    assert "    bind 127.0.0.1:9101\n" in out
    assert "  bind 127.0.0.1:8404\n" in out
    assert "    bind *:8000\n" in out  # the HTTP ingress stays where SERVE_HTTP_HOST put it
    assert out.replace("127.0.0.1:9101", ":9101").replace("127.0.0.1:8404", "*:8404") == SERVE_CONFIG


def test_ports_can_be_set_too_and_ipv6_is_spelled_for_haproxy():
    ports = {"SERVE_HAPROXY_STATS_PORT": "18404", "SERVE_HAPROXY_METRICS_PORT": None}
    out = bind_admin_listeners(SERVE_CONFIG, "::1", ports)
    assert "bind ipv6@::1:18404" in out and "bind ipv6@::1:9101" in out
    assert bind_admin_listeners(out, "::1", ports) == out  # a reload runs it again: same result


def test_the_config_file_is_the_one_after_dash_f():
    assert config_path(["-db", "-f", "/x/haproxy.cfg", "-dR", "-sf", "12", "-x", "/x/admin.sock"]) == "/x/haproxy.cfg"
    assert config_path(["-v"]) is None


def test_the_launcher_rewrites_then_runs_the_real_binary(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(SERVE_CONFIG)
    fake = tmp_path / "haproxy"  # stands in for HAProxy: prints what it was given and the file it would load
    fake.write_text('#!/bin/sh\necho "$@"; grep bind "$3"\n')
    fake.chmod(0o755)
    launcher = tmp_path / "launcher"
    launcher.write_text(launcher_text(sys.executable, str(fake)))
    launcher.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "SERVE_HAPROXY_HOST": "127.0.0.1", "SERVE_HAPROXY_METRICS_PORT": "19101"}
    out = subprocess.run([str(launcher), "-db", "-f", str(cfg), "-dR"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    binds = ["bind 127.0.0.1:19101", "bind *:8000", "bind 127.0.0.1:8404"]
    assert [line.strip() for line in out.stdout.splitlines()] == [f"-db -f {cfg} -dR", *binds]


def test_the_failure_line_names_the_taken_port_else_the_candidates():
    exc = IngressNotAnswering("127.0.0.1:8000", 7.2, "HAProxy cannot bind 127.0.0.1:8404: Address already in use")
    line = ingress_failure(exc, {8404: "HAProxy stats"}, {8000: "HTTP", 8404: "HAProxy stats"}, "/tmp/ray/logs/serve/")
    assert line == (
        "HTTP ingress not answering on 127.0.0.1:8000 after 7 s: port 8404 (HAProxy stats) is taken by another "
        "process (HAProxy cannot bind 127.0.0.1:8404: Address already in use); see /tmp/ray/logs/serve/"
    )
    slow = IngressNotAnswering("127.0.0.1:8000", 60.0, "ConnectionRefusedError: [Errno 111] Connection refused")
    line = ingress_failure(slow, {}, {8000: "HTTP", 9101: "HAProxy metrics"}, "the Serve logs")
    assert line.startswith("HTTP ingress not answering on 127.0.0.1:8000 after 60 s (ConnectionRefusedError")
    assert "is port 8000 (HTTP) or 9101 (HAProxy metrics) taken? see the Serve logs" in line
    assert "\n" not in line


def test_the_actors_failure_line_names_a_taken_smtp_port():
    late = ActorsNotUp(["courier"], 120.4)
    assert actors_failure(late, "0.0.0.0:25", True, "the actors' output in /tmp/ray/logs/") == (
        "courier not up after 120 s: SMTP port 0.0.0.0:25 is taken by another process (SMTP_LISTEN_PORT); "
        "see the actors' output in /tmp/ray/logs/"
    )
    assert actors_failure(late, "0.0.0.0:25", None, "their logs") == (
        "courier not up after 120 s: is SMTP port 0.0.0.0:25 taken on the Ray nodes? see their logs"
    )
    assert actors_failure(late, "0.0.0.0:25", False, "their logs") == "courier not up after 120 s; see their logs"
    assert actors_failure(ActorsNotUp(["web"], 9.0), "0.0.0.0:25", True, "x") == "web not up after 9 s; see x", (
        "a kind that does not listen is not blamed on the SMTP port"
    )


def test_serve_failure_detail_picks_haproxys_bind_error():
    text = (
        "ray.exceptions.RayTaskError(RuntimeError): ray::_run_serve_app()\n"
        "RuntimeError: HAProxy crashed during startup: [NOTICE] haproxy version is 2.8.25\n"
        "[ALERT]    (25916) : Binding [/tmp/haproxy-serve/n/haproxy.cfg:95] for proxy stats: cannot bind socket "
        "(Address already in use) for [127.0.0.1:35367]\n"
    )
    assert serve_failure_detail(text) == "HAProxy cannot bind 127.0.0.1:35367: Address already in use"
    assert serve_failure_detail("RayTaskError\nValueError: no\n  at x") == "ValueError: no"


def test_the_reaper_keeps_what_descends_from_the_driver_and_still_runs_as_itself():
    table = {1: (0, 1, "S"), 10: (1, 100, "S"), 11: (10, 110, "S"), 12: (11, 120, "S"), 20: (1, 200, "S")}
    assert descendants({10}, table) == {(11, 110), (12, 120)}
    seen = {(11, 110), (12, 120)}
    # the driver (10) died: 11 was reparented to init; 12 is a zombie; 13 was started by 11 meanwhile
    after = {1: (0, 1, "S"), 11: (1, 110, "S"), 12: (11, 120, "Z"), 13: (11, 130, "S"), 20: (1, 200, "S")}
    assert still_running(seen, after) == {(11, 110), (13, 130)}
    reused = {1: (0, 1, "S"), 11: (1, 999, "S")}  # pid 11 is now someone else's
    assert still_running(seen, reused) == set()


def test_the_image_writes_the_launcher_the_configmap_names():
    import re

    import yaml

    configmap = yaml.safe_load((REPO_ROOT / "k8s" / "configmap.yaml").read_text())["data"]
    path = configmap["RAY_SERVE_HAPROXY_BINARY_PATH"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(
        rf"python -m messaging\.operations\.haproxy_admin --write-launcher {re.escape(path)}\s*$", dockerfile, re.M
    )
    assert configmap["SERVE_HAPROXY_HOST"] == "127.0.0.1"
