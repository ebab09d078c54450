"""Steady test traffic through all the intake paths, with unique tokens, and an exact count of arrivals.

Each sender behaves like the real one it stands for: an SMTP client retries on 4xx or a refused
connection, Twilio retries a webhook that got 5xx, the Hive keeps a packet until it is acked, RockBLOCK posts
an MO message again until our webhook answers 200. People on RockBLOCK (``Person.network``) get mail and texts
too, and send through the fake RockBLOCK. Used by the zero-loss tests and by ``benchmarks/chaos.py``.
"""

from __future__ import annotations

import base64
import itertools
import random
import re
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage

import requests

from messaging.core.codec import encode_from_device
from messaging.core.types import Protocol
from messaging.runtime.config import Config
from messaging.sms.twilio import sign

TOKEN = re.compile(r"tok-[0-9a-f]{6}-[a-z]-\d{6}")


@dataclass(frozen=True)
class Person:
    username: str
    twilio_number: str
    device_id: int
    network: str = "swarm"  # or "rockblock": device_id is then the IMEI


@dataclass
class Report:
    sent: int
    delivered: int
    lost: list[str]
    duplicated: dict[str, int]
    retries: int
    by_path: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"sent={self.sent} delivered={self.delivered} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} sender_retries={self.retries} by_path={self.by_path}"
        )


class Traffic:
    def __init__(
        self,
        config: Config,
        box,
        people: list[Person],
        *,
        rate: float = 5.0,
        seed: int = 1,
        give_up_after: float = 300.0,
    ):
        self.config = config
        self.box = box
        self.people = people
        self.interval = 1.0 / rate
        self.rng = random.Random(seed)
        self.give_up_after = give_up_after
        self.sent: dict[str, str] = {}  # token -> path ("smtp", "twilio", "hive-email", "hive-sms")
        self.retries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seq = itertools.count(1)
        self.run = f"{random.Random().getrandbits(24):06x}"  # tokens of different runs never collide

    # -- senders ---------------------------------------------------------------------------------
    def _token(self, letter: str) -> str:
        return f"tok-{self.run}-{letter}-{next(self._seq):06d}"

    def _retrying(self, attempt) -> None:
        deadline = time.monotonic() + self.give_up_after
        delay = 0.2
        while True:
            try:
                if attempt():
                    return
            except (OSError, smtplib.SMTPException, requests.RequestException):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gave up sending: the backend refused for too long")
            with self._lock:
                self.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def send_smtp(self) -> str:
        person = self.rng.choice(self.people)
        token = self._token("s")
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = (
            "load@example.org",
            f"{person.username}@{self.config.email_domain}",
            token,
        )
        mail["Message-ID"] = f"<{token}@load.example.org>"
        mail.set_content(f"body of {token}")

        def attempt() -> bool:
            with smtplib.SMTP("127.0.0.1", self.config.smtp_listen_port, timeout=30) as smtp:
                smtp.send_message(mail)  # raises on 4xx/5xx
            return True

        self._retrying(attempt)
        return self._record(token, "smtp")

    def send_twilio(self) -> str:
        person = self.rng.choice(self.people)
        token = self._token("t")
        params = {
            "MessageSid": f"SM{self.run}{int(token[-6:]):026x}",
            "From": "+15550100999",
            "To": person.twilio_number,
            "Body": token,
            "NumMedia": "0",
            "AccountSid": self.config.twilio_account_sid,
        }
        headers = {
            "X-Twilio-Signature": sign(
                auth_token=self.config.twilio_auth_token,
                public_url=self.config.twilio_webhook_public_url,
                params=params,
            )
        }
        url = f"http://127.0.0.1:{self.config.serve_http_port}/sms"

        def attempt() -> bool:
            response = requests.post(url, data=params, headers=headers, timeout=30)
            if response.status_code >= 500:
                return False
            response.raise_for_status()
            return True

        self._retrying(attempt)
        return self._record(token, "twilio")

    def _device_message(self) -> tuple[str, str, bytes]:
        """A token, its path suffix and the device payload carrying it (to email or to SMS)."""
        if self.rng.random() < 0.5:
            token, path, target = self._token("e"), "email", (Protocol.EMAIL, "friend@example.org")
        else:
            token, path, target = self._token("m"), "sms", (Protocol.SMS, "+14155550198")
        return token, path, encode_from_device([(token, target[0], target[1])])

    def send_rockblock(self) -> str:
        person = self.rng.choice([p for p in self.people if p.network == "rockblock"])
        token, path, data = self._device_message()
        self.box.rockblock.device_send(person.device_id, data)
        return self._record(token, f"rockblock-{path}")

    def send_hive(self) -> str:
        person = self.rng.choice([p for p in self.people if p.network == "swarm"])
        if self.rng.random() < 0.5:
            token, path, target = self._token("e"), "hive-email", (Protocol.EMAIL, "friend@example.org")
        else:
            token, path, target = self._token("m"), "hive-sms", (Protocol.SMS, "+14155550198")
        data = encode_from_device([(token, target[0], target[1])])
        self.box.hive.device_send(person.device_id, base64.b64encode(data).decode())
        return self._record(token, path)

    def _record(self, token: str, path: str) -> str:
        with self._lock:
            self.sent[token] = path
        return token

    def _loop(self, send) -> None:
        while not self._stop.is_set():
            send()
            self._stop.wait(self.interval)

    def start(self) -> Traffic:
        senders = [self.send_smtp, self.send_twilio]
        senders += [self.send_hive] if any(p.network == "swarm" for p in self.people) else []
        senders += [self.send_rockblock] if any(p.network == "rockblock" for p in self.people) else []
        for send in senders:
            thread = threading.Thread(target=self._loop, args=(send,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def halt(self) -> None:
        """Stop sending new tokens without waiting for the senders."""
        self._stop.set()

    def stop(self) -> None:
        """Stop sending new tokens; senders finish (and retry) what they were sending."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.give_up_after + 30)

    # -- arrivals --------------------------------------------------------------------------------
    def arrivals(self) -> Counter:
        """How many times each token arrived at its destination fake."""
        seen: Counter = Counter()
        for packet in self.box.hive.to_device():
            seen.update(set(TOKEN.findall(base64.b64decode(packet["data"]).decode("utf-8", "replace"))))
        if getattr(self.box, "rockblock", None) is not None:
            for mt in self.box.rockblock.to_device():
                seen.update(set(TOKEN.findall(bytes.fromhex(mt["data"]).decode("utf-8", "replace"))))
        for mail in self.box.relay.messages:
            seen.update(set(TOKEN.findall(mail["raw"].decode("utf-8", "replace"))))
        for sms in self.box.twilio.messages:
            seen.update(set(TOKEN.findall(sms["body"])))
        return seen

    def report(self) -> Report:
        seen = self.arrivals()
        with self._lock:
            sent = dict(self.sent)
        lost = sorted(t for t in sent if seen[t] == 0)
        duplicated = {t: n for t, n in seen.items() if t in sent and n > 1}
        by_path = Counter(sent.values())
        return Report(
            sent=len(sent),
            delivered=sum(1 for t in sent if seen[t]),
            lost=lost,
            duplicated=duplicated,
            retries=self.retries,
            by_path=dict(by_path),
        )

    def wait_delivered(self, timeout: float = 120.0, interval: float = 0.5) -> Report:
        """Poll the fakes until every sent token arrived (or the timeout); return the report."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.report()
            if not report.lost or time.monotonic() > deadline:
                return report
            time.sleep(interval)
