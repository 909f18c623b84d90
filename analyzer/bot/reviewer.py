"""A recorded series reviewed against the configured kernel tree.

The messages are handed to analyzer.patches exactly as the archive holds
them (one file each in a private temporary directory), so the bot reads mail
the way `mmreview check` does: same subject parsing, same refusal of unsafe
diff paths, same per-patch errors.  The base is the series' `base-commit:`
when the tree has it, else the configured branch; the tree is only read
(KernelTree applies in a scratch index and object directory, hooks off).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

from analyzer.bot.config import BotConfig
from analyzer.engine import Review, review
from analyzer.patches import LIMITS, InputError, read_series
from analyzer.patterns import regex
from analyzer.registry import select_rules
from analyzer.tree import KernelTree

_SAFE_RE = regex(r"[^A-Za-z0-9._@+-]")


class SeriesSkipped(Exception):
    """The series cannot be reviewed at all (said in one line)."""


@dataclass
class Mail:
    msgid: str
    raw: bytes


class Reviewer:
    def __init__(self, config: BotConfig) -> None:
        self.config = config
        self.rules = select_rules(config.select or None, config.ignore or None)

    def open_tree(self) -> KernelTree:
        # A fresh one per review: KernelTree caches every blob it reads, and
        # the bot runs for months.
        return KernelTree(str(self.config.tree.path))

    def review(self, mails: list[Mail]) -> Review:
        limits = self.config.limits
        if len(mails) > limits.max_patches_per_series + 1:
            raise SeriesSkipped(
                f"{len(mails)} messages (limit {limits.max_patches_per_series} patches)"
            )
        with tempfile.TemporaryDirectory(prefix="mmreview-bot-") as scratch:
            # Each message in a file named after its Message-ID, so that what
            # analyzer.patches says about it names the message.
            paths = []
            for number, mail in enumerate(mails):
                folder = os.path.join(scratch, f"{number:04d}")
                os.mkdir(folder)
                path = os.path.join(folder, f"<{_SAFE_RE.sub('_', mail.msgid.strip('<>'))}>")
                with open(path, "wb") as handle:
                    handle.write(_with_header_line(mail.raw))
                paths.append(path)
            scratch_re = re.compile(re.escape(scratch + os.sep) + r"\d{4}" + re.escape(os.sep))

            def named(text: str) -> str:
                return scratch_re.sub("", text)

            try:
                series = read_series(
                    paths,
                    limits=LIMITS._replace(seconds_per_patch=limits.seconds_per_patch or None),
                )
            except InputError as err:
                raise SeriesSkipped("; ".join(named(line) for line in err.lines)) from None
            series.notes = [named(n) for n in series.notes]
            series.errors = [named(e) for e in series.errors]
            for patch in series.patches:
                patch.source = named(patch.source)
                if patch.error:
                    patch.error = named(patch.error)
                elif len(patch.files) > limits.max_files_per_patch:
                    patch.error = (
                        f"{patch.label()}: touches {len(patch.files)} files"
                        f" (limit {limits.max_files_per_patch}); not reviewed"
                    )
            if not series.patches:
                raise SeriesSkipped("no patches")
            tree = self.open_tree()
            try:
                base = _base(tree, series.base_commit, self.config.tree.base)
                result = review(
                    series,
                    self.rules,
                    tree=tree,
                    base=base,
                    patch_seconds=limits.seconds_per_patch or None,
                )
            finally:
                tree.close()
            result.notes = [named(n) for n in result.notes]
            result.errors = [named(e) for e in result.errors]
        return result


def _base(tree: KernelTree, base_commit: str | None, configured: str | None) -> str | None:
    if base_commit and tree.resolve(base_commit):
        return None  # the engine takes the trailer and says so
    return configured or "HEAD"


def _with_header_line(raw: bytes) -> bytes:
    """Make sure the message starts with a header line analyzer.patches
    recognises (a first header without a space after the colon, or a
    folded first line, is legal mail)."""
    newline = b"\r\n" if raw[:1000].find(b"\r\n") != -1 else b"\n"
    return b"X-Mmreview-Bot: archive" + newline + raw
