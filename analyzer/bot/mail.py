"""One message from the archive, inspected as the untrusted input it is.

Only headers are read here (Message-ID, threading, subject, author), after
cheap checks on the raw bytes that bound what the MIME parser is asked to do:
a size cap, and a cap on multipart containers (nesting depth cannot exceed
their number) and on parts.  Anything that trips a limit or breaks the parser
is rejected with a reason; the bot logs it and goes on.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.utils import parseaddr

from analyzer.bot.config import LimitsConfig
from analyzer.patches import Subject
from analyzer.patterns import regex

_MSGID_RE = regex(r"<([^<>\s]{1,250})>")
_MULTIPART_RE = regex(rb"^content-type:[ \t]*multipart/", re.IGNORECASE | re.MULTILINE)
_MAX_REFERENCES = 100


@dataclass
class MailInfo:
    msgid: str  # with angle brackets
    subject: Subject
    raw_subject: str
    author: str  # the address, lower case
    author_name: str
    date: str
    in_reply_to: str | None
    references: list[str] = field(default_factory=list)
    to_cc: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # further Message-ID headers

    @property
    def kind(self) -> str:
        """patch, cover, reply or other: only the first two are reviewed."""
        if self.subject.is_reply:
            return "reply"
        if not self.subject.is_patch:
            return "other"
        return "cover" if self.subject.is_cover else "patch"

    @property
    def parent(self) -> str | None:
        return self.in_reply_to or (self.references[-1] if self.references else None)


class Rejected(Exception):
    """Why a message is not looked at further."""


def text(value: object) -> str:
    """A header value as clean text: undecodable bytes become U+FFFD."""
    raw = str(value)
    try:
        parts = email.header.decode_header(raw)
        raw = str(email.header.make_header(parts))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        pass
    raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(raw.split())


def inspect(data: bytes, limits: LimitsConfig) -> MailInfo:
    if len(data) > limits.max_message_bytes:
        raise Rejected(f"oversized: {len(data)} bytes (limit {limits.max_message_bytes})")
    containers = len(_MULTIPART_RE.findall(data))
    if containers > limits.max_mime_parts:
        raise Rejected(
            f"MIME bomb: {containers} multipart containers (limit {limits.max_mime_parts})"
        )
    try:
        message = email.message_from_bytes(data, policy=email.policy.compat32)
        for parts, _ in enumerate(message.walk(), 1):
            if parts > limits.max_mime_parts * 4:
                raise Rejected(f"MIME bomb: more than {limits.max_mime_parts * 4} parts")
        return _info(message)
    except Rejected:
        raise
    except (RecursionError, MemoryError) as err:
        raise Rejected(f"MIME structure too deep or large ({type(err).__name__})") from None
    except Exception as err:  # the email package raises assorted errors on garbage
        raise Rejected(f"unparsable message ({type(err).__name__}: {err})"[:200]) from None


def _info(message: email.message.Message) -> MailInfo:
    # public-inbox adds a Message-ID of its own when one is reused for
    # different content: the first is the author's, threads refer to it.
    ids = _msgids(message.get_all("Message-ID") or [])
    if not ids:
        raise Rejected("no usable Message-ID")
    msgid = ids[0]
    raw_subject = text(message.get("Subject", ""))
    name, address = parseaddr(text(message.get("From", "")))
    in_reply_to = _msgids(message.get_all("In-Reply-To") or [])
    references = _msgids(message.get_all("References") or [])[-_MAX_REFERENCES:]
    recipients = [
        addr.lower()
        for _, addr in email.utils.getaddresses(
            [text(v) for v in (message.get_all("To") or []) + (message.get_all("Cc") or [])]
        )
        if addr
    ]
    return MailInfo(
        msgid=msgid,
        aliases=ids[1:],
        subject=Subject.parse(raw_subject),
        raw_subject=raw_subject,
        author=address.lower(),
        author_name=name,
        date=text(message.get("Date", "")),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=[r for r in references if r != msgid],
        to_cc=recipients,
    )


def _msgids(values: list) -> list[str]:
    return [f"<{_printable(m)}>" for v in values for m in _MSGID_RE.findall(text(v))]


def _printable(msgid: str) -> str:
    return "".join(c if 32 < ord(c) < 127 else "_" for c in msgid)
