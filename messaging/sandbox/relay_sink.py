"""A local stand-in for the outbound SMTP relay: accepts every message over a real socket and records it.

``RelaySink(port=0)`` runs an aiosmtpd server in a background thread on loopback (port 0 picks a free
port; ``.port`` is the real one, kept across stop/start). Each accepted message is recorded, thread-safe,
as a dict ``{"mail_from", "rcpt_tos", "raw" (bytes), "headers" (first value per name), "queue_id",
"received_at"}`` and, with ``record_path``, appended to a JSON-lines file (``raw`` as text plus
``raw_b64``) that another process reads with ``read_records``.

Fault injection: ``fail_next(n, code, stage)`` answers the next ``n`` RCPT/DATA commands with ``code``;
``down = True`` stops listening (connections refused), ``down = False`` listens again on the same port;
``gather(n)`` holds each DATA until ``n`` are in flight together (a test of concurrent senders' sessions).
No STARTTLS. AUTH (PLAIN/LOGIN, without TLS: loopback only) is on when ``credentials`` is given.
Run alone: ``python -m messaging.sandbox.relay_sink --port 2526 --record data/sandbox/relay.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import signal
import threading
import time
import warnings
from collections.abc import Callable
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from messaging.sandbox.recorded import snapshot, wait_on

log = logging.getLogger(__name__)

SERVER_NAME = "relay-sink.local"  # fixed, so aiosmtpd never does a DNS lookup for its own name


class _Controller(Controller):
    """aiosmtpd's Controller, learning the real port when asked to bind port 0."""

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _Handler:
    def __init__(self, sink: RelaySink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:
        failure = self.sink._take_failure("rcpt")
        if failure:
            return failure
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        await self.sink._gather()
        return self.sink._take_failure("data") or self.sink._record(envelope)


class RelaySink:
    """An SMTP server on loopback that accepts everything and records it (see module docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        record_path: Path | str | None = None,
        credentials: tuple[str, str] | None = None,
    ):
        self.host = host
        self.port = port
        self.record_path = Path(record_path) if record_path else None
        self.credentials = credentials
        self._cond = threading.Condition()
        self._messages: list[dict[str, Any]] = []
        self._failures: list[tuple[int, str]] = []
        self._controller: _Controller | None = None
        self._gathering: int | None = None
        self._held: list[asyncio.Future] = []  # DATA commands held by gather(), on the server's event loop

    def start(self) -> RelaySink:
        """Listen (no-op when already listening). Returns self."""
        if self._controller is not None:
            return self
        options: dict[str, Any] = {"server_hostname": SERVER_NAME}
        if self.credentials:
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            options.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=False)
        controller = _Controller(_Handler(self), hostname=self.host, port=self.port, **options)
        controller.start()
        self.port = controller.port
        self._controller = controller
        log.info("relay sink listening on %s:%s", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop listening (no-op when stopped); recorded messages are kept."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def down(self) -> bool:
        """True while not listening: clients get "connection refused"."""
        return self._controller is None

    @down.setter
    def down(self, value: bool) -> None:
        if value:
            self.stop()
        else:
            self.start()

    def __enter__(self) -> RelaySink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, n: int, code: int = 451, stage: str = "any") -> None:
        """Answer the next ``n`` RCPT or DATA commands with ``code`` (4xx temporary, 5xx permanent).

        ``stage`` "rcpt" or "data" limits the failures to that command; queued failures are used in order.
        """
        if stage not in ("any", "rcpt", "data"):
            raise ValueError(f"unknown stage {stage!r}")
        with self._cond:
            self._failures.extend([(code, stage)] * n)

    def gather(self, calls: int | None) -> None:
        """Hold each DATA until ``calls`` of them are in flight together, then answer them all, so a test sees
        how many sessions that many concurrent senders use; ``None`` answers each at once again."""
        self._gathering = calls

    async def _gather(self) -> None:
        calls = self._gathering
        if not calls:
            return
        held = asyncio.get_running_loop().create_future()
        self._held.append(held)
        if len(self._held) >= calls:
            for future in self._held:
                if not future.done():
                    future.set_result(None)
            self._held = []
        try:
            await asyncio.wait_for(asyncio.shield(held), timeout=10)
        except TimeoutError:  # not that many came: answer anyway
            pass

    @property
    def messages(self) -> list[dict[str, Any]]:
        """A snapshot of the recorded messages, oldest first."""
        return snapshot(self._cond, self._messages)

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Block until ``predicate(messages)`` holds (woken on each new message); TimeoutError otherwise."""
        return wait_on(self._cond, self._messages, predicate, timeout)

    def _take_failure(self, stage: str) -> str | None:
        with self._cond:
            if not self._failures or self._failures[0][1] not in ("any", stage):
                return None
            code, _ = self._failures.pop(0)
        detail = "4.3.0 Try again later (injected)" if code < 500 else "5.0.0 Refused (injected)"
        return f"{code} {detail}"

    def _record(self, envelope) -> str:
        raw: bytes = envelope.original_content or envelope.content or b""
        with self._cond:
            queue_id = f"sink-{len(self._messages) + 1}"
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "raw": raw,
                "headers": parse_headers(raw),
                "queue_id": queue_id,
                "received_at": time.time(),
            }
            self._messages.append(record)
            if self.record_path:
                with self.record_path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(_to_json(record)) + "\n")
            self._cond.notify_all()
        log.info("relay sink accepted queue_id=%s message_id=%s", queue_id, record["headers"].get("Message-ID"))
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _authenticate(self, server, session, envelope, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.credentials is not None
            and (auth_data.login.decode("utf-8", "replace"), auth_data.password.decode("utf-8", "replace"))
            == self.credentials
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def parse_headers(raw: bytes) -> dict[str, str]:
    """Decoded header values by name as written (first occurrence wins)."""
    headers: dict[str, str] = {}
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(raw)
    for name, raw_value in parsed.raw_items():
        try:
            value = str(parsed.policy.header_fetch_parse(name, raw_value))
        except Exception:
            value = str(raw_value)
        headers.setdefault(name, value)
    return headers


def read_records(path: Path | str) -> list[dict[str, Any]]:
    """The messages a sink appended to ``path`` (``raw`` as bytes again); [] when the file is missing."""
    file = Path(path)
    if not file.exists():
        return []
    records = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            record["raw"] = base64.b64decode(record.pop("raw_b64"))
            records.append(record)
    return records


def _to_json(record: dict[str, Any]) -> dict[str, Any]:
    raw: bytes = record["raw"]
    return {
        **record,
        "raw": raw.decode("utf-8", "replace"),
        "raw_b64": base64.b64encode(raw).decode("ascii"),
    }


def main(argv: list[str] | None = None) -> None:
    """Run a sink until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="SMTP relay sink: accepts and records every message")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2526)
    parser.add_argument("--record", default=None, help="append each message to this JSON-lines file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    sink = RelaySink(args.host, args.port, args.record).start()
    print(f"relay sink on {args.host}:{sink.port}", flush=True)
    stopping.wait()
    sink.stop()


if __name__ == "__main__":
    main()
