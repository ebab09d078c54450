"""Iridium Short Burst Data through RockBLOCK (Ground Control), behind the satellite transport interface.

Wire format, as Ground Control documents it:

* Device to us (MO): RockBLOCK POSTs each message to our webhook, form-encoded or JSON: ``imei``, ``serial``,
  ``momsn`` (0..65535, wraps), ``transmit_time`` (UTC, ``21-10-31 10:41:50``), ``iridium_latitude``,
  ``iridium_longitude``, ``iridium_cep`` (km), ``data`` (hex) and ``JWT``, an RS256 token signed by Ground
  Control whose claims repeat the posted fields. We answer 200 within 3 seconds once stored; they retry
  otherwise. MO payloads are at most 340 bytes.
* Us to device (MT): ``POST {ROCKBLOCK_API_URL}/MT`` with ``imei``, ``username``, ``password``, ``data``
  (hex, at most 270 bytes) answers ``OK,<mtId>`` or ``FAILED,<code>,<text>``.
* Credits are charged per 50 bytes of a message, so text for a device is fitted to use as few as it can.

RockBLOCK pushes device messages (it is not polled): ``verify_post`` reads one post and
``MoPost.device_packet`` makes it the ``DevicePacket`` intake stores, whose idempotency key names the IMEI,
the momsn and the transmit time, so a redelivery stores nothing new while a momsn that wrapped around is
still new. It never logs the password.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from messaging.core.codec import TRIM_MARKER, fit_packets
from messaging.core.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError, parse_retry_after
from messaging.core.pb.MessageDataPB_pb2 import MessageDataPB
from messaging.core.types import Protocol
from messaging.runtime.config import Config
from messaging.runtime.http import pooled
from messaging.satellite.transport import DevicePacket, SatelliteNetwork

logger = logging.getLogger(__name__)

KEY_PREFIX = "rockblock"
MT_LIMIT = 270  # bytes of one MT message
MO_LIMIT = 340  # bytes of one MO message
CREDIT_BYTES = 50  # one credit per 50 bytes (or part) of a message
IMEI_DIGITS = 15
DEFAULT_API_URL = "https://rockblock.rock7.com/rockblock"
# Ground Control's public key for the MO webhook's JWT, as published on their "Receiving MO messages via HTTP
# Webhook" page (docs.groundcontrol.com/iot/rockblock/web-services/receiving-mo-message).
GROUND_CONTROL_PUBLIC_KEY_FILE = Path(__file__).with_name("groundcontrol_jwt_public_key.pem")
TRANSMIT_TIME_FORMAT = "%y-%m-%d %H:%M:%S"
# The posted fields the message is built from: each must be in the token's claims, with the same value.
SIGNED_FIELDS = ("imei", "momsn", "transmit_time", "data")
LOCATION_FIELDS = ("iridium_latitude", "iridium_longitude", "iridium_cep")

# MT error codes: which ones retrying can cure (temporary) and which not (permanent: dead letter), with the
# reason in words a person can act on.
MT_ERRORS: dict[int, tuple[bool, str]] = {
    10: (False, "RockBLOCK refused our login (check ROCKBLOCK_USERNAME and ROCKBLOCK_PASSWORD)"),
    11: (True, "no RockBLOCK with this IMEI on our Ground Control account"),
    12: (True, "the RockBLOCK has no line rental"),
    13: (True, "the Ground Control account has no credit left"),
    14: (True, "RockBLOCK could not decode the hex data"),
    15: (True, "the message is too long for RockBLOCK"),
    16: (True, "the message was empty"),
    99: (False, "RockBLOCK system error"),
}


def public_key(config: Config) -> str:
    """The PEM key MO posts are verified with: ROCKBLOCK_JWT_PUBLIC_KEY_FILE, or Ground Control's published one."""
    return Path(config.rockblock_jwt_public_key_file or GROUND_CONTROL_PUBLIC_KEY_FILE).read_text()


class ForgedPost(ValueError):
    """An MO post whose JWT is missing, not signed by the configured key, or does not match the posted fields."""


class BadPost(ValueError):
    """An MO post, correctly signed, whose fields cannot be read (no IMEI, momsn out of range, ...)."""


def parse_imei(text: Any) -> int:
    """A RockBLOCK IMEI: exactly 15 decimal digits."""
    value = str(text).strip()
    if len(value) != IMEI_DIGITS or not value.isascii() or not value.isdigit():
        raise ValueError(f"a RockBLOCK IMEI is {IMEI_DIGITS} digits, not {value[:40]!r}")
    return int(value)


def mt_outcome(status: int, body: str, retry_after: str | None = None) -> str:
    """The mtId of an MT answer; the delivery error it means otherwise (see MT_ERRORS)."""
    if status in (408, 429) or status >= 500:
        raise TemporaryDeliveryError(f"rockblock MT: HTTP {status}", retry_after=parse_retry_after(retry_after))
    if status >= 400:
        raise PermanentDeliveryError(f"rockblock MT: HTTP {status}")
    parts = [p.strip() for p in body.strip().split(",", 2)]
    if parts[0] == "OK" and len(parts) >= 2 and parts[1]:
        return parts[1]
    if parts[0] == "FAILED" and len(parts) >= 2 and parts[1].isdigit():
        code = int(parts[1])
        permanent, reason = MT_ERRORS.get(code, (False, "RockBLOCK error"))
        said = parts[2] if len(parts) > 2 else ""
        error = PermanentDeliveryError if permanent else TemporaryDeliveryError
        raise error(f"{reason} (FAILED,{code}{',' + said[:120] if said else ''})")
    raise TemporaryDeliveryError(f"rockblock MT: unreadable answer {body.strip()[:120]!r}")


def credits(payload_sizes: list[int]) -> int:
    """Credits the messages of these sizes cost."""
    return sum(max(1, math.ceil(size / CREDIT_BYTES)) for size in payload_sizes)


def fit_for_credits(text: str, *, to: str, protocol: Protocol, max_packets: int) -> list[bytes]:
    """Packets within MT_LIMIT that carry as much of ``text`` as the largest packets do, in the fewest credits:
    each budget from MT_LIMIT down in credit steps is tried, and the cheapest one that trims nothing more wins."""
    best: list[bytes] | None = None
    best_carried = -1
    budgets = [MT_LIMIT] + list(range(MT_LIMIT // CREDIT_BYTES * CREDIT_BYTES, CREDIT_BYTES - 1, -CREDIT_BYTES))
    for budget in dict.fromkeys(budgets):
        try:
            packets = fit_packets(text, to=to, protocol=protocol, max_packets=max_packets, limit=budget)
        except ValueError:  # too small a budget for this address: the larger ones were tried first
            break
        carried = _text_carried(packets)
        if carried > best_carried or (
            carried == best_carried and credits([len(p) for p in packets]) < credits([len(p) for p in best or []])
        ):
            best, best_carried = packets, carried
    assert best is not None  # MT_LIMIT always fits (the codec guarantees room at the largest budget)
    return best


_PART_MARKER = re.compile(r"^\(\d+/\d+\) ")


def _text_carried(packets: list[bytes]) -> int:
    """How much of the text the packets carry (a trimmed text carries less): its characters, markers aside."""
    total = 0
    for payload in packets:
        packet = MessageDataPB()
        packet.ParseFromString(payload)
        text = _PART_MARKER.sub("", packet.message[0].text, count=1)
        total += len(text.removesuffix(TRIM_MARKER))
    return total


@dataclass(frozen=True)
class MoPost:
    """One verified MO post: the device, its sequence number and time, the payload and the position."""

    imei: int
    momsn: int
    transmit_time: str
    data: str
    latitude: float | None = None
    longitude: float | None = None
    cep_km: float | None = None

    @property
    def key(self) -> str:
        stamp = datetime.strptime(self.transmit_time, TRANSMIT_TIME_FORMAT).strftime("%y%m%d%H%M%S")
        return f"{KEY_PREFIX}:{self.imei}:{self.momsn}:{stamp}"

    def received_at(self) -> float:
        return datetime.strptime(self.transmit_time, TRANSMIT_TIME_FORMAT).replace(tzinfo=UTC).timestamp()

    def device_packet(self) -> DevicePacket:
        return DevicePacket(
            key=self.key,
            device_id=self.imei,
            packet_id=self.momsn,
            data=self.data,
            encoding="hex",
            received_at=self.received_at(),
            latitude=self.latitude,
            longitude=self.longitude,
            location_cep_km=self.cep_km,
        )


def _posted(value: Any) -> str:
    """A posted value as the token's claims spell it (form posts are text; JSON may carry numbers)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    return str(value)


def verify_post(fields: dict[str, Any], public_key: str) -> MoPost:
    """The MO post, once its JWT is verified with ``public_key`` and its claims match the posted fields.
    :class:`ForgedPost` when not; :class:`BadPost` when a signed field cannot be read."""
    import jwt  # here, not at the top: with its cryptography ~9 MB, in every process that only sends or parses

    token = fields.get("JWT")
    if not isinstance(token, str) or not token:
        raise ForgedPost("no JWT in the post")
    try:
        claims = jwt.decode(token, public_key, algorithms=["RS256"], options={"verify_aud": False})
    except jwt.PyJWTError as exc:
        raise ForgedPost(f"JWT not valid: {type(exc).__name__}") from None
    for name in SIGNED_FIELDS + LOCATION_FIELDS:
        if name in fields or name in SIGNED_FIELDS:
            if name not in claims or name not in fields or _posted(fields[name]) != _posted(claims[name]):
                raise ForgedPost(f"posted {name} does not match the signed one")
    return read_post(claims)


def read_post(fields: dict[str, Any]) -> MoPost:
    """The MO fields of a (verified) post; :class:`BadPost` naming the field that cannot be read."""
    try:
        imei = parse_imei(fields.get("imei", ""))
    except ValueError as exc:
        raise BadPost(str(exc)) from None
    momsn_text = _posted(fields.get("momsn", "")).strip()
    if not momsn_text.isdigit() or int(momsn_text) > 65535:
        raise BadPost(f"momsn is not 0..65535: {momsn_text[:20]!r}")
    transmit_time = _posted(fields.get("transmit_time", "")).strip()
    try:
        datetime.strptime(transmit_time, TRANSMIT_TIME_FORMAT)
    except ValueError:
        raise BadPost(f"transmit_time is not YY-MM-DD HH:MM:SS: {transmit_time[:30]!r}") from None
    data = _posted(fields.get("data", "")).replace(" ", "")

    def number(name: str) -> float | None:
        try:
            value = float(_posted(fields.get(name, "")))
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    latitude, longitude = number("iridium_latitude"), number("iridium_longitude")
    if latitude is None or longitude is None or not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        latitude = longitude = None
    return MoPost(
        imei=imei,
        momsn=int(momsn_text),
        transmit_time=transmit_time,
        data=data,
        latitude=latitude,
        longitude=longitude,
        cep_km=number("iridium_cep") if latitude is not None else None,
    )


class RockBlockNetwork(SatelliteNetwork):
    """RockBLOCK behind the satellite transport interface: MT through its HTTP API, MO pushed to our webhook."""

    name = "rockblock"
    packet_budget = MT_LIMIT
    polled = False

    def __init__(self, api_url: str, username: str, password: str, *, timeout: float = 15) -> None:
        self.api_url = api_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        self._session = pooled(requests.Session())  # one kept-alive connection per sending thread

    @classmethod
    def from_config(cls, config: Config) -> RockBlockNetwork:
        return cls(
            config.rockblock_api_url,
            config.rockblock_username,
            config.rockblock_password,
            timeout=config.rockblock_timeout,
        )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return bool(config.rockblock_username and config.rockblock_password)

    def __repr__(self) -> str:
        return f"RockBlockNetwork({self.api_url!r}, user={self.username!r})"

    @staticmethod
    def parse_device_id(text: str) -> int:
        return parse_imei(text)

    def fit(self, text: str, *, to: str, protocol: Protocol, max_packets: int) -> list[bytes]:
        return fit_for_credits(text, to=to, protocol=protocol, max_packets=max_packets)

    def send(self, device_id: int, payload: bytes) -> str:
        if not payload or len(payload) > MT_LIMIT:
            raise PermanentDeliveryError(f"rockblock MT: payload is {len(payload)} bytes (1..{MT_LIMIT})")
        form = {
            "imei": str(device_id),
            "username": self.username,
            "password": self._password,
            "data": payload.hex(),
        }
        try:
            resp = self._session.post(
                f"{self.api_url}/MT", data=form, headers={"Accept": "text/plain"}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise TemporaryDeliveryError(f"rockblock MT: {type(exc).__name__}") from None
        try:
            mt_id = mt_outcome(resp.status_code, resp.text, resp.headers.get("Retry-After"))
        except DeliveryError as exc:
            logger.warning("rockblock MT refused imei=...%s: %s", str(device_id)[-4:], exc)
            raise
        return mt_id

    def close(self) -> None:
        self._session.close()
