"""SMTP load generator: N messages over C concurrent persistent connections (smtplib), in its own process.

Each connection sends its share of the messages as MAIL, RCPT, DATA on one session (no reconnect per
message, as a busy relay does). The DATA command is timed (from ``DATA`` to the final reply, which our
server gives only once the message is stored). A message counts as accepted only on a ``250`` to DATA.

Messages are built before the clock starts. Each carries a token ``<tag>-<index>`` in its body and a
unique Message-ID, so a repeated run never collides with the idempotency keys of an earlier one.

Run: ``python -m benchmarks.smtp_load --port 2525 --count 500 --concurrency 4 --to a@example.com,b@example.com
--tag s1``; prints one JSON document (see ``LoadResult``) on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import smtplib
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage

from benchmarks.report import latency_summary

SENDER = "loadgen@bench.test"


@dataclass
class LoadResult:
    """What one load run measured; ``start``/``end`` are epoch seconds (for end-to-end timing)."""

    sent: int  # attempted (fewer than asked for when the time cap ended the run)
    ok: int
    errors: dict[str, int]
    accepted: list[str]  # tokens of the messages the server accepted
    failed: list[str]  # tokens attempted and not accepted
    skipped: int  # not attempted: the run hit its time cap
    start: float
    end: float
    wall_s: float
    rate: float  # accepted messages (or requests) per second of wall time
    latency: dict[str, float]  # of the DATA command (SMTP) or of the whole request (webhook)
    txn_latency: dict[str, float] = field(default_factory=dict)  # MAIL+RCPT+DATA
    client_cpu_s: float = 0.0

    def figures(self) -> dict:
        """The result without the token lists (for the results file)."""
        out = asdict(self)
        del out["accepted"], out["failed"]
        out["failed_count"] = len(self.failed)
        return out


def token(tag: str, index: int) -> str:
    return f"{tag}-{index:06d}"


def build_message(tag: str, index: int, recipient: str) -> bytes:
    """One short mail (fits one satellite packet) with its token in the body."""
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = recipient
    msg["Subject"] = "bench"
    msg["Message-ID"] = f"<{token(tag, index)}@loadgen.bench.test>"
    msg.set_content(f"tok {token(tag, index)}")
    return msg.as_bytes()


def _connect(host: str, port: int) -> smtplib.SMTP:
    client = smtplib.SMTP(host, port, timeout=60)
    client.ehlo("loadgen.bench.test")
    return client


def _worker(
    host: str,
    port: int,
    jobs: list[tuple[str, str, bytes]],
    barrier: threading.Barrier,
    deadline: list[float],
    out: dict,
) -> None:
    """Send ``jobs`` on one persistent session until done or past ``deadline[0]`` (perf_counter); results
    go into ``out`` (also when the session breaks)."""
    data_ms: list[float] = []
    txn_ms: list[float] = []
    errors: dict[str, int] = {}
    done: list[str] = []
    tried: list[str] = []
    out.update(data_ms=data_ms, txn_ms=txn_ms, errors=errors, done=done, tried=tried)
    try:
        client: smtplib.SMTP | None = _connect(host, port)
    except (OSError, smtplib.SMTPException) as exc:
        errors[f"connect {type(exc).__name__}"] = len(jobs)
        tried.extend(tok for tok, _, _ in jobs)
        client = None
    barrier.wait(timeout=120)
    for tok, rcpt, raw in jobs if client is not None else ():
        started = time.perf_counter()
        if started > deadline[0]:
            break
        tried.append(tok)
        try:
            if client is None:
                client = _connect(host, port)
            code, _ = client.mail(SENDER)
            if code == 250:
                code, _ = client.rcpt(rcpt)
            if code in (250, 251):
                data_started = time.perf_counter()
                code, _ = client.data(raw)
                data_ms.append((time.perf_counter() - data_started) * 1000)
            txn_ms.append((time.perf_counter() - started) * 1000)
            if code == 250:
                done.append(tok)
            else:
                errors[str(code)] = errors.get(str(code), 0) + 1
                client.rset()
        except (OSError, smtplib.SMTPException) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if client is not None:
                client.close()
            client = None
    out["end"] = time.time()
    if client is not None:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass


def run_smtp_load(
    host: str,
    port: int,
    count: int,
    concurrency: int,
    recipients: list[str],
    tag: str,
    max_seconds: float | None = None,
) -> LoadResult:
    """Send ``count`` messages round-robin to ``recipients`` over ``concurrency`` connections; stop
    starting new ones after ``max_seconds`` (a guard for slow servers; the rate stays exact)."""
    if not recipients:
        raise ValueError("at least one recipient")
    jobs = [(token(tag, i), recipients[i % len(recipients)]) for i in range(count)]
    shares = [
        [(tok, rcpt, build_message(tag, i, rcpt)) for i, (tok, rcpt) in enumerate(jobs) if i % concurrency == w]
        for w in range(concurrency)
    ]
    barrier = threading.Barrier(concurrency + 1)
    deadline = [float("inf")]
    outs: list[dict] = [{} for _ in range(concurrency)]
    threads = [
        threading.Thread(target=_worker, args=(host, port, shares[w], barrier, deadline, outs[w]), daemon=True)
        for w in range(concurrency)
    ]
    for t in threads:
        t.start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    barrier.wait(timeout=120)
    start, perf0 = time.time(), time.perf_counter()
    if max_seconds is not None:
        deadline[0] = perf0 + max_seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - perf0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    errors: dict[str, int] = {}
    for o in outs:
        for key, n in o.get("errors", {}).items():
            errors[key] = errors.get(key, 0) + n
    done = {tok for o in outs for tok in o.get("done", [])}
    tried = [tok for o in outs for tok in o.get("tried", [])]
    return LoadResult(
        sent=len(tried),
        ok=len(done),
        errors=errors,
        accepted=sorted(done),
        failed=[tok for tok in tried if tok not in done],
        skipped=count - len(tried),
        start=start,
        end=start + wall,
        wall_s=wall,
        rate=len(done) / wall if wall > 0 else 0.0,
        latency=latency_summary([x for o in outs for x in o.get("data_ms", [])]),
        txn_latency=latency_summary([x for o in outs for x in o.get("txn_ms", [])]),
        client_cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    )


def spawn(
    host: str,
    port: int,
    count: int,
    concurrency: int,
    recipients: list[str],
    tag: str,
    max_seconds: float | None = None,
) -> subprocess.Popen:
    """Start the load generator as a separate process; read its result with ``collect``."""
    cmd = [sys.executable, "-m", "benchmarks.smtp_load", "--host", host, "--port", str(port)]
    cmd += ["--count", str(count), "--concurrency", str(concurrency), "--to", ",".join(recipients), "--tag", tag]
    if max_seconds is not None:
        cmd += ["--max-seconds", str(max_seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def collect(proc: subprocess.Popen, timeout: float = 900) -> LoadResult:
    """Wait for a spawned load generator and parse its JSON; RuntimeError if it failed."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return LoadResult(**json.loads(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SMTP load generator (prints a JSON result).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--to", required=True, help="comma-separated recipients, used round-robin")
    parser.add_argument("--tag", required=True, help="unique per run: goes into tokens and Message-IDs")
    parser.add_argument("--max-seconds", type=float, default=None, help="start no new message after this")
    args = parser.parse_args(argv)
    recipients = args.to.split(",")
    result = run_smtp_load(
        args.host, args.port, args.count, args.concurrency, recipients, args.tag, max_seconds=args.max_seconds
    )
    json.dump(asdict(result), sys.stdout)


if __name__ == "__main__":
    main()
