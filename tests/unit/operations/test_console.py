"""What the driver's console shows and what goes to the log file only (operations/console.py)."""

from __future__ import annotations

import io
import logging

import pytest

from messaging.operations.console import FileOnly, route_driver_logs, serve_info_to_files


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
