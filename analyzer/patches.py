"""Patches and series, read from what kernel developers actually pass around:
`git format-patch` files, mbox series from b4 or lore (gzipped or not), a
single RFC 2822 message on stdin (b4's check protocol), or plain `git diff`.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import mailbox
import os
import re
import tempfile
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr

from unidiff import PatchedFile, PatchSet
from unidiff.errors import UnidiffParseError


class InputError(Exception):
    """Input that cannot be reviewed: said in one line, naming the input."""


# [PATCH v2 3/7], [RFC PATCH mm-unstable 0/2], [PATCHv3], [PATCH RESEND]
_PREFIX_RE = re.compile(r"^\s*((?:\[[^\]]*\]\s*)+)")
_COUNTER_RE = re.compile(r"^(\d{1,4})/(\d{1,4})$")
_VERSION_RE = re.compile(r"^v(\d+)$", re.IGNORECASE)
_REPLY_RE = re.compile(r"^\s*(re|aw|fwd?)\s*:", re.IGNORECASE)
_DIFF_START_RE = re.compile(r"^(diff --git |Index: |--- \S)", re.MULTILINE)
_BASE_COMMIT_RE = re.compile(r"^base-commit:\s*([0-9a-f]{7,40})\s*$", re.MULTILINE)
_SIGNATURE_RE = re.compile(r"\n-- \n[^\n]*\n*\Z")


@dataclass(frozen=True)
class Subject:
    """A patch subject as b4 reads it."""

    text: str
    counter: int | None = None
    total: int | None = None
    version: int = 1
    is_reply: bool = False
    prefixes: tuple[str, ...] = ()

    @property
    def is_cover(self) -> bool:
        return self.counter == 0

    @property
    def is_patch(self) -> bool:
        return any(p.lower() in ("patch", "rfc") for p in self.prefixes)

    @classmethod
    def parse(cls, raw: str) -> Subject:
        raw = " ".join(raw.split())
        is_reply = bool(_REPLY_RE.match(raw))
        match = _PREFIX_RE.match(raw)
        if not match:
            return cls(text=raw, is_reply=is_reply)
        counter = total = None
        version = 1
        prefixes: list[str] = []
        for bracket in re.findall(r"\[([^\]]*)\]", match.group(1)):
            for token in bracket.replace(",", " ").split():
                lowered = token.lower()
                if m := _COUNTER_RE.match(token):
                    counter, total = int(m.group(1)), int(m.group(2))
                elif m := _VERSION_RE.match(token):
                    version = int(m.group(1))
                elif m := re.match(r"^patch[-_]?v(\d+)$", lowered):
                    prefixes.append("PATCH")
                    version = int(m.group(1))
                else:
                    prefixes.append(
                        token.upper() if lowered in ("patch", "rfc", "resend") else token
                    )
        return cls(
            text=raw[match.end() :].strip(),
            counter=counter,
            total=total,
            version=version,
            is_reply=is_reply,
            prefixes=tuple(prefixes),
        )


@dataclass
class FileDiff:
    """One file of a patch, as the diff describes it."""

    path: str  # post-image path (pre-image path for a deletion)
    old_path: str | None  # None for a new file
    new_path: str | None  # None for a deleted file
    patched: PatchedFile

    @property
    def is_binary(self) -> bool:
        return self.patched.is_binary_file

    @property
    def is_c(self) -> bool:
        return self.path.endswith((".c", ".h"))


@dataclass
class Patch:
    """One patch of a series: its message and its diff."""

    index: int
    total: int
    subject: Subject
    author: str = ""
    date: str = ""
    message_id: str = ""
    commit_message: str = ""
    diff: str = ""
    files: list[FileDiff] = field(default_factory=list)
    commit: str | None = None  # the `From <sha>` of git format-patch
    source: str = ""
    message: EmailMessage | None = None
    # Why this patch cannot be reviewed, if it cannot; the rest of the series
    # still is.
    error: str | None = None

    @property
    def title(self) -> str:
        return self.subject.text or "(no subject)"

    def label(self) -> str:
        return f'patch {self.index}/{self.total} ("{self.title}")'


@dataclass
class Series:
    patches: list[Patch]
    cover: EmailMessage | None = None
    base_commit: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reviewable(self) -> list[Patch]:
        return [p for p in self.patches if p.error is None]


def read_series(sources: list[str], stdin: bytes | None = None) -> Series:
    """Read one or more inputs ("-" is stdin) into one series, in order."""
    patches: list[Patch] = []
    covers: list[EmailMessage] = []
    notes: list[str] = []
    for source in sources:
        data = stdin if source == "-" else _read_file(source)
        name = "<stdin>" if source == "-" else source
        if data is None:
            raise InputError(f"{name}: nothing on standard input")
        found, cover = _read_input(data, name, notes)
        patches.extend(found)
        if cover is not None:
            covers.append(cover)
    return _assemble(patches, covers[0] if covers else None, notes)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a patch or mbox file") from None
    except OSError as err:
        raise InputError(f"{path}: {err.strerror.lower() if err.strerror else err}") from None


def _read_input(
    data: bytes, name: str, notes: list[str]
) -> tuple[list[Patch], EmailMessage | None]:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise InputError(f"{name}: corrupt gzip data ({err})") from None
    if not data.strip():
        raise InputError(f"{name}: empty input, expected a patch or mbox")
    head = data.lstrip()[:4096]
    if head.startswith(b"From ") and b"\n" in head:
        messages = _split_mbox(data)
    elif _looks_like_headers(head):
        messages = [email.message_from_bytes(data, policy=email.policy.default)]
    elif _DIFF_START_RE.search(data.decode("utf-8", "replace")):
        patch = _patch_from_diff(data.decode("utf-8", "surrogateescape"), name)
        return [patch], None
    else:
        raise InputError(
            f"{name}: not a patch, mbox or diff (no 'diff --git' or mail headers found)"
        )

    patches: list[Patch] = []
    cover = None
    for number, message in enumerate(messages, 1):
        where = name if len(messages) == 1 else f"{name} (message {number})"
        subject = Subject.parse(str(message.get("Subject", "")))
        if subject.is_reply:
            notes.append(f"{where}: skipped reply '{subject.text[:60]}'")
            continue
        if subject.is_cover:
            cover = message
            continue
        patches.append(_patch_from_message(message, subject, where))
    if not patches and cover is None:
        raise InputError(f"{name}: no patches found")
    return patches, cover


def _looks_like_headers(head: bytes) -> bool:
    first = head.split(b"\n", 1)[0]
    return bool(re.match(rb"^[A-Za-z][A-Za-z0-9-]*:[ \t]", first))


def _split_mbox(data: bytes) -> list[EmailMessage]:
    # mailbox.mbox wants a path; the input may be stdin, so spool it.
    fd, path = tempfile.mkstemp(prefix="mmreview-", suffix=".mbox")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        box = mailbox.mbox(
            path, factory=lambda f: email.message_from_binary_file(f, policy=email.policy.default)
        )
        messages = [msg for msg in box]
        box.close()
    finally:
        os.unlink(path)
    for message, match in zip(messages, _FROM_LINES.findall(data), strict=False):
        message["X-MMReview-From-Line"] = match.decode()
    return messages


_FROM_LINES = re.compile(rb"^From (\S+) ", re.MULTILINE)


def _patch_from_message(message: EmailMessage, subject: Subject, where: str) -> Patch:
    author_name, author_addr = parseaddr(str(message.get("From", "")))
    patch = Patch(
        index=subject.counter or 0,
        total=subject.total or 0,
        subject=subject,
        author=f"{author_name} <{author_addr}>" if author_name else author_addr,
        date=str(message.get("Date", "")),
        message_id=str(message.get("Message-ID", "")).strip(),
        source=where,
        message=message,
    )
    from_line = str(message.get("X-MMReview-From-Line", ""))
    if re.fullmatch(r"[0-9a-f]{40}", from_line):
        patch.commit = from_line
    try:
        body = _message_text(message)
    except (LookupError, ValueError, AssertionError) as err:
        patch.error = f"{where}: cannot decode message body ({err})"
        return patch
    body = body.replace("\r\n", "\n")
    match = _DIFF_START_RE.search(body)
    if not match:
        patch.error = f"{where}: '{subject.text[:60]}' has no diff"
        patch.commit_message = body
        return patch
    patch.commit_message = _strip_scissors(body[: match.start()])
    _parse_diff_into(patch, body[match.start() :], where)
    return patch


def _message_text(message: EmailMessage) -> str:
    """The body text, with a diff sent as an attachment appended to it."""
    if not message.is_multipart():
        return _decoded(message)
    texts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = part.get_filename() or ""
        if (
            ctype == "text/plain"
            or ctype in ("text/x-patch", "text/x-diff")
            or filename.endswith((".patch", ".diff"))
        ):
            texts.append(_decoded(part))
    return "\n".join(texts)


def _decoded(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _strip_scissors(message: str) -> str:
    # The commit message ends at the first '---' line; notes and the
    # diffstat follow it.
    lines = message.split("\n")
    for number, line in enumerate(lines):
        if line.rstrip() == "---":
            return "\n".join(lines[:number]).strip("\n")
    return message.strip("\n")


def _patch_from_diff(text: str, name: str) -> Patch:
    patch = Patch(index=1, total=1, subject=Subject(text=os.path.basename(name)), source=name)
    match = _DIFF_START_RE.search(text)
    assert match is not None
    patch.commit_message = text[: match.start()]
    _parse_diff_into(patch, text[match.start() :].replace("\r\n", "\n"), name)
    return patch


def _parse_diff_into(patch: Patch, diff: str, where: str) -> None:
    diff = _SIGNATURE_RE.sub("\n", diff)
    patch.diff = diff
    try:
        patchset = PatchSet(diff)
    except (UnidiffParseError, ValueError, IndexError) as err:
        patch.error = f"{where}: malformed diff: {' '.join(str(err).split())}"
        return
    for patched in patchset:
        old = None if patched.is_added_file else _strip_prefix(patched.source_file)
        new = None if patched.is_removed_file else _strip_prefix(patched.target_file)
        path = new or old or patched.path
        if bad := _unsafe_path(path) or (old and _unsafe_path(old)):
            patch.error = f"{where}: refusing diff path '{path}': {bad}"
            return
        patch.files.append(FileDiff(path=path, old_path=old, new_path=new, patched=patched))
    if not patch.files:
        patch.error = f"{where}: malformed diff: no file changes found"


def _strip_prefix(name: str) -> str | None:
    if name in ("/dev/null", ""):
        return None
    for prefix in ("a/", "b/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _unsafe_path(path: str) -> str | None:
    if path.startswith("/"):
        return "absolute path"
    if ".." in path.split("/"):
        return "path leaves the tree"
    return None


def _assemble(patches: list[Patch], cover: EmailMessage | None, notes: list[str]) -> Series:
    """Order a series by its n/N counters, keeping only its newest revision."""
    versions = {p.subject.version for p in patches}
    if len(versions) > 1:
        newest = max(versions)
        notes.append(f"input holds revisions {sorted(versions)}; reviewing v{newest}")
        patches = [p for p in patches if p.subject.version == newest]
    if all(p.subject.counter for p in patches):
        patches.sort(key=lambda p: p.subject.counter or 0)
    total = len(patches)
    for position, patch in enumerate(patches, 1):
        patch.index = patch.subject.counter or position
        patch.total = patch.subject.total or total
    base = None
    texts = [p.diff + p.commit_message for p in patches]
    if cover is not None:
        texts.insert(0, _message_text(cover))
    for text in texts:
        if match := _BASE_COMMIT_RE.search(text):
            base = match.group(1)
            break
    return Series(patches=patches, cover=cover, base_commit=base, notes=notes)


def reply_addresses(message: EmailMessage) -> tuple[list[str], list[str]]:
    """To and Cc for a reply in the list's conventions."""
    reply_to = message.get_all("Reply-To") or message.get_all("From") or []
    to = [_address(n, a) for n, a in getaddresses([str(x) for x in reply_to]) if a]
    cc_raw = [str(x) for x in (message.get_all("To") or []) + (message.get_all("Cc") or [])]
    seen = {a for _, a in getaddresses([str(x) for x in reply_to])}
    cc = []
    for name, addr in getaddresses(cc_raw):
        if addr and addr not in seen:
            seen.add(addr)
            cc.append(_address(name, addr))
    return to, cc


def _address(name: str, addr: str) -> str:
    # Address() quotes a display name holding a comma or other specials.
    try:
        return str(Address(display_name=name, addr_spec=addr)) if name else addr
    except (ValueError, IndexError):
        return addr
