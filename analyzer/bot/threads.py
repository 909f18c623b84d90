"""Patch mail grouped into series, the way send-email threads them.

`git send-email --thread` (the default) makes every patch of a series reply
to the cover letter, or to patch 1 when there is none; `--chain-reply-to`
makes each reply to the one before; a reroll may reply to the old cover
(`--in-reply-to`).  So two patch mails belong together when one names the
other in In-Reply-To/References, or both reply to the same message, and
they agree on author, version, number of patches and RFC/RESEND -- a v2 in
the v1 thread stays a series of its own.  Patches may arrive in any order,
and the cover letter last.

Pure functions over what was ingested: the runner feeds mail from the
database and records what is ready.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PatchMail:
    msgid: str
    counter: int  # 0 for a cover letter; a patch without n/N is 1/1
    total: int
    version: int
    flags: str  # "RFC", "RESEND", "RFC,RESEND" or ""
    author: str
    title: str
    in_reply_to: str | None
    references: tuple[str, ...]
    seen_at: float
    series_id: int | None = None  # set once its series was recorded

    @property
    def family(self) -> tuple[str, int, int, str]:
        return (self.author, self.version, self.total, self.flags)

    @property
    def parent(self) -> str | None:
        return self.in_reply_to or (self.references[-1] if self.references else None)

    @property
    def is_single(self) -> bool:
        return self.total == 1 and self.counter == 1


@dataclass
class Candidate:
    """One series as far as it has arrived."""

    mails: list[PatchMail]  # not yet in a recorded series: cover first, then by counter
    duplicates: list[PatchMail] = field(default_factory=list)
    # The component also holds mail of a series already recorded: these
    # mails arrived late for it.
    existing_series: int | None = None

    @property
    def cover(self) -> PatchMail | None:
        return next((m for m in self.mails if m.counter == 0), None)

    @property
    def patches(self) -> list[PatchMail]:
        return [m for m in self.mails if m.counter > 0]

    @property
    def anchor(self) -> PatchMail:
        return self.cover or self.mails[0]

    @property
    def key(self) -> str:
        return self.anchor.msgid

    @property
    def total(self) -> int:
        return self.anchor.total

    @property
    def title(self) -> str:
        return self.anchor.title

    @property
    def missing(self) -> list[int]:
        have = {m.counter for m in self.patches}
        return [n for n in range(1, self.total + 1) if n not in have]

    @property
    def first_seen(self) -> float:
        return min(m.seen_at for m in self.mails)

    def readiness(
        self, now: float, grace_seconds: float, known: Callable[[str], bool]
    ) -> str | None:
        """Why the series can be reviewed now, or None to wait."""
        if not self.patches:
            # Nothing to review yet; after the grace period, the cover alone
            # is recorded and skipped so it stops being looked at.
            return "cover letter only" if now - self.first_seen >= grace_seconds else None
        if not self.missing:
            if self.cover is not None or self.total == 1:
                return "complete"
            # No cover seen: wait for it if the patches reply to something
            # we have not seen (it may be the cover, carrying base-commit:).
            first = self.patches[0]
            if first.parent is None or known(first.parent):
                return "complete"
        if now - self.first_seen >= grace_seconds:
            return "grace period over"
        return None


def assemble(mails: Iterable[PatchMail]) -> list[Candidate]:
    """Group patch mail into series candidates, oldest first."""
    by_id = {m.msgid: m for m in mails}
    parent: dict[object, object] = {}

    def find(node: object) -> object:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def union(a: object, b: object) -> None:
        parent[find(a)] = find(b)

    for mail in by_id.values():
        find(mail.msgid)
        for ref in (mail.in_reply_to, *mail.references):
            other = by_id.get(ref) if ref else None
            if other is not None and _together(mail, other):
                union(mail.msgid, other.msgid)
        if mail.parent and not mail.is_single:
            # Siblings replying to one parent: the cover may not be here yet.
            union(mail.msgid, ("sibling", mail.parent, mail.family))

    groups: dict[object, list[PatchMail]] = {}
    for mail in by_id.values():
        groups.setdefault(find(mail.msgid), []).append(mail)
    candidates = [_candidate(group) for group in groups.values()]
    return sorted(
        candidates, key=lambda c: (c.first_seen if c.mails else 0, c.key if c.mails else "")
    )


def _together(a: PatchMail, b: PatchMail) -> bool:
    return a.family == b.family and not (a.is_single and b.is_single)


def _candidate(group: list[PatchMail]) -> Candidate:
    recorded = sorted({m.series_id for m in group if m.series_id is not None})
    fresh = sorted(
        (m for m in group if m.series_id is None), key=lambda m: (m.counter, m.seen_at, m.msgid)
    )
    kept: list[PatchMail] = []
    duplicates: list[PatchMail] = []
    for mail in fresh:
        if kept and kept[-1].counter == mail.counter:
            duplicates.append(mail)
        else:
            kept.append(mail)
    return Candidate(kept, duplicates, recorded[0] if recorded else None)
