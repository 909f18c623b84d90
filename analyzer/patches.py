"""Patches and series, read from what kernel developers actually pass around:
`git format-patch` files, mbox series from b4 or lore (gzipped or not), a
single RFC 2822 message on stdin (b4's check protocol), or plain `git diff`.
"""

from __future__ import annotations

import contextlib
import email
import email.errors
import email.header
import email.policy
import io
import os
import re
import stat
import zlib
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr

from unidiff import PatchedFile, PatchSet
from unidiff.errors import UnidiffParseError

from analyzer import budget
from analyzer.patterns import regex
from analyzer.records import Record


class InputError(Exception):
    """Input that cannot be reviewed: said in one line per problem, each
    naming the input."""

    def __init__(self, *lines: str) -> None:
        super().__init__(*lines)
        self.lines = [" ".join(line.split()) for line in lines] or ["bad input"]

    def __str__(self) -> str:
        return "\n".join(self.lines)


class Limits(Record):
    """How much one input may ask of the reader and of the review.  Each is
    far above what real kernel patches need (measured on the 6.12 tree, see
    the README's "Limits") and low enough that hostile input is refused in
    one line instead of costing minutes or gigabytes."""

    # After gunzip.  A tree-wide patch of 3,524 files is 1.8 MB; a b4 mbox of
    # a 100-patch series a few MB.  Reading a diff costs about ten times its
    # size in memory and a second per 100,000 lines on a busy machine.
    input_bytes: int = 8 << 20
    # Messages in one mbox: lore's t.mbox.gz of the longest linux-mm threads
    # holds hundreds (replies cost little: they are skipped).
    messages: int = 5000
    # Patches in one series: the longest mm series have a few hundred; each
    # costs tens of milliseconds with a tree.
    patches: int = 1000
    # Files one patch touches: a tree-wide edit of the 6.12 tree touching
    # every file that includes linux/mm.h is 2,002 files.
    files_per_patch: int = 20000
    # Lines of one hunk: the largest hand-written C file of 6.12 is under
    # 40,000 lines; a new file is one hunk.
    hunk_lines: int = 100000
    # Bytes of one line: the longest line in any file of the 6.12 tree is
    # 50 KB (an SVG), the longest in C about 1.3 KB.
    line_bytes: int = 128 << 10
    # multipart containers in one mail (nesting cannot be deeper): a patch
    # mail has at most a few (mixed, signed).
    mime_multiparts: int = 32
    # A patch's time budget (see analyzer.budget), which reading its diff
    # starts to spend; None for no limit.
    seconds_per_patch: float | None = budget.DEFAULT_SECONDS


LIMITS = Limits()


# [PATCH v2 3/7], [RFC PATCH mm-unstable 0/2], [PATCHv3], [PATCH RESEND]
_PREFIX_RE = regex(r"^\s*((?:\[[^\]]*\]\s*)+)")
_COUNTER_RE = regex(r"^(\d{1,4})/(\d{1,4})$")
_VERSION_RE = regex(r"^v(\d+)$", re.IGNORECASE)
_REPLY_RE = regex(r"^\s*(re|aw|fwd?)\s*:", re.IGNORECASE)
_DIFF_START_RE = regex(r"^(diff --git |Index: |--- \S)", re.MULTILINE)
_BASE_COMMIT_RE = regex(r"^base-commit:\s*([0-9a-f]{7,40})\s*$", re.MULTILINE)
_SIGNATURE_RE = regex(r"\n-- \n[^\n]*\n*\Z")
_BRACKET_RE = regex(r"\[([^\]]*)\]")
_PATCH_VERSION_RE = regex(r"^patch[-_]?v(\d+)$")
_HEADER_LINE_RE = regex(rb"^[A-Za-z][A-Za-z0-9-]*:[ \t]")
_COMMIT_ID_RE = regex(r"[0-9a-f]{40}")


class Subject(Record):
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
        for bracket in _BRACKET_RE.findall(match.group(1)):
            for token in bracket.replace(",", " ").split():
                lowered = token.lower()
                if m := _COUNTER_RE.match(token):
                    counter, total = int(m.group(1)), int(m.group(2))
                elif m := _VERSION_RE.match(token):
                    version = int(m.group(1))
                elif m := _PATCH_VERSION_RE.match(lowered):
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


class FileDiff:
    """One file of a patch, as the diff describes it."""

    def __init__(
        self, path: str, old_path: str | None, new_path: str | None, patched: PatchedFile
    ) -> None:
        self.path = path  # post-image path (pre-image path for a deletion)
        self.old_path = old_path  # None for a new file
        self.new_path = new_path  # None for a deleted file
        self.patched = patched

    @property
    def is_binary(self) -> bool:
        return self.patched.is_binary_file

    @property
    def is_c(self) -> bool:
        return self.path.endswith((".c", ".h"))


class Patch:
    """One patch of a series: its message and its diff."""

    def __init__(
        self,
        index: int,
        total: int,
        subject: Subject,
        author: str = "",
        date: str = "",
        message_id: str = "",
        commit_message: str = "",
        diff: str = "",
        files: list[FileDiff] | None = None,
        commit: str | None = None,
        source: str = "",
        message: EmailMessage | None = None,
        error: str | None = None,
    ) -> None:
        self.index = index
        self.total = total
        self.subject = subject
        self.author = author
        self.date = date
        self.message_id = message_id
        self.commit_message = commit_message
        self.diff = diff
        self.files: list[FileDiff] = files if files is not None else []
        self.commit = commit  # the `From <sha>` of git format-patch
        self.source = source
        self.message = message
        # Why this patch cannot be reviewed, if it cannot; the rest of the
        # series still is.
        self.error = error
        # Of its time budget, what reading its diff took.
        self.read_seconds = 0.0

    def __repr__(self) -> str:
        return f"<{self.label()}>"

    @property
    def title(self) -> str:
        return self.subject.text or "(no subject)"

    def label(self) -> str:
        return f'patch {self.index}/{self.total} ("{self.title}")'


class Series:
    """The patches of the inputs, in order, with the cover letter and what
    could not be read."""

    def __init__(
        self,
        patches: list[Patch],
        cover: EmailMessage | None = None,
        base_commit: str | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.patches = patches
        self.cover = cover
        self.base_commit = base_commit
        self.notes: list[str] = notes if notes is not None else []
        # Inputs that could not be read at all (the others still were).
        self.errors: list[str] = []

    @property
    def reviewable(self) -> list[Patch]:
        return [p for p in self.patches if p.error is None]


def read_series(sources: list[str], stdin: bytes | None = None, limits: Limits = LIMITS) -> Series:
    """Read one or more inputs ("-" is stdin) into one series, in order.

    An input that cannot be read is said in `Series.errors` and the others
    are still read; InputError (one line per input) only when none could."""
    patches: list[Patch] = []
    covers: list[EmailMessage] = []
    notes: list[str] = []
    errors: list[str] = []
    for source in sources:
        name = "<stdin>" if source == "-" else printable(source)
        try:
            data = stdin if source == "-" else _read_file(source, name, limits)
            if data is None:
                raise InputError(f"{name}: nothing on standard input")
            found, cover = _read_input(data, name, notes, limits)
        except InputError as err:
            errors.extend(err.lines)
            continue
        patches.extend(found)
        if cover is not None:
            covers.append(cover)
    if errors and not patches and not covers:
        raise InputError(*errors)
    if len(patches) > limits.patches:
        raise InputError(
            f"{', '.join(printable(s) if s != '-' else '<stdin>' for s in sources)[:200]}:"
            f" {len(patches)} patches, more than the limit of {limits.patches} per series;"
            " review it in parts"
        )
    series = _assemble(patches, covers[0] if covers else None, notes)
    series.errors = errors
    return series


def printable(text: str) -> str:
    """Text fit for a one-line message: undecodable bytes (surrogate
    escapes from argv or mail) as U+FFFD, control characters and NULs
    shown as escapes."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)


# C0 and C1 controls and the Unicode line separators: whatever a terminal or
# `str.splitlines()` may take for the end of the line (U+0085 came from a
# fuzzed diff path).
_CONTROL_RE = regex(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _read_file(path: str, name: str, limits: Limits) -> bytes:
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            # One byte more than the limit tells a file at the limit from
            # one over it; a FIFO or a character device is read the same way.
            data = handle.read(limits.input_bytes + 1)
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, expected a patch or mbox file") from None
    except ValueError:  # a NUL in the path
        raise InputError(f"{name}: no such file or directory") from None
    except OSError as err:
        reason = err.strerror.lower() if err.strerror else str(err)
        raise InputError(f"{name}: {reason}") from None
    return data


def _mib(size: int) -> str:
    """A size as people say it: 16 MiB, 128 KiB, 80 bytes."""
    if size >= 1 << 20:
        return f"{size / (1 << 20):.0f} MiB"
    return f"{size / 1024:.0f} KiB" if size >= 1024 else f"{size} bytes"


def _gunzip(data: bytes, name: str, limits: Limits) -> bytes:
    # Read at most one byte over the limit: a gzip bomb never unpacks.
    try:
        import gzip  # a .gz mbox only

        with gzip.GzipFile(fileobj=io.BytesIO(data)) as unpacked:
            out = unpacked.read(limits.input_bytes + 1)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{name}: corrupt gzip data ({reason})") from None
    if len(out) > limits.input_bytes:
        raise InputError(
            f"{name}: unpacks to more than {_mib(limits.input_bytes)} (the input size limit)"
        )
    return out


def _read_input(
    data: bytes, name: str, notes: list[str], limits: Limits = LIMITS
) -> tuple[list[Patch], EmailMessage | None]:
    if len(data) > limits.input_bytes:
        raise InputError(
            f"{name}: larger than {_mib(limits.input_bytes)} (the input size limit);"
            " review the series patch by patch"
        )
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, name, limits)
    if not data.strip():
        raise InputError(f"{name}: empty input, expected a patch or mbox")
    head = data.lstrip()[:4096]
    if head.startswith(b"From ") and b"\n" in head:
        raws = _split_mbox(data, name, limits)
    elif _looks_like_headers(head):
        raws = [(data, None)]
    elif _DIFF_START_RE.search(data.decode("utf-8", "replace")):
        patch = _patch_from_diff(data.decode("utf-8", "surrogateescape"), name, limits)
        return [patch], None
    else:
        raise InputError(
            f"{name}: not a patch, mbox or diff (no 'diff --git' or mail headers found)"
        )
    del data  # the messages' bytes are what is kept from here on

    patches: list[Patch] = []
    cover = None
    for number, (raw, from_line) in enumerate(raws, 1):
        where = name if len(raws) == 1 else f"{name} (message {number})"
        message, subject, problem = _message_from_bytes(raw, limits)
        if message is None or subject is None:
            patches.append(Patch(0, 0, Subject(text=""), source=where, error=f"{where}: {problem}"))
            continue
        if subject.is_reply:
            notes.append(f"{where}: skipped reply '{subject.text[:60]}'")
            continue
        if subject.is_cover:
            cover = message
            continue
        patches.append(_guarded_patch(message, subject, where, from_line, limits))
    if not patches and cover is None:
        raise InputError(f"{name}: no patches found")
    return patches, cover


def _looks_like_headers(head: bytes) -> bool:
    first = head.split(b"\n", 1)[0]
    return bool(_HEADER_LINE_RE.match(first))


def _split_mbox(data: bytes, name: str, limits: Limits) -> list[tuple[bytes, str | None]]:
    """The messages of an mbox as bytes, each with the id of its `From `
    line.  Only split here: each message is parsed on its own later, so one
    that breaks the mail parser costs that message only."""
    count = len(_FROM_LINES.findall(data))
    if count > limits.messages:
        raise InputError(
            f"{name}: {count} messages, more than the limit of {limits.messages} per input"
        )
    from_lines = [m.decode("ascii", "replace") for m in _FROM_LINES.findall(data)]
    if (one := _only_message(data)) is not None:
        return [(one, from_lines[0] if from_lines else None)]
    import mailbox  # a series: b4 and the send-email hook give one message a process
    import tempfile

    # mailbox.mbox wants a path; the input may be stdin, so spool it.
    fd, path = tempfile.mkstemp(prefix="mmreview-", suffix=".mbox")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        box = mailbox.mbox(path, create=False)
        try:
            raws = [box.get_bytes(key) for key in box.iterkeys()]
        finally:
            box.close()
    finally:
        os.unlink(path)
    return [(raw, from_lines[n] if n < len(from_lines) else None) for n, raw in enumerate(raws)]


_FROM_LINES = regex(rb"^From (\S+) ", re.MULTILINE)


def _only_message(data: bytes) -> bytes | None:
    """The message of an mbox that holds one (one line starting `From `),
    as mailbox.mbox reads it: from the line after that one to the end, less
    the newline of a blank last line; None for any other mbox."""
    first = 0 if data.startswith(b"From ") else data.find(b"\nFrom ") + 1
    if first == 0 and not data.startswith(b"From "):
        return None
    if data.find(b"\nFrom ", first) >= 0:
        return None
    start = data.find(b"\n", first) + 1 or len(data)
    end = len(data) - 1 if data.endswith(b"\n\n") else len(data)
    return data[start:end]


_MULTIPART_RE = regex(rb"^content-type:[ \t]*multipart/", re.IGNORECASE | re.MULTILINE)


def _message_from_bytes(
    raw: bytes, limits: Limits
) -> tuple[EmailMessage | None, Subject | None, str]:
    """One mail parsed, or why it cannot be: the email package raises
    assorted errors (RecursionError among them) on hostile mail."""
    multiparts = len(_MULTIPART_RE.findall(raw))
    if multiparts > limits.mime_multiparts:
        return (
            None,
            None,
            f"MIME structure too deep or too large ({multiparts} multipart parts,"
            f" limit {limits.mime_multiparts})",
        )
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        subject = Subject.parse(header(message, "Subject"))
    except (RecursionError, MemoryError) as err:
        return None, None, f"unreadable mail ({type(err).__name__}: nested too deeply)"
    except Exception as err:  # the email package's assorted errors on garbage
        return None, None, f"unreadable mail ({type(err).__name__})"
    return message, subject, ""


def header(message: email.message.Message, name: str) -> str:
    """A header as clean text: decoded where it can be, raw where the
    parser gives up, undecodable bytes as U+FFFD; "" when missing."""
    try:
        value = message.get(name)
        text = "" if value is None else str(value)
    except Exception:  # header parsers raise assorted errors (and recurse)
        text = next((str(v) for k, v in message.raw_items() if k.lower() == name.lower()), "")
        with contextlib.suppress(
            ValueError, LookupError, UnicodeError, email.errors.HeaderParseError
        ):
            text = str(email.header.make_header(email.header.decode_header(text)))
    return printable(" ".join(text.split()))


def _address_of(value: str) -> tuple[str, str]:
    try:
        return parseaddr(value)
    except (RecursionError, ValueError, IndexError):  # hostile comments and quoting
        return "", ""


def _guarded_patch(
    message: EmailMessage, subject: Subject, where: str, from_line: str | None, limits: Limits
) -> Patch:
    try:
        return _patch_from_message(message, subject, where, from_line, limits)
    except (RecursionError, MemoryError) as err:
        problem = f"unreadable mail ({type(err).__name__}: nested too deeply)"
    except Exception as err:  # the email package's assorted errors on garbage
        problem = f"unreadable mail ({type(err).__name__})"
    return Patch(
        subject.counter or 0, subject.total or 0, subject, source=where, error=f"{where}: {problem}"
    )


def _patch_from_message(
    message: EmailMessage,
    subject: Subject,
    where: str,
    from_line: str | None = None,
    limits: Limits = LIMITS,
) -> Patch:
    author_name, author_addr = _address_of(header(message, "From"))
    patch = Patch(
        index=subject.counter or 0,
        total=subject.total or 0,
        subject=subject,
        author=f"{author_name} <{author_addr}>" if author_name else author_addr,
        date=header(message, "Date"),
        message_id=header(message, "Message-ID"),
        source=where,
        message=message,
    )
    if from_line and _COMMIT_ID_RE.fullmatch(from_line):
        patch.commit = from_line
    try:
        body = _message_text(message)
    except (LookupError, ValueError, AssertionError) as err:
        patch.error = f"{where}: cannot decode message body ({err})"
        return patch
    body = body.replace("\r\n", "\n")
    match = _DIFF_START_RE.search(body)
    if not match:
        # A charset declared wrong (UTF-8 text labelled UTF-16, say) hides
        # the diff; read as UTF-8 it may be there.
        body = _message_text(message, charset="utf-8").replace("\r\n", "\n")
        match = _DIFF_START_RE.search(body)
    if not match:
        patch.error = f"{where}: '{subject.text[:60]}' has no diff"
        patch.commit_message = body
        return patch
    patch.commit_message = _strip_scissors(body[: match.start()])
    _parse_diff_into(patch, body[match.start() :], where, limits)
    return patch


def _message_text(message: EmailMessage, charset: str | None = None) -> str:
    """The body text, with a diff sent as an attachment appended to it (in
    `charset` instead of the declared ones, if given)."""
    if not message.is_multipart():
        return _decoded(message, charset)
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
            texts.append(_decoded(part, charset))
    return "\n".join(texts)


def _decoded(part: email.message.Message, charset: str | None = None) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        charset = charset or part.get_content_charset() or "utf-8"
        return payload.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        # An unknown or bytes-to-bytes charset ("base64"), or a codec that
        # cannot replace ("idna"): read it as UTF-8.
        return payload.decode("utf-8", "replace")


def _strip_scissors(message: str) -> str:
    # The commit message ends at the first '---' line; notes and the
    # diffstat follow it.
    lines = message.split("\n")
    for number, line in enumerate(lines):
        if line.rstrip() == "---":
            return "\n".join(lines[:number]).strip("\n")
    return message.strip("\n")


def _patch_from_diff(text: str, name: str, limits: Limits = LIMITS) -> Patch:
    patch = Patch(index=1, total=1, subject=Subject(text=os.path.basename(name)), source=name)
    match = _DIFF_START_RE.search(text)
    assert match is not None
    patch.commit_message = printable_block(text[: match.start()])
    _parse_diff_into(patch, text[match.start() :].replace("\r\n", "\n"), name, limits)
    return patch


def printable_block(text: str) -> str:
    """Several lines of text with undecodable bytes as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _parse_diff_into(patch: Patch, diff: str, where: str, limits: Limits = LIMITS) -> None:
    """The diff read into patch.files, in the patch's time budget."""
    started = budget.clock()
    try:
        with budget.patch_budget(limits.seconds_per_patch), budget.interruptible():
            _read_diff(patch, diff, where, limits)
    except budget.BudgetExceeded:
        patch.files = []
        patch.error = (
            f"{where}: not reviewed: reading its diff took longer than the time budget"
            f" of {limits.seconds_per_patch:g} s"
        )
    patch.read_seconds = budget.clock() - started


def _read_diff(patch: Patch, diff: str, where: str, limits: Limits) -> None:
    diff = _SIGNATURE_RE.sub("\n", diff)
    if problem := _over_limits(diff, limits):
        patch.error = f"{where}: {problem}"
        return
    patch.diff = diff
    try:
        patchset = PatchSet(diff)
    except (UnidiffParseError, ValueError, IndexError, KeyError, TypeError) as err:
        patch.error = f"{where}: malformed diff: {printable(' '.join(str(err).split()))[:200]}"
        return
    if len(patchset) > limits.files_per_patch:
        patch.error = (
            f"{where}: touches {len(patchset)} files, more than the limit of"
            f" {limits.files_per_patch}; split it"
        )
        return
    for patched in patchset:
        old = None if patched.is_added_file else _strip_prefix(patched.source_file)
        new = None if patched.is_removed_file else _strip_prefix(patched.target_file)
        path = new or old or patched.path
        for named in (path, old):
            if named and (bad := _unsafe_path(named)):
                patch.error = f"{where}: refusing diff path '{printable(named)[:200]}': {bad}"
                return
        for hunk in patched:
            if len(hunk) > limits.hunk_lines:
                patch.error = (
                    f"{where}: {path}: a hunk of {len(hunk)} lines, more than the limit of"
                    f" {limits.hunk_lines}"
                )
                return
        patch.files.append(FileDiff(path=path, old_path=old, new_path=new, patched=patched))
    if not patch.files:
        patch.error = f"{where}: malformed diff: no file changes found"


def _over_limits(diff: str, limits: Limits) -> str | None:
    """What a diff asks beyond the limits, found before it is parsed."""
    longest = max(map(len, diff.split("\n")), default=0)
    if longest > limits.line_bytes:
        return (
            f"a line of {_mib(longest)}, longer than the limit of {_mib(limits.line_bytes)};"
            " not reviewed"
        )
    # A hunk header can claim any length; unidiff would read on for ever.
    for match in _HUNK_HEADER_RE.finditer(diff):
        claimed = max(int(match.group(1) or 1), int(match.group(2) or 1))
        if claimed > limits.hunk_lines:
            return (
                f"a hunk header claims {claimed} lines, more than the limit of"
                f" {limits.hunk_lines}; not reviewed"
            )
    return None


_HUNK_HEADER_RE = regex(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@", re.MULTILINE)


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
    if _CONTROL_RE.search(path):
        return "control character or NUL in the path"
    if printable(path) != path:
        return "the path is not valid UTF-8"
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
    reply_to = _header_values(message, "Reply-To") or _header_values(message, "From")
    to = [_address(n, a) for n, a in _addresses(reply_to) if a]
    cc_raw = _header_values(message, "To") + _header_values(message, "Cc")
    seen = {a for _, a in _addresses(reply_to)}
    cc = []
    for name, addr in _addresses(cc_raw):
        if addr and addr not in seen:
            seen.add(addr)
            cc.append(_address(name, addr))
    return to, cc


def _header_values(message: email.message.Message, name: str) -> list[str]:
    """Every value of a header, as clean text (see header())."""
    values = []
    for key, raw in message.raw_items():
        if key.lower() != name.lower():
            continue
        try:
            parsed = message.policy.header_fetch_parse(key, raw)
            values.append(printable(" ".join(str(parsed).split())))
        except Exception:  # header parsers raise assorted errors (and recurse)
            values.append(printable(" ".join(str(raw).split())))
    return values


def _addresses(values: list[str]) -> list[tuple[str, str]]:
    try:
        return getaddresses(values)
    except (RecursionError, ValueError, IndexError):  # hostile comments and quoting
        return []


def _address(name: str, addr: str) -> str:
    # Address() quotes a display name holding a comma or other specials.
    try:
        return str(Address(display_name=name, addr_spec=addr)) if name else addr
    except (ValueError, IndexError):
        return addr
