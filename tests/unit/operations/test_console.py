"""What the driver's console shows and what goes to the log file only (operations/console.py)."""

from __future__ import annotations

import io
import logging

import pytest

from messaging.operations.console import (
    OUR_LOGGERS,
    FileOnly,
    message_lines_to_file,
    route_driver_logs,
    serve_info_to_files,
)


class _Console(io.StringIO):
    handler: logging.Handler


@pytest.fixture
def console():
    """A console handler on the root logger, as Django's LOGGING puts one; the routing undone afterwards."""
    stream = _Console()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    touched = ["", "ray", "mail.log", "ray.actor", "ray._private.authentication.authentication_token_setup"]
    stream.handler = handler
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)
    for name in touched:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, FileOnly)]:
            logger.removeFilter(f)
        for h in [h for h in logger.handlers if h.get_name() == "spacebeaver-driver-file"]:
            logger.removeHandler(h)
            h.close()


def test_relay_sessions_and_ray_notices_go_to_the_file_only_the_rest_to_both(console, tmp_path):
    log_file = route_driver_logs(tmp_path / "logs" / "runbackend.log")
    logging.getLogger("mail.log").info("('127.0.0.1', 52602) handling connection")
    logging.getLogger("mail.log").warning("relay sink cannot listen")
    ray_logger = logging.getLogger("ray")  # as Ray sets it up: a console handler of its own, nothing passed up
    ray_logger.addHandler(console.handler)
    ray_logger.propagate, was = False, ray_logger.propagate
    try:
        actor = logging.getLogger("ray.actor")
        actor.warning("Scheduling a restartable detached actor with a placement group is not recommended because")
        actor.warning("some other Ray warning")
    finally:
        ray_logger.propagate = was
        ray_logger.removeHandler(console.handler)
    logging.getLogger("messaging.outbox.store").info("message 7 received key=smtp:x")

    shown = console.getvalue()
    kept = log_file.read_text()
    assert "handling connection" not in shown and "handling connection" in kept
    assert "placement group is not recommended" not in shown and "placement group is not recommended" in kept
    for line in ("relay sink cannot listen", "some other Ray warning", "message 7 received"):
        assert line in shown and line in kept


def test_routing_twice_keeps_one_file_handler_and_one_filter(console, tmp_path):
    route_driver_logs(tmp_path / "a.log")
    route_driver_logs(tmp_path / "a.log")
    assert len([h for h in logging.getLogger().handlers if h.get_name() == "spacebeaver-driver-file"]) == 1
    assert len([f for f in logging.getLogger("mail.log").filters if isinstance(f, FileOnly)]) == 1


def test_serve_info_is_kept_off_stderr_and_warnings_stay_on_it():
    def record(level, **extra):
        r = logging.LogRecord("ray.serve", level, __file__, 1, "x", None, None)
        r.__dict__.update(extra)
        return r

    info, warning, explicit = record(logging.INFO), record(logging.WARNING), record(logging.INFO, log_to_stderr=True)
    assert serve_info_to_files(info) and serve_info_to_files(warning) and serve_info_to_files(explicit)
    # the filter on Serve's stderr handler (its file handler has none such): the pinned Ray's own function
    from ray.serve._private.logging_utils import log_to_stderr_filter

    assert not log_to_stderr_filter(info)
    assert not log_to_stderr_filter(explicit)  # Serve's routing updates ask for stderr: INFO all the same
    assert log_to_stderr_filter(warning)


@pytest.fixture
def our_loggers():
    """message_lines_to_file changes our loggers as in a Ray worker; put them back afterwards."""
    saved = {n: (lg.handlers[:], lg.level, lg.propagate) for n in OUR_LOGGERS for lg in [logging.getLogger(n)]}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for h in logger.handlers[:]:
            logger.removeHandler(h)
            h.close()
        for h in handlers:
            logger.addHandler(h)
        logger.setLevel(level)
        logger.propagate = propagate


def test_in_a_worker_each_message_line_goes_to_its_file_and_only_warnings_to_the_console(
    console, tmp_path, our_loggers, capsys
):
    path = message_lines_to_file(tmp_path, level="INFO")
    message_lines_to_file(tmp_path, level="INFO")  # a second call (the hook again) keeps one file handler
    logging.getLogger("messaging.outbox.store").info("message 7 received key=smtp:x")
    logging.getLogger("web.portal.mail").info("web mail sent to=h***@example.org")
    logging.getLogger("messaging.outbox.store").warning("message 8 dead error=permanent: 550")
    logging.getLogger("messaging.routing.user_desk").debug("not at INFO")

    kept = path.read_text()
    assert path.name.startswith("messages-") and kept.count("message 7 received") == 1
    assert "web mail sent" in kept and "message 8 dead" in kept and "not at INFO" not in kept
    stderr = capsys.readouterr().err
    assert "message 8 dead" in stderr, "warnings still reach the console (Ray streams stderr to the driver)"
    assert "message 7 received" not in stderr and "web mail sent" not in stderr
    assert "message 7" not in console.getvalue(), "Django's root console handler does not get them again"
