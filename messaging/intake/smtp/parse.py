"""Inbound email -> the compact text a satellite device receives. Pure functions, no I/O.

``parse_inbound`` walks the MIME tree (stdlib ``email``, policy.default with bounded headers), picks the best text
(plain preferred, else HTML through html2text), decodes charsets forgivingly, strips quoted
replies and signatures (mail-parser-reply plus a few rules of our own), and lists the
attachments it dropped. ``device_text`` turns the result into the string the device gets.
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy

import html2text
from mailparser_reply.parser import EmailMessage as ReplyMessage

from messaging.core.addresses import MAX_HEADER_CHARS, normalise_email

REPLY_LANGUAGES = ("en", "de", "fr", "es", "it", "nl")
MAX_LISTED_ATTACHMENTS = 3
MAX_ATTACHMENT_NAME = 40
MAX_MIME_DEPTH = 20  # multiparts nested deeper are not read
PROBE_CHARS = 64_000  # reply headers further down than this are not looked for
PROBE_LINE = 240  # longer lines are shortened for the reply parser (its regexes backtrack)
# Bounds that keep hostile input from costing minutes of CPU (found by tests/unit/test_fuzz.py's probes):
MAX_HTML_NESTING = 20  # lists and blockquotes nested deeper are read as if they were not (html2text: cubic)
MAX_HTML_TEXT = 200_000  # characters of text taken from one HTML part (the device gets a few hundred)
_KEEP = 100
_PLACEHOLDER = "\ue000{}\ue001"
# Parts that carry no user content and are not worth a "dropped" note.
_SILENT_TYPES = {
    "application/pgp-signature",
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "message/delivery-status",
    "text/rfc822-headers",
}
# Declared Latin-1/ASCII mail is decoded as its superset windows-1252 (as browsers do):
# Outlook's "smart quotes" are labelled iso-8859-1 but are cp1252 bytes.
# Python text codecs a mail may name as its "charset" but that are no character set: they would interpret escape
# sequences or punycode in the body rather than decode it.
_NOT_MAIL_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "punycode", "idna", "undefined"})
_CHARSET_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252"}
_REPLY_PREFIX = re.compile(r"^\s*(?:re|aw|sv|antw|r)\s*(?:\[\d+\])?\s*:\s*", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*(?:fwd?|wg|tr|rv|doorst)\s*(?:\[\d+\])?\s*:\s*", re.IGNORECASE)
_SIG_DELIMITER = re.compile(r"^-- ?$")
_SEPARATOR_LINE = re.compile(r"^[\s_\-=*~]+$")
_MOBILE_FOOTER = re.compile(r"^(?:sent from my\b|get outlook for\b|sent from (?:mail|outlook) for\b)", re.I)
_TABLE_RULE = re.compile(r"^[\s|:\-]*\|[\s|:\-]*$")
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200d\ufeff\ue000\ue001]")
_FORWARD_MARKER = re.compile(
    r"^ *(?:-{3,} ?(?:forwarded message|weitergeleitete nachricht|message transf[ée]r[ée]|mensaje reenviado)"
    r" ?-{3,}|begin forwarded message:)",
    re.IGNORECASE | re.MULTILINE,
)
_SPACES = re.compile(r"[ \t\xa0\u2000-\u200a\u202f\u205f\u3000]+")


class _BoundedPolicy(EmailPolicy):
    """policy.default, except that a header value is cut to MAX_HEADER_CHARS before it is parsed (the
    stdlib's structured-header parser took minutes on a 1 MB header; no header we read is meaningfully
    longer) and a parsed header is remembered: the stdlib parses a header again on every ``get``, and
    reading one part asks for its Content-Type several times (500 parts took 30 s)."""

    def header_fetch_parse(self, name, value):
        if hasattr(value, "name"):
            return value
        return _parsed_header(name, value[:MAX_HEADER_CHARS])


_POLICY = _BoundedPolicy()


@functools.lru_cache(maxsize=1024)
def _parsed_header(name: str, value: str):
    """A parsed header (immutable; shared by every message that has the same one)."""
    return EmailPolicy.header_fetch_parse(_POLICY, name, value)


class MailParseError(ValueError):
    """The input cannot be read as an email at all (e.g. empty)."""


@dataclass(frozen=True)
class InboundMail:
    """One parsed inbound email, reduced to what the device needs.

    ``sender``/``reply_to`` are bare lower-cased addresses ("" when missing or unreadable);
    ``message_id`` is the Message-ID header as given (angle brackets kept) or "";
    ``text`` is the stripped body plus a note naming dropped attachments.
    """

    sender: str
    subject: str
    text: str
    message_id: str
    dropped_attachments: list[str] = field(default_factory=list)
    reply_to: str = ""


_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE)
_DELIMITER_LINE = re.compile(rb"^--([^\r\n]{1,200}?)(?:--)?[ \t]*\r?$", re.MULTILINE)


def declared_boundaries(raw: bytes) -> set[bytes]:
    """Every ``boundary=`` value in ``raw`` (what ``_BOUNDARY.findall`` gives, found faster: the pattern is
    tried only where ``boundary`` is written, in any case)."""
    found: set[bytes] = set()
    lowered = raw.lower()
    at = lowered.find(b"boundary")
    while at != -1:
        match = _BOUNDARY.match(raw, at)
        if match is not None:
            found.add(match.group(1) or match.group(2))
        at = lowered.find(b"boundary", match.end() if match is not None else at + 1)
    return found


def _line_matches(pattern: re.Pattern, raw: bytes, start: int = 0, end: int | None = None) -> list[re.Match]:
    """``pattern`` matched at the start of every line of ``raw[start:end]`` that begins with ``--`` (what a
    MULTILINE ``^--`` scan finds; ``bytes.find`` is much faster than a regular expression anchored at every
    line). ``start`` is the start of a line."""
    end = len(raw) if end is None else end
    found = []
    line = start if raw.startswith(b"--", start) else _next_dash_line(raw, start, end)
    while line is not None:
        match = pattern.match(raw, line, end)
        if match is not None:
            found.append(match)
        line = _next_dash_line(raw, line, end)
    return found


def _next_dash_line(raw: bytes, after: int, end: int) -> int | None:
    """Where the next line beginning with ``--`` starts after position ``after`` (before ``end``), or None."""
    at = raw.find(b"\n--", after, end)
    return at + 1 if at != -1 else None


def count_mime_parts(raw: bytes) -> int:
    """An upper bound on the MIME parts of a raw message (delimiter lines of its declared boundaries, closing
    ones included), found with fast scans and no parsing, so an oversized tree can be refused before it costs
    a parse."""
    boundaries = declared_boundaries(raw)
    if not boundaries:
        return 1
    tokens = (match.group(1) for match in _line_matches(_DELIMITER_LINE, raw))
    return sum(1 for token in tokens if token in boundaries or token[:-2] in boundaries)


HOLLOW_ABOVE = 64 * 1024  # bytes: a smaller mail is parsed whole (its attachments cost little to read)
HOLLOW_PART_MIN = 4096  # bytes: a smaller attachment body is left as it is
_HOLLOW_TYPES = frozenset({"image", "audio", "video", "application", "font", "model"})
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_BASE64_CHARACTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"


def without_attachment_bodies(raw: bytes) -> bytes:
    """``raw`` with the base64 bodies of its image, audio, video and application parts emptied, their headers
    kept. The device gets nothing of such a part (it only adds its name to the "dropped" note), but the stdlib
    parser reads every line of it: a 1 MB photo took about 15 ms.

    The MIME tree is followed as the stdlib parser follows it: each part's headers read by that parser, a
    multipart's parts split at its own boundary's delimiter lines (``--boundary``, optional ``--``, blanks).
    Anything unusual leaves a part (or the whole mail) as it is: headers with defects, a boundary that is not
    ASCII, ends in ``-`` or repeats an enclosing one, bare CR line endings, a part after which no delimiter
    comes, a body with anything but base64 characters. Mail of at most ``HOLLOW_ABOVE`` bytes is returned
    unchanged."""
    if len(raw) <= HOLLOW_ABOVE or (b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n")):
        return raw
    cuts: list[tuple[int, int]] = []
    _hollow(raw, 0, len(raw), (), cuts, depth=0)
    if not cuts:
        return raw
    pieces, kept_to = [], 0
    for cut_from, cut_to in cuts:
        pieces.append(raw[kept_to:cut_from])
        kept_to = cut_to
    pieces.append(raw[kept_to:])
    return b"".join(pieces)


def _hollow(raw: bytes, start: int, end: int, enclosing: tuple[bytes, ...], cuts: list, depth: int) -> None:
    """Note in ``cuts`` the attachment bodies to empty in the part ``raw[start:end]`` (``end``: where the next
    delimiter line of the enclosing multipart begins; the line break before it belongs to that delimiter)."""
    if depth > MAX_MIME_DEPTH or raw.startswith((b"\n", b"\r\n"), start):  # no header lines at all
        return
    head_end = _HEAD_END.search(raw, start, end)
    if head_end is None:
        return
    body_start = head_end.end()
    try:
        head = BytesParser(policy=_POLICY).parsebytes(raw[start:body_start], headersonly=True)
        maintype = head.get_content_maintype()
        boundary = head.get_boundary() if maintype == "multipart" else None
        encoding = str(head.get("content-transfer-encoding", "")).strip().lower()
    except Exception:  # headers the parser trips on: left as they are
        return
    if head.defects:
        return
    if maintype == "multipart":
        try:
            token = boundary.encode("ascii") if boundary else b""
        except UnicodeError:
            return
        if not token or token.endswith(b"-") or token in enclosing:
            return
        delimiter = re.compile(rb"--" + re.escape(token) + rb"(--)?[ \t]*\r?$", re.MULTILINE)
        lines = [match for match in _line_matches(delimiter, raw, body_start, end)]
        for this, following in zip(lines, lines[1:], strict=False):
            if this.group(1):  # the closing delimiter: what follows is the epilogue
                break
            _hollow(raw, this.end() + 1, following.start(), (*enclosing, token), cuts, depth + 1)
        return
    if depth == 0 or maintype not in _HOLLOW_TYPES or encoding != "base64":
        return
    line_break = 2 if raw.startswith(b"\r\n", end - 2) else 1 if raw.startswith(b"\n", end - 1) else 0
    body_end = end - line_break
    if not line_break or body_end - body_start < HOLLOW_PART_MIN:
        return
    if raw[body_start:body_end].translate(None, _BASE64_CHARACTERS):  # not base64 characters only
        return
    cuts.append((body_start, body_end))


def parse_inbound(raw: bytes) -> InboundMail:
    """Parse raw RFC 5322 bytes. Never raises for odd content; raises MailParseError for empty input."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"parse_inbound needs bytes, not {type(raw).__name__}")
    data = bytes(raw)
    if not data.strip():
        raise MailParseError("empty message")
    parser = BytesParser(policy=_POLICY)
    dropped: list[str] = []
    try:
        msg = parser.parsebytes(without_attachment_bodies(data))
        extracted = _extract(msg, dropped, top=True)
    except Exception:  # a MIME tree too broken (or deep) to walk: headers, then the raw body as text
        try:
            msg = parser.parsebytes(data, headersonly=True)
        except Exception as exc:
            raise MailParseError(f"unparsable message: {exc}") from exc
        dropped = []
        extracted = decode_bytes(re.split(rb"\r?\n\r?\n", data, maxsplit=1)[-1], None)
    subject = _clean_line(_header(msg, "Subject"))
    body = strip_reply(extracted, forwarded=bool(_FORWARD_PREFIX.match(subject)))
    dropped = list(dict.fromkeys(dropped))
    note = attachment_note(dropped)
    text = f"{body}\n{note}" if body and note else (body or note)
    return InboundMail(
        sender=normalise_email(_header(msg, "From") or _header(msg, "Sender")),
        subject=subject,
        text=text,
        message_id=_clean_line(_header(msg, "Message-ID")).replace(" ", ""),
        dropped_attachments=dropped,
        reply_to=normalise_email(_header(msg, "Reply-To")),
    )


def device_text(mail: InboundMail) -> str:
    """The text sent to the device: ``"{subject}\\n{body}"``, or just the body.

    The subject is left out when it is empty, when the body already starts with it, or when
    it is a reply subject ("Re: ...", "AW: ..."): a reply's subject repeats a thread the
    device already has (often the device's own first words), so it only costs satellite
    bytes. Forward prefixes ("Fwd:") are removed and the rest kept. If the body is empty,
    the subject (prefixes removed) is sent instead, so nothing arrives blank.
    """
    body = mail.text.strip()
    is_reply = bool(_REPLY_PREFIX.match(mail.subject))
    subject = _strip_subject_prefixes(mail.subject)
    if not body:
        return subject
    if not subject or is_reply or body.casefold().startswith(subject.casefold()):
        return body
    return f"{subject}\n{body}"


def attachment_note(names: list[str]) -> str:
    """ "[2 attachments dropped: a.pdf, b.jpg]" ("" for none); long lists are shortened."""
    if not names:
        return ""
    shown = names[:MAX_LISTED_ATTACHMENTS]
    more = len(names) - len(shown)
    listed = ", ".join(shown) + (f", +{more} more" if more else "")
    noun = "attachment" if len(names) == 1 else "attachments"
    return f"[{len(names)} {noun} dropped: {listed}]"


class _EnoughText(Exception):
    pass


class _BoundedHTML2Text(html2text.HTML2Text):
    """html2text with bounded work: lists and blockquotes nested deeper than MAX_HTML_NESTING are read as
    if they were not nested further (html2text rebuilds a deep list's indentation character by character
    for every item: ``<ul><li>`` 4,000 times took seconds, 50,000 times hours), and conversion stops after
    MAX_HTML_TEXT characters of output."""

    def __init__(self) -> None:
        self.produced = 0
        self.skipped = {"ul": 0, "ol": 0, "blockquote": 0}
        super().__init__(out=self._out, bodywidth=0)

    def _out(self, text: str) -> None:
        self.outtextf(text)
        self.produced += len(text)
        if self.produced > MAX_HTML_TEXT:
            raise _EnoughText

    def handle_tag(self, tag, attrs, start) -> None:
        if tag in self.skipped:
            depth = self.blockquote if tag == "blockquote" else len(self.list)
            if start and depth >= MAX_HTML_NESTING:
                self.skipped[tag] += 1
                return
            if not start and self.skipped[tag]:
                self.skipped[tag] -= 1
                return
        super().handle_tag(tag, attrs, start)


# A "<" that does not open a tag closed within 2,000 characters (before any other "<"), or a "<![" section not
# closed by "]>", is text: Python's html.parser rescans the rest of the document for each such "<" (quadratic:
# 50 KB of "<a " took 40 s).
_STRAY_LT = re.compile(r"<(?![^<>]{0,2000}>)|<(?=!\[)(?![^<>]{0,2000}\]>)")


def html_to_text(html: str) -> str:
    """HTML mail body -> plain text: no images, link text without URLs, no markdown clutter."""
    converter = _BoundedHTML2Text()
    converter.ignore_images = True
    converter.ignore_links = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True
    try:
        text = converter.handle(_STRAY_LT.sub("&lt;", html))
    except _EnoughText:
        text = "".join(converter.outtextlist).replace("&nbsp_place_holder;", "\xa0")
    except Exception:  # malformed markup: fall back to crude tag removal
        text = re.sub(r"<[^<>]*>", " ", html)
    text = _MD_ESCAPE.sub(r"\1", text)
    lines = [line for line in text.split("\n") if not _TABLE_RULE.match(line) or not line.strip()]
    return "\n".join("" if line.strip() == "* * *" else line for line in lines)


def strip_reply(text: str, *, forwarded: bool = False) -> str:
    """Keep only the newest part of a message: quoted replies and signatures removed.

    mail-parser-reply splits at reply headers ("On ... wrote:", "From:/Sent:" blocks,
    "-----Original Message-----", several languages); we then drop ">" lines, cut at a
    "-- " delimiter or a mobile footer, and tidy whitespace. Sign-offs like "Thanks," are
    kept: too easily confused with content. A forwarded message is the content, so it is
    kept whole (``forwarded=True``, or an unquoted "Forwarded message" marker). If
    stripping leaves nothing, the tidied unstripped text is returned instead.
    """
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if not text.strip():
        return ""
    if forwarded:
        return _tidy(text.split("\n"))
    marker = _FORWARD_MARKER.search(text)
    newest, header_found = _newest_reply(text[: marker.start()] if marker else text)
    kept = [line for line in newest.split("\n") if not line.lstrip().startswith(">")]
    result = _tidy(_cut_signature(kept))
    if marker and not header_found:
        result = _tidy([*result.split("\n"), "", *text[marker.start() :].split("\n")])
    return result or _tidy(text.split("\n")) or _SPACES.sub(" ", text).strip()


def _newest_reply(text: str) -> tuple[str, bool]:
    """(newest reply, whether a reply header was found) as told by mail-parser-reply.

    The library's regexes are slow on long lines and huge bodies, so it sees a probe:
    the first PROBE_CHARS, long lines shortened around a placeholder that is put back.
    """
    split_at = text.rfind("\n", 0, PROBE_CHARS) if len(text) > PROBE_CHARS else len(text)
    split_at = split_at if split_at > 0 else PROBE_CHARS
    rest = text[split_at:]
    long_parts: list[str] = []
    probe_lines = []
    for line in text[:split_at].split("\n"):
        line = line.strip()
        if len(line) > PROBE_LINE:
            long_parts.append(line[_KEEP:-_KEEP])
            line = line[:_KEEP] + _PLACEHOLDER.format(len(long_parts) - 1) + line[-_KEEP:]
        probe_lines.append(line)
    try:
        parsed = ReplyMessage(
            text="\n".join(probe_lines), languages=list(REPLY_LANGUAGES), keep_hyphen_lists=True, **_reply_patterns()
        )
        replies = parsed.read().replies
    except Exception:  # a bug in the helper library must not lose the message
        return text, False
    if not replies:
        return text, False
    header_found = len(replies) > 1 or bool(replies[0].headers)
    body, signature = replies[0].full_body, replies[0].signatures or ""
    signed = bool(signature) and _is_safe_signature(signature) and signature in body
    if signed:
        body = body[: body.rfind(signature)]
    for index, part in enumerate(long_parts):
        body = body.replace(_PLACEHOLDER.format(index), part)
    return (body if header_found or signed else body + rest), header_found


@functools.cache
def _reply_patterns() -> dict:
    """mail-parser-reply's regular expressions for our languages, built once: it builds them anew from its
    language tables for every message (a fifth of the parsing of a short mail). They depend only on the
    languages and ``keep_hyphen_lists``, which are the same for every message."""
    template = ReplyMessage(text="", languages=list(REPLY_LANGUAGES), keep_hyphen_lists=True)
    return {
        "_header_regex": template.HEADER_REGEX,
        "_disclaimers_regex": template.DISCLAIMERS_REGEX,
        "_signature_regex": template.SIGNATURE_REGEX,
    }


def _is_safe_signature(signature: str) -> bool:
    """Accept mail-parser-reply's signature guess only for unambiguous forms."""
    lines = [line.strip().lstrip("> ").strip() for line in signature.strip().split("\n") if line.strip()]
    if not lines:
        return False
    first = lines[0]
    if _SIG_DELIMITER.match(first) or (len(first) >= 5 and _SEPARATOR_LINE.match(first)):
        return True
    return bool(_MOBILE_FOOTER.match(first)) and len(lines) <= 2


def _cut_signature(lines: list[str]) -> list[str]:
    for index, line in enumerate(lines):
        stripped = line.strip()
        if index > 0 and _SIG_DELIMITER.match(stripped):
            return lines[:index]
        if index > 0 and _MOBILE_FOOTER.match(stripped) and len(lines) - index <= 2:
            return lines[:index]
    return lines


def _tidy(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        line = _SPACES.sub(" ", line).strip()
        if line or (out and out[-1]):
            out.append(line)
    while out and (not out[-1] or _SEPARATOR_LINE.match(out[-1])):
        out.pop()
    while out and _SEPARATOR_LINE.match(out[0]):
        out.pop(0)
    return "\n".join(out).strip()


def _extract(part: Message, dropped: list[str], *, top: bool = False, depth: int = 0) -> str:
    """Text of one MIME part (recursively); non-text parts are added to ``dropped``. Parts nested deeper than
    ``MAX_MIME_DEPTH`` are not read (noted as dropped)."""
    if depth > MAX_MIME_DEPTH:
        dropped.append("deeply nested part")
        return ""
    ctype = part.get_content_type()
    maintype = ctype.partition("/")[0]  # (get_content_maintype would parse the header again)
    if ctype in _SILENT_TYPES:
        return ""
    if maintype == "message" and not top:
        dropped.append(_attachment_name(part, "attached message"))
        return ""
    if part.is_multipart() and maintype == "multipart":
        return _extract_multipart(part, dropped, depth + 1)
    disposition = part.get_content_disposition()
    if not top and disposition == "attachment":
        dropped.append(_attachment_name(part, ctype))
        return ""
    if ctype == "text/html":
        return html_to_text(_decode_text(part))
    if maintype == "text" or maintype == "multipart" or (top and maintype == "message"):
        return _decode_text(part)  # text/* or a multipart with no readable boundary
    dropped.append(_attachment_name(part, ctype))
    return ""


def _extract_multipart(part: Message, dropped: list[str], depth: int) -> str:
    children = list(part.iter_parts())
    subtype = part.get_content_subtype()
    if not children:
        return ""
    if subtype == "alternative":
        return _pick_alternative(children, dropped, depth)
    if subtype == "related":
        for resource in children[1:]:  # inline images of the HTML root: skipped silently
            if resource.get_content_disposition() == "attachment":
                dropped.append(_attachment_name(resource, resource.get_content_type()))
        return _extract(children[0], dropped, depth=depth)
    if subtype == "signed":  # content first, then the signature
        children = children[:1]
    texts = [_extract(child, dropped, depth=depth) for child in children]
    return "\n\n".join(text.strip() for text in texts if text.strip())


def _pick_alternative(children: list[Message], dropped: list[str], depth: int) -> str:
    """Prefer a non-empty text/plain alternative, else the richest (last) non-empty one."""
    extracted = [(child, _extract(child, dropped, depth=depth)) for child in children]
    for child, text in extracted:
        if child.get_content_type() == "text/plain" and text.strip():
            return text
    for _, text in reversed(extracted):
        if text.strip():
            return text
    return ""


def _decode_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        raw = part.get_payload()
        payload = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(payload, charset)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode body bytes leniently: unknown/broken charsets never raise (U+FFFD instead)."""
    name = (charset or "").strip().strip('"').lower()
    if name in ("", "us-ascii", "ascii", "unknown-8bit", "x-unknown"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", errors="replace")
    name = _CHARSET_ALIASES.get(name, name)
    try:  # bytes.decode refuses non-text codecs (rot13, base64...) with LookupError
        if codecs.lookup(name).name in _NOT_MAIL_CHARSETS:  # Python's own text codecs: not a charset
            raise LookupError(name)
        return data.decode(name, errors="replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return data.decode("utf-8", errors="replace")


def _attachment_name(part: Message, fallback: str) -> str:
    try:
        name = part.get_filename() or ""
    except Exception:
        name = ""
    name = _SPACES.sub(" ", _CONTROL.sub("", str(name))).strip() or fallback
    return name if len(name) <= MAX_ATTACHMENT_NAME else name[: MAX_ATTACHMENT_NAME - 1] + "…"


def _header(msg: EmailMessage, name: str) -> str:
    """Decoded header value; falls back to the raw text when the header is malformed."""
    try:
        value = msg.get(name)
        if value is None:
            return ""
        if name.lower() in ("from", "sender", "reply-to"):
            addresses = getattr(value, "addresses", None)
            if addresses:
                return addresses[0].addr_spec
        return str(value)
    except Exception:
        for key, raw in msg.raw_items():
            if key.lower() == name.lower():
                return str(raw)
        return ""


def _clean_line(value: str) -> str:
    return _SPACES.sub(" ", _CONTROL.sub(" ", value.replace("\r", " ").replace("\n", " "))).strip()


def _strip_subject_prefixes(subject: str) -> str:
    previous = None
    subject = _clean_line(subject)
    while previous != subject:
        previous = subject
        subject = _FORWARD_PREFIX.sub("", _REPLY_PREFIX.sub("", subject))
    return subject.strip()
