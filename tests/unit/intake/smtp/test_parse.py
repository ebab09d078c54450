"""Inbound email parsing: realistic samples in tests/fixtures/mail and a few hand-built edge cases."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.core.addresses import mailbox_username, normalise_email
from messaging.intake.smtp.parse import (
    PROBE_CHARS,
    PROBE_LINE,
    InboundMail,
    MailParseError,
    attachment_note,
    device_text,
    html_to_text,
    parse_inbound,
    strip_reply,
    without_attachment_bodies,
)
from tests.paths import MAIL_FIXTURES


def fixture(name: str) -> InboundMail:
    return parse_inbound((MAIL_FIXTURES / name).read_bytes())


def mail(subject: str = "", text: str = "") -> InboundMail:
    return InboundMail(sender="a@b.example", subject=subject, text=text, message_id="")


def raw_mail(body: bytes, content_type: str, *, subject: str = "Test", cte: str = "8bit") -> bytes:
    head = (
        f"From: Tester <tester@mail.example>\nTo: alice@example.com\nSubject: {subject}\n"
        f"MIME-Version: 1.0\nContent-Type: {content_type}\nContent-Transfer-Encoding: {cte}\n\n"
    )
    return head.encode("ascii") + body


# --- realistic samples ----------------------------------------------------------------------------


def test_gmail_reply_keeps_only_the_new_text():
    parsed = fixture("gmail_reply.eml")
    assert parsed.sender == "bob.smith@gmail.example"
    assert parsed.message_id == "<CAF=xY7n1q2w3e4r5t@mail.gmail.example>"
    assert parsed.subject == "Re: Reached the ridge camp, all good"
    assert parsed.text == "Great news! Call me when you are down, the forecast says snow on Thursday."
    assert parsed.dropped_attachments == []
    # A reply's subject repeats the device's own thread: not worth satellite bytes.
    assert device_text(parsed) == parsed.text


def test_outlook_html_only_with_original_message_block():
    parsed = fixture("outlook_html_original.eml")
    assert parsed.sender == "carol.jones@corp.example"
    assert parsed.text == (
        "Hi Alice,\n\nThe drop is confirmed for Friday 14:00 at the north helipad. Bring the orange panel."
    )
    # The inline logo belongs to the HTML, it is not an attachment the user sent.
    assert parsed.dropped_attachments == []


def test_outlook_plain_text_from_sent_header_block():
    assert fixture("outlook_plain_reply.eml").text == "Yes, the spare tent is in the blue bag."


def test_iso_8859_1_quoted_printable_with_windows_1252_quotes():
    parsed = fixture("latin1_qp.eml")
    assert parsed.subject == "Grüße aus München"
    assert parsed.sender == "juergen@post.example"
    assert "die Grüße kommen aus München." in parsed.text
    assert "Das Paket heißt “Notfall” und liegt an der Hütte." in parsed.text  # soft break joined
    assert device_text(parsed).startswith("Grüße aus München\nHallo Alice,")


def test_base64_utf8_body_and_encoded_word_subject_with_emoji():
    parsed = fixture("base64_utf8_emoji.eml")
    assert parsed.subject == "Gipfel erreicht 🏔️"
    assert parsed.text == "Hallo aus dem Basislager 🏔️\nWetter gut ☀️, Funkgerät läuft 📡.\n\nLiebe Grüße"


def test_attachments_are_dropped_and_named():
    parsed = fixture("attachments.eml")
    assert parsed.dropped_attachments == ["permit.pdf", "Übersicht Karte.jpg"]
    assert parsed.text == (
        "Permit and map attached. The permit number is 4471-B.\n"
        "[2 attachments dropped: permit.pdf, Übersicht Karte.jpg]"
    )


def test_signature_after_dash_dash_space_is_cut_and_whitespace_collapsed():
    parsed = fixture("signature.eml")
    assert parsed.text == "Trail 7 is closed after the rockfall. Use trail 9 instead.\n\nThanks,\nFrank"
    assert device_text(parsed) == "Trail status\n" + parsed.text


def test_broken_charset_gives_replacement_characters():
    parsed = fixture("broken_charset.eml")
    assert parsed.text == "Camp at 2400 m \ufffd\ufffd ok"


# --- charsets and MIME structure -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"\x93Gipfel\x94 \x80 5", "text/plain; charset=windows-1252", "“Gipfel” € 5"),
        (b"Fu\xdfweg", "text/plain; charset=iso-8859-1", "Fußweg"),
        ("Fußweg 🥾".encode(), "text/plain", "Fußweg 🥾"),  # no charset, but valid UTF-8
        (b"Fu\xdfweg", "text/plain", "Fußweg"),  # no charset, not UTF-8: windows-1252
        (b"caf\xc3\xa9", "text/plain; charset=utf-8", "café"),
        (b"caf\xe9!", "text/plain; charset=utf-8", "caf\ufffd!"),
        (b"abc", "text/plain; charset=rot13", "abc"),  # not a text codec: ignored
    ],
)
def test_charsets(body, content_type, expected):
    assert parse_inbound(raw_mail(body, content_type)).text == expected


def test_html_only_alternative_is_used_when_plain_part_is_empty():
    msg = EmailMessage()
    msg["From"] = "x@y.example"
    msg.set_content("   \n")
    msg.add_alternative(
        '<p>Meet at <a href="https://maps.example/x">the hut</a> <img src="cid:a" alt="pic"></p>', "html"
    )
    assert parse_inbound(msg.as_bytes()).text == "Meet at the hut"


def test_attached_message_and_many_attachments_are_summarised():
    msg = EmailMessage()
    msg["From"] = "x@y.example"
    msg.set_content("See attachments")
    inner = EmailMessage()
    inner["Subject"] = "old"
    inner.set_content("forwarded as attachment")
    msg.add_attachment(inner)
    for name in ("a.pdf", "b.jpg", "c.png"):
        msg.add_attachment(b"\x00\x01", maintype="application", subtype="octet-stream", filename=name)
    parsed = parse_inbound(msg.as_bytes())
    assert parsed.dropped_attachments == ["attached message", "a.pdf", "b.jpg", "c.png"]
    assert parsed.text == "See attachments\n[4 attachments dropped: attached message, a.pdf, b.jpg, +1 more]"
    assert "forwarded as attachment" not in parsed.text


def test_attachment_only_mail_still_says_something():
    msg = EmailMessage()
    msg["From"] = "x@y.example"
    msg["Subject"] = "Photo"
    msg.add_attachment(b"\xff\xd8\xff", maintype="image", subtype="jpeg", filename="summit.jpg")
    parsed = parse_inbound(msg.as_bytes())
    assert parsed.text == "[1 attachment dropped: summit.jpg]"
    assert device_text(parsed) == "Photo\n[1 attachment dropped: summit.jpg]"


def test_forwarded_mail_keeps_the_forwarded_content():
    body = (
        b"FYI\n\n---------- Forwarded message ---------\nFrom: Zed <z@x.example>\n"
        b"Date: Mon, 2 Jun 2025\nSubject: Road closed\nTo: <bob@x.example>\n\nThe pass road is closed.\n"
    )
    parsed = parse_inbound(raw_mail(body, "text/plain; charset=utf-8", subject="Fwd: Road closed"))
    assert parsed.text.startswith("FYI\n\n---------- Forwarded message ---------")
    assert parsed.text.endswith("The pass road is closed.")
    assert device_text(parsed).startswith("Road closed\nFYI")


def test_garbage_bytes_do_not_crash():
    parsed = parse_inbound(bytes(range(256)) * 4)
    assert parsed.sender == ""
    assert parsed.text  # something readable survives


def test_mime_nested_too_deep_to_walk_still_yields_the_text():
    depth = 1200  # deeper than the stdlib parser's recursion allows
    head = b"".join(b"Content-Type: multipart/mixed; boundary=B%d\n\n--B%d\n" % (i, i) for i in range(depth))
    tail = b"".join(b"\n--B%d--\n" % i for i in reversed(range(depth)))
    inner = b"Content-Type: text/plain\n\nthe text\n"
    parsed = parse_inbound(b"From: a@b.example\nSubject: deep\n" + head + inner + tail)
    assert parsed.sender == "a@b.example" and parsed.subject == "deep"
    assert "the text" in parsed.text


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=2000))
def test_any_bytes_parse_or_raise_mail_parse_error(raw):
    try:
        parsed = parse_inbound(raw)
    except MailParseError:
        assert not raw.strip()
    else:
        assert isinstance(parsed.text, str) and isinstance(parsed.sender, str)


@pytest.mark.parametrize("raw", [b"", b"  \r\n\t "])
def test_empty_input_is_a_parse_error(raw):
    with pytest.raises(MailParseError):
        parse_inbound(raw)


# --- reply and signature stripping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("On Mon, 2 Jun 2025 at 10:00, Bob <b@x.example> wrote:\n> question?\n\nAnswer.\n\n-- \nsig\n", "Answer."),
        ("> q1?\nanswer1\n> q2?\nanswer2\n", "answer1\nanswer2"),
        ("On my way\n\nSent from my iPhone\n\n> On 2 Jun 2025, Bob <b@x.example> wrote:\n> where?\n", "On my way"),
        ("Alles klar.\n\nAm Mo., 2. Juni 2025 um 10:00 Uhr schrieb Bob <b@x.example>:\n> Morgen?\n", "Alles klar."),
        ("Got it\n\n-----Original Message-----\nFrom: A <a@x.example>\nSent: Monday\n\nold\n", "Got it"),
        ("Bring:\n- rope\n- helmet\n", "Bring:\n- rope\n- helmet"),  # lists are not signatures
        ("Hi\nThanks, see you at 5pm at the gate\n", "Hi\nThanks, see you at 5pm at the gate"),
        ("Warning: avalanche risk, check mail later\n", "Warning: avalanche risk, check mail later"),
        ("> only quoted\n> text\n", "> only quoted\n> text"),  # never emptied
        ("---", "---"),
        ("a  \t b\n\n\n\nc   \n", "a b\n\nc"),
    ],
)
def test_strip_reply(text, expected):
    assert strip_reply(text) == expected


def test_long_lines_are_kept_whole_and_headers_after_them_still_found():
    long_line = " ".join(f"w{i}" for i in range(PROBE_LINE))
    text = f"{long_line}\n\nOn Mon, 2 Jun 2025 at 10:00, Bob <b@x.example> wrote:\n> old\n"
    assert strip_reply(text) == long_line


def test_text_beyond_the_probe_is_not_lost():
    lines = [f"line {i} of a long report" for i in range(PROBE_CHARS // 10)]
    assert strip_reply("\n".join(lines)) == "\n".join(lines)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_strip_reply_never_empties_text_with_content(text):
    if any(ch.isalnum() for ch in text):
        assert strip_reply(text)


def test_html_to_text_drops_link_and_image_clutter_without_markdown_escapes():
    html = (
        '<div>See <a href="https://example.com/long/url">the map</a><img src="x.png" alt="logo"></div>'
        "<p>1. first<br>- second<br>C:\\temp</p><table><tr><td>Name</td><td>Bob</td></tr></table>"
    )
    text = html_to_text(html)
    assert "See the map" in text
    assert "https://" not in text and "logo" not in text
    assert "1. first" in text and "- second" in text and "C:\\temp" in text
    assert "Name| Bob" in text and "---|---" not in text


# --- device text and addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "text", "expected"),
    [
        ("Dinner", "at 8", "Dinner\nat 8"),
        ("", "at 8", "at 8"),
        ("Re: Dinner", "at 8", "at 8"),
        ("RE: AW: Dinner", "", "Dinner"),
        ("Fwd: Dinner", "at 8", "Dinner\nat 8"),
        ("Re:", "", ""),
        ("Dinner", "dinner at 8", "dinner at 8"),
        ("  Two   words ", "x", "Two words\nx"),
    ],
)
def test_device_text(subject, text, expected):
    assert device_text(mail(subject, text)) == expected


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("Bob Smith <Bob.Smith@Example.COM>", "bob.smith@example.com"),
        ("  ALICE@example.com ", "alice@example.com"),
        ('"Smith, Bob" <bob@x.example>', "bob@x.example"),
        ("not an address", ""),
        ("", ""),
        ("a@b@c", ""),
    ],
)
def test_normalise_email(addr, expected):
    assert normalise_email(addr) == expected


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("bob@beaver.test", "bob"),
        ("Bob <BOB+trip@Beaver.Test>", "bob"),
        ("bob@other.test", None),
        ("bob@sub.beaver.test", None),
        ("+x@beaver.test", None),
        ("garbage", None),
    ],
)
def test_mailbox_username(addr, expected):
    assert mailbox_username(addr, "beaver.test") == expected


def test_attachment_note():
    assert attachment_note([]) == ""
    assert attachment_note(["a.pdf"]) == "[1 attachment dropped: a.pdf]"


def test_a_python_codec_named_as_charset_is_not_applied():
    """``charset=unicode_escape`` (or punycode, idna) names no character set: the body is read as UTF-8 text,
    its backslashes kept, never interpreted as escape sequences."""
    from messaging.intake.smtp.parse import decode_bytes

    assert decode_bytes(b"C:\\huts\\n \\u00e9", "unicode_escape") == "C:\\huts\\n \\u00e9"
    assert decode_bytes(b"xn--caf-dma", "punycode") == "xn--caf-dma"


def test_the_reply_parser_patterns_built_once_are_the_ones_it_builds_for_each_message():
    from mailparser_reply.parser import EmailMessage as ReplyMessage

    from messaging.intake.smtp.parse import REPLY_LANGUAGES, _reply_patterns

    fresh = ReplyMessage(
        text="Hi\n\nOn Mon, Bob wrote:\n> old", languages=list(REPLY_LANGUAGES), keep_hyphen_lists=True
    )
    patterns = _reply_patterns()
    assert patterns["_header_regex"].pattern == fresh.HEADER_REGEX.pattern
    assert patterns["_disclaimers_regex"].pattern == fresh.DISCLAIMERS_REGEX.pattern
    assert patterns["_signature_regex"].pattern == fresh.SIGNATURE_REGEX.pattern
    reused = ReplyMessage(text=fresh.text, languages=list(REPLY_LANGUAGES), keep_hyphen_lists=True, **patterns)
    assert [r.content for r in reused.read().replies] == [r.content for r in fresh.read().replies]


def big_mail_with_photos() -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = "Eve <eve@files.example>", "a@example.com", "Pics", "<p@x>"
    m.set_content("Here are the photos of the ridge.\n\nOn Mon, Bob wrote:\n> send them\n")
    m.add_alternative("<html><body><p>Here are the photos of the ridge.</p></body></html>", subtype="html")
    m.add_attachment(bytes(range(256)) * 2000, maintype="image", subtype="jpeg", filename="ridge.jpg")
    m.add_attachment(b"%PDF-1.4 " * 20_000, maintype="application", subtype="pdf", filename="permit.pdf")
    m.add_attachment("notes " * 2000, subtype="plain", filename="notes.txt")  # text: read as before
    return m.as_bytes()


def test_a_big_mail_is_parsed_without_its_attachment_bodies_and_reads_the_same(monkeypatch):
    from messaging.intake.smtp import parse

    raw = big_mail_with_photos()
    hollow = parse.without_attachment_bodies(raw)
    assert len(raw) > parse.HOLLOW_ABOVE and len(hollow) < 20_000 < len(raw) // 20
    assert b'filename="ridge.jpg"' in hollow and b"notes notes" in hollow  # headers and text parts kept
    mail = parse_inbound(raw)
    assert mail.text.startswith("Here are the photos of the ridge.")
    assert mail.dropped_attachments == ["ridge.jpg", "permit.pdf", "notes.txt"]
    monkeypatch.setattr(parse, "HOLLOW_ABOVE", 10**12)  # parsed whole, as before
    assert parse_inbound(raw) == mail


def test_a_boundary_written_in_a_text_body_empties_nothing():
    """A broken top-level Content-Type makes the whole body text, whatever "boundary=" it mentions."""
    body = b"--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n" + b"QUFB\n" * 20_000 + b"--b--\n"
    raw = b"From: a@example.org\nSubject: x\nContent-Type\xb2 multipart/mixed; boundary=b\n\n" + body
    assert without_attachment_bodies(raw) == raw
    multipart = b"From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n" + body  # a real one
    assert len(without_attachment_bodies(multipart)) < 300
