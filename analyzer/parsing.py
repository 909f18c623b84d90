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
import heapq
import importlib.machinery
import importlib.util
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from functools import lru_cache

from tree_sitter import Language, Node, Parser, Point, Range, Tree

from analyzer import budget
from analyzer.images import Image
from analyzer.patterns import regex
from analyzer.rule import Confidence


def _c_grammar() -> object:
    """tree-sitter-c's grammar.  Its extension module is loaded on its own:
    the package's `__init__` imports importlib.resources (over a millisecond
    of each cold run) for query files that mm-review never reads.
    The package import stands in if its layout is not the one expected."""
    package = importlib.util.find_spec("tree_sitter_c")  # found, not run
    directories = package.submodule_search_locations if package is not None else None
    for directory in directories or []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(directory, "_binding" + suffix)
            if not os.path.isfile(path):
                continue
            spec = importlib.util.spec_from_file_location("tree_sitter_c._binding", path)
            if spec is not None and spec.loader is not None:
                binding = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(binding)
                return binding.language()
    import tree_sitter_c

    return tree_sitter_c.language()


C_LANGUAGE = Language(_c_grammar())

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
        regex(
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
_ITERATOR_RE = regex(rb"^([ \t]*)((?:\w*_)?for_each\w*)(\s*\()", re.MULTILINE)
# A struct/union/enum type as a macro argument, after "(" or ",".
_TYPE_ARG_RE = regex(rb"[(,](\s*)(struct|union|enum)(\s+\w+\s*)(?=[,)])")
_SYSCALL_RE = regex(rb"^(SYSCALL_DEFINE\d|COMPAT_SYSCALL_DEFINE\d)\((\w+)", re.MULTILINE)
_DIRECTIVE_RE = regex(rb"^[ \t]*#.*?(?:\\\r?\n.*?)*$", re.MULTILINE)
_FUNCTION_END_RE = regex(rb"^}[^\n]*$", re.MULTILINE)
_PARENTHESIS_RE = regex(rb"[()]")
# Blanking: every byte a space but line ends.
_BLANKED = bytes(b if b in (0x0A, 0x0D) else 0x20 for b in range(256))
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _blank(buf: bytearray, start: int, end: int) -> None:
    buf[start:end] = bytes(buf[start:end]).translate(_BLANKED)


# How far an annotation's or SYSCALL_DEFINE's argument list may reach: an
# unbalanced `__must_hold(` in garbage scanned to the end of the file, once
# per occurrence.
_BALANCED_REACH = 8192


def _balanced_end(buf: bytes | bytearray, open_paren: int) -> int:
    depth = 0
    for match in _PARENTHESIS_RE.finditer(
        buf, open_paren, min(len(buf), open_paren + _BALANCED_REACH)
    ):
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


class Function:
    """A function definition in a parsed image (not to be changed once made)."""

    def __init__(self, name: str, node: Node, image: Image, confidence: Confidence) -> None:
        self.name = name
        self.node = node  # the function_definition
        self.image = image
        self.confidence = confidence
        # What analyses derive from this definition's nodes (its flow graph):
        # it lives and dies with this parse of the function.
        self.memo: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"Function({self.name!r}, rows {self.start_row}-{self.end_row})"

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


class ParsedFile:
    """One image parsed: its syntax tree and functions."""

    def __init__(
        self,
        image: Image,
        tree: Tree,
        functions: list[Function] | None = None,
        sanitized: bytes = b"",
    ) -> None:
        self.image = image
        self.tree = tree
        self.functions: list[Function] = functions if functions is not None else []
        # Trees of functions re-parsed alone; kept so their nodes stay valid.
        self.extra_trees: list[Tree] = []
        # Why the file was not parsed (too big), if it was not.
        self.not_parsed: str | None = None
        # The sanitized text the tree was parsed from: a later version of the
        # file (the patch's post-image) is parsed as an edit of this one.
        self.sanitized = sanitized
        # What analyses derive from this parse (it holds its nodes): kept with
        # it, so that a re-parse after the cache evicted it starts afresh.
        self.memo: dict[str, object] = {}
        # function_at()'s interval table and the `functions` list it was
        # built from (rebuilt when that list is replaced or grows).
        self._index: tuple[list[int], list[Function | None]] | None = None
        self._indexed: tuple[int, int] = (0, -1)

    def __repr__(self) -> str:
        return f"ParsedFile({self.image!r}, {len(self.functions)} functions)"

    def function_at(self, row: int) -> Function | None:
        """The innermost function holding `row` (the one starting last; of
        two starting on the same row, the later in `functions`)."""
        if self._index is None or self._indexed != (id(self.functions), len(self.functions)):
            self._index = _interval_index(self.functions)
            self._indexed = (id(self.functions), len(self.functions))
        starts, owners = self._index
        segment = bisect.bisect_right(starts, row) - 1
        return owners[segment] if segment >= 0 else None

    def functions_named(self, name: str) -> list[Function]:
        return [f for f in self.functions if f.name == name]


def _interval_index(functions: list[Function]) -> tuple[list[int], list[Function | None]]:
    """Rows where the innermost function changes, and that function from
    each such row on: a sweep over start and end rows, so that a lookup is a
    bisection instead of a scan of every function (a 2,000-line patch asks
    for thousands of rows)."""
    boundaries = sorted({f.start_row for f in functions} | {f.end_row + 1 for f in functions})
    by_start = sorted(enumerate(functions), key=lambda item: (item[1].start_row, item[0]))
    open_functions: list[tuple[int, int, Function]] = []  # heap, innermost first
    starts: list[int] = []
    owners: list[Function | None] = []
    next_function = 0
    for row in boundaries:
        while next_function < len(by_start) and by_start[next_function][1].start_row <= row:
            position, function = by_start[next_function]
            heapq.heappush(open_functions, (-function.start_row, -position, function))
            next_function += 1
        while open_functions and open_functions[0][2].end_row < row:
            heapq.heappop(open_functions)
        owner = open_functions[0][2] if open_functions else None
        if not owners or owners[-1] is not owner:
            starts.append(row)
            owners.append(owner)
    return starts, owners


@lru_cache(maxsize=1)
def _parser() -> Parser:
    return Parser(C_LANGUAGE)


# A parsed file holds about 26 times its text in trees and nodes (measured
# on mm/memory.c): 1.5 MiB of cached text is about 40 MiB, and holds a
# series' working set (a patch's post-image is the next patch's pre-image).
# Bounded by bytes, not by a count of trees: a count of small files is
# nothing, the same count of big ones is gigabytes.  An evicted file's
# functions lose what was derived from them (their flow graphs, whose nodes
# would keep the tree alive).
CACHE_BYTES = 3 << 19
# Larger files are not parsed: no hand-written C file of Linux 6.12 comes
# near (the largest .c is 1.8 MB); generated register headers (up to 24 MB)
# do, and their trees would take half a gigabyte.
MAX_PARSE_BYTES = 4 << 20

_cache: OrderedDict[str, ParsedFile] = OrderedDict()
_cached_bytes = 0


def parse(image: Image, like: ParsedFile | None = None) -> ParsedFile:
    """Parse an image once per blob id, however often a series touches it.

    `like` is a parse of another version of the file (the pre-image of a
    patch): tree-sitter then re-parses only what differs, and reuses the
    rest of its tree (1 ms instead of 17 for mm/khugepaged.c and a one-line
    change; the tree is the one a parse from scratch gives).

    An image over MAX_PARSE_BYTES is not parsed: it has no functions and
    says why in `not_parsed`.  Raises BudgetExceeded when the patch's time
    budget runs out during the parse."""
    global _cached_bytes
    cached = _cache.get(image.blob_id)
    if cached is not None:
        _cache.move_to_end(image.blob_id)
        return cached
    parsed = _parse(image, like)
    size = len(image.text)
    if size <= CACHE_BYTES:
        _cache[image.blob_id] = parsed
        _cached_bytes += size
        while _cached_bytes > CACHE_BYTES:
            _, evicted = _cache.popitem(last=False)
            _cached_bytes -= len(evicted.image.text)
            for function in evicted.functions:
                function.memo.clear()
    return parsed


# Text up to this size is parsed in one pass, not cancellably: a few
# milliseconds for any such C (most headers); the cancellable parse reads
# the text twice.
_PLAIN_PARSE_BYTES = 64 << 10


def _parse_text(parser: Parser, text: bytes, old: Tree | None = None) -> Tree:
    """parser.parse(text), cancelled when the patch's time budget runs out.

    tree-sitter calls a progress callback only when it reads the text
    through a callback, and such a tree reads node.text through the
    callback too (slowly: rules read it a lot).  So: a cancellable parse
    first, then the same text parsed again from bytes with that tree as the
    old tree, which reuses every node (a few milliseconds for mm/memory.c)."""
    # py-tree-sitter takes no None for the old tree: pass it or nothing.
    reuse = () if old is None else (old,)
    if len(text) <= _PLAIN_PARSE_BYTES and not budget.expired():
        return parser.parse(text, *reuse)
    try:
        draft = parser.parse(_chunks_of(text), *reuse, progress_callback=budget.cancel_parse)
    except ValueError:
        # A halted parse resumes on the parser's next call unless reset:
        # the next file would be parsed as the rest of this one.
        parser.reset()
        if budget.expired():
            raise budget.BudgetExceeded from None
        raise
    return parser.parse(text, draft)


# py-tree-sitter 0.26 keeps a reference to every chunk a read callback
# returns, for good: fresh bytes per chunk leaked the whole text on every
# parse (9 MiB over a 64-patch series).  So every chunk is a view of one
# buffer, overwritten for the next: all that stays behind is small views.
_CHUNK_BYTES = 65536
_chunk_buffer = memoryview(bytearray(_CHUNK_BYTES))


def _chunks_of(text: bytes) -> Callable[[int, object], memoryview]:
    """A read callback serving `text` through the one chunk buffer (the
    lexer reads only the latest chunk, and one parse runs at a time)."""
    view = memoryview(text)

    def read(offset: int, _point: object) -> memoryview:
        piece = view[offset : offset + _CHUNK_BYTES]
        size = len(piece)
        _chunk_buffer[:size] = piece
        return _chunk_buffer[:size]

    return read


def _edited(like: ParsedFile | None, text: bytes) -> Tree | None:
    """A copy of `like`'s tree edited into a tree of `text`: the bytes
    between their common prefix and common suffix replaced (one edit
    spanning every hunk; what lies between hunks is re-parsed, still a
    fraction of the file)."""
    if like is None or like.not_parsed or not like.sanitized:
        return None
    old = like.sanitized
    start = _common_prefix(old, text)
    shortest = min(len(old), len(text))
    tail = min(_common_prefix(old[::-1], text[::-1]), shortest - start)
    old_end, new_end = len(old) - tail, len(text) - tail
    tree = like.tree.copy()
    tree.edit(
        start, old_end, new_end, _point(old, start), _point(old, old_end), _point(text, new_end)
    )
    return tree


def _common_prefix(a: bytes, b: bytes) -> int:
    """len(os.path.commonprefix([a, b])), by bisection: slices compared in
    C, not a Python loop over 75 KB."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _point(text: bytes, offset: int) -> Point:
    row = text.count(b"\n", 0, offset)
    return Point(row, offset - (text.rfind(b"\n", 0, offset) + 1))


def _parse(image: Image, like: ParsedFile | None = None) -> ParsedFile:
    if len(image.text) > MAX_PARSE_BYTES:
        parsed = ParsedFile(image=image, tree=_parser().parse(b""))
        parsed.not_parsed = (
            f"{_mib(len(image.text))} of text, over the {_mib(MAX_PARSE_BYTES)} parse limit"
        )
        return parsed
    text = sanitize(image.text)
    tree = _parse_text(_parser(), text, _edited(like, text))
    parsed = ParsedFile(image=image, tree=tree, sanitized=text)
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
    # Garbage can make thousands of chunks: every lookup below is a
    # bisection or a table, never a scan of the file or of all functions.
    ends = [m.end() for m in _FUNCTION_END_RE.finditer(text)]
    newlines = [m.start() for m in re.finditer(b"\n", text)]
    recovery = _Recovery(parsed)
    for span_start, span_end in spans:
        first = bisect.bisect_right(ends, span_start)
        chunk_start = ends[first - 1] if first else 0
        last = bisect.bisect_right(ends, span_end + 1)
        for end in [*ends[first:last], span_end]:
            if end <= chunk_start:
                continue
            budget.check()
            _parse_chunk(recovery, text, newlines, chunk_start, end)
            chunk_start = end
    parsed.functions = recovery.functions()


class _Recovery:
    """The functions of a file while chunks are re-parsed: a function found
    again in a chunk replaces the whole-file parse's half-recovered ones of
    that name (those not HIGH), and a chunk skips what is already known."""

    def __init__(self, parsed: ParsedFile) -> None:
        self.parsed = parsed
        self.found: list[Function] = list(parsed.functions)
        self.dropped: set[int] = set()
        self.known: Counter[tuple[int, str]] = Counter((f.start_row, f.name) for f in self.found)
        self.weak: dict[str, list[int]] = {}
        for position, function in enumerate(self.found):
            if function.confidence != Confidence.HIGH:
                self.weak.setdefault(function.name, []).append(position)

    def add(self, function: Function) -> None:
        for position in self.weak.pop(function.name, []):
            self.dropped.add(position)
            self.known[(self.found[position].start_row, function.name)] -= 1
        self.weak[function.name] = [len(self.found)]
        self.found.append(function)

    def settle(self, added: list[Function]) -> None:
        # A chunk's own functions count as known from the next chunk on.
        self.known.update((f.start_row, f.name) for f in added)

    def functions(self) -> list[Function]:
        return [f for n, f in enumerate(self.found) if n not in self.dropped]


def _parse_chunk(
    recovery: _Recovery, text: bytes, newlines: list[int], start: int, end: int
) -> None:
    chunk_range = Range(_point_at(newlines, start), _point_at(newlines, end), start, end)
    parser = Parser(C_LANGUAGE, included_ranges=[chunk_range])
    tree = _parse_text(parser, text)
    if not _function_nodes(tree.root_node) and _CONDITIONAL_RE.search(text, start, end):
        # `#ifdef` branches that each open a block with one shared `}`: read
        # the first branch only.
        tree = _parse_text(parser, _flattened(text, start, end))
    added = []
    for node in _function_nodes(tree.root_node):
        name = function_name(node)
        if name is None or recovery.known[(node.start_point.row, name)] > 0:
            continue
        function = Function(name, node, recovery.parsed.image, Confidence.LOW)
        recovery.add(function)
        added.append(function)
    recovery.settle(added)
    if added:
        recovery.parsed.extra_trees.append(tree)


_CONDITIONAL_RE = regex(rb"^[ \t]*#[ \t]*if", re.MULTILINE)
_DIRECTIVE_WORD_RE = regex(rb"^[ \t]*#[ \t]*(if|ifdef|ifndef|elif|else|endif)\b")


def _flattened(text: bytes, start: int, end: int) -> bytes:
    """The text with the conditional directives and every branch but the
    first blanked between `start` and `end`, offsets kept (only the chunk is
    rewritten: garbage can make thousands of chunks in one big file)."""
    buf = bytearray(text[start:end])
    branches: list[int] = []  # branch index at each nesting level
    position = 0
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
    return b"".join((text[:start], buf, text[end:]))


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _point_at(newlines: list[int], offset: int) -> Point:
    """Row and column of a byte offset, from the offsets of the newlines."""
    row = bisect.bisect_left(newlines, offset)
    return Point(row, offset - (newlines[row - 1] + 1 if row else 0))
