"""Rule fixtures: kernel-style C with the expected findings written next to
the code, as semgrep's tests do.

A fixture is either a `.c` file (all of it new code) or a `.patchlet`: a diff
body without headers, each line starting with ' ' (context), '-' (removed) or
'+' (added), so one file tests a rule's logic and its diff-awareness.  An
annotation comment alone on its line applies to the next code line:

    /* ruleid: RULE_ID */      a finding of RULE_ID must start on the next line
    /* ok: RULE_ID */          RULE_ID must not fire on the next line
    /* todoruleid: RULE_ID */  known miss: expected not to fire (yet)
    /* todook: RULE_ID */      known false alarm: expected to fire (yet)

A `.msg` fixture is a commit message for rules on the message (subject on
line 1, body from line 3), annotated with git's comment lines, which are
not part of the message:

    # ruleid: BAD_FIXES_TAG -- why
    Fixes: e1e267c79 (khugepaged: skip collapse if uffd-wp detected)

Text after " -- " inside the comment is an explanation.  `/* fixture-path:
mm/khugepaged.c */` on any line sets the file's path (default mm/fixture.c).

A rule that reads other files of the tree (declarations in a header) gets
them from blocks in the fixture itself; the block's lines are not part of
the reviewed file, and a fixture with such blocks is reviewed as if the tree
held exactly those files:

    /* fixture-header: include/linux/mm.h */
    spinlock_t *pte_lockptr(struct mm_struct *mm, pte_t *pte);
    /* fixture-header-end */
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from analyzer.engine import review_file
from analyzer.images import FileImages, Image
from analyzer.patches import Patch, Subject
from analyzer.registry import all_rules
from analyzer.rule import COMMIT_MESSAGE_PATH, Finding, PatchChange, PatchRule, ReviewContext

ANNOTATION_RE = re.compile(
    r"^\s*/\*\s*(ruleid|ok|todoruleid|todook):\s*([A-Z][A-Z0-9_]*)(?:\s+--\s+[^*]*)?\s*\*/\s*$"
)
LOOSE_ANNOTATION_RE = re.compile(r"\b(ruleid|ok|todoruleid|todook):")
PATH_RE = re.compile(r"/\*\s*fixture-path:\s*(\S+)\s*\*/")
HEADER_RE = re.compile(r"^\s*/\*\s*fixture-header:\s*(\S+)\s*\*/\s*$")
HEADER_END_RE = re.compile(r"^\s*/\*\s*fixture-header-end\s*\*/\s*$")
MESSAGE_ANNOTATION_RE = re.compile(
    r"^#\s*(ruleid|ok|todoruleid|todook):\s*([A-Z][A-Z0-9_]*)(?:\s+--\s+.*)?$"
)


@dataclass(frozen=True)
class Expectation:
    kind: str
    rule: str
    line: int  # post-image line the annotation applies to


@dataclass
class Fixture:
    path: str
    images: FileImages
    expectations: list[Expectation]
    # Other files of the tree, from fixture-header blocks.
    headers: dict[str, bytes] = field(default_factory=dict)
    # A `.msg` fixture's commit message, git's comment lines taken out.
    message: str | None = None

    @property
    def rules(self) -> set[str]:
        return {e.rule for e in self.expectations}


def load(fixture: Path) -> Fixture:
    raw = fixture.read_text().split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    if fixture.suffix == ".msg":
        return _load_message(fixture, raw)
    raw, headers = _headers(fixture, raw)
    if fixture.suffix == ".patchlet":
        lines = [(line[:1] or " ", line[1:]) for line in raw]
        for number, (kind, _) in enumerate(lines, 1):
            if kind not in " +-":
                raise ValueError(f"{fixture}:{number}: patchlet lines start with ' ', '+' or '-'")
    else:
        lines = [("+", line) for line in raw]
    pre, post, added, removed = [], [], set(), set()
    for kind, text in lines:
        if kind in " -":
            pre.append(text)
            if kind == "-":
                removed.add(len(pre))
        if kind in " +":
            post.append(text)
            if kind == "+":
                added.add(len(post))
    path = next((m.group(1) for _, t in lines if (m := PATH_RE.search(t))), "mm/fixture.c")
    is_new = fixture.suffix == ".c"
    images = FileImages(
        path=path,
        pre=None if is_new else Image.of("\n".join(pre).encode() + b"\n"),
        post=Image.of("\n".join(post).encode() + b"\n"),
        added=frozenset(added),
        removed=frozenset(removed),
    )
    return Fixture(path, images, _expectations(fixture, post), headers)


def _headers(fixture: Path, raw: list[str]) -> tuple[list[str], dict[str, bytes]]:
    """Take the fixture-header blocks out of the fixture's lines."""
    strip = 1 if fixture.suffix == ".patchlet" else 0
    code: list[str] = []
    headers: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(raw, 1):
        body = line[strip:]
        if current is None and (match := HEADER_RE.match(body)):
            current = headers.setdefault(match.group(1), [])
        elif current is not None and HEADER_END_RE.match(body):
            current = None
        elif current is not None:
            if strip and line[:1] not in (" ", ""):
                raise ValueError(f"{fixture}:{number}: fixture-header lines are context lines")
            current.append(body)
        else:
            code.append(line)
    if current is not None:
        raise ValueError(f"{fixture}: fixture-header block without fixture-header-end")
    return code, {path: ("\n".join(lines) + "\n").encode() for path, lines in headers.items()}


def _expectations(fixture: Path, post: list[str]) -> list[Expectation]:
    found = []
    pending: list[tuple[str, str]] = []
    for number, text in enumerate(post, 1):
        match = ANNOTATION_RE.match(text)
        if match:
            pending.append((match.group(1), match.group(2)))
            continue
        if LOOSE_ANNOTATION_RE.search(text) and "/*" in text:
            raise ValueError(
                f"{fixture}: line {number}: annotation must be alone in its comment line"
            )
        if pending and text.strip():
            found.extend(Expectation(kind, rule, number) for kind, rule in pending)
            pending = []
    if pending:
        raise ValueError(f"{fixture}: annotation at the end of the file applies to nothing")
    return found


def _load_message(fixture: Path, raw: list[str]) -> Fixture:
    message: list[str] = []
    expectations, pending = [], []
    for text in raw:
        if text.startswith("#"):
            match = MESSAGE_ANNOTATION_RE.match(text)
            if match is None and LOOSE_ANNOTATION_RE.search(text):
                raise ValueError(f"{fixture}: malformed annotation: {text}")
            if match is not None:
                pending.append((match.group(1), match.group(2)))
            continue
        message.append(text)
        if pending and text.strip():
            line = len(message)
            expectations.extend(Expectation(kind, rule, line) for kind, rule in pending)
            pending = []
    if pending:
        raise ValueError(f"{fixture}: annotation at the end of the file applies to nothing")
    images = FileImages(COMMIT_MESSAGE_PATH, None, None, frozenset(), frozenset())
    return Fixture(COMMIT_MESSAGE_PATH, images, expectations, message="\n".join(message))


def _run_message(fixture: Fixture, rules: list) -> list[Finding]:
    assert fixture.message is not None
    subject, _, body = fixture.message.partition("\n")
    mail = EmailMessage()
    mail["Subject"] = subject
    patch = Patch(
        1, 1, Subject.parse(subject), commit_message=body.removeprefix("\n"), message=mail
    )
    change = PatchChange(patch, ReviewContext())
    return [f for r in rules if isinstance(r, PatchRule) for f in r.check_patch(change)]


def run(fixture: Fixture) -> list[Finding]:
    rules = [r for r in all_rules() if r.id in fixture.rules]
    if fixture.message is not None:
        return _run_message(fixture, rules)
    context = ReviewContext(fixture.headers.get) if fixture.headers else ReviewContext()
    findings, _ = review_file(fixture.images, rules, context)
    return findings


def mismatches(fixture: Fixture, findings: list[Finding]) -> list[str]:
    actual = {(f.line, f.rule) for f in findings if f.rule in fixture.rules}
    expected = {(e.line, e.rule) for e in fixture.expectations if e.kind in ("ruleid", "todook")}
    forbidden = {(e.line, e.rule) for e in fixture.expectations if e.kind in ("ok", "todoruleid")}
    problems = [
        f"line {line}: expected {rule}, not reported" for line, rule in sorted(expected - actual)
    ]
    problems += [
        f"line {line}: {rule} reported on an ok line" for line, rule in sorted(actual & forbidden)
    ]
    problems += [
        f"line {line}: {rule} reported on an unannotated line"
        for line, rule in sorted(actual - expected - forbidden)
    ]
    return problems
