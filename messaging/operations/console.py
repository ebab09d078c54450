"""What reaches the console of ``runbackend`` (and drain, stop, upgrade), and what goes to log files only.

The console carries our start-up progress, the endpoints, a line every few seconds saying what the stack did
(``operations/activity.py``), and every warning or error that needs an operator (streamed from the actors to
the driver by Ray). Each message's state changes, Ray's, Serve's and HAProxy's INFO chatter, the aiosmtpd
session lines of the sandbox relay, and two Ray warnings that need nobody go to log files:

- the driver's own log file (``DATA_DIR/logs/<command>.log``): everything the driver logs, the diverted lines
  included;
- Ray's session log directory (``ray_logs_dir()``) on each node: ``messages-<pid>.log``, our actors' lines
  (``messaging.*`` and ``web.*``, one per message state change, warnings too); every Ray worker's output; and
  under ``serve/`` Serve's controller, proxies, replicas and HAProxy manager, INFO included.

This module is imported by every Ray worker (``WORKER_SETUP_HOOK``): it imports only the standard library.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

# Run by every Ray worker process of our jobs before it runs anything (a runtime_env worker_process_setup_hook).
WORKER_SETUP_HOOK = "messaging.operations.console.worker_logging"

SERVE_LOGGER = "ray.serve"  # Serve's controller, proxies, HAProxy manager and replicas all log here
AIOSMTPD_LOGGER = "mail.log"  # aiosmtpd: a line per SMTP command at INFO
OUR_LOGGERS = ("messaging", "web")
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Ray warnings in the driver that call for nothing: one per actor started in a placement group (our pools
# place detached, restartable members on purpose: launch.py pool_placement), and the notice that the
# local Ray uses token authentication (as it should).
RAY_NOTICES = {
    "ray.actor": "restartable detached actor with a placement group is not recommended",
    "ray._private.authentication.authentication_token_setup": "Token authentication is enabled",
}


def serve_info_to_files(record: logging.LogRecord) -> bool:
    """A filter on Serve's logger: below WARNING, a record goes to Serve's log files but not to stderr.

    Serve's stderr handler drops records whose ``log_to_stderr`` is False (its documented ``extra``); its file
    handler ignores that attribute. Serve asks for a few INFO lines on stderr (``log_to_stderr=True``: every
    change of routes, in the proxies and the HAProxy manager): those go to the files too."""
    if record.levelno < logging.WARNING:
        record.log_to_stderr = False
    return True


def worker_logging() -> None:
    """In a Ray worker: Serve's INFO lines to Serve's files only (a logger's filters survive Serve replacing
    the logger's handlers when a Serve component starts); our own lines to a file of this process; aiosmtpd's
    lines from WARNING up (the mail server stores with Django, whose settings log INFO to stderr: its lines per
    SMTP command would each reach the console, and cost CPU per message)."""
    logger = logging.getLogger(SERVE_LOGGER)
    if serve_info_to_files not in logger.filters:
        logger.addFilter(serve_info_to_files)
    logging.getLogger(AIOSMTPD_LOGGER).setLevel(logging.WARNING)
    message_lines_to_file(Path(ray_logs_dir()))


def message_lines_to_file(directory: Path, level: str | None = None) -> Path:
    """Our loggers' lines (``OUR_LOGGERS``, at ``LOG_LEVEL``) go to ``directory/messages-<pid>.log``; warnings and
    errors also to stderr, which Ray streams to the driver's console. Our loggers stop there (Django's console
    handler on the root logger does not get them again). Returns the file's path."""
    path = directory / f"messages-{os.getpid()}.log"
    threshold = logging.getLevelName((level or os.environ.get("LOG_LEVEL") or "INFO").upper())
    if not isinstance(threshold, int):
        threshold = logging.INFO
    formatter = logging.Formatter(LINE_FORMAT)
    to_file = logging.FileHandler(path, encoding="utf-8", delay=True)
    to_console = logging.StreamHandler()
    to_console.setLevel(logging.WARNING)
    for handler in (to_file, to_console):
        handler.setFormatter(formatter)
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        for old in logger.handlers[:]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(to_file)
        logger.addHandler(to_console)
        logger.setLevel(threshold)
        logger.propagate = False
    return path


class FileOnly(logging.Filter):
    """A logger filter: the records ``diverted`` picks go to ``handler`` (the log file) and no further."""

    def __init__(self, handler: logging.Handler, diverted: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.handler = handler
        self.diverted = diverted

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.diverted(record):
            return True
        if record.levelno >= self.handler.level:
            self.handler.handle(record)
        return False


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING


def route_driver_logs(log_file: Path) -> Path:
    """In the driver: everything logged also goes to ``log_file``; the INFO lines of aiosmtpd (the sandbox
    relay sink runs in this process) and Ray's notices (RAY_NOTICES) go there only. Returns the file's path."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    handler.set_name("spacebeaver-driver-file")
    for name in ("", "ray"):  # the root logger, and Ray's, which does not pass records up to it
        logger = logging.getLogger(name)
        if not any(h.get_name() == handler.get_name() for h in logger.handlers):
            logger.addHandler(handler)
    _replace_filter(logging.getLogger(AIOSMTPD_LOGGER), FileOnly(handler, _below_warning))
    for name, text in RAY_NOTICES.items():
        _replace_filter(logging.getLogger(name), FileOnly(handler, lambda r, text=text: text in r.getMessage()))
    return log_file


def _replace_filter(logger: logging.Logger, new: FileOnly) -> None:
    for old in [f for f in logger.filters if isinstance(f, FileOnly)]:
        logger.removeFilter(old)
    logger.addFilter(new)


def ray_logs_dir() -> str:
    """Where the local Ray we are connected to keeps its session's logs (Serve's under ``serve/``)."""
    try:
        import ray  # this module is imported by every Ray worker's setup hook: nothing but logging at the top

        return ray._private.worker.global_worker.node.get_logs_dir_path()
    except Exception:  # a cluster we joined: its nodes keep them
        return "/tmp/ray/session_latest/logs"


def default_log_file(data_dir: Path, command: str) -> Path:
    return Path(data_dir) / "logs" / f"{command}.log"
