"""File images: a file's text before and after one patch, and which of its
lines the patch removed and added.

Images normally come from the tree (`analyzer.tree`).  When there is no tree,
or a patch does not apply to it, they are rebuilt from the hunks alone: each
hunk becomes a stand-alone fragment, wrapped in the function its hunk header
names, with a map from fragment lines back to the file's real line numbers.
"""

from __future__ import annotations

import bisect
import re
from array import array
from functools import cached_property

from unidiff import PatchedFile

from analyzer.digests import sha1
from analyzer.patterns import regex


class Image:
    """One version of a file: its bytes, and where its lines come from.
    Not to be changed once made."""

    def __init__(self, text: bytes, blob_id: str, line_map: tuple[int, ...] | None = None) -> None:
        self.text = text
        # Content hash: the parse cache key; git's blob id for tree images.
        self.blob_id = blob_id
        # For an image rebuilt from hunks: real line number of each fragment
        # line (0 for lines the wrapper invented); None when lines are the
        # file's own.
        self.line_map = line_map

    def __repr__(self) -> str:
        return f"Image({len(self.text)} bytes, {self.blob_id[:12]})"

    @property
    def partial(self) -> bool:
        return self.line_map is not None

    def real_line(self, row: int) -> int:
        """1-based line in the real file for a 0-based row of this text."""
        if self.line_map is None:
            return row + 1
        if 0 <= row < len(self.line_map) and self.line_map[row]:
            return self.line_map[row]
        # An invented wrapper line: report the nearest real line after it.
        real_rows = self._real_rows
        after = bisect.bisect_left(real_rows, max(row, 0))
        if after < len(real_rows):
            return self.line_map[real_rows[after]]
        return max((n for n in self.line_map if n), default=1)

    def row_of(self, line: int) -> int | None:
        """0-based row holding real line `line`, if the image has it."""
        if self.line_map is None:
            return line - 1
        return self._row_by_line.get(line)

    def line_text(self, row: int) -> str:
        starts = self._line_starts
        if 0 <= row < len(starts):
            end = starts[row + 1] - 1 if row + 1 < len(starts) else len(self.text)
            return self.text[starts[row] : end].decode("utf-8", "replace")
        return ""

    # Lookup tables built on first use: a rule asks for thousands of rows of
    # a big image, and a scan of the text each time made that quadratic.

    @cached_property
    def _row_by_line(self) -> dict[int, int]:
        table: dict[int, int] = {}
        for row, line in enumerate(self.line_map or ()):
            if line:
                table.setdefault(line, row)  # the first row, as tuple.index gave
        return table

    @cached_property
    def _real_rows(self) -> list[int]:
        return [row for row, line in enumerate(self.line_map or ()) if line]

    @cached_property
    def _line_starts(self) -> array[int]:
        # An array, not a list: every finding's image keeps its table, and a
        # list of ints is 36 bytes a line (9 MiB over a 64-patch series).
        return array("L", [0, *(m.end() for m in re.finditer(b"\n", self.text))])

    @classmethod
    def of(
        cls, text: bytes, blob_id: str | None = None, line_map: tuple[int, ...] | None = None
    ) -> Image:
        return cls(text=text, blob_id=blob_id or git_blob_id(text), line_map=line_map)


class FileImages:
    """One file of one patch: images and changed lines (1-based, real)."""

    def __init__(
        self,
        path: str,
        pre: Image | None,
        post: Image | None,
        added: frozenset[int],
        removed: frozenset[int],
        problem: str | None = None,
    ) -> None:
        self.path = path
        self.pre = pre
        self.post = post
        self.added = added
        self.removed = removed
        # Why the images were rebuilt from the patch alone, if they were.
        self.problem = problem

    @property
    def from_patch_only(self) -> bool:
        return (self.post is not None and self.post.partial) or (
            self.pre is not None and self.pre.partial
        )


def git_blob_id(text: bytes) -> str:
    return sha1(b"blob %d\0" % len(text) + text).hexdigest()


def changed_lines(patched: PatchedFile) -> tuple[frozenset[int], frozenset[int]]:
    added = frozenset(
        line.target_line_no
        for hunk in patched
        for line in hunk
        if line.is_added and line.target_line_no
    )
    removed = frozenset(
        line.source_line_no
        for hunk in patched
        for line in hunk
        if line.is_removed and line.source_line_no
    )
    return added, removed


def apply_exactly(pre: bytes, patched: PatchedFile) -> bytes | None:
    """The file as the hunks leave it when each applies, unchanged, at the
    line its header states: the text `git apply` makes of such a patch.
    None when one does not (an offset, fuzz, a conflict, a malformed hunk):
    git apply decides those.  `pre` is b"" for a new file; a deletion that
    applies gives b""."""
    lines = _split_lines(pre)
    out: list[bytes] = []
    done = 0  # lines of `pre` consumed
    delta = 0  # lines added so far, less lines removed
    for hunk in patched:
        sides = _hunk_sides(hunk)
        if sides is None:
            return None
        old, new, trailing = sides
        if len(old) != hunk.source_length or len(new) != hunk.target_length:
            return None
        # An empty range names the line before it.
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        new_start = hunk.target_start - 1 if hunk.target_length else hunk.target_start
        end = start + len(old)
        if start < done or new_start - start != delta or lines[start:end] != old:
            return None
        # git apply: a hunk with no trailing context must match at the end.
        if not trailing and end != len(lines):
            return None
        out.extend(lines[done:start])
        out.extend(new)
        done = end
        delta += len(new) - len(old)
    out.extend(lines[done:])
    return b"".join(out)


def hunk_git_rejects(pre: bytes, patched: PatchedFile) -> int | None:
    """The number (1-based) of the hunk `git apply` stops at when it is sure
    to: its lines are nowhere in the file as the hunks before it left it.
    None when git may apply the patch, or when only git can tell.

    git apply never ignores context (no -C) nor whitespace (no --ignore-*):
    a hunk applies only where every one of its old lines sits unchanged,
    and the search moves to another line only at an offset.  So a hunk
    whose old lines occur nowhere fails, as git would say, provided the
    hunks before it went where git puts them: each of those must fit in
    exactly one place, and one that git's rules allow (at the top for a hunk
    from line 1, at the end for one without trailing context, not over
    lines an earlier hunk wrote).  Anything else is git's to judge.
    """
    lines = _split_lines(pre)
    written: list[range] = []  # rows the hunks applied so far wrote
    compared = 0  # lines compared: a long hunk whose first line is common
    for number, hunk in enumerate(patched, 1):
        sides = _hunk_sides(hunk)
        if sides is None:
            return None
        old, new, trailing = sides
        if not old or len(old) != hunk.source_length or len(new) != hunk.target_length:
            return None  # a hunk of added lines alone fits anywhere
        places: list[int] = []
        row = -1
        try:
            while len(places) < 2:
                row = lines.index(old[0], row + 1)
                compared += len(old)
                if compared > _MOST_COMPARED:
                    return None  # in a file with as many blank lines: git's to judge
                if lines[row : row + len(old)] == old:
                    places.append(row)
        except ValueError:
            pass  # no further line is the hunk's first
        if not places:
            return number
        if len(places) > 1:
            return None
        row = places[0]
        end = row + len(old)
        if (
            (hunk.source_start <= 1 and row != 0)
            or (not trailing and end != len(lines))
            or any(row < done.stop and done.start < end for done in written)
        ):
            return None
        lines[row:end] = new
        shift = len(new) - len(old)
        written = [
            range(done.start + shift, done.stop + shift) if done.start >= end else done
            for done in written
        ]
        written.append(range(row, row + len(new)))
    return None


# Lines hunk_git_rejects() compares before it leaves a patch to git: a
# few times the largest file of mm/ (9,000 lines) in hunks of 50 lines.
_MOST_COMPARED = 2_000_000


def _split_lines(text: bytes) -> list[bytes]:
    """Lines as git sees them: split at b"\\n" only, each keeping it."""
    lines = text.split(b"\n")
    last = lines.pop()
    with_newline = [line + b"\n" for line in lines]
    if last:
        with_newline.append(last)
    return with_newline


def _hunk_sides(hunk) -> tuple[list[bytes], list[bytes], int] | None:
    """A hunk's pre- and post-image lines, as bytes (encoded as the patch
    text given to git apply is), and how many context lines end it."""
    old: list[bytes] = []
    new: list[bytes] = []
    previous = None
    trailing = 0
    for line in hunk:
        kind = line.line_type
        if kind == "\\":
            # "\ No newline at end of file": the line before lacks one.
            if previous in (" ", "-") and old:
                old[-1] = old[-1].removesuffix(b"\n")
            if previous in (" ", "+") and new:
                new[-1] = new[-1].removesuffix(b"\n")
            continue
        try:
            value = line.value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return None
        if not value.endswith(b"\n"):
            return None  # the patch text itself is cut short: git apply's to judge
        if kind == " ":
            old.append(value)
            new.append(value)
            trailing += 1
        elif kind == "-":
            old.append(value)
            trailing = 0
        elif kind == "+":
            new.append(value)
            trailing = 0
        else:
            return None
        previous = kind
    return old, new, trailing


def hunks_match_post(patched: PatchedFile, post: bytes) -> bool:
    """Do the hunks' post-image lines sit at their stated line numbers?  False
    when git applied a hunk at an offset."""
    lines = post.split(b"\n")
    for hunk in patched:
        for line in hunk:
            if line.target_line_no is None:
                continue
            row = line.target_line_no - 1
            if row >= len(lines) or lines[row].decode(
                "utf-8", "surrogateescape"
            ) != line.value.rstrip("\n"):
                return False
    return True


_FUNC_NAME_RE = regex(r"(\w+)\s*\([^()]*(\)[^;]*)?$")
# A line in column 0 that opens a definition (labels and #if lines sit in
# column 0 inside functions too, and do not count).
_TOP_LEVEL_RE = regex(r"^[A-Za-z_][^:;=]*\(")


def images_from_patch(patched: PatchedFile, problem: str | None) -> FileImages:
    """Rebuild what can be known of the pre- and post-image from the hunks."""
    added, removed = changed_lines(patched)
    pre = None if patched.is_added_file else _fragment(patched, side="source")
    post = None if patched.is_removed_file else _fragment(patched, side="target")
    path = patched.path
    return FileImages(path=path, pre=pre, post=post, added=added, removed=removed, problem=problem)


def _fragment(patched: PatchedFile, side: str) -> Image:
    out: list[str] = []
    line_map: list[int] = []
    for hunk in patched:
        lines = [
            (
                line.value.rstrip("\n"),
                line.source_line_no if side == "source" else line.target_line_no,
            )
            for line in hunk
            if (line.is_context or (line.is_removed if side == "source" else line.is_added))
        ]
        name = _function_from_header(hunk.section_header)
        # A hunk inside a function body is wrapped in that function so that
        # the parser sees statements where statements belong.
        wrap = name is not None and not any(_TOP_LEVEL_RE.match(text) for text, _ in lines)
        if wrap:
            out.append(f"void {name}(void) {{")
            line_map.append(0)
        for text, number in lines:
            out.append(text)
            line_map.append(number or 0)
        if wrap:
            depth = 1 + sum(t.count("{") - t.count("}") for t, _ in lines)
            out.append("}" * max(depth, 1))
            line_map.append(0)
        out.append("")
        line_map.append(0)
    text = "\n".join(out).encode("utf-8", "surrogateescape")
    return Image.of(text, line_map=tuple(line_map))


def _function_from_header(header: str) -> str | None:
    match = _FUNC_NAME_RE.search(header.strip())
    return match.group(1) if match else None
