"""Packet codec for the device wire format (proto/MessageDataPB.proto). Pure functions, no I/O.

* Decoding: a packet from a device (a ``MessageDataPB``, whichever satellite network carried it) becomes
  one :class:`CombinedMessage` per ``Message`` inside it, or a specific :class:`PacketDecodeError`.
* Encoding: :func:`fit_packets` cuts a message for a device into complete ``MessageDataPB``
  packets of at most ``limit`` bytes each (the network's packet budget: Swarm packets carry 192 bytes).

Text handling: Python strings may hold surrogate code points, which are not valid UTF-8 and
cannot go into a protobuf string. :func:`clean_text` joins valid surrogate pairs into the
character they encode and replaces lone surrogates with U+FFFD; the encoder applies it to
``text`` and ``to`` first. Devices may send invalid UTF-8 (proto2 does not check it); the
decoder keeps such messages and replaces the bad bytes with U+FFFD rather than drop them.
"""

from __future__ import annotations

import functools
import time
import unicodedata
from collections.abc import Iterable

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from messaging.core.pb.MessageDataPB_pb2 import MessageDataPB
from messaging.core.types import CombinedMessage, Direction, Protocol, storable_text
from messaging.core.types import utf8_text as clean_text

WIRE_VERSION = 1
TRIM_MARKER = " [...]"
DELIVERABLE_PROTOCOLS = frozenset({Protocol.EMAIL, Protocol.SMS})
# A split prefers to end after whitespace found within this many code points of the hard cut.
WORD_BREAK_LOOKBACK = 30
# Room left for text in each packet of a split (besides markers): one code point of any width.
MIN_CHUNK_BYTES = 4
_ZWJ = "\u200d"


class PacketDecodeError(ValueError):
    """A packet from a device cannot be turned into messages."""

    reason = "bad packet"

    def __init__(self, detail: str, *, packet_id: int | None = None):
        self.detail = detail
        self.packet_id = packet_id
        where = f"packet {packet_id}" if packet_id is not None else "packet"
        super().__init__(f"{where}: {self.reason}: {detail}")


class BadPayloadEncoding(PacketDecodeError):
    reason = "payload not in the encoding its network uses"


class BadProtobuf(PacketDecodeError):
    reason = "not a MessageDataPB protobuf"


class MissingRequiredField(PacketDecodeError):
    reason = "missing required field"


class UnknownProtocol(PacketDecodeError):
    reason = "protocol we cannot deliver"


class NotFromDevice(PacketDecodeError):
    reason = "from_device is false (a cloud-to-device packet in the device stream)"


class EmptyPacket(PacketDecodeError):
    reason = "no messages"


class EmptyRecipient(PacketDecodeError):
    reason = "empty recipient"


# --------------------------------------------------------------------------- decoding


def _as_text(value: str | bytes) -> str:
    """A proto2 string field; upb hands back ``bytes`` when the wire bytes are not valid UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def decode_device_payload(data: bytes, *, packet_id: int | None = None) -> MessageDataPB:
    """Parse raw packet bytes into a fully initialised ``MessageDataPB`` (either direction).

    Raises :class:`BadProtobuf`, or :class:`UnknownProtocol` / :class:`MissingRequiredField`
    naming the field (e.g. ``message[0].to``) when a required field is absent.
    """
    packet = MessageDataPB()
    try:
        packet.MergeFromString(data)  # does not enforce required fields: checked below
    except DecodeError as exc:
        raise BadProtobuf(f"{exc} ({len(data)} bytes)", packet_id=packet_id) from exc
    missing = packet.FindInitializationErrors()
    if not missing:
        return packet
    for index, message in enumerate(packet.message):
        if not message.HasField("protocol"):
            # A closed proto2 enum parks values it does not know among the unknown fields.
            raw = [field.data for field in UnknownFieldSet(message) if field.field_number == 5]
            if raw:
                raise UnknownProtocol(f"message[{index}] has protocol value {raw[-1]}", packet_id=packet_id)
    raise MissingRequiredField(", ".join(missing), packet_id=packet_id)


def decode_from_device(
    payload: bytes, *, device_id: int, packet_id: int, key: str, received_at: float | None = None
) -> list[CombinedMessage]:
    """Turn one packet from a device (its payload bytes, from any satellite network) into one FROM_DEVICE
    message per ``Message`` it holds; message ``i`` has the idempotency key ``<key>:<i>``.

    All or nothing: any bad message makes the whole packet raise a :class:`PacketDecodeError`
    subclass, so the caller can keep the raw packet instead of half of it.
    """
    packet = decode_device_payload(payload, packet_id=packet_id)
    if not packet.from_device:
        raise NotFromDevice(f"device {device_id}", packet_id=packet_id)
    if not packet.message:
        raise EmptyPacket(f"device {device_id} sent version {packet.version} with no message", packet_id=packet_id)
    when = time.time() if received_at is None else received_at
    out: list[CombinedMessage] = []
    for index, message in enumerate(packet.message):
        protocol = Protocol(message.protocol)
        if protocol not in DELIVERABLE_PROTOCOLS:
            raise UnknownProtocol(f"message[{index}] has protocol {protocol.name}", packet_id=packet_id)
        recipient = storable_text(_as_text(message.to)).strip()
        if not recipient:
            raise EmptyRecipient(f"message[{index}] has an empty 'to'", packet_id=packet_id)
        out.append(
            CombinedMessage(
                direction=Direction.FROM_DEVICE,
                protocol=protocol,
                sender=f"device:{device_id}",
                recipient=recipient,
                text=_as_text(message.text),
                idempotency_key=f"{key}:{index}",
                device_id=device_id,
                external_id=str(packet_id),
                received_at=when,
            )
        )
    return out


# --------------------------------------------------------------------------- encoding


def _packet(text: str, to: str, protocol: Protocol, *, from_device: bool) -> bytes:
    packet = MessageDataPB(version=WIRE_VERSION, from_device=from_device)
    packet.message.add(text=text, to=to, protocol=int(protocol))
    return packet.SerializeToString()


def encode_from_device(messages: Iterable[tuple[str, Protocol, str]]) -> bytes:
    """A packet as a device sends it: ``(text, protocol, to)`` per message, no size limit."""
    packet = MessageDataPB(version=WIRE_VERSION, from_device=True)
    for text, protocol, to in messages:
        packet.message.add(text=clean_text(text), to=clean_text(to), protocol=int(protocol))
    return packet.SerializeToString()


@functools.lru_cache(maxsize=4096)
def text_capacity(to: str, protocol: Protocol, limit: int) -> int:
    """Most UTF-8 bytes of text one to-device packet can carry, or -1 if not even empty text fits.

    Found by serialising (the size depends only on the text's byte length, and grows with it),
    with a binary search so it costs about log2(limit) small serialisations; remembered, since a user's
    correspondents come back (it was a tenth of a satellite send's CPU).
    """
    if len(_packet("", to, protocol, from_device=False)) > limit:
        return -1
    low, high = 0, limit  # low always fits; the answer is below limit since headers take bytes
    while low < high:
        mid = (low + high + 1) // 2
        if len(_packet("x" * mid, to, protocol, from_device=False)) <= limit:
            low = mid
        else:
            high = mid - 1
    return low


def _marker(index: int, count: int) -> str:
    return f"({index}/{count}) " if count > 1 else ""


def _fit_to(to: str, protocol: Protocol, limit: int, wanted: int) -> str:
    """Longest prefix of ``to`` (whole code points) leaving ``wanted`` bytes for text."""
    if text_capacity(to, protocol, limit) >= wanted:
        return to
    to = to[:limit]  # a longer `to` cannot fit: keeps the search cheap for absurd input
    low, high = 0, len(to)  # invariant: to[:low] leaves room (checked by the caller for "")
    while low < high:
        mid = (low + high + 1) // 2
        if text_capacity(to[:mid], protocol, limit) >= wanted:
            low = mid
        else:
            high = mid - 1
    return to[:low]


def _prefix_fitting(text: str, start: int, budget: int) -> int:
    """Most code points of ``text[start:]`` whose UTF-8 fits in ``budget`` bytes (O(budget))."""
    window = text[start : start + budget]  # each code point takes at least one byte
    encoded = window.encode("utf-8")
    if len(encoded) <= budget:
        return len(window)
    return len(encoded[:budget].decode("utf-8", errors="ignore"))


def _joins_previous(char: str) -> bool:
    """Combining marks, ZWJ, variation selectors and emoji modifiers belong to the previous character."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")
        or char == _ZWJ
        or 0xFE00 <= code <= 0xFE0F
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0100 <= code <= 0xE01EF
    )


def _cut(text: str, start: int, budget: int) -> int:
    """End index of the chunk starting at ``start``: whole text, a word break, or a hard cut."""
    count = _prefix_fitting(text, start, budget)
    end = start + count
    if end >= len(text):
        return end
    low = max(end - WORD_BREAK_LOOKBACK, start + count // 2)
    for index in range(end - 1, low - 1, -1):
        if text[index].isspace():
            return index + 1  # the chunk ends with the whitespace, the next one starts a word
    if text[end].isspace():
        return end
    # Hard cut: avoid separating a character from its combining marks when that is cheap.
    cut = end
    while cut > start + 1 and end - cut < 8 and (_joins_previous(text[cut]) or text[cut - 1] == _ZWJ):
        cut -= 1
    if _joins_previous(text[cut]) or text[cut - 1] == _ZWJ:
        return end
    return cut


def _split(text: str, capacity: int, count: int, *, trim: bool) -> tuple[list[str], int]:
    """Greedy split into at most ``count`` chunk bodies (markers not added; their room is kept).

    Returns the bodies and the index in ``text`` where the split stopped.
    """
    bodies: list[str] = []
    position = 0
    for index in range(1, count + 1):
        if position >= len(text):
            break
        last_trimmed = trim and index == count
        budget = capacity - len(_marker(index, count)) - (len(TRIM_MARKER) if last_trimmed else 0)
        end = _cut(text, position, budget)
        body = text[position:end]
        bodies.append(body.rstrip() + TRIM_MARKER if last_trimmed else body)
        position = end
    return bodies, position


def _with_markers(bodies: list[str]) -> list[str]:
    """Prefix ``(i/n) `` markers; n may be below the planned count, whose markers are never shorter."""
    return [_marker(i, len(bodies)) + body for i, body in enumerate(bodies, 1)]


def _fit_texts(text: str, *, capacity: int, max_packets: int = 4) -> list[str]:
    """The texts (markers included) of each packet, given ``capacity`` text bytes per packet.

    One chunk without marker if everything fits; otherwise ``(i/n) `` markers, n <= max_packets,
    preferring word breaks; if it still does not fit, the last chunk ends with TRIM_MARKER.
    """
    size = len(text.encode("utf-8"))
    if size <= capacity:
        return [text]
    for count in range(2, max_packets + 1):
        room = sum(capacity - len(_marker(i, count)) for i in range(1, count + 1))
        if room < size:
            continue
        bodies, position = _split(text, capacity, count, trim=False)
        if position >= len(text):
            return _with_markers(bodies)
    bodies, _ = _split(text, capacity, max_packets, trim=True)
    return _with_markers(bodies)


def fit_packets(text: str, *, to: str, protocol: Protocol, limit: int, max_packets: int = 4) -> list[bytes]:
    """Serialized to-device ``MessageDataPB`` packets (each <= ``limit`` bytes) carrying ``text``.

    ``to`` is who the message is from (the address the device replies to). If ``to`` is so long
    that the text cannot be carried, it is truncated on a character boundary, only as far as
    needed to fit the whole text in one packet or, failing that, to leave each packet room for
    its marker, the trim marker and one character. Raises ValueError if ``limit`` is too small
    for even that with an empty ``to``, or if ``max_packets`` < 1.
    """
    if max_packets < 1:
        raise ValueError(f"max_packets must be at least 1, got {max_packets}")
    text, to = clean_text(text), clean_text(to)
    size = len(text.encode("utf-8"))
    split_room = len(_marker(max_packets, max_packets)) + len(TRIM_MARKER) + MIN_CHUNK_BYTES
    wanted = min(size, split_room)
    if text_capacity("", protocol, limit) < wanted:
        raise ValueError(f"packet limit {limit} bytes leaves no room for text")
    to = _fit_to(to, protocol, limit, wanted)
    capacity = text_capacity(to, protocol, limit)
    packets = [
        _packet(chunk, to, protocol, from_device=False)
        for chunk in _fit_texts(text, capacity=capacity, max_packets=max_packets)
    ]
    oversize = [len(p) for p in packets if len(p) > limit]
    if oversize:  # a bug guard: sizes are computed above, this must never happen
        raise AssertionError(f"packet of {oversize[0]} bytes exceeds limit {limit}")
    return packets
