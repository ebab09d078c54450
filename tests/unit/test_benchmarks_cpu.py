"""The benchmark harness's measurement helpers: the stack's CPU over a window (processes that start and end
during it included), per message; the backend's production environment pointing at the harness's fakes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.backend import backend_env
from benchmarks.cpu import EXITED, ProcSample, cpu_by_title, cpu_figures, net_of_idle_ms, shares_text
from benchmarks.remotes import Endpoints
from benchmarks.report import TARGETS, package_of, package_shares, path_table, summarise
from benchmarks.run import flatten, process_lines
from messaging.runtime.config import Config, WebSettings
from messaging.sandbox.stack import sandboxed

ROOT = (100, 1.0)  # runbackend
RAYLET = (200, 2.0)


def proc(own: float, children: float = 0.0, ppid: int = 1, title: str = "x") -> ProcSample:
    return ProcSample(own, children, ppid, title)


def test_live_processes_count_their_own_cpu_delta_by_title():
    before = {ROOT: proc(5.0, title="python3 manage.py"), (300, 3.0): proc(1.0, ppid=200, title="ray::UserActor")}
    after = {ROOT: proc(5.5, title="python3 manage.py"), (300, 3.0): proc(3.0, ppid=200, title="ray::UserActor")}
    assert cpu_by_title(before, after) == {"ray::UserActor": 2.0, "python3 manage.py": 0.5, EXITED: 0.0}


def test_a_process_born_in_the_window_counts_its_whole_cpu():
    after = {ROOT: proc(5.0), (301, 9.0): proc(0.7, ppid=200, title="ray::IDLE")}
    assert cpu_by_title({ROOT: proc(5.0)}, after)["ray::IDLE"] == pytest.approx(0.7)


def test_a_process_that_ended_and_was_reaped_counts_once_through_its_reaper():
    # The worker had spent 1.0 s before the window and 0.5 s in it; its reaper's children time grows by all 1.5 s.
    worker = (300, 3.0)
    before = {RAYLET: proc(2.0, 0.0, title="raylet"), worker: proc(1.0, ppid=200, title="ray::UserActor")}
    seen = {worker: proc(1.4, ppid=200, title="ray::UserActor")}
    after = {RAYLET: proc(2.0, 1.5, title="raylet")}
    got = cpu_by_title(before, after, seen)
    assert sum(got.values()) == pytest.approx(0.5)
    assert got[EXITED] == pytest.approx(0.5)


def test_a_process_that_ended_unreaped_counts_up_to_its_last_sample():
    orphan = (400, 4.0)
    before = {ROOT: proc(1.0), orphan: proc(2.0, ppid=999, title="agent.py")}
    seen = {orphan: proc(2.3, ppid=999, title="agent.py")}
    got = cpu_by_title(before, {ROOT: proc(1.0)}, seen)
    assert got["agent.py"] == pytest.approx(0.3)


def test_a_process_born_and_ended_in_the_window():
    reaped, orphan = (500, 5.0), (501, 5.1)
    seen = {reaped: proc(0.2, ppid=200, title="ray::IDLE"), orphan: proc(0.4, ppid=999, title="agent.py")}
    before = {RAYLET: proc(2.0, title="raylet")}
    after = {RAYLET: proc(2.0, 0.25, title="raylet")}  # reaped: 0.25 s in the raylet's children time, not twice
    got = cpu_by_title(before, after, seen)
    assert got == {"agent.py": pytest.approx(0.4), EXITED: pytest.approx(0.25), "raylet": 0.0}


def test_a_reused_pid_is_another_process():
    before = {(300, 3.0): proc(9.0, ppid=999, title="old")}
    after = {(300, 7.0): proc(0.1, ppid=999, title="new")}
    got = cpu_by_title(before, after, {})
    assert got["new"] == pytest.approx(0.1) and got["old"] == pytest.approx(0.0)


def test_cpu_figures_per_message_and_cores():
    figures = cpu_figures({"ray::UserActor": 3.0, "raylet": 1.0}, messages=2000, wall_s=4.0)
    assert figures["cpu_s"] == 4.0
    assert figures["cpu_ms_per_msg"] == pytest.approx(2.0)
    assert figures["cores"] == pytest.approx(1.0)
    assert figures["ms_per_msg_by_title"] == {"ray::UserActor": pytest.approx(1.5), "raylet": pytest.approx(0.5)}
    assert cpu_figures({"a": 1.0}, messages=0, wall_s=1.0)["cpu_ms_per_msg"] is None
    assert shares_text(figures["ms_per_msg_by_title"]) == "ray::UserActor 1.5, raylet 0.5"


def test_cpu_per_message_net_of_what_the_stack_burns_idle():
    figures = cpu_figures({"ray::UserActor": 4.0}, messages=1000, wall_s=5.0)
    assert net_of_idle_ms(figures, 0.2) == pytest.approx(3.0)  # 4 s less 0.2 cores x 5 s, per 1,000 messages
    assert net_of_idle_ms(figures, None) is None
    assert net_of_idle_ms(cpu_figures({}, messages=0, wall_s=5.0), 0.2) is None


def test_cpu_per_message_is_in_the_summary_with_the_issue_targets():
    rnd = {
        "scenarios": {
            "smtp_backend": {"cpu": {"cpu_ms_per_msg": 11.0}},
            "webhook_backend": {"cpu": {"cpu_ms_per_msg": 7.9}},
            "hive_poll": {"cpu": {"cpu_ms_per_msg": 6.7}},
            "backend": {"idle_cpu": {"cores": 0.1}},
        }
    }
    flat = flatten(rnd)
    assert (flat["cpu_smtp_ms"], flat["cpu_webhook_ms"], flat["cpu_hive_ms"]) == (11.0, 7.9, 6.7)
    goals = {t.key: t.goal_text() for t in TARGETS}
    assert goals["cpu_smtp_ms"] == goals["cpu_webhook_ms"] == "<= 3.0 ms/msg"
    assert goals["cpu_hive_ms"] == "<= 2.5 ms/msg"
    assert set(flat) >= {t.key for t in TARGETS}  # every row of the table has its figure


def test_the_path_table_puts_cpu_per_message_next_to_throughput():
    runs = [
        {"e2e_rate": 180.0, "cpu_smtp_ms": 11.0, "webhook_e2e_rate": 250.0, "cpu_webhook_ms": 2.5},
        {"e2e_rate": 200.0, "cpu_smtp_ms": 9.0, "webhook_e2e_rate": 260.0, "cpu_webhook_ms": 2.9},
        {"e2e_rate": 190.0, "cpu_smtp_ms": 10.0, "webhook_e2e_rate": None, "cpu_webhook_ms": None},
    ]
    lines = [re.split(r"\s{2,}", line) for line in path_table(summarise(runs)).splitlines()]
    assert lines[0] == ["path", "throughput", "target", "CPU per message", "target"]
    smtp, webhook, hive = lines[2:]
    assert smtp == ["SMTP -> Hive (end to end)", "190 msg/s", ">= 500 msg/s", "10.0 ms/msg", "<= 3.0 ms/msg", "FAIL"]
    assert webhook == ["Webhook -> Hive (end to end)", "255 msg/s", "2.7 ms/msg", "<= 3.0 ms/msg", "PASS"]
    assert hive == ["Hive packets -> email/SMS out", "-", "-", "<= 2.5 ms/msg", "n/a"]


def test_process_lines_one_per_process():
    lines = process_lines([[42, "ray::UserActor", 210.4, 80.2], [7, "raylet", 60.0, 30.0]])
    assert lines[0].startswith("ray::UserActor  pid 42 ") and "RSS    210 MB" in lines[0]
    assert lines[1].startswith("raylet          pid 7 ")


def endpoints(tmp: Path) -> Endpoints:
    return Endpoints(
        hive_url="http://127.0.0.1:4001/hive",
        hive_username="bench-1",
        hive_password="pw",
        hive_webhook_secret="whs",
        rockblock_url="http://127.0.0.1:4002/rockblock",
        rockblock_username="bench-2",
        rockblock_password="pw2",
        rockblock_public_key_file=str(tmp / "key.pem"),
        twilio_account_sid="AC" + "1" * 32,
        twilio_auth_token="tok",
        twilio_api_base_url="http://127.0.0.1:4003",
        relay_host="127.0.0.1",
        relay_port=4004,
        nameservers="127.0.0.1:4005",
        tls_cert_file="",
        tls_key_file="",
        django_secret_key="k" * 50,
    )


def test_the_backend_runs_unsandboxed_against_the_harness_fakes(tmp_path):
    stray = {"PATH": "/usr/bin", "TWILIO_AUTH_TOKEN": "someone-elses", "SANDBOX": "1", "DATABASE_URL": "x"}
    stray |= {"RAY_ADDRESS": "ray://elsewhere:10001", "EMAIL_RELAY_USERNAME": "left-over"}
    env = backend_env(tmp_path, {"smtp": 2600, "serve": 8600}, 2, 0.2, endpoints(tmp_path), environ=stray)
    config = Config.from_env(env)
    assert sandboxed(config) is False  # every service configured: no fake starts inside the stack
    assert config.unconfigured_services() == {}
    assert config.swarm_hive_url == "http://127.0.0.1:4001/hive" and config.email_relay_port == 4004
    assert config.twilio_auth_token == "tok" and config.dns_nameservers == "127.0.0.1:4005"
    assert config.rockblock_username == "bench-2"
    assert "DATABASE_URL" not in env and "RAY_ADDRESS" not in env and "EMAIL_RELAY_USERNAME" not in env
    assert env["PATH"] == "/usr/bin"
    assert WebSettings.from_env(env).django_secret_key == "k" * 50  # production refuses the built-in key
    assert (config.smtp_listen_port, config.serve_http_port, config.pool_size) == (2600, 8600, 2)


def test_the_abuse_limits_are_off_unless_asked_for(tmp_path):
    off = Config.from_env(backend_env(tmp_path, {"smtp": 2600, "serve": 8600}, 2, 0.2, endpoints(tmp_path)))
    assert (off.device_outbound_per_hour, off.inbound_per_sender_per_hour) == (0, 0)
    env = backend_env(tmp_path, {"smtp": 2600, "serve": 8600}, 2, 0.2, endpoints(tmp_path), abuse_limits=10**6)
    on = Config.from_env(env)
    assert (on.device_outbound_per_hour, on.inbound_per_sender_per_hour) == (10**6, 10**6)


def test_profile_self_time_by_package_leaves_rays_native_loop_out():
    assert package_of("BaseDatabaseWrapper._commit (django/db/backends/base/base.py:303)") == "django"
    assert package_of("Thread.run (threading.py:982)") == "threading"
    assert package_of("ABCMeta.__new__ (<frozen abc>:106)") == "abc"
    assert package_of("record_many (messaging/outbox/store.py:135)") == "messaging"
    collapsed = "\n".join(
        [
            "main (x.py:1);Worker.main_loop (ray/_private/worker.py:1069) 50",
            "run (x.py:1);record_many (messaging/outbox/store.py:135) 30",
            "run (x.py:1);_commit (django/db/backends/base/base.py:303) 10",
            "run (x.py:1);execute (django/db/backends/sqlite3/base.py:360) 50",
            "run (x.py:1);write (asyncio/streams.py:343) 10",
        ]
    )
    assert package_shares(collapsed) == [("django", 0.6), ("messaging", 0.3), ("asyncio", 0.1)]
