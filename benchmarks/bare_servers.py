"""The baselines: a bare SMTP server and a bare Twilio-webhook server, each run in its own process.

* ``smtp``: aiosmtpd with the same SMTP options as our mail server, whose handler stores nothing and
  answers ``250`` to every RCPT and DATA. What one asyncio process can take with no work behind it.
* ``webhook``: uvicorn + FastAPI with the route shape of our ``POST /sms``: it reads the form body, checks
  ``X-Twilio-Signature`` with twilio's ``RequestValidator`` (403 if wrong) and answers empty TwiML.

Run one by hand: ``python -m benchmarks.bare_servers smtp --port 2600`` or
``python -m benchmarks.bare_servers webhook --port 8600 --auth-token T --public-url URL``.
``start_bare`` starts one as a subprocess and returns once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl

import requests
from fastapi import FastAPI, Request, Response
from twilio.request_validator import RequestValidator

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


# --------------------------------------------------------------------------- the servers


class AcceptAll:
    """aiosmtpd handler: accepts every recipient and every message, keeps nothing."""

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 2.0.0 OK"


def serve_smtp(host: str, port: int) -> None:
    """Run the bare SMTP server until SIGINT/SIGTERM."""
    from aiosmtpd.smtp import SMTP

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_server(
            lambda: SMTP(AcceptAll(), enable_SMTPUTF8=True, hostname="bare.bench.test", ident="bare ESMTP"),
            host=host,
            port=port,
        )
        print(f"bare smtp listening on {host}:{port}", flush=True)
        await stop.wait()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def webhook_app(auth_token: str, public_url: str) -> FastAPI:
    """A FastAPI app with our ``POST /sms`` shape that only validates the Twilio signature."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @app.post("/sms")
    async def sms(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        params = dict(parse_qsl(body, keep_blank_values=True))
        signature = request.headers.get("x-twilio-signature", "")
        if not RequestValidator(auth_token).validate(public_url, params, signature):
            return Response("invalid signature", status_code=403, media_type="text/plain")
        return Response(EMPTY_TWIML, status_code=200, media_type="text/xml")

    return app


def serve_webhook(host: str, port: int, auth_token: str, public_url: str) -> None:
    """Run the bare webhook app on uvicorn (one process, default loop/http choice) until SIGINT."""
    import uvicorn

    uvicorn.run(webhook_app(auth_token, public_url), host=host, port=port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------- starting one from the harness


def free_port() -> int:
    """A free loopback TCP port (free now; the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_ready(host: str, port: int) -> bool:
    """True if an SMTP server answers connect + EHLO at ``host:port``."""
    try:
        with smtplib.SMTP(host, port, timeout=2) as client:
            code, _ = client.ehlo("probe.bench.test")
            return code == 250
    except (OSError, smtplib.SMTPException):
        return False


def http_ready(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_for(check, timeout: float, what: str, interval: float = 0.05, proc: subprocess.Popen | None = None) -> float:
    """Poll ``check()`` until true; returns the seconds waited. RuntimeError on timeout or if ``proc`` exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode} before it was ready")
        time.sleep(interval)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")


def start_bare(kind: str, port: int, log_path: Path, *, auth_token: str = "", public_url: str = "") -> subprocess.Popen:
    """Start ``python -m benchmarks.bare_servers KIND`` and return once it accepts connections."""
    cmd = [sys.executable, "-m", "benchmarks.bare_servers", kind, "--port", str(port)]
    if kind == "webhook":
        cmd += ["--auth-token", auth_token, "--public-url", public_url]
    out = log_path.open("ab")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out.close()
    try:
        if kind == "smtp":
            wait_for(lambda: smtp_ready("127.0.0.1", port), 30, "bare smtp", proc=proc)
        else:
            wait_for(lambda: http_ready(f"http://127.0.0.1:{port}/healthz"), 30, "bare webhook", proc=proc)
    except RuntimeError:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGINT, then SIGKILL if it does not exit within ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bare baseline servers for the benchmarks.")
    parser.add_argument("kind", choices=("smtp", "webhook"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--auth-token", default="")
    parser.add_argument("--public-url", default="")
    args = parser.parse_args(argv)
    if args.kind == "smtp":
        serve_smtp(args.host, args.port)
    else:
        if not args.auth_token or not args.public_url:
            parser.error("webhook needs --auth-token and --public-url")
        serve_webhook(args.host, args.port, args.auth_token, args.public_url)


if __name__ == "__main__":
    main()
