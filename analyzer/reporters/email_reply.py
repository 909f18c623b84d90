"""Review replies as a kernel reviewer writes them, one per flagged patch.

Each reply follows the list's conventions (Documentation/process/
submitting-patches.rst, email-clients.rst, and what `b4 review` sends):

    Subject: Re: [PATCH v2 2/3] mm/demo: ...        (never "Re: Re:")
    To: the patch's Reply-To, else its author
    Cc: the patch's To and Cc, deduplicated
    In-Reply-To: <patch msgid>   References: <its References> <patch msgid>

    On <date>, <author> wrote:
    > diff --git a/mm/fault.c b/mm/fault.c
    > --- a/mm/fault.c
    > +++ b/mm/fault.c
    > @@ -30,7 +30,7 @@ static bool demo_must_wait(...)
    > [...]
    > +	if (!pmd_present(_pmd))

    <the comment, right under the line it is about: what is wrong, a
    question or a concrete suggestion, and the commit / lore thread the
    lesson comes from>

    --
    <short signature>

Only the hunks with comments are quoted, each with at most CONTEXT lines
above a comment; "[...]" stands for what was cut.  No line of the body
above the signature looks like a trailer ("Reviewed-by: ...", "Fixes: ..."):
b4 and Patchwork would pick it up as one.  b4 re-reads this shape as inline
comments (`_extract_comments_from_quoted_reply`), which the tests check.

`compose_replies()` is the API a bot calls; `render_mbox()` writes the
replies as an mboxrd file that `git send-email` and `mutt -f` take.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from io import BytesIO
from typing import TextIO

from unidiff import Hunk

from analyzer import __version__
from analyzer.engine import Review
from analyzer.patches import FileDiff, Patch, header, printable_block, reply_addresses
from analyzer.patterns import regex
from analyzer.registry import get_rule
from analyzer.rule import Finding

DEFAULT_SENDER = "mm-review <mm-review@localhost>"
# analyzer.rule.COMMIT_MESSAGE_PATH: where findings on the commit message sit.
COMMIT_MESSAGE = "COMMIT_MSG"
# Lines quoted above a comment; a longer stretch of the hunk becomes "[...]".
CONTEXT = 5
WIDTH = 72

# What b4 (LoreMessage.find_trailers) takes for a trailer: "Name: value".
TRAILER_LIKE = regex(r"^\s*(\w\S+):\s+(\S.*)")
_REPLY_PREFIX = regex(r"^\s*(re|aw)\s*:", re.IGNORECASE)
_COMMIT_REF = regex(r'\b([0-9a-f]{12,40}) \("(.+?)"\)', re.DOTALL)
_LORE_URL = regex(r"https://lore\.kernel\.org/\S+?(?=[\s,)>]|$)")
# An imperative tail of a finding message ("...; use pmd_none() ..."),
# turned into the question a reviewer would ask.
_SUGGESTION = regex(
    r"^(use|test|check|re-check|recheck|handle|keep|take|drop|call|hold|move|add|pass)\b"
)

# Headers are folded only past RFC 5322's hard limit: a folded lone
# Message-ID ("In-Reply-To:\n <...>") trips up some readers.
_MAIL_POLICY = policy.default.clone(linesep="\n", max_line_length=998)


def default_sender(tree: str | None = None) -> str:
    """`git config user.name/user.email` as seen from `tree` (or the
    current directory), else DEFAULT_SENDER."""

    def get(key: str) -> str:
        try:
            out = subprocess.run(
                ["git", "config", "--get", key],
                cwd=tree or None,
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError:
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    name, address = get("user.name"), get("user.email")
    if not address:
        return DEFAULT_SENDER
    return str(Address(display_name=name, addr_spec=address)) if name else address


def compose_replies(
    review: Review,
    sender: str = DEFAULT_SENDER,
    now: datetime | None = None,
    signature: str | None = None,
) -> list[EmailMessage]:
    """One ready-to-send reply per reviewed patch that has findings and
    came as a mail (a plain diff has nobody to reply to)."""
    now = now or datetime.now(UTC)
    replies = []
    for patch in review.reviewed_patches:
        findings = [f for f in review.findings if f.patch and f.patch.index == patch.index]
        if findings and patch.message is not None:
            replies.append(compose_reply(patch, findings, sender, now, signature))
    return replies


def compose_reply(
    patch: Patch,
    findings: list[Finding],
    sender: str,
    now: datetime,
    signature: str | None = None,
) -> EmailMessage:
    original = patch.message
    assert original is not None
    reply = EmailMessage(policy=_MAIL_POLICY)
    reply["From"] = sender
    to, cc = reply_addresses(original)
    own = parseaddr(sender)[1].lower()
    if to:
        reply["To"] = ", ".join(to)
    if cc := [a for a in cc if parseaddr(a)[1].lower() != own]:
        reply["Cc"] = ", ".join(cc)
    subject = header(original, "Subject") or patch.title
    reply["Subject"] = subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}"
    reply["Date"] = format_datetime(now)
    domain = own.rpartition("@")[2] or "localhost"
    reply["Message-ID"] = make_msgid(idstring="mm-review", domain=domain)
    if patch.message_id:
        references = header(original, "References") or header(original, "In-Reply-To")
        reply["In-Reply-To"] = patch.message_id
        reply["References"] = f"{references} {patch.message_id}".strip()
    # Diff text keeps undecodable bytes as surrogate escapes (git apply
    # needs them); a mail cannot carry them.
    body = printable_block(reply_body(patch, findings, signature))
    ascii_only = body.isascii()
    reply.set_content(
        body,
        charset="us-ascii" if ascii_only else "utf-8",
        cte="7bit" if ascii_only else "8bit",
    )
    return reply


def reply_body(patch: Patch, findings: list[Finding], signature: str | None = None) -> str:
    lines = []
    name = parseaddr(patch.author)[0]
    if name:
        lines += [f"Hi {name.split()[0]},", ""]
    count = "a question" if len(findings) == 1 else f"{len(findings)} questions"
    lines += _wrap(
        f"mm-review, an automated checker of lessons from past mm reviews, has {count} "
        "about this patch.  If it is wrong, a reply saying why helps to fix the checker."
    )
    lines += ["", f"On {_raw_date(patch) or 'an unknown date'}, {patch.author or 'you'} wrote:"]
    lines += quoted_diff(patch, findings)
    rules = sorted({f.rule for f in findings})
    lines += [
        "",
        "-- ",
        *(
            signature.splitlines()
            if signature
            else [
                f"mm-review {__version__}; rule{'s' if len(rules) > 1 else ''}: {', '.join(rules)}",
                f"The whole lesson: mmreview explain {rules[0] if len(rules) == 1 else 'RULE'}",
            ]
        ),
    ]
    return "\n".join(lines) + "\n"


def _raw_date(patch: Patch) -> str:
    # As the author's mailer wrote it, not re-rendered by the email package.
    if patch.message is not None:
        for name, value in patch.message.raw_items():
            if name.lower() == "date":
                return " ".join(str(value).split())
    return patch.date


def quoted_diff(patch: Patch, findings: list[Finding]) -> list[str]:
    """The hunks with findings, quoted and trimmed, each comment under its line."""
    out: list[str] = []
    placed: set[int] = set()
    on_message = [(n, f) for n, f in enumerate(findings) if f.path == COMMIT_MESSAGE]
    if on_message:
        out += _quote_message(patch, [f for _, f in on_message])
        placed.update(n for n, _ in on_message)
    for file in patch.files:
        in_file = [(n, f) for n, f in enumerate(findings) if f.path == file.path]
        if not in_file:
            continue
        hunks = list(file.patched)
        comments_by_hunk: dict[int, list[tuple[int, Finding]]] = {}
        for number, finding in in_file:
            comments_by_hunk.setdefault(_hunk_for(hunks, finding.line), []).append(
                (number, finding)
            )
        # A quoted blank line joins two quoted parts; after a comment, a blank.
        out += [
            ">" if out and out[-1].startswith(">") else "",
            *(f"> {line}" for line in _file_header(file)),
        ]
        for index, hunk in enumerate(hunks):
            if index in comments_by_hunk:
                out += _quote_hunk(hunk, comments_by_hunk[index])
                placed.update(n for n, _ in comments_by_hunk[index])
    # Findings in files the patch does not touch (should not happen, but a
    # comment must never be lost): below the quote.
    for number, finding in enumerate(findings):
        if number not in placed:
            out += ["", *_comment(finding, outside_hunk=True)]
    while out and out[0] in (">", ""):
        out.pop(0)
    return out


def _quote_message(patch: Patch, findings: list[Finding]) -> list[str]:
    """The commit message lines with findings (line 1 is the subject, the
    body starts on line 3, as `git log --format=%B` numbers them)."""
    lines = [patch.title, "", *patch.commit_message.split("\n")]
    comments: dict[int, list[list[str]]] = {}
    for finding in findings:
        index = min(max(finding.line, 1), len(lines)) - 1
        comments.setdefault(index, []).append(_comment(finding))
    return _trimmed_quote([f"> {text}".rstrip() for text in lines], comments)


def _trimmed_quote(quoted: list[str], comments: dict[int, list[list[str]]]) -> list[str]:
    """Quoted lines with each comment under its (0-based) line, at most
    CONTEXT lines of quote above it and `> [...]` for what is cut."""
    out: list[str] = []
    last = -1
    for index in sorted(comments):
        start = max(last + 1, index - CONTEXT)
        if start - (last + 1) >= 3:
            out.append("> [...]")
        else:
            start = last + 1
        out += quoted[start : index + 1]
        for comment in comments[index]:
            out += ["", *comment, ""]
        last = max(index, last)
    while out and out[-1] == "":
        out.pop()
    return out


def _file_header(file: FileDiff) -> list[str]:
    patched = file.patched
    old = f"a/{file.old_path}" if file.old_path else "/dev/null"
    new = f"b/{file.new_path}" if file.new_path else "/dev/null"
    git_line = f"diff --git a/{file.old_path or file.path} b/{file.new_path or file.path}"
    info = patched.patch_info or []  # None when the diff has no `diff --git` line
    header = next((line for line in info if line.startswith("diff --git ")), None)
    return [(header or git_line).rstrip("\n"), f"--- {old}", f"+++ {new}"]


def _hunk_for(hunks: list[Hunk], line: int) -> int:
    """The hunk whose post-image holds `line`, else the nearest one above
    (a function's line outside the patch's context)."""
    best = 0
    for index, hunk in enumerate(hunks):
        if hunk.target_start <= line < hunk.target_start + max(hunk.target_length, 1):
            return index
        if hunk.target_start <= line:
            best = index
    return best


def _quote_hunk(hunk: Hunk, comments: list[tuple[int, Finding]]) -> list[str]:
    rows = [(line.line_type, line.value.rstrip("\n"), line.target_line_no) for line in hunk]
    rows = [r for r in rows if r[0] in ("+", "-", " ")]  # not '' (a blank line)
    by_row: dict[int, list[Finding]] = {}
    outside: list[Finding] = []
    for _, finding in comments:
        row = next((i for i, r in enumerate(rows) if r[2] == finding.line), None)
        if row is None:
            outside.append(finding)
        else:
            by_row.setdefault(row, []).append(finding)
    if outside:
        # Comment under the hunk's last line, naming where the line is.
        by_row.setdefault(len(rows) - 1, []).extend(outside)
    header = f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start},"
    header += f"{hunk.target_length} @@"
    if hunk.section_header:
        header += f" {hunk.section_header}"
    comments = {
        row: [_comment(finding, outside_hunk=finding in outside) for finding in found]
        for row, found in by_row.items()
    }
    quoted = [f"> {kind}{text}" for kind, text, _ in rows]
    return [f"> {header}", *_trimmed_quote(quoted, comments)]


def _comment(finding: Finding, outside_hunk: bool = False) -> list[str]:
    lines = []
    if outside_hunk:
        where = f"In {finding.function}()" if finding.function else f"In {finding.path}"
        lines += [f"{where}, further on at line {finding.line}:", ""]
        lines += [f"\t{finding.source_line.strip()}", ""]
    lines += _wrap(_reviewer_phrasing(finding))
    reference = lesson_reference(finding.rule)
    if reference:
        lines += ["", *reference]
    return lines


def _reviewer_phrasing(finding: Finding) -> str:
    """The finding's message as a reviewer says it: the problem, then a
    question ("Shouldn't this ...?") when the message ends in a suggestion."""
    message = finding.message.strip().rstrip(".")
    first, _, rest = message.partition(" ")
    if first.isalpha() and first.islower():
        message = f"{first.capitalize()} {rest}"
    head, _, tail = message.rpartition("; ")
    if head and _SUGGESTION.match(tail):
        return f"{head}.  Shouldn't this {tail}?"
    return f"{message}.  Is that intended here?"


@dataclass(frozen=True)
class Lesson:
    commit: str | None  # 'a365ac09d334 ("mm, ...: ...")'
    link: str | None


def lesson(rule_id: str) -> Lesson:
    """The first commit and lore link of a rule's `## References`."""
    rule = get_rule(rule_id)
    if rule is None:
        return Lesson(None, None)
    references = rule.doc.partition("## References")[2]
    commit = _COMMIT_REF.search(references)
    link = _LORE_URL.search(references)
    return Lesson(
        f'{commit.group(1)[:12]} ("{" ".join(commit.group(2).split())}")' if commit else None,
        link.group(0) if link else None,
    )


def lesson_reference(rule_id: str) -> list[str]:
    found = lesson(rule_id)
    lines = []
    # Commit references are never wrapped (submitting-patches.rst).
    if found.commit:
        lines.append(f"See commit {found.commit}")
    if found.link:
        lines.append(f"and {found.link}" if found.commit else f"See {found.link}")
    return lines


def _wrap(text: str) -> list[str]:
    """Wrap prose at WIDTH, never starting a line with something b4 or
    Patchwork would read as a trailer."""
    words = text.split(" ")
    lines = textwrap.wrap(text, WIDTH, break_long_words=False, break_on_hyphens=False)
    for _ in range(len(words)):
        bad = next((i for i, line in enumerate(lines) if TRAILER_LIKE.match(line)), None)
        if bad is None:
            return lines
        if bad == 0:
            lines[0] = f"Here, {lines[0]}"
            lines = textwrap.wrap(
                " ".join(lines), WIDTH, break_long_words=False, break_on_hyphens=False
            )
            continue
        # Move the last word of the line above down to this one.
        above, _, word = lines[bad - 1].rpartition(" ")
        if not above:
            lines[bad - 1 : bad + 1] = [f"{lines[bad - 1]} {lines[bad]}"]
        else:
            lines[bad - 1 : bad + 1] = [above, f"{word} {lines[bad]}"]
    return lines


def render_mbox(messages: Iterable[EmailMessage]) -> bytes:
    """mboxrd: a `From ` line before each message, and every body line
    that starts with '>*From ' quoted once more."""
    out = BytesIO()
    for message in messages:
        buffer = BytesIO()
        BytesGenerator(buffer, mangle_from_=False, policy=_MAIL_POLICY).flatten(message)
        data = buffer.getvalue()
        data = re.sub(rb"(?m)^(>*From )", rb">\1", data)
        if not data.endswith(b"\n"):
            data += b"\n"
        stamp = time.asctime(time.gmtime())
        out.write(f"From mm-review {stamp}\n".encode() + data + b"\n")
    return out.getvalue()


def render(review: Review, out: TextIO, sender: str | None = None) -> None:
    out.write(render_mbox(compose_replies(review, sender or default_sender())).decode())
