"""End to end on a real local Ray: every hop real, remote services replaced by loopback fakes."""

from __future__ import annotations

import base64
import smtplib
from email.message import EmailMessage

import pytest
import requests

from messaging.core.codec import encode_from_device
from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.core.types import Protocol
from messaging.sms.twilio import sign

from .conftest import device_texts, free_port, wait_until

pytestmark = pytest.mark.e2e


def smtp(e2e) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", e2e.config.smtp_listen_port, timeout=30)


def mail(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m.set_content(body)
    return m


def messages_of(user):
    from web.delivery.models import Message

    return list(Message.objects.filter(user=user).order_by("id"))


def decoded_to_device(e2e, device_id: int) -> list:
    out = []
    for packet in e2e.box.hive.to_device(device_id):
        m = pb.MessageDataPB()
        m.ParseFromString(base64.b64decode(packet["data"]))
        out.append(m)
    return out


def test_email_reaches_device_as_protobuf(e2e, new_user):
    user = new_user()
    device = user.devices.get()
    with smtp(e2e) as s:
        s.send_message(
            mail("Alice <alice@example.org>", f"{user.username}@beaver.test", "Trail report", "Snow at the pass.")
        )
    packets = wait_until(lambda: decoded_to_device(e2e, device.device_id), what="packet at the fake Hive")
    assert len(packets) == 1
    pkt = packets[0]
    assert pkt.from_device is False and pkt.version == 1
    assert pkt.message[0].to == "alice@example.org"
    assert pkt.message[0].protocol == pb.EMAIL
    assert "Trail report" in pkt.message[0].text and "Snow at the pass." in pkt.message[0].text
    sent = wait_until(lambda: [m for m in messages_of(user) if m.status == "sent"], what="message marked sent")
    assert sent[0].remote_id == str(e2e.box.hive.to_device(device.device_id)[0]["packetId"])


def test_sender_checks_refuse_a_forgery_under_p_reject_and_deliver_an_spf_pass(e2e, new_user):
    """The sandbox's DNS (on loopback) serves the records: a From forged under p=reject is refused at DATA and
    costs the user nothing; mail whose envelope passes SPF for its aligned From domain reaches the device."""
    dns = e2e.box.dns
    dns.add_txt("_dmarc.bank.test", "v=DMARC1; p=reject")
    dns.add_txt("bank.test", "v=spf1 ip4:192.0.2.1 -all")
    dns.add_txt("_dmarc.hut.test", "v=DMARC1; p=reject")
    dns.add_txt("hut.test", "v=spf1 ip4:127.0.0.0/8 -all")
    user = new_user()
    to = f"{user.username}@beaver.test"
    with smtp(e2e) as s, pytest.raises(smtplib.SMTPDataError) as err:
        s.send_message(mail("ceo@bank.test", to, "Urgent", "Wire the money."), from_addr="ceo@bank.test")
    assert err.value.smtp_code == 550 and b"DMARC" in err.value.smtp_error
    with smtp(e2e) as s:
        assert s.send_message(mail("warden@hut.test", to, "Hut", "Stove lit."), from_addr="warden@hut.test") == {}
    texts = wait_until(lambda: device_texts(e2e, user.devices.get().device_id), what="the SPF-passing mail")
    assert len(texts) == 1 and "Stove lit." in texts[0]
    [row] = messages_of(user)
    assert row.authentication.startswith("spf=pass smtp.mailfrom=hut.test") and "dmarc=pass" in row.authentication


def test_device_email_goes_out_through_relay(e2e, new_user):
    user = new_user()
    device = user.devices.get()
    data = encode_from_device([("Made camp at the lake, all well", Protocol.EMAIL, "mum@example.org")])
    packet = e2e.box.hive.device_send(device.device_id, base64.b64encode(data).decode())
    got = wait_until(
        lambda: [m for m in e2e.box.relay.messages if "mum@example.org" in m["rcpt_tos"]], what="mail at relay sink"
    )
    sent = got[-1]
    assert sent["mail_from"] == f"{user.username}@beaver.test"
    headers = sent["headers"]
    assert headers["From"] == f"{user.username}@beaver.test"
    assert headers["To"] == "mum@example.org"
    assert headers["Subject"].startswith("Made camp")
    assert headers["Message-ID"] and headers["Date"]
    assert b"Made camp at the lake, all well" in sent["raw"]
    wait_until(lambda: packet["packetId"] in e2e.box.hive.acked_ids(), what="packet acked")


def test_device_sms_goes_out_through_twilio(e2e, new_user):
    user = new_user()
    device = user.devices.get()
    data = encode_from_device([("Back tomorrow", Protocol.SMS, "+1 (415) 555-0177")])
    e2e.box.hive.device_send(device.device_id, base64.b64encode(data).decode())
    e2e.box.twilio.wait_for(lambda ms: any(m["to"] == "+14155550177" for m in ms), timeout=30)
    [got] = [m for m in e2e.box.twilio.messages if m["to"] == "+14155550177"]
    assert got["from"] == user.twilio_number
    assert got["body"] == "Back tomorrow"


def test_device_text_to_a_premium_rate_number_is_acked_kept_and_never_sent(e2e, new_user):
    user = new_user()
    device = user.devices.get()
    data = encode_from_device(
        [("Win a prize", Protocol.SMS, "+1 900 555 0123"), ("Home soon", Protocol.SMS, "+14155550178")]
    )
    packet = e2e.box.hive.device_send(device.device_id, base64.b64encode(data).decode())
    wait_until(lambda: packet["packetId"] in e2e.box.hive.acked_ids(), what="packet acked")
    refused = [m for m in messages_of(user) if m.recipient == "+19005550123"]
    assert [m.status for m in refused] == ["rejected"]
    assert "premium-rate numbers are not allowed" in refused[0].last_error
    e2e.box.twilio.wait_for(lambda ms: any(m["to"] == "+14155550178" for m in ms), timeout=30)
    assert not [m for m in e2e.box.twilio.messages if m["to"] == "+19005550123"], "the fake Twilio got nothing"


def test_signed_twilio_webhook_reaches_device(e2e, new_user):
    user = new_user()
    device = user.devices.get()
    params = {
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": e2e.config.twilio_account_sid,
        "From": "+15551230000",
        "To": user.twilio_number,
        "Body": "Are you safe?",
        "NumMedia": "0",
    }
    signature = sign(
        auth_token=e2e.config.twilio_auth_token, public_url=e2e.config.twilio_webhook_public_url, params=params
    )
    r = requests.post(f"{e2e.base_url}/sms", data=params, headers={"X-Twilio-Signature": signature}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    assert messages_of(user), "stored before the 200"
    packets = wait_until(lambda: decoded_to_device(e2e, device.device_id), what="SMS at the device")
    assert packets[0].message[0].text == "Are you safe?"
    assert packets[0].message[0].to == "+15551230000"
    assert packets[0].message[0].protocol == pb.SMS


def test_text_whose_webhook_failed_reaches_the_device_once(e2e, new_user):
    """Twilio received a text but could not post it to us (our ingress unreachable): the reconciliation sweep
    finds it in Twilio's message list and stores it; later sweeps and a late webhook store nothing again."""
    from messaging.sandbox.fake_twilio import inbound_form
    from web.delivery.models import Message

    user = new_user()
    device = user.devices.get()
    unreachable = f"http://127.0.0.1:{free_port()}/sms"  # nothing listens there
    public = e2e.config.twilio_webhook_public_url
    text = f"Are you safe? {user.username}"
    with pytest.raises(requests.RequestException) as failed:
        e2e.box.twilio.simulate_inbound(
            webhook_url=unreachable, public_url=public, from_="+15557770001", to=user.twilio_number, body=text
        )
    sid = failed.value.message_sid
    wait_until(lambda: text in device_texts(e2e, device.device_id), what="the text at the device")

    def sweeps() -> int:
        return sum(1 for q in e2e.box.twilio.list_queries if q.get("To") == user.twilio_number)

    after = sweeps()
    wait_until(lambda: sweeps() >= after + 2, what="two more reconciliation sweeps")
    form = inbound_form(
        account_sid=e2e.config.twilio_account_sid, from_="+15557770001", to=user.twilio_number, body=text, sid=sid
    )
    late = requests.post(  # Twilio's own retry, arriving after all
        f"{e2e.base_url}/sms",
        data=form,
        headers={"X-Twilio-Signature": sign(auth_token=e2e.config.twilio_auth_token, public_url=public, params=form)},
        timeout=30,
    )
    assert late.status_code == 200
    [row] = Message.objects.filter(idempotency_key=f"twilio:{sid}")
    assert (row.user_id, row.sender, row.text) == (user.id, "+15557770001", text)
    wait_until(lambda: row.__class__.objects.get(id=row.id).status == "sent", what="the row marked sent")
    assert device_texts(e2e, device.device_id).count(text) == 1


def test_forged_twilio_signature_is_refused_and_nothing_stored(e2e, new_user):
    from web.delivery.models import Message

    user = new_user()
    params = {"MessageSid": "SM" + "b" * 32, "From": "+15551230001", "To": user.twilio_number, "Body": "x"}
    r = requests.post(f"{e2e.base_url}/sms", data=params, headers={"X-Twilio-Signature": "forged"}, timeout=30)
    assert r.status_code == 403
    assert not Message.objects.filter(idempotency_key="twilio:SM" + "b" * 32).exists()


def test_device_writes_to_a_contacts_short_name_and_contacts_only_lets_only_contacts_in(e2e, new_user):
    """The device writes 'Mom' and the mail goes out to mom's address; with contacts-only on, a stranger's mail is
    refused as a blocked sender's is (550 5.7.1, nothing stored) and mom's reaches the device."""
    from web.accounts.models import Contact

    user = new_user()
    user.contacts_only = True
    user.save(update_fields=["contacts_only"])
    Contact.objects.create(owner=user, name="mom", address="mom.e2e@example.org")
    device = user.devices.get()
    data = encode_from_device([("At the hut, all well", Protocol.EMAIL, "Mom")])
    packet = e2e.box.hive.device_send(device.device_id, base64.b64encode(data).decode())
    got = wait_until(
        lambda: [m for m in e2e.box.relay.messages if "mom.e2e@example.org" in m["rcpt_tos"]], what="mail to mom"
    )
    assert got[-1]["headers"]["To"] == "mom.e2e@example.org" and b"At the hut, all well" in got[-1]["raw"]
    wait_until(lambda: packet["packetId"] in e2e.box.hive.acked_ids(), what="packet acked")
    to = f"{user.username}@beaver.test"
    with smtp(e2e) as s:
        s.ehlo()
        s.mail("stranger@example.org")
        code, text = s.rcpt(to)
        assert code == 550 and b"5.7.1" in text
    with smtp(e2e) as s:
        s.send_message(mail("mom.e2e@example.org", to, "Hello", "Call me when you are down."))
    texts = wait_until(lambda: device_texts(e2e, device.device_id), what="mom's mail at the device")
    assert len(texts) == 1 and "Call me when you are down." in texts[0]
    assert [(m.direction, m.sender) for m in messages_of(user)] == [
        ("from_device", f"device:{device.device_id}"),
        ("to_device", "mom.e2e@example.org"),
    ], "the stranger's mail was never stored"


def test_smtp_refuses_relay_unknown_user_and_blocked_sender(e2e, new_user):
    user = new_user(blocked=["pest@example.org"])
    with smtp(e2e) as s:
        s.ehlo()
        s.mail("someone@example.org")
        assert s.rcpt("victim@elsewhere.example")[0] == 550
        code, text = s.rcpt("nobody-here@beaver.test")
        assert code == 550 and b"5.1.1" in text
        s.rset()
        s.mail("pest@example.org")
        code, text = s.rcpt(f"{user.username}@beaver.test")
        assert code == 550 and b"5.7.1" in text
    assert messages_of(user) == []
