"""Kernel C to functions, with tree-sitter-c.

Kernel idioms that trip a C grammar (`__must_hold(...)`, `list_for_each_entry()
{ ... }`, `container_of(p, struct foo, m)`, `SYSCALL_DEFINE3(...)`) are blanked
or rewritten by a *length-preserving* sanitizer first: every replaced byte
becomes a space, newlines stay, so byte offsets and rows in the sanitized
parse are those of the original file and no offset map is needed.  Where the
parse still fails around a function, the function is re-parsed alone
(kernel bodies close with `}` in column 0) and marked low-confidence.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import tree_sitter_c
from tree_sitter import Language, Node, Parser, Point, Range, Tree

from analyzer.images import Image
from analyzer.rule import Confidence

C_LANGUAGE = Language(tree_sitter_c.language())

# Bare attributes and annotations that are not C to the grammar.
_BARE_ANNOTATIONS = (
    "__always_inline",
    "__init",
    "__exit",
    "__initdata",
    "__meminit",
    "__ref",
    "__must_check",
    "__maybe_unused",
    "__read_mostly",
    "__ro_after_init",
    "__user",
    "__iomem",
    "__rcu",
    "__percpu",
    "__force",
    "__weak",
    "__cold",
    "__hot",
    "noinline",
    "noinline_for_stack",
    "notrace",
    "asmlinkage",
    "__cacheline_aligned_in_smp",
    "__cacheline_aligned",
    "__always_unused",
    "__noreturn",
    "__pure",
    "__latent_entropy",
    "__nocfi",
    "__randomize_layout",
    "__packed",
    "__visible",
    "__used",
    "__kprobes",
    "__sched",
    "__cpuidle",
    "__init_or_module",
    "__meminitdata",
    "__initconst",
    "__lockfunc",
    "__bitwise",
    "__private",
    "__safe",
    "__data_racy",
)
# Annotations with an argument list: blanked with their balanced parentheses.
_CALL_ANNOTATIONS = (
    "__must_hold",
    "__acquires",
    "__releases",
    "__cond_acquires",
    "__cond_releases",
    "__free",
    "__aligned",
    "__printf",
    "__scanf",
    "__section",
    "__counted_by",
    "__alloc_size",
    "__realloc_size",
    "__malloc",
    "__no_sanitize_or_inline",
    "__assume_aligned",
    "__nonstring",
    "__guarded_by",
    "__pt_guarded_by",
)


def _names_re(names: tuple[str, ...], after: bytes) -> list[re.Pattern[bytes]]:
    """Patterns for `names`, one per common first two characters: each
    starts with a literal, which the regex engine finds fast.  The word
    boundary before a name is tested on the match (`_names`): no name can
    start inside another's match, every name being word characters."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name[:2], []).append(name[2:])
    return [
        re.compile(
            re.escape(prefix.encode())
            + rb"(?:"
            + b"|".join(re.escape(rest.encode()) for rest in rests)
            + rb")"
            + after
        )
        for prefix, rests in groups.items()
    ]


_ANNOTATION_RES = _names_re(_BARE_ANNOTATIONS, rb"\b")
_CALL_ANNOTATION_RES = _names_re(_CALL_ANNOTATIONS, rb"\s*\(")
# `list_for_each_entry(pos, head, member) {` reads as `while (pos, head, member) {`.
_ITERATOR_RE = re.compile(rb"^([ \t]*)((?:\w*_)?for_each\w*)(\s*\()", re.MULTILINE)
# A struct/union/enum type as a macro argument, after "(" or ",".
_TYPE_ARG_RE = re.compile(rb"[(,](\s*)(struct|union|enum)(\s+\w+\s*)(?=[,)])")
_SYSCALL_RE = re.compile(rb"^(SYSCALL_DEFINE\d|COMPAT_SYSCALL_DEFINE\d)\((\w+)", re.MULTILINE)
_DIRECTIVE_RE = re.compile(rb"^[ \t]*#.*?(?:\\\r?\n.*?)*$", re.MULTILINE)
_FUNCTION_END_RE = re.compile(rb"^}[^\n]*$", re.MULTILINE)
_PARENTHESIS_RE = re.compile(rb"[()]")
# Blanking: every byte a space but line ends.
_BLANKED = bytes(b if b in (0x0A, 0x0D) else 0x20 for b in range(256))
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _blank(buf: bytearray, start: int, end: int) -> None:
    buf[start:end] = bytes(buf[start:end]).translate(_BLANKED)


def _balanced_end(buf: bytes | bytearray, open_paren: int) -> int:
    depth = 0
    for match in _PARENTHESIS_RE.finditer(buf, open_paren):
        if buf[match.start()] == 0x28:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return match.start() + 1
    return open_paren + 1


def _names(patterns: list[re.Pattern[bytes]], source: bytes) -> Iterator[re.Match[bytes]]:
    """Matches of `patterns` that start a word, as a leading \\b would have."""
    for pattern in patterns:
        for match in pattern.finditer(source):
            start = match.start()
            if start == 0 or source[start - 1] not in _WORD:
                yield match


def _syscall_lines(source: bytes) -> Iterator[re.Match[bytes]]:
    """`_SYSCALL_RE.finditer(source)`, tried only where a line starts with
    SYSCALL_DEFINE or COMPAT_SYSCALL_DEFINE."""
    position = 0
    while (found := source.find(b"SYSCALL_DEFINE", position)) != -1:
        position = found + 14
        start = found - 7 if source[max(found - 7, 0) : found] == b"COMPAT_" else found
        if (start == 0 or source[start - 1] == 0x0A) and (
            match := _SYSCALL_RE.match(source, start)
        ):
            yield match


def _iterator_lines(source: bytes) -> Iterator[re.Match[bytes]]:
    """`_ITERATOR_RE.finditer(source)`, trying only the lines that hold
    "for_each" (a match never runs into the next line's start)."""
    position = 0
    tried = -1
    while (found := source.find(b"for_each", position)) != -1:
        line = source.rfind(b"\n", 0, found) + 1
        if line != tried:
            tried = line
            if match := _ITERATOR_RE.match(source, line):
                yield match
        position = found + 8


def _directive_spans(source: bytes) -> list[tuple[int, int]]:
    """`_DIRECTIVE_RE`'s matches, tried only at the lines holding a "#"."""
    spans: list[tuple[int, int]] = []
    position = 0
    while (found := source.find(b"#", position)) != -1:
        line = source.rfind(b"\n", 0, found) + 1
        if match := _DIRECTIVE_RE.match(source, line):
            spans.append((match.start(), match.end()))
            position = max(match.end(), found + 1)
        else:  # a directive starts a line, or not at all
            end = source.find(b"\n", found)
            position = end + 1 if end != -1 else len(source)
    return spans


def sanitize(source: bytes) -> bytes:
    """Blank kernel idioms the grammar cannot read, keeping every offset."""
    buf = bytearray(source)
    directives = _directive_spans(source)
    starts = [start for start, _ in directives]

    def in_directive(pos: int) -> bool:
        # Macro bodies are left alone: blanking inside `#define` breaks them.
        index = bisect.bisect_right(starts, pos) - 1
        return index >= 0 and pos <= directives[index][1]

    for match in _names(_CALL_ANNOTATION_RES, source):
        if not in_directive(match.start()):
            _blank(buf, match.start(), _balanced_end(source, match.end() - 1))
    for match in _names(_ANNOTATION_RES, source):
        if not in_directive(match.start()):
            _blank(buf, match.start(), match.end())
    for match in _iterator_lines(source):
        if in_directive(match.start()):
            continue
        start = match.start(2)
        buf[start : start + 5] = b"while"
        _blank(buf, start + 5, match.end(2))
    for match in _TYPE_ARG_RE.finditer(source):
        if not in_directive(match.start(1)):
            _blank(buf, match.start(2), match.end(2))
    for match in _syscall_lines(source):
        _rewrite_syscall(buf, source, match)
    return bytes(buf)


def _rewrite_syscall(buf: bytearray, source: bytes, match: re.Match[bytes]) -> None:
    """`SYSCALL_DEFINE3(madvise, unsigned long, start, ...)` becomes
    `long            madvise( unsigned long  start, ...)`."""
    open_paren = match.end(1)
    close = _balanced_end(source, open_paren) - 1
    _blank(buf, match.start(1), open_paren + 1)
    buf[match.start(1) : match.start(1) + 4] = b"long"
    name_end = match.end(2)
    commas = [i for i in range(name_end, close) if source[i] == 0x2C]
    if not commas:
        buf[name_end : name_end + 1] = b"("  # SYSCALL_DEFINE0(name)
        buf[name_end + 1 : close + 1] = b")".ljust(close + 1 - name_end - 1)
        buf[close] = 0x29
        return
    buf[commas[0]] = 0x28  # "," after the name opens the parameter list
    for n, comma in enumerate(commas[1:]):
        if n % 2 == 0:
            buf[comma] = 0x20  # between a type and its parameter name


@dataclass(frozen=True, eq=False)
class Function:
    """A function definition in a parsed image."""

    name: str
    node: Node  # the function_definition
    image: Image
    confidence: Confidence

    @property
    def body(self) -> Node | None:
        return self.node.child_by_field_name("body")

    @property
    def start_row(self) -> int:
        return self.node.start_point.row

    @property
    def end_row(self) -> int:
        return self.node.end_point.row

    @property
    def source(self) -> bytes:
        return self.image.text

    def contains_row(self, row: int) -> bool:
        return self.start_row <= row <= self.end_row


@dataclass
class ParsedFile:
    image: Image
    tree: Tree
    functions: list[Function] = field(default_factory=list)
    # Trees of functions re-parsed alone; kept so their nodes stay valid.
    extra_trees: list[Tree] = field(default_factory=list)

    def function_at(self, row: int) -> Function | None:
        best = None
        for function in self.functions:
            if function.contains_row(row) and (
                best is None or function.start_row >= best.start_row
            ):
                best = function
        return best

    def functions_named(self, name: str) -> list[Function]:
        return [f for f in self.functions if f.name == name]


@lru_cache(maxsize=1)
def _parser() -> Parser:
    return Parser(C_LANGUAGE)


_cache: dict[str, ParsedFile] = {}


def parse(image: Image) -> ParsedFile:
    """Parse an image once per blob id, however often a series touches it."""
    cached = _cache.get(image.blob_id)
    if cached is not None:
        return cached
    parsed = _parse(image)
    if len(_cache) > 512:
        _cache.clear()
    _cache[image.blob_id] = parsed
    return parsed


def _parse(image: Image) -> ParsedFile:
    text = sanitize(image.text)
    tree = _parser().parse(text)
    parsed = ParsedFile(image=image, tree=tree)
    partial = image.partial
    for node in _function_nodes(tree.root_node):
        name = function_name(node)
        if name is None:
            continue
        confidence = (
            Confidence.LOW
            if partial
            else (Confidence.MEDIUM if _has_error_ancestor(node) else Confidence.HIGH)
        )
        parsed.functions.append(Function(name, node, image, confidence))
    _recover_functions(parsed, text)
    return parsed


def _function_nodes(root: Node) -> list[Node]:
    found = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            found.append(node)
            continue  # nested definitions are GNU C nobody writes in mm/
        stack.extend(reversed(node.children))
    return found


def _has_error_ancestor(node: Node) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.type == "ERROR":
            return True
        parent = parent.parent
    return False


def function_name(node: Node) -> str | None:
    declarator = node.child_by_field_name("declarator")
    while declarator is not None:
        if declarator.type in ("identifier", "field_identifier"):
            return declarator.text.decode()
        if declarator.type == "function_declarator":
            inner = declarator.child_by_field_name("declarator")
            if inner is not None and inner.type in ("identifier", "field_identifier"):
                return inner.text.decode()
            declarator = inner
            continue
        declarator = declarator.child_by_field_name("declarator")
    return None


def _recover_functions(parsed: ParsedFile, text: bytes) -> None:
    """Re-parse, one kernel function at a time, the stretches of the file
    that ended up inside a top-level ERROR node."""
    root = parsed.tree.root_node
    spans = [
        (child.start_byte, child.end_byte)
        for child in root.children
        if child.type == "ERROR" and child.end_point.row - child.start_point.row > 2
    ]
    if not spans:
        return
    ends = [m.end() for m in _FUNCTION_END_RE.finditer(text)]
    for span_start, span_end in spans:
        chunk_start = max([e for e in ends if e <= span_start], default=0)
        for end in [e for e in ends if span_start < e <= span_end + 1] + [span_end]:
            if end <= chunk_start:
                continue
            _parse_chunk(parsed, text, chunk_start, end)
            chunk_start = end


def _parse_chunk(parsed: ParsedFile, text: bytes, start: int, end: int) -> None:
    known = {(f.start_row, f.name) for f in parsed.functions}
    chunk_range = Range(_point_at(text, start), _point_at(text, end), start, end)
    parser = Parser(C_LANGUAGE, included_ranges=[chunk_range])
    tree = parser.parse(text)
    if not _function_nodes(tree.root_node) and _CONDITIONAL_RE.search(text, start, end):
        # `#ifdef` branches that each open a block with one shared `}`: read
        # the first branch only.
        tree = parser.parse(flatten_conditionals(text, start, end))
    added = False
    for node in _function_nodes(tree.root_node):
        name = function_name(node)
        if name is None or (node.start_point.row, name) in known:
            continue
        # Drop the whole-file parse's half-recovered version of it.
        parsed.functions = [
            f for f in parsed.functions if not (f.name == name and f.confidence != Confidence.HIGH)
        ]
        parsed.functions.append(Function(name, node, parsed.image, Confidence.LOW))
        added = True
    if added:
        parsed.extra_trees.append(tree)


_CONDITIONAL_RE = re.compile(rb"^[ \t]*#[ \t]*if", re.MULTILINE)
_DIRECTIVE_WORD_RE = re.compile(rb"^[ \t]*#[ \t]*(if|ifdef|ifndef|elif|else|endif)\b")


def flatten_conditionals(text: bytes, start: int, end: int) -> bytes:
    """Blank conditional directives and every branch but the first between
    `start` and `end`, keeping all offsets."""
    buf = bytearray(text)
    branches: list[int] = []  # branch index at each nesting level
    position = start
    for line in text[start:end].split(b"\n"):
        line_end = position + len(line)
        word = _DIRECTIVE_WORD_RE.match(line)
        if word is not None:
            kind = word.group(1)
            if kind.startswith(b"if"):
                branches.append(0)
            elif kind in (b"elif", b"else") and branches:
                branches[-1] += 1
            elif kind == b"endif" and branches:
                branches.pop()
            _blank(buf, position, line_end)
        elif any(branches):
            _blank(buf, position, line_end)
        position = line_end + 1
    return bytes(buf)


def _point_at(buf: bytes, offset: int) -> Point:
    row = buf.count(b"\n", 0, offset)
    return Point(row, offset - (buf.rfind(b"\n", 0, offset) + 1))
