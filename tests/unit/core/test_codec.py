"""messaging.core.codec: Hive packet decoding, its errors, and fitting text into 192-byte packets."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messaging.core import codec
from messaging.core.codec import (
    TRIM_MARKER,
    BadPayloadEncoding,
    BadProtobuf,
    EmptyPacket,
    EmptyRecipient,
    MissingRequiredField,
    NotFromDevice,
    PacketDecodeError,
    UnknownProtocol,
    clean_text,
    decode_device_payload,
    encode_from_device,
    text_capacity,
)
from messaging.core.pb import MessageDataPB
from messaging.core.types import Direction, Protocol, storable_text
from messaging.satellite.swarm import SwarmNetwork
from messaging.satellite.transport import DevicePacket

MARKER = re.compile(r"\((\d+)/(\d+)\) ")

SWARM_BUDGET = SwarmNetwork.packet_budget


def fit_packets(text: str, **kw) -> list[bytes]:
    """codec.fit_packets, fitted to Swarm's packet budget unless a test names another limit."""
    return codec.fit_packets(text, **{"limit": SWARM_BUDGET, **kw})


def swarm_packet_messages(data_b64: str, *, device_id: int, packet_id: int, received_at: float | None = None):
    """The messages of a packet as Swarm hands it over (base64), decoded the way intake decodes it."""
    return DevicePacket(f"hive:{packet_id}", device_id, packet_id, data_b64, received_at=received_at).messages()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse(packet: bytes) -> MessageDataPB:
    """Parse independently of the codec, insisting on a complete packet."""
    message = MessageDataPB()
    message.MergeFromString(packet)
    assert message.IsInitialized(), message.FindInitializationErrors()
    return message


def texts_of(packets: list[bytes]) -> list[str]:
    return [parse(p).message[0].text for p in packets]


# --------------------------------------------------------------------------- decoding


def test_device_packet_round_trip_gives_one_message_per_entry() -> None:
    data = encode_from_device([("hello", Protocol.EMAIL, " bob@example.org "), ("ok 👍", Protocol.SMS, "+15550001111")])
    messages = swarm_packet_messages(b64(data), device_id=4242, packet_id=777, received_at=12.5)
    assert [(m.protocol, m.recipient, m.text) for m in messages] == [
        (Protocol.EMAIL, "bob@example.org", "hello"),
        (Protocol.SMS, "+15550001111", "ok 👍"),
    ]
    assert [m.idempotency_key for m in messages] == ["hive:777:0", "hive:777:1"]
    for m in messages:
        assert m.direction is Direction.FROM_DEVICE
        assert m.sender == "device:4242"
        assert m.device_id == 4242
        assert m.external_id == "777"
        assert m.received_at == 12.5
        assert m.routing_key() == "device:4242"


def test_invalid_utf8_from_a_device_is_kept_with_replacement_characters() -> None:
    data = bytearray(encode_from_device([("hiXa", Protocol.EMAIL, "a@b.c")]))
    data[data.index(b"X")] = 0xFF  # proto2 does not validate UTF-8: devices can send this
    [message] = swarm_packet_messages(b64(bytes(data)), device_id=1, packet_id=2)
    assert message.text == "hi\ufffda"


@pytest.mark.parametrize("bad", ["not base64!", "aGVsbG8", "aGVs\nbG8=", "aGVsbG8=é", "aGVsbG8=aGVs"])
def test_bad_base64_is_rejected_strictly(bad: str) -> None:
    with pytest.raises(BadPayloadEncoding, match="packet 31"):
        swarm_packet_messages(bad, device_id=1, packet_id=31)


def test_garbage_bytes_are_bad_protobuf() -> None:
    with pytest.raises(BadProtobuf, match="packet 5"):
        swarm_packet_messages(b64(b"\xff\xff\xff"), device_id=1, packet_id=5)


def test_missing_field_is_named() -> None:
    packet = MessageDataPB(version=1, from_device=True)
    packet.message.add(text="no address", protocol=Protocol.EMAIL)
    with pytest.raises(MissingRequiredField, match=r"packet 8: .*message\[0\]\.to"):
        swarm_packet_messages(b64(packet.SerializePartialToString()), device_id=1, packet_id=8)


def test_empty_payload_lacks_version_and_direction() -> None:
    with pytest.raises(MissingRequiredField) as caught:
        swarm_packet_messages("", device_id=1, packet_id=9)
    assert "version" in str(caught.value) and "from_device" in str(caught.value)


@pytest.mark.parametrize("protocol", [Protocol.UNKNOWN, Protocol.TWITTER])
def test_undeliverable_protocols_are_rejected(protocol: Protocol) -> None:
    data = encode_from_device([("x", Protocol.EMAIL, "a@b.c"), ("tweet", protocol, "@someone")])
    with pytest.raises(UnknownProtocol, match=rf"packet 3: .*message\[1\].*{protocol.name}"):
        swarm_packet_messages(b64(data), device_id=1, packet_id=3)


def test_protocol_number_outside_the_enum_is_unknown_protocol_not_missing_field() -> None:
    data = bytearray(encode_from_device([("x", Protocol.SMS, "+1555")]))
    tag = data.index(bytes([0x28, Protocol.SMS]))  # field 5, varint
    data[tag + 1] = 9
    with pytest.raises(UnknownProtocol, match="value 9"):
        swarm_packet_messages(b64(bytes(data)), device_id=1, packet_id=4)


def test_to_device_packet_in_the_device_stream_is_rejected() -> None:
    [packet] = fit_packets("hi", to="a@b.c", protocol=Protocol.EMAIL)
    with pytest.raises(NotFromDevice, match="packet 6"):
        swarm_packet_messages(b64(packet), device_id=1, packet_id=6)


def test_packet_without_messages_is_empty() -> None:
    with pytest.raises(EmptyPacket, match="packet 7"):
        swarm_packet_messages(b64(encode_from_device([])), device_id=1, packet_id=7)


def test_blank_recipient_is_rejected() -> None:
    data = encode_from_device([("hi", Protocol.SMS, "  \t")])
    with pytest.raises(EmptyRecipient, match=r"packet 10: .*message\[0\]"):
        swarm_packet_messages(b64(data), device_id=1, packet_id=10)


def test_every_decode_error_is_a_value_error() -> None:
    errors = (
        BadPayloadEncoding,
        BadProtobuf,
        MissingRequiredField,
        UnknownProtocol,
        NotFromDevice,
        EmptyPacket,
        EmptyRecipient,
    )
    for error in errors:
        assert issubclass(error, PacketDecodeError) and issubclass(error, ValueError)
    assert str(BadProtobuf("oops")) == "packet: not a MessageDataPB protobuf: oops"


def test_decode_device_payload_accepts_either_direction() -> None:
    [packet] = fit_packets("hi", to="a@b.c", protocol=Protocol.EMAIL)
    parsed = decode_device_payload(packet)
    assert (parsed.from_device, parsed.message[0].text) == (False, "hi")


# --------------------------------------------------------------------------- fitting: exact cases

# Wire arithmetic for to="a@b.c", EMAIL, t bytes of text (t >= 128):
# version 2 + message tag 1 + length varint 2 + [text tag 1 + varint 2 + t, to 2 + 5, protocol 2] + from_device 2
# = t + 19 bytes, so 173 bytes of text fill a 192-byte packet exactly.
EXACT_FIT = 173


def test_text_that_fills_one_packet_exactly_gets_no_marker() -> None:
    [packet] = fit_packets("a" * EXACT_FIT, to="a@b.c", protocol=Protocol.EMAIL)
    assert len(packet) == 192
    parsed = parse(packet)
    assert (parsed.version, parsed.from_device) == (1, False)
    assert (parsed.message[0].text, parsed.message[0].to, parsed.message[0].protocol) == (
        "a" * EXACT_FIT,
        "a@b.c",
        Protocol.EMAIL,
    )
    assert text_capacity("a@b.c", Protocol.EMAIL, 192) == EXACT_FIT


def test_one_byte_more_splits_in_two_marked_packets() -> None:
    packets = fit_packets("a" * (EXACT_FIT + 1), to="a@b.c", protocol=Protocol.EMAIL)
    texts = texts_of(packets)
    assert [t[:6] for t in texts] == ["(1/2) ", "(2/2) "]
    assert "".join(t[6:] for t in texts) == "a" * (EXACT_FIT + 1)


def test_varint_growth_at_128_bytes_is_accounted_for() -> None:
    # t=116: message body 127 bytes (1-byte length), packet 133. t=117: body 128 needs a 2-byte length: 135.
    assert len(fit_packets("a" * 116, to="a@b.c", protocol=Protocol.EMAIL, limit=133)[0]) == 133
    [trimmed] = fit_packets("a" * 117, to="a@b.c", protocol=Protocol.EMAIL, limit=134, max_packets=1)
    assert len(trimmed) <= 134
    assert parse(trimmed).message[0].text.endswith(TRIM_MARKER)


def test_split_prefers_word_boundaries() -> None:
    words = "satellite messages travel slowly but surely across the sky " * 8
    texts = texts_of(fit_packets(words, to="alice@example.com", protocol=Protocol.EMAIL))
    assert len(texts) > 1
    for text in texts[:-1]:
        assert text.endswith(" "), text
    assert "".join(MARKER.sub("", t, count=1) for t in texts) == words


def test_text_too_long_for_max_packets_is_trimmed_visibly() -> None:
    texts = texts_of(fit_packets("word " * 400, to="+15550001111", protocol=Protocol.SMS))
    assert [MARKER.match(t).groups() for t in texts] == [("1", "4"), ("2", "4"), ("3", "4"), ("4", "4")]
    assert texts[-1].endswith(TRIM_MARKER)
    assert not texts[-1].endswith(" " + TRIM_MARKER)  # trailing space dropped before the marker


def test_single_packet_limit_trims_without_marker() -> None:
    [text] = texts_of(fit_packets("x" * 500, to="a@b.c", protocol=Protocol.EMAIL, max_packets=1))
    assert text == "x" * (EXACT_FIT - len(TRIM_MARKER)) + TRIM_MARKER


def test_combining_marks_stay_with_their_letter() -> None:
    text = "e\u0301" * 200  # 3 bytes per pair; a byte-greedy cut would land between e and its accent
    for chunk in texts_of(fit_packets(text, to="a@b.c", protocol=Protocol.EMAIL)):
        body = MARKER.sub("", chunk, count=1).removesuffix(TRIM_MARKER)
        assert body.startswith("e") and body.endswith("\u0301"), body


def test_overlong_sender_address_is_truncated_only_as_far_as_needed() -> None:
    to = "someone.with.a.very.long.name@" + "sub." * 60 + "example.com"
    [packet] = fit_packets("hello", to=to, protocol=Protocol.EMAIL)
    kept = parse(packet).message[0]
    assert len(packet) == 192  # the address keeps every byte the text does not need
    assert to.startswith(kept.to) and kept.to != to
    assert kept.text == "hello"


def test_address_that_leaves_room_is_never_truncated() -> None:
    to = "someone@" + "sub." * 35 + "example.com"  # 159 bytes: leaves 19 bytes of text per packet
    packets = fit_packets("a message longer than the room", to=to, protocol=Protocol.EMAIL)
    assert {parse(p).message[0].to for p in packets} == {to}
    assert texts_of(packets) == ["(1/3) a message ", "(2/3) longer than ", "(3/3) the room"]


def test_overlong_address_with_long_text_leaves_room_in_every_packet() -> None:
    packets = fit_packets("é" * 300, to="x" * 400, protocol=Protocol.SMS, max_packets=10)
    texts = texts_of(packets)
    assert len(texts) == 10 and texts[-1].endswith(TRIM_MARKER)
    assert all(MARKER.sub("", t, count=1).removesuffix(TRIM_MARKER) for t in texts)


def test_empty_text_is_one_packet_with_empty_text() -> None:
    assert texts_of(fit_packets("", to="a@b.c", protocol=Protocol.EMAIL)) == [""]
    [packet] = fit_packets("", to="y" * 1000, protocol=Protocol.SMS)
    kept = parse(packet).message[0]
    assert len(packet) == 192
    assert (kept.text, set(kept.to)) == ("", {"y"})


def test_impossible_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_packets"):
        fit_packets("hi", to="a", protocol=Protocol.SMS, max_packets=0)
    with pytest.raises(ValueError, match="limit 8"):
        fit_packets("hello", to="", protocol=Protocol.SMS, limit=8)


def test_clean_text_joins_pairs_and_replaces_lone_surrogates() -> None:
    assert clean_text("ok") == "ok"
    assert clean_text("\ud83d\ude00") == "😀"
    assert clean_text("a\ud800b\udc00") == "a\ufffdb\ufffd"
    [packet] = fit_packets("x\udfff", to="\ud800@b", protocol=Protocol.EMAIL)
    assert (parse(packet).message[0].text, parse(packet).message[0].to) == ("x\ufffd", "\ufffd@b")


def test_a_100_kb_email_is_fitted() -> None:
    text = ("Dear crew, the weather over the pass is 中文 clear 😀. " * 2000)[:100_000]
    packets = fit_packets(text, to="base@example.com", protocol=Protocol.EMAIL, max_packets=10)
    texts = texts_of(packets)
    assert len(texts) == 10 and texts[-1].endswith(TRIM_MARKER)


# --------------------------------------------------------------------------- fitting: properties

_characters = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),  # lone surrogates
    st.sampled_from(["\u0301", "\u200d", "\U0001f3fd", "😀", "中", "文", " ", "\n", "é"]),
)
_texts = st.one_of(st.text(_characters, max_size=40), st.text(_characters, min_size=150, max_size=1500))
_addresses = st.one_of(st.text(_characters, max_size=40), st.text(_characters, max_size=300))


def check_packets(
    packets: list[bytes], text: str, to: str, protocol: Protocol, max_packets: int, limit: int = 192
) -> None:
    clean, clean_to = clean_text(text), clean_text(to)
    assert 1 <= len(packets) <= max_packets
    parsed = [parse(p) for p in packets]
    for packet, data in zip(parsed, packets, strict=True):
        assert len(data) <= limit
        assert (packet.version, packet.from_device, len(packet.message)) == (1, False, 1)
        assert packet.message[0].protocol == protocol
    sent_to = {p.message[0].to for p in parsed}
    assert len(sent_to) == 1
    [sent_to_value] = sent_to
    assert clean_to.startswith(sent_to_value)
    if len(clean_to.encode("utf-8")) <= 100:
        assert sent_to_value == clean_to
    texts = [p.message[0].text for p in parsed]
    count = len(texts)
    if count > 1:
        bodies = []
        for index, chunk in enumerate(texts, 1):
            assert chunk.startswith(f"({index}/{count}) ")
            body = chunk.removeprefix(f"({index}/{count}) ")
            assert body, "every packet of a split carries text"
            bodies.append(body)
    else:
        bodies = texts
    joined = "".join(bodies)
    if joined != clean:
        assert joined.endswith(TRIM_MARKER)
        assert clean.startswith(joined.removesuffix(TRIM_MARKER))
        assert count == max_packets


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_texts,
    to=_addresses,
    protocol=st.sampled_from([Protocol.EMAIL, Protocol.SMS]),
    max_packets=st.sampled_from([1, 2, 4, 10]),
)
def test_fitting_properties(text: str, to: str, protocol: Protocol, max_packets: int) -> None:
    packets = fit_packets(text, to=to, protocol=protocol, max_packets=max_packets)
    check_packets(packets, text, to, protocol, max_packets)


@settings(max_examples=100, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.text(_characters, max_size=200),
            st.sampled_from([Protocol.EMAIL, Protocol.SMS]),
            st.text(_characters, min_size=1, max_size=50).filter(lambda s: storable_text(s).strip()),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_device_round_trip_properties(entries: list[tuple[str, Protocol, str]]) -> None:
    messages = swarm_packet_messages(b64(encode_from_device(entries)), device_id=9, packet_id=1)
    assert [(m.text, m.protocol, m.recipient) for m in messages] == [
        (storable_text(text), protocol, storable_text(to).strip()) for text, protocol, to in entries
    ]


def test_a_recipient_of_nothing_but_nul_is_an_empty_recipient() -> None:
    """NUL is removed where a message is built, so such a ``to`` is empty: a typed error (the packet becomes a
    dead letter and is acked), never a message with no address."""
    with pytest.raises(EmptyRecipient):
        swarm_packet_messages(b64(encode_from_device([("hi", Protocol.EMAIL, "\x00\x00")])), device_id=9, packet_id=1)
