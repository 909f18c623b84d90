"""What a rule is, what it sees, and what it reports.

A function rule sees one changed function before and after a patch (a
`FunctionChange`) and yields `Finding`s; a patch rule sees a whole patch
(commit message and all).  Both are plain classes with their metadata as
class attributes; the module docstring of the rule is its documentation.
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from analyzer import cache
from analyzer.images import git_blob_id
from analyzer.patterns import compile_kept

if TYPE_CHECKING:
    from tree_sitter import Node

    from analyzer.flow import FunctionFlow
    from analyzer.parsing import Function, ParsedFile
    from analyzer.patches import Patch


class Severity(enum.Enum):
    """checkpatch's levels: ERROR is very likely wrong, WARNING needs a careful
    look, CHECK may need some thought."""

    ERROR = "ERROR"
    WARNING = "WARNING"
    CHECK = "CHECK"

    @property
    def rank(self) -> int:
        return {"ERROR": 3, "WARNING": 2, "CHECK": 1}[self.value]


class Confidence(enum.Enum):
    """How sure the finding is, as pylint says it: HIGH when the code parsed
    cleanly and the rule's evidence is direct, LOW when parser recovery or a
    patch-only reconstruction was needed."""

    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        return {"HIGH": 3, "MEDIUM": 2, "LOW": 1}[self.value]

    def at_most(self, other: Confidence) -> Confidence:
        return self if self.rank <= other.rank else other


@dataclass(frozen=True, order=True)
class PatchRef:
    """Which patch of the series a finding belongs to."""

    index: int
    total: int
    subject: str

    def __str__(self) -> str:
        return f"[{self.index}/{self.total}] {self.subject}"


@dataclass(frozen=True, order=True)
class Finding:
    """One problem a rule reports, where it is and how sure the rule is;
    ordered by place, then rule."""

    path: str
    line: int
    column: int
    rule: str
    severity: Severity = field(compare=False)
    message: str = field(compare=False)
    function: str | None = field(default=None, compare=False)
    confidence: Confidence = field(default=Confidence.HIGH, compare=False)
    source_line: str = field(default="", compare=False)
    # What makes two findings "the same problem" across the pre- and
    # post-image: the rule id plus the flagged construct with local names
    # abstracted, so that renames do not make an old problem look new.
    key: str = field(default="", compare=False, repr=False)
    patch: PatchRef | None = field(default=None, compare=False)
    end_line: int = field(default=0, compare=False)
    end_column: int = field(default=0, compare=False)


class ReviewContext:
    """What a rule may ask of the tree: a file's text as of this patch."""

    def __init__(
        self,
        read_file: Callable[[str], bytes | None] | None = None,
        blob_id: Callable[[str], str | None] | None = None,
    ) -> None:
        self._read_file = read_file
        self._blob_id = blob_id
        # What analyses derive from this patch's tree (callee summaries,
        # header blob ids): it lives as long as the review of this patch.
        self.memo: dict[str, dict] = {}

    @property
    def has_tree(self) -> bool:
        return self._read_file is not None

    def read_file(self, path: str) -> bytes | None:
        return self._read_file(path) if self._read_file else None

    def blob_id(self, path: str) -> str | None:
        """The git blob id of what read_file(path) reads (None: no such
        file), without reading it where the tree can say."""
        if self._blob_id is not None:
            return self._blob_id(path)
        text = self.read_file(path)
        return git_blob_id(text) if text is not None else None


def _statement_at(function: Function, row: int) -> Node:
    """The outermost node of `function`'s body starting on `row`'s first
    character (the function itself when the row is outside its body)."""
    body = function.body
    if body is None:
        return function.node
    line_text = function.image.line_text(row)
    column = len(line_text) - len(line_text.lstrip())
    node = body.descendant_for_point_range((row, column), (row, column)) or body
    while node.parent is not None and node.parent.start_point.row == row and node.parent != body:
        node = node.parent
    return node


class FunctionChange:
    """One function as a patch leaves it (`after`), and as it was (`before`,
    None for a new function or when only the post-image is judged)."""

    def __init__(
        self,
        path: str,
        after: Function,
        before: Function | None,
        added_rows: frozenset[int],
        removed_rows: frozenset[int],
        context: ReviewContext,
        rule: Rule | None = None,
        _emit: Callable[..., Finding] | None = None,
        added_lines: frozenset[int] = frozenset(),
        removed_lines: frozenset[int] = frozenset(),
        after_file: ParsedFile | None = None,
        before_file: ParsedFile | None = None,
    ) -> None:
        self.path = path
        self.after = after
        self.before = before
        self.added_rows = added_rows
        self.removed_rows = removed_rows
        self.context = context
        self.rule = rule
        self._emit = _emit
        # Real (1-based) line numbers the patch added to / removed from the file.
        self.added_lines = added_lines
        self.removed_lines = removed_lines
        # The whole files, for rules that look into same-file helpers.
        self.after_file = after_file
        self.before_file = before_file

    def __repr__(self) -> str:
        return f"FunctionChange({self.path}: {self.after.name}())"

    def is_added(self, node: Node) -> bool:
        rows = range(node.start_point.row, node.end_point.row + 1)
        return any(row in self.added_rows for row in rows)

    def is_removed(self, node: Node) -> bool:
        """For a node of `before`: did the patch remove (part of) it?"""
        rows = range(node.start_point.row, node.end_point.row + 1)
        return any(row in self.removed_rows for row in rows)

    def post_line_of(self, pre_line: int) -> int:
        """Where a pre-image line (removed or not) sits in the post-image:
        for a removed line, the line that took its place."""
        line = pre_line - sum(1 for n in self.removed_lines if n < pre_line)
        added = 0
        while True:
            count = sum(1 for n in self.added_lines if n < line + added)
            if count == added:
                return line + added
            added = count

    def anchor_for(self, before_node: Node) -> Node:
        """The post-image node standing where `before_node` stood, for
        findings about code the patch removed: the statement at that line,
        else the function's name."""
        assert self.before is not None
        pre_line = self.before.image.real_line(before_node.start_point.row)
        row = self.after.image.row_of(self.post_line_of(pre_line))
        body = self.after.body
        if row is not None and body is not None:
            # Skip comments and blank lines the patch may have put there.
            while body.start_point.row < row < body.end_point.row and (
                not (stripped := self.after.image.line_text(row).strip())
                or stripped.startswith(("/*", "*", "//"))
            ):
                row += 1
        if row is not None and body is not None and body.start_point.row < row < body.end_point.row:
            return _statement_at(self.after, row)
        declarator = self.after.node.child_by_field_name("declarator")
        return declarator if declarator is not None else self.after.node

    def replaced(
        self, added: Node, removed: list[Node], same: Callable[[Node], bool]
    ) -> Node | None:
        """The removed node `added` took the place of: the first that
        `same` accepts, else one whose lines the added block holding
        `added` replaced."""
        alike = [node for node in removed if same(node)]
        if alike:
            return alike[0]
        assert self.before is not None
        line = self.after.image.real_line(added.start_point.row)
        for node in removed:
            start = end = self.post_line_of(self.before.image.real_line(node.start_point.row))
            while end + 1 in self.added_lines:
                end += 1
            if start - 1 <= line <= end + 1:
                return node
        return None

    def first_change(self) -> Node:
        """Where the patch first changed the function: the line standing
        where it removed one, else the first line it added."""
        if self.before is not None and self.removed_rows:
            return self.anchor_for(_statement_at(self.before, min(self.removed_rows)))
        if self.added_rows:
            return _statement_at(self.after, min(self.added_rows))
        return self.after.node

    @property
    def is_new_function(self) -> bool:
        return self.before is None

    @cached_property
    def flow(self) -> FunctionFlow:
        """The flow questions about the function as the patch leaves it."""
        from analyzer.flow import flow_of

        return flow_of(self.after, self.after_file, self.context, self.path)

    @cached_property
    def before_flow(self) -> FunctionFlow | None:
        """The same about the function as it was (None for a new one)."""
        from analyzer.flow import flow_of

        if self.before is None or self.before.body is None:
            return None
        return flow_of(self.before, self.before_file, self.context, self.path)

    def finding(
        self,
        node: Node,
        message: str,
        confidence: Confidence = Confidence.HIGH,
        key: str | None = None,
        severity: Severity | None = None,
    ) -> Finding:
        assert self._emit is not None, "FunctionChange built outside the engine"
        return self._emit(self, node, message, confidence, key, severity)


# The path of findings on a patch's commit message (Gerrit's name for it),
# line 1 being the subject and the body starting on line 3.
COMMIT_MESSAGE_PATH = "COMMIT_MSG"


class PatchChange:
    """A whole patch, for rules about the commit message or the series."""

    def __init__(
        self,
        patch: Patch,
        context: ReviewContext,
        tree: object | None = None,
        base: str | None = None,
        files: Mapping[str, ParsedFile] | None = None,
    ) -> None:
        self.patch = patch
        self.context = context
        self.tree = tree  # analyzer.tree.KernelTree, when one was given
        self.base = base
        self.files: Mapping[str, ParsedFile] = files if files is not None else {}


class Rule:
    """Base of every rule; subclasses set the class attributes."""

    id: ClassVar[str]
    severity: ClassVar[Severity]
    summary: ClassVar[str]
    # fnmatch patterns of the kernel paths the lesson is about.
    paths: ClassVar[tuple[str, ...]] = ("mm/*", "fs/userfaultfd.c", "include/linux/*")
    # A lesson about an API applies wherever the API is used: page tables are
    # walked in fs/proc, fs/dax.c, kernel/events and arch/*/mm as well as in
    # mm/.  A regex on the file's text; None keeps the rule to `paths`.
    api: ClassVar[str | None] = None
    doc: ClassVar[str] = ""

    def applies_to(self, path: str, uses: Callable[[str], bool] = lambda api: False) -> bool:
        """Is the lesson about this file: its path, or an API it uses
        (`uses(api)`: does the file's text match the regex `api`)?"""
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in self.paths):
            return True
        return self.api is not None and uses(self.api)


class ApiUses:
    """`uses(api)` for Rule.applies_to: does the text match the regex?

    Each rule's regex runs over the whole file, and a cold check of one
    small patch compiled and ran a dozen of them on both versions of the
    file.  For a file as the tree has it (`keep`), the answers are kept on
    disk by its blob id: a later check of a patch to it reads them back."""

    def __init__(self, text: bytes, blob_id: str, keep: bool = False) -> None:
        self._text = text
        self._blob_id = blob_id if keep else None
        self._answers: dict[str, bool] | None = None
        self._new = False

    def __call__(self, api: str) -> bool:
        if self._answers is None:
            self._answers = self._kept()
        found = self._answers.get(api)
        if found is None:
            found = self._answers[api] = _api_pattern(api).search(self._text) is not None
            self._new = True
        return found

    def _kept(self) -> dict[str, bool]:
        if self._blob_id is None:
            return {}
        stored = cache.load(_API_NAMESPACE, self._blob_id)
        if isinstance(stored, dict) and all(type(v) is bool for v in stored.values()):
            return stored
        return {}

    def keep(self) -> None:
        """Write what was found out since the answers were read."""
        if self._new and self._blob_id is not None and self._answers is not None:
            cache.store(_API_NAMESPACE, self._blob_id, self._answers)
            self._new = False


# The answers depend only on the text and the regex (the key): no code digest.
_API_NAMESPACE = "api-uses"


@functools.lru_cache(maxsize=64)
def _api_pattern(api: str) -> re.Pattern[bytes]:
    return compile_kept(api.encode())


class FunctionRule(Rule):
    def check(self, change: FunctionChange) -> Iterator[Finding]:
        raise NotImplementedError


class PatchRule(Rule):
    def check_patch(self, change: PatchChange) -> Iterator[Finding]:
        raise NotImplementedError
