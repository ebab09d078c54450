"""STARTTLS for the mail server: the server's TLS context from PEM files, reloaded when the files change.

``SMTP_TLS_CERT_FILE`` and ``SMTP_TLS_KEY_FILE`` are set both or neither (Config refuses one without the other).
At start the files must load (:func:`server_context` raises :class:`~messaging.runtime.config.ConfigError`, naming the
variables): the mail server refuses to start rather than run without the TLS it was configured for. Afterwards a
renewed certificate (cert-manager writing the Secret, the kubelet updating the mounted files) is picked up by the
next session: :class:`ReloadingContext` looks at the files at most every ``RECHECK_SECONDS`` and loads them again
when they changed; new files that do not load (half written, key and certificate not matching) are logged and the
old context stays in use, so a bad renewal never stops mail.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from messaging.runtime.config import Config, ConfigError

log = logging.getLogger("messaging.intake.smtp.tls")

RECHECK_SECONDS = 5.0  # how often (at most) a new session looks at the certificate files
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

Stamp = tuple[tuple[int, int, int], ...]


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side context (TLS 1.2 or later, Python's defaults otherwise) with the certificate chain and key
    from PEM files. Raises :class:`ConfigError` naming the variables when they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"SMTP_TLS_CERT_FILE={cert_file!r} / SMTP_TLS_KEY_FILE={key_file!r} cannot be used for STARTTLS: "
            f"{type(exc).__name__}: {exc} (PEM certificate chain and its private key expected)"
        ) from None
    return context


def check_local_files(config: Config) -> None:
    """For ``runbackend`` before anything starts: with a local Ray (no ``RAY_ADDRESS``) the mail servers read the
    certificate files on this machine, so files that do not load refuse to start here, naming the variables. On a
    cluster the files are in the Ray pods (the mail server refuses there)."""
    if config.smtp_tls_cert_file and not config.ray_address:
        server_context(config.smtp_tls_cert_file, config.smtp_tls_key_file)


def files_stamp(*paths: str) -> Stamp | None:
    """What tells a changed file apart (inode, size, modification time; symlinks followed, as the kubelet swaps
    a Secret volume's files through a symlink), or None when a file cannot be looked at."""
    try:
        stats = [os.stat(path) for path in paths]
    except OSError:
        return None
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


@dataclass
class ReloadingContext:
    """The current server context; :meth:`current` loads the files again when they changed."""

    cert_file: str
    key_file: str
    recheck_seconds: float = RECHECK_SECONDS
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._stamp = files_stamp(self.cert_file, self.key_file)
        self._context = server_context(self.cert_file, self.key_file)  # at start: broken files refuse to start
        self._checked = self.clock()
        self._lock = threading.Lock()
        self.reloads = 0

    @classmethod
    def from_config(cls, config: Config, **kwargs) -> ReloadingContext | None:
        """None when STARTTLS is not configured (Config has checked both-or-neither)."""
        if not config.smtp_tls_cert_file:
            return None
        return cls(config.smtp_tls_cert_file, config.smtp_tls_key_file, **kwargs)

    def current(self) -> ssl.SSLContext:
        now = self.clock()
        if now - self._checked < self.recheck_seconds:
            return self._context
        with self._lock:
            self._checked = now
            stamp = files_stamp(self.cert_file, self.key_file)
            if stamp is None or stamp == self._stamp:  # unchanged, or a file missing for a moment: keep ours
                return self._context
            self._stamp = stamp  # a broken pair is tried again only once the files change again
            try:
                context = server_context(self.cert_file, self.key_file)
            except ConfigError as exc:
                log.error("STARTTLS certificate not reloaded, keeping the previous one: %s", exc)
                return self._context
            self._context = context
            self.reloads += 1
            log.info("STARTTLS certificate reloaded from %s", self.cert_file)
            return context
