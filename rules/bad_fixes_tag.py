"""A Fixes: tag that does not name the commit it means, or not in the
agreed form.

## What it does
Reads every `Fixes:` line of each patch's commit message and checks it:
- the form `Fixes: <sha> ("<subject>")`: the tag spelled `Fixes:` with one
  space, a lower-case SHA of at least 12 characters, the subject quoted in
  parentheses, all on one line;
- with `--tree`: the SHA names exactly one commit of the tree (not an
  unknown, ambiguous or non-commit object) and the quoted subject is that
  commit's subject.  In a tree without history (a shallow clone, a release
  tarball imported as one commit) an unknown SHA is not reported.

The finding is placed in the commit message: path `COMMIT_MSG`, line 1
being the subject and the body starting on line 3 (as `git log
--format=%B` shows it), so the text and checkpatch formats point at the
tag line, with the patch it belongs to.  Without `--tree` only the form is
checked.

## Why is this bad?
Stable maintainers, distribution backporters and the AUTOSEL/stable scripts
take the SHA of a Fixes: tag as the truth: a SHA that is not in the tree
(an mm-unstable commit that was rebased away, a typo), or a short one that
became ambiguous, sends the fix to the wrong kernels or to none.  The
subject is there so that a human can tell which commit was meant when the
SHA is wrong; a subject that belongs to another commit hides the mistake.
linux-next reports these ("Fixes tag ... has these problems") and
maintainers fix them by hand before sending pull requests.

## Example
```
mm/khugepaged: check again on anon uffd-wp during isolation

Fixes: e1e267c79 (khugepaged: skip collapse if uffd-wp detected)
```

## Use instead
```
mm/khugepaged: check again on anon uffd-wp during isolation

Fixes: e1e267c7928f ("khugepaged: skip collapse if uffd-wp detected")
```
(`git log -1 --pretty='Fixes: %h ("%s")' --abbrev=12 <sha>` prints it.)

## References
- dd47ac428c3f ("mm/khugepaged: check again on anon uffd-wp during isolation"),
  Fixes: e1e267c7928f ("khugepaged: skip collapse if uffd-wp detected"),
  https://lore.kernel.org/all/20230405155120.3608140-1-peterx@redhat.com/
- a365ac09d334 ("mm, userfaultfd, THP: avoid waiting when PMD under THP migration")
  went in without the Fixes: tag proposed in review (Zi Yan,
  <AA90DD1E-A077-484C-B7B6-738D76CC2F91@cs.rutgers.edu>, naming
  84c3fc4e9c563 ("mm: thp: check pmd migration entry in common path"))
- Documentation/process/submitting-patches.rst, "Describe your changes";
  checkpatch.pl BAD_FIXES_TAG
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from analyzer.patterns import regex
from analyzer.records import Record
from analyzer.rule import (
    COMMIT_MESSAGE_PATH,
    Confidence,
    Finding,
    PatchChange,
    PatchRule,
    Severity,
)
from analyzer.tree import KernelTree

# As checkpatch finds them: any case, colon optional, 5 to 40 hex digits.
_TAG_RE = regex(r"^(?P<tag>fixes:?)\s*(?:commit\s*)?(?P<sha>[0-9a-f]{5,40})\b", re.I)
_IN_BODY_HEADER_RE = regex(r"^(?:From|Date|Subject): ")
_SUBJECT_RE = regex(r'^\s*\("(?P<subject>.*)"\)\s*$')
MIN_SHA = 12


class Commit(Record):
    sha: str
    subject: str


class FixesTag:
    """One `Fixes:` line of a commit message, read."""

    def __init__(
        self,
        line: int,
        text: str,
        sha: str,
        sha_column: int,
        subject: str | None,
        problems: list[str],
    ) -> None:
        self.line = line  # in the commit message, the subject being line 1
        self.text = text  # the tag's line, as written
        self.sha = sha
        self.sha_column = sha_column  # 0-based
        self.subject = subject  # quoted subject, joined when wrapped
        self.problems = problems


class BadFixesTag(PatchRule):
    id = "BAD_FIXES_TAG"
    severity = Severity.WARNING
    summary = "Fixes: tag names no commit of the tree, the wrong subject, or is malformed"

    def check_patch(self, change: PatchChange) -> Iterator[Finding]:
        tree = change.tree if isinstance(change.tree, KernelTree) else None
        for tag in fixes_tags(
            change.patch.commit_message, has_subject=change.patch.message is not None
        ):
            problems = list(tag.problems)
            confidence = Confidence.HIGH
            commit = None
            if tree is not None:
                commit, problem = lookup(tree, tag.sha)
                if problem and problem.startswith("no such commit") and not tree.has_history:
                    problem = None  # a shallow clone or a tarball import lacks it anyway
                if problem:
                    problems.append(problem)
                    confidence = Confidence.MEDIUM  # the tree may not be the patch's branch
                elif commit and tag.subject is not None and _same(tag.subject, commit.subject):
                    pass
                elif commit:
                    problems.append(f'the subject of {commit.sha[:12]} is "{commit.subject}"')
            if not problems:
                continue
            wanted = f' (expected: Fixes: {commit.sha[:12]} ("{commit.subject}"))' if commit else ""
            yield Finding(
                path=COMMIT_MESSAGE_PATH,
                line=tag.line,
                column=tag.sha_column + 1,
                rule=self.id,
                severity=self.severity,
                message=f"Fixes: {tag.sha}: " + "; ".join(problems) + wanted,
                confidence=confidence,
                source_line=tag.text,
                key=f"{self.id}:{tag.sha}:{'|'.join(problems)}",
                end_line=tag.line,
                end_column=len(tag.text.rstrip()) + 1,
            )


def fixes_tags(message: str, has_subject: bool = True) -> list[FixesTag]:
    """The Fixes: tags of a commit message and what is wrong with their
    form.  `has_subject`: the message body comes after a mail subject, which
    is line 1 of the commit message (and a blank line 2)."""
    lines = message.split("\n")
    offset = 3 if has_subject else 1
    # In-body headers (git send-email's From: for someone else's patch) are
    # taken out of the message by git am.
    if has_subject and lines and _IN_BODY_HEADER_RE.match(lines[0]):
        end = next((n for n, line in enumerate(lines) if not line.strip()), len(lines) - 1)
        offset -= end + 1
    tags = []
    for index, line in enumerate(lines):
        match = _TAG_RE.match(line.lstrip())
        if match is None:
            continue
        indent = len(line) - len(line.lstrip())
        sha = match.group("sha")
        problems = []
        between = line.lstrip()[match.end("tag") : match.start("sha")]
        if match.group("tag") != "Fixes:" or between != " " or indent:
            problems.append('write the tag as "Fixes: <sha>" from the start of the line')
        if len(sha) < MIN_SHA:
            problems.append(f"the SHA has {len(sha)} characters, use at least {MIN_SHA}")
        if sha != sha.lower():
            problems.append("write the SHA in lower case")
        rest = line.lstrip()[match.end() :]
        subject, wrapped = _quoted_subject(rest, lines[index + 1 :])
        if subject is None:
            problems.append('quote the subject: ("<subject>")')
        elif not rest.startswith(' ("'):
            problems.append("put one space between the SHA and the subject")
        elif wrapped:
            problems.append("keep the tag on one line (tags are exempt from line wrapping)")
        tags.append(
            FixesTag(index + offset, line, sha, indent + match.start("sha"), subject, problems)
        )
    return tags


def _quoted_subject(rest: str, following: list[str]) -> tuple[str | None, bool]:
    """The ("...") subject after the SHA, joining continuation lines of a
    wrapped tag; and whether it was wrapped."""
    if (match := _SUBJECT_RE.match(rest)) is not None:
        return match.group("subject"), False
    if not rest.strip().startswith('("'):
        return None, False
    joined = rest
    for line in following[:3]:
        if not line.strip():
            break
        joined += " " + line.strip()
        if (match := _SUBJECT_RE.match(joined)) is not None:
            return match.group("subject"), True
    return None, False


def lookup(tree: KernelTree, sha: str) -> tuple[Commit | None, str | None]:
    """The commit a SHA names in the tree, or why it names none."""
    status, kind, error = tree.git.execute(
        ["git", "cat-file", "-t", sha], with_extended_output=True, with_exceptions=False
    )
    if status != 0:
        if "ambiguous" in error:
            return None, f"ambiguous in {_tree_name(tree)}: give more characters of the SHA"
        return None, f"no such commit in {_tree_name(tree)} (is --tree the branch this fixes?)"
    if kind.strip() != "commit":
        return None, f"names a {kind.strip()}, not a commit, in {_tree_name(tree)}"
    out = tree.git.execute(["git", "show", "-s", "--format=%H%x00%s", sha, "--"])
    full, _, subject = out.partition("\x00")
    return Commit(full.strip(), subject.strip()), None


def _tree_name(tree: KernelTree) -> str:
    return f"the tree {tree.top}"


def _same(quoted: str, actual: str) -> bool:
    return " ".join(quoted.split()) == " ".join(actual.split())


RULE = BadFixesTag
