"""Where mail comes from.

- A public-inbox v2 archive, as lore serves it and mirrors keep it
  (`git clone --mirror https://lore.kernel.org/linux-mm/0 git/0.git`, one
  clone per epoch): every commit of an epoch's `master` adds one message, the
  blob `m` of its tree (a commit with a `d` blob instead removes one).  The
  last commit processed is remembered per epoch; epochs that appear later
  (`git/1.git`, ...) are picked up.  Read with gitpython; nothing is written.
- A Maildir or an mbox, as `lei q -o` or `b4 mbox` leave them.  Those tools
  rewrite their output, so what was seen is remembered by content hash, and
  the Message-ID check in the runner drops what was already ingested.
"""

from __future__ import annotations

import hashlib
import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import git

from analyzer.bot import log
from analyzer.bot.config import ArchiveConfig, ConfigError
from analyzer.patterns import regex

if TYPE_CHECKING:
    from analyzer.bot.state import State

_EPOCH_RE = regex(r"^(\d+)\.git$")
_MBOXRD_RE = regex(rb"^>(>*From )", re.MULTILINE)


@dataclass
class Item:
    """One message, or why it could not be read."""

    location: str
    data: bytes | None
    reason: str | None = None
    # For public-inbox: (epoch, commit) to record once this is ingested.
    cursor: tuple[str, str] | None = None


@dataclass
class Poll:
    total: int
    items: Iterator[Item]


class Source:
    def __init__(self, config: ArchiveConfig, max_bytes: int) -> None:
        self.config = config
        self.name = config.name
        self.max_bytes = max_bytes

    def poll(self, state: State) -> Poll:
        raise NotImplementedError


def open_source(config: ArchiveConfig, max_bytes: int) -> Source:
    path = config.path
    kind = config.kind if config.kind != "auto" else _detect(path)
    if kind == "public-inbox":
        return PublicInbox(config, max_bytes)
    if kind == "maildir":
        return MaildirSource(config, max_bytes)
    return MboxSource(config, max_bytes)


def _detect(path: Path) -> str:
    if path.is_file():
        return "mbox"
    if (path / "cur").is_dir() and (path / "new").is_dir():
        return "maildir"
    if (path / "git").is_dir() or ((path / "objects").is_dir() and (path / "HEAD").is_file()):
        return "public-inbox"
    if not path.exists():
        raise ConfigError(f"archive {path}: no such file or directory")
    raise ConfigError(
        f"archive {path}: not a public-inbox v2 archive (git/N.git), a Maildir or an mbox"
    )


class PublicInbox(Source):
    def __init__(self, config: ArchiveConfig, max_bytes: int) -> None:
        super().__init__(config, max_bytes)
        self._repos: dict[Path, git.Repo] = {}

    def epochs(self) -> list[tuple[str, Path]]:
        top = self.config.path / "git"
        if not top.is_dir():  # a single epoch cloned on its own
            return [("0", self.config.path)]
        found = [
            (int(m.group(1)), entry)
            for entry in top.iterdir()
            if (m := _EPOCH_RE.match(entry.name)) and entry.is_dir()
        ]
        return [(str(number), entry) for number, entry in sorted(found)]

    def _repo(self, path: Path) -> git.Repo:
        if path not in self._repos:
            repo = git.Repo(path)
            # Nothing we run may start a hook, even on a mirror we do not own.
            repo.git.set_persistent_git_options(c="core.hooksPath=/dev/null")
            self._repos[path] = repo
        return self._repos[path]

    def poll(self, state: State) -> Poll:
        if not self.config.path.exists():
            log.warn("archive_missing", archive=self.name, path=str(self.config.path))
            return Poll(0, iter(()))
        first_run = not state.has_cursors(self.name)
        plans: list[tuple[str, git.Repo, list[str]]] = []
        for epoch, path in self.epochs():
            try:
                repo = self._repo(path)
                head = repo.git.rev_parse("--verify", "--quiet", "HEAD")
            except (git.GitCommandError, git.InvalidGitRepositoryError, git.NoSuchPathError):
                continue  # an epoch with no commits yet, or a clone in progress
            if first_run and self.config.start == "end":
                state.set_cursor(self.name, epoch, head)
                log.event("epoch_skipped_to_end", archive=self.name, epoch=epoch, head=head[:12])
                continue
            last = state.cursor(self.name, epoch)
            if last == head:
                continue
            if last and not _is_ancestor(repo, last, head):
                # public-inbox-purge/edit rewrite history; re-read the epoch,
                # the Message-ID check drops what was already ingested.
                log.warn("epoch_rewritten", archive=self.name, epoch=epoch, cursor=last[:12])
                last = None
            spec = f"{last}..{head}" if last else head
            commits = repo.git.rev_list("--reverse", spec).split()
            if commits:
                plans.append((epoch, repo, commits))
        total = sum(len(c) for _, _, c in plans)
        return Poll(total, self._items(plans))

    def _items(self, plans: list[tuple[str, git.Repo, list[str]]]) -> Iterator[Item]:
        for epoch, repo, commits in plans:
            for sha in commits:
                location = f"{epoch}:{sha}"
                try:
                    tree = repo.commit(sha).tree
                    names = {entry.name: entry for entry in tree}
                except (ValueError, git.GitCommandError) as err:
                    yield Item(location, None, f"unreadable commit ({err})"[:200], (epoch, sha))
                    continue
                blob = names.get("m")
                if blob is None:
                    reason = (
                        None
                        if "d" in names
                        else "commit without an 'm' blob (not public-inbox v2?)"
                    )
                    yield Item(location, None, reason, (epoch, sha))
                    continue
                if blob.size > self.max_bytes:
                    reason = f"oversized: {blob.size} bytes (limit {self.max_bytes})"
                    yield Item(location, None, reason, (epoch, sha))
                    continue
                try:
                    data = blob.data_stream.read()
                except (ValueError, OSError, git.GitCommandError) as err:
                    yield Item(location, None, f"unreadable blob ({err})"[:200], (epoch, sha))
                    continue
                yield Item(location, data, None, (epoch, sha))


def _is_ancestor(repo: git.Repo, old: str, new: str) -> bool:
    try:
        return repo.is_ancestor(old, new)
    except git.GitCommandError:
        return False  # the old commit is gone


class _FileSource(Source):
    """Maildir and mbox: what was seen is known by content hash."""

    def _start(self, state: State, total: int, items: Iterator[Item | None]) -> Poll:
        found = (i for i in items if i is not None)
        if self.config.start == "end" and not state.has_locations(self.name):
            for item in found:  # the first run: remember what is there, review none of it
                state.mark_location(self.name, item.location)
            log.event("archive_skipped_to_end", archive=self.name)
            return Poll(0, iter(()))
        return Poll(total, found)


class MaildirSource(_FileSource):
    def poll(self, state: State) -> Poll:
        try:
            box = mailbox.Maildir(self.config.path, factory=None, create=False)
            keys = sorted(box.keys())
        except OSError as err:
            log.warn("archive_unreadable", archive=self.name, error=str(err))
            return Poll(0, iter(()))

        def items() -> Iterator[Item]:
            for key in keys:
                try:
                    with box.get_file(key) as handle:
                        data = handle.read(self.max_bytes + 1)
                except (OSError, KeyError):
                    continue  # removed since listed
                yield _by_content(state, self.name, data, self.max_bytes)

        return self._start(state, len(keys), items())


class MboxSource(_FileSource):
    def poll(self, state: State) -> Poll:
        try:
            box = mailbox.mbox(self.config.path, factory=None, create=False)
            keys = box.keys()
        except OSError as err:
            log.warn("archive_unreadable", archive=self.name, error=str(err))
            return Poll(0, iter(()))

        def items() -> Iterator[Item]:
            for key in keys:
                # lei and lore write mboxrd: one '>' was added to '>*From '.
                data = _MBOXRD_RE.sub(rb"\1", box.get_bytes(key))
                yield _by_content(state, self.name, data, self.max_bytes)
            box.close()

        return self._start(state, len(keys), items())


def _by_content(state: State, name: str, data: bytes, max_bytes: int) -> Item | None:
    digest = hashlib.sha256(data).hexdigest()[:32]
    if state.seen_location(name, digest):
        return None
    if len(data) > max_bytes:
        return Item(digest, None, f"oversized: more than {max_bytes} bytes")
    return Item(digest, data)
