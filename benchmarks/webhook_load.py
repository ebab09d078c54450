"""Twilio-webhook load generator: signed form posts, C at a time, from its own process (aiohttp).

Each request is what Twilio sends for an inbound SMS: form fields ``MessageSid``, ``AccountSid``,
``From``, ``To``, ``Body``, ``NumMedia`` and the ``X-Twilio-Signature`` over the public URL. All bodies
and signatures are made before the clock starts (signing is Twilio's work, not the server's). A request
counts only on ``200``; the whole request is timed.

Run: ``BENCH_TWILIO_AUTH_TOKEN=... python -m benchmarks.webhook_load --url http://127.0.0.1:8000/sms
--public-url URL --to +15005550006 --count 500 --concurrency 8 --tag w1`` (prints a JSON ``LoadResult``).
The auth token comes from the environment so that it never shows in a process list.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from urllib.parse import urlencode

from benchmarks.report import latency_summary
from benchmarks.smtp_load import LoadResult, token
from messaging.sms.twilio import sign

TOKEN_ENV = "BENCH_TWILIO_AUTH_TOKEN"
ACCOUNT_SID = "AC" + "0" * 32
SENDER_NUMBER = "+14155550123"


def message_sid(tag: str, index: int) -> str:
    """A Twilio-shaped, run-unique ``SM`` + 32 hex digits."""
    return "SM" + hashlib.md5(token(tag, index).encode()).hexdigest()


def signed_form(*, auth_token: str, public_url: str, tag: str, index: int, to: str) -> tuple[bytes, str]:
    """The form body and ``X-Twilio-Signature`` of one inbound-SMS webhook."""
    params = {
        "MessageSid": message_sid(tag, index),
        "SmsSid": message_sid(tag, index),
        "AccountSid": ACCOUNT_SID,
        "From": SENDER_NUMBER,
        "To": to,
        "Body": f"tok {token(tag, index)}",
        "NumMedia": "0",
        "NumSegments": "1",
    }
    return urlencode(params).encode(), sign(auth_token=auth_token, public_url=public_url, params=params)


async def _run(
    url: str, requests: list[tuple[str, bytes, str]], concurrency: int, max_seconds: float | None
) -> tuple[dict, float, float]:
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    done: list[str] = []
    tried: list[str] = []
    pending = iter(requests)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(deadline: float) -> None:
            for tok, body, signature in pending:
                headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
                started = time.perf_counter()
                if started > deadline:
                    return
                tried.append(tok)
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    status = type(exc).__name__
                latencies.append((time.perf_counter() - started) * 1000)
                if status == 200:
                    done.append(tok)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        # the first request of each worker opens its connection, as in a real burst of webhooks
        start, perf0 = time.time(), time.perf_counter()
        deadline = perf0 + max_seconds if max_seconds is not None else float("inf")
        await asyncio.gather(*(worker(deadline) for _ in range(concurrency)))
        wall = time.perf_counter() - perf0
    return {"latencies": latencies, "errors": errors, "done": done, "tried": tried}, start, wall


def run_webhook_load(
    url: str,
    public_url: str,
    auth_token: str,
    recipients: list[str],
    count: int,
    concurrency: int,
    tag: str,
    max_seconds: float | None = None,
) -> LoadResult:
    """POST ``count`` signed webhooks to ``url``, ``concurrency`` at a time, round-robin over ``recipients``;
    start no new request after ``max_seconds``."""
    requests = []
    for i in range(count):
        body, signature = signed_form(
            auth_token=auth_token, public_url=public_url, tag=tag, index=i, to=recipients[i % len(recipients)]
        )
        requests.append((token(tag, i), body, signature))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    out, start, wall = asyncio.run(_run(url, requests, concurrency, max_seconds))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    done = set(out["done"])
    return LoadResult(
        sent=len(out["tried"]),
        ok=len(done),
        errors=out["errors"],
        accepted=sorted(done),
        failed=[tok for tok in out["tried"] if tok not in done],
        skipped=count - len(out["tried"]),
        start=start,
        end=start + wall,
        wall_s=wall,
        rate=len(done) / wall if wall > 0 else 0.0,
        latency=latency_summary(out["latencies"]),
        client_cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    )


def spawn(
    url: str,
    public_url: str,
    auth_token: str,
    recipients: list[str],
    count: int,
    concurrency: int,
    tag: str,
    max_seconds: float | None = None,
) -> subprocess.Popen:
    """Start the load generator as a separate process; read its result with ``smtp_load.collect``."""
    cmd = [sys.executable, "-m", "benchmarks.webhook_load", "--url", url, "--public-url", public_url]
    cmd += ["--to", ",".join(recipients), "--count", str(count), "--concurrency", str(concurrency), "--tag", tag]
    if max_seconds is not None:
        cmd += ["--max-seconds", str(max_seconds)]
    env = {**os.environ, TOKEN_ENV: auth_token}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Twilio webhook load generator (prints a JSON result).")
    parser.add_argument("--url", required=True, help="where to POST, e.g. http://127.0.0.1:8000/sms")
    parser.add_argument("--public-url", required=True, help="the URL the signature is computed over")
    parser.add_argument("--to", required=True, help="comma-separated Twilio numbers, used round-robin")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--max-seconds", type=float, default=None, help="start no new request after this")
    args = parser.parse_args(argv)
    auth_token = os.environ.get(TOKEN_ENV, "")
    if not auth_token:
        parser.error(f"set {TOKEN_ENV}")
    result = run_webhook_load(
        args.url,
        args.public_url,
        auth_token,
        args.to.split(","),
        args.count,
        args.concurrency,
        args.tag,
        max_seconds=args.max_seconds,
    )
    json.dump(asdict(result), sys.stdout)


if __name__ == "__main__":
    main()
