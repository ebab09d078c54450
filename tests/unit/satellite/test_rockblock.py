"""RockBLOCK (Iridium SBD): MO posts verified by their JWT, MT answers mapped to delivery errors, and text
fitted to the fewest credits."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.core.errors import PermanentDeliveryError, TemporaryDeliveryError
from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.core.types import Protocol
from messaging.satellite import rockblock
from messaging.satellite.rockblock import (
    GROUND_CONTROL_PUBLIC_KEY_FILE,
    MT_ERRORS,
    BadPost,
    ForgedPost,
    RockBlockNetwork,
    credits,
    fit_for_credits,
    mt_outcome,
    parse_imei,
    read_post,
    verify_post,
)


def key_pair():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, pem.decode()


PRIVATE, PUBLIC = key_pair()
OTHER_PRIVATE, _ = key_pair()
FIELDS = {
    "imei": "300234010753370",
    "serial": "12345",
    "momsn": "12345",
    "transmit_time": "21-10-31 10:41:50",
    "iridium_latitude": "52.3867",
    "iridium_longitude": "0.2938",
    "iridium_cep": "8",
    "data": "48656c6c6f",
}


def signed(fields: dict, private=PRIVATE, **claims) -> dict:
    token = jwt.encode({"iss": "Rock 7", "iat": 1635676910, **fields, **claims}, private, algorithm="RS256")
    return {**fields, "JWT": token}


def test_ground_controls_published_key_ships_with_the_code():
    text = GROUND_CONTROL_PUBLIC_KEY_FILE.read_text()
    assert text.startswith("-----BEGIN PUBLIC KEY-----")
    assert serialization.load_pem_public_key(text.encode()).key_size == 2048


def test_a_post_signed_by_the_key_is_read_with_its_position():
    post = verify_post(signed(FIELDS), PUBLIC)
    assert (post.imei, post.momsn, post.data) == (300234010753370, 12345, "48656c6c6f")
    assert (post.latitude, post.longitude, post.cep_km) == (52.3867, 0.2938, 8.0)
    packet = post.device_packet()
    assert packet.payload() == b"Hello" and packet.device_id == 300234010753370
    assert packet.key == "rockblock:300234010753370:12345:211031104150"
    assert packet.received_at == 1635676910.0


def test_a_json_post_with_numbers_matches_its_string_claims():
    as_json = {**FIELDS, "momsn": 12345, "iridium_latitude": 52.3867, "iridium_cep": 8}
    token = signed(FIELDS)["JWT"]
    assert verify_post({**as_json, "JWT": token}, PUBLIC).momsn == 12345


@pytest.mark.parametrize(
    "post",
    [
        pytest.param({**FIELDS}, id="no JWT"),
        pytest.param({**FIELDS, "JWT": ""}, id="empty JWT"),
        pytest.param({**FIELDS, "JWT": "not.a.token"}, id="garbage"),
        pytest.param(signed(FIELDS, private=OTHER_PRIVATE), id="signed by another key"),
        pytest.param({**signed(FIELDS), "data": "4e6f"}, id="data tampered"),
        pytest.param({**signed(FIELDS), "imei": "300234010753371"}, id="imei tampered"),
        pytest.param({**signed(FIELDS), "momsn": "12346"}, id="momsn tampered"),
        pytest.param({**signed(FIELDS), "iridium_latitude": "10.0"}, id="position tampered"),
        pytest.param(signed({k: v for k, v in FIELDS.items() if k != "momsn"}) | {"momsn": "1"}, id="unsigned momsn"),
    ],
)
def test_a_forged_post_is_refused(post):
    with pytest.raises(ForgedPost):
        verify_post(post, PUBLIC)


def test_the_real_key_refuses_a_sandbox_signature():
    with pytest.raises(ForgedPost):
        verify_post(signed(FIELDS), GROUND_CONTROL_PUBLIC_KEY_FILE.read_text())


@pytest.mark.parametrize(
    "change,field",
    [({"imei": "12345"}, "IMEI"), ({"momsn": "65536"}, "momsn"), ({"transmit_time": "yesterday"}, "transmit_time")],
)
def test_a_signed_post_with_unreadable_fields_names_the_field(change, field):
    with pytest.raises(BadPost, match=field):
        verify_post(signed({**FIELDS, **change}), PUBLIC)


def test_momsn_wraps_so_the_time_is_in_the_key():
    first = read_post({**FIELDS, "momsn": "5"}).device_packet()
    again = read_post({**FIELDS, "momsn": "5"}).device_packet()
    wrapped = read_post({**FIELDS, "momsn": "5", "transmit_time": "22-03-01 08:00:00"}).device_packet()
    assert first.key == again.key != wrapped.key


def test_a_position_out_of_range_is_dropped_not_stored():
    post = read_post({**FIELDS, "iridium_latitude": "123", "iridium_longitude": "nan"})
    assert (post.latitude, post.longitude, post.cep_km) == (None, None, None)


def test_bad_hex_is_a_decode_error_of_the_packet():
    from messaging.core.codec import PacketDecodeError

    with pytest.raises(PacketDecodeError):
        read_post({**FIELDS, "data": "zz"}).device_packet().messages()


def test_imei_format():
    assert parse_imei(" 300234010753370 ") == 300234010753370
    assert RockBlockNetwork.parse_device_id("300234010753370") == 300234010753370
    for bad in ("30023401075337", "3002340107533701", "30023401075337a", "", "３００２３４０１０７５３３７０"):
        with pytest.raises(ValueError, match="IMEI"):
            parse_imei(bad)


def test_mt_ok_gives_the_mt_id():
    assert mt_outcome(200, "OK,4114651\n") == "4114651"


@pytest.mark.parametrize("code", sorted(MT_ERRORS))
def test_every_documented_mt_error_is_permanent_or_temporary_with_a_readable_reason(code):
    permanent, reason = MT_ERRORS[code]
    with pytest.raises(PermanentDeliveryError if permanent else TemporaryDeliveryError) as caught:
        mt_outcome(200, f"FAILED,{code},Something went wrong")
    assert reason in str(caught.value) and f"FAILED,{code}" in str(caught.value)


def test_no_credit_is_a_dead_letter_and_a_system_error_a_retry():
    with pytest.raises(PermanentDeliveryError, match="no credit"):
        mt_outcome(200, "FAILED,13,Insufficient credit")
    with pytest.raises(TemporaryDeliveryError):
        mt_outcome(200, "FAILED,99,System Error")


@pytest.mark.parametrize("status,body", [(500, ""), (503, "busy"), (429, ""), (200, "garbage"), (200, "FAILED,77,new")])
def test_unknown_trouble_is_temporary(status, body):
    with pytest.raises(TemporaryDeliveryError):
        mt_outcome(status, body)


def test_a_client_error_status_is_permanent():
    with pytest.raises(PermanentDeliveryError):
        mt_outcome(404, "not found")


def texts(packets: list[bytes]) -> list[str]:
    out = []
    for payload in packets:
        packet = pb.MessageDataPB()
        packet.ParseFromString(payload)
        out.append(packet.message[0].text)
    return out


def test_a_long_text_costs_fewer_credits_than_full_packets_would():
    text = "word " * 200
    plain = rockblock.fit_packets(text, to="amy@example.org", protocol=Protocol.EMAIL, max_packets=6, limit=270)
    fitted = fit_for_credits(text, to="amy@example.org", protocol=Protocol.EMAIL, max_packets=6)
    assert credits([len(p) for p in fitted]) < credits([len(p) for p in plain])
    assert "".join(texts(fitted)).count("word") == "".join(texts(plain)).count("word")


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=900),
    to=st.sampled_from(["amy@example.org", "+15550001111", "a-rather-long-address.with.dots@mail.example.com"]),
    max_packets=st.integers(1, 5),
)
def test_fitting_for_credits_keeps_every_packet_within_the_mt_limit_and_the_text_in_order(text, to, max_packets):
    protocol = Protocol.SMS if to.startswith("+") else Protocol.EMAIL
    fitted = fit_for_credits(text, to=to, protocol=protocol, max_packets=max_packets)
    plain = rockblock.fit_packets(text, to=to, protocol=protocol, max_packets=max_packets, limit=270)
    assert 1 <= len(fitted) <= max_packets and all(len(p) <= 270 for p in fitted)
    assert credits([len(p) for p in fitted]) <= credits([len(p) for p in plain])
    assert rockblock._text_carried(fitted) >= rockblock._text_carried(plain)
    if len(plain) == 1 and len(fitted) == 1:
        assert texts(fitted) == texts(plain)


# --- against the fake RockBLOCK web services, over a real socket ---------------------------------------------

IMEI = 300234010753370


@pytest.fixture
def fake():
    from messaging.sandbox.fake_rockblock import FakeRockBlock

    with FakeRockBlock(imeis={IMEI}) as server:
        yield server


def network_for(fake, password: str = "sandbox") -> RockBlockNetwork:
    return RockBlockNetwork(fake.base_url, "sandbox", password, timeout=5)


def test_an_mt_message_is_queued_for_its_imei_and_its_mt_id_returned(fake):
    mt_id = network_for(fake).send(IMEI, b"\x08\x01hello")
    [queued] = fake.to_device(IMEI)
    assert str(queued["mtId"]) == mt_id and bytes.fromhex(queued["data"]) == b"\x08\x01hello"
    assert fake.state()["credits_used"] == 1


@pytest.mark.parametrize(
    "setup,error,reason",
    [
        (lambda f: None, PermanentDeliveryError, "no RockBLOCK with this IMEI"),
        (lambda f: f.no_line_rental.add(IMEI + 1), PermanentDeliveryError, "no line rental"),
        (lambda f: setattr(f, "credits", 0), PermanentDeliveryError, "no credit"),
        (lambda f: f.set_faults(1.0, status=99), TemporaryDeliveryError, "system error"),
        (lambda f: f.set_faults(1.0, status=503), TemporaryDeliveryError, "HTTP 503"),
    ],
)
def test_mt_refusals_from_the_wire_become_the_right_delivery_error(fake, setup, error, reason):
    fake.imeis.add(IMEI + 1)
    setup(fake)
    with pytest.raises(error, match=reason):
        network_for(fake).send(IMEI + 1 if "IMEI" not in reason else 300234010750000, b"hi")
    assert fake.to_device() == []


def test_bad_credentials_are_temporary_so_nothing_dies_while_the_operator_fixes_them(fake):
    with pytest.raises(TemporaryDeliveryError, match="ROCKBLOCK_PASSWORD"):
        network_for(fake, password="wrong").send(IMEI, b"hi")


def test_a_payload_over_the_mt_limit_is_refused_before_it_costs_anything(fake):
    with pytest.raises(PermanentDeliveryError, match="270"):
        network_for(fake).send(IMEI, b"x" * 271)
    assert fake.state()["credits_used"] == 0


def test_an_mt_post_past_the_timeout_is_temporary_and_costs_nothing(fake):
    fake.set_faults(1.0, status=0, delay=5)
    with pytest.raises(TemporaryDeliveryError, match="Timeout"):
        RockBlockNetwork(fake.base_url, "sandbox", "sandbox", timeout=0.5).send(IMEI, b"hi")
    assert fake.to_device() == [] and fake.state()["credits_used"] == 0


def test_the_timeout_comes_from_the_configuration():
    from messaging.runtime.config import Config

    assert RockBlockNetwork.from_config(Config(rockblock_timeout=3.5)).timeout == 3.5


def test_an_unreachable_rockblock_is_temporary():
    with pytest.raises(TemporaryDeliveryError):
        RockBlockNetwork("http://127.0.0.1:9", "u", "p", timeout=2).send(IMEI, b"hi")


def test_sending_threads_each_reuse_one_kept_alive_connection(fake):
    from messaging.delivery.base import SEND_THREADS
    from tests.lockstep import in_lockstep

    network = network_for(fake)
    threads = SEND_THREADS + 2  # more than a sender actor sends at once
    fake.gather(threads)  # every call of a round in flight at once
    in_lockstep(threads, 3, lambda t, r: network.send(IMEI, b"\x08\x01hi"))
    assert len(fake.to_device(IMEI)) == threads * 3
    assert fake.state()["connections"] <= threads, "one connection per thread, kept alive, not one per message"
