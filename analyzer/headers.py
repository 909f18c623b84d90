"""Function definitions read out of a header one at a time.

A callee's summary needs one inline function of include/linux/mm.h, not the
4,000 lines around it, and a cold review pays for every header it parses
whole (mm.h alone costs more than the rest of a small patch's review).  So
the definition's bytes are found with a regex and brace matching, sanitized
and parsed alone, through tree-sitter's included ranges: rows and byte
offsets in the tree are the header's own.  Where that does not give one
clean definition (a head the line walk misses, `#ifdef` branches inside),
the header is parsed whole, as before.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from tree_sitter import Parser, Point, Range

from analyzer import cache, parsing, syntax
from analyzer.images import Image
from analyzer.parsing import (
    C_LANGUAGE,
    Function,
    ParsedFile,
    function_name,
    parse,
    sanitize,
)
from analyzer.patterns import regex
from analyzer.rule import Confidence

# A function definition's head: `name(...)` followed by `{` (a parameter
# list is short: bounded, so that garbage costs linear time).
_MAX_PARAMETER_BYTES = 512
_DEFINITION_RE = regex(rb"\b(\w+)\s*\([^;{}]{0,%d}\)\s*\{" % _MAX_PARAMETER_BYTES)
# The end of one, found first: the scan for `)\s*{` is several times faster
# than trying _DEFINITION_RE at every word, and the names are then looked for
# only in the text between it and the `;`, `{` or `}` before it.
_BODY_OPEN_RE = regex(rb"\)\s*\{")
_NAME_PAREN_RE = regex(rb"\b(\w+)\s*\(")
# A header this big is generated, not a helper's home: not indexed.
MAX_INDEXED_BYTES = 1 << 20
_FUNCTION_END_RE = regex(rb"^}", re.MULTILINE)
# A line that ends the item before a definition's head.
_ENDS_ITEM = (b";", b"}", b"*/", b"{", b"\\", b":", b",")
_HEAD_LINES = 4
# What a brace scan looks at; and how far (mm.h's longest definition is
# under 4 KiB).
_BODY_BYTES = regex(rb"[{}\"'/]")
MAX_DEFINITION_BYTES = 64 << 10
# Which parse a definition came from, in ParsedFile.memo.
DEFINITIONS = "header definitions"


class HeaderDefinitions:
    """The definitions of one header (one blob), parsed on demand.  Its text
    is read only when a definition in it is wanted, or when its heads are
    not on disk yet: `read` says how, for the caller of the moment."""

    def __init__(self, blob_id: str, read: Callable[[], bytes | None]) -> None:
        self.blob_id = blob_id
        self.read = read
        self._image: Image | None = None
        self._heads: dict[str, list[int]] | None = None
        self._found: dict[str, tuple[Function, ParsedFile] | None] = {}
        self._kept: dict[str, dict[str, list[object] | None]] | None = None

    @property
    def image(self) -> Image:
        if self._image is None:
            text = self.read()
            if text is None:  # the tree named a blob it cannot give: nothing kept
                return Image.of(b"")
            self._image = Image(text=text, blob_id=self.blob_id)
            self.read = _read_nothing  # it held the caller's review context
        return self._image

    def defines(self, name: str) -> bool:
        """Does the header seem to define `name` (a look before any parse)?"""
        return name in self._by_name()

    def names(self) -> Iterable[str]:
        """Every name the header seems to define."""
        return self._by_name().keys()

    def _by_name(self) -> dict[str, list[int]]:
        if self._heads is None:
            self._heads = _heads_of(self)
        return self._heads

    def function(self, name: str) -> tuple[Function, ParsedFile] | None:
        """The first definition of `name`, and the parse holding it."""
        if name in self._found:
            return self._found[name]
        found = None
        heads = self._by_name().get(name)
        if heads:
            found = self._alone(name, heads[0])
            if found is None:
                whole = parse(self.image)
                function = next((f for f in whole.functions if f.name == name), None)
                found = (function, whole) if function is not None else None
        self._found[name] = found
        return found

    def kept(
        self,
        name: str,
        key: str,
        compute: Callable[[Function], object],
        valid: Callable[[object], bool],
    ) -> list[object] | None:
        """[compute(definition)] for the definition function() finds of
        `name`, None when it finds none.  `compute` gives what JSON holds:
        the answer is kept on disk by blob id under `key` (`valid` checks
        what is read back), and the definition is parsed only when the
        first run asks, or when more than kept answers is wanted."""
        if self._kept is None:
            self._kept = _kept_facts(self.blob_id)
        answers = self._kept.setdefault(key, {})
        known = answers.get(name, _NOT_KEPT)
        if known is None or (isinstance(known, list) and len(known) == 1 and valid(known[0])):
            return known
        found = self.function(name)
        answers[name] = known = None if found is None else [compute(found[0])]
        if self.image.blob_id == self.blob_id:
            cache.store(_kept_namespace(), self.blob_id, self._kept)
        return known

    def _alone(self, name: str, at: int) -> tuple[Function, ParsedFile] | None:
        text = self.image.text
        start = _head_start(text, at)
        brace = _DEFINITION_RE.match(text, at)
        if brace is None:
            return None
        end = _body_end(text, brace.end() - 1)
        if end is None:
            return None
        source = text[:start] + sanitize(text[start:end]) + text[end:]
        span = Range(_point(text, start), _point(text, end), start, end)
        tree = Parser(C_LANGUAGE, included_ranges=[span]).parse(source)
        root = tree.root_node
        nodes = [c for c in root.children if c.type == "function_definition"]
        if root.has_error or len(nodes) != 1 or function_name(nodes[0]) != name:
            return None
        confidence = Confidence.LOW if self.image.partial else Confidence.HIGH
        function = Function(name, nodes[0], self.image, confidence)
        parsed = ParsedFile(image=self.image, tree=tree, functions=[function])
        parsed.memo[DEFINITIONS] = self
        return function, parsed


# A header's heads are kept on disk by blob id: a cold review looks up
# callees in every header its file includes (24 for mm/khugepaged.c, 440 KB
# of text of which four headers, 170 KB, define one), and reading back what
# an earlier run found spares reading the other twenty out of git at all.
_CACHE_NAMESPACE = "definition-heads-" + cache.code_digest(__file__)


def _heads_of(header: HeaderDefinitions) -> dict[str, list[int]]:
    stored = cache.load(_CACHE_NAMESPACE, header.blob_id)
    if isinstance(stored, dict) and all(
        isinstance(at, list) and all(type(a) is int for a in at) for at in stored.values()
    ):
        return stored
    image = header.image
    heads = _definition_heads(image.text)
    if image.blob_id == header.blob_id:
        cache.store(_CACHE_NAMESPACE, header.blob_id, heads)
    return heads


# What callers ask of a header's definitions, kept the same way.  A patch
# that stops calling a helper is asked whether the helper (or its callees,
# three levels down) made a check, the lock analysis asks what each callee
# does to the locks it is handed: a dozen inline functions of the headers
# parsed on every cold run for answers that depend only on their text, and
# on the code that reads them (all of the flow layer's, to be safe).
@functools.cache
def _kept_namespace() -> str:
    flow = Path(__file__).parent / "flow"
    sources = [__file__, parsing.__file__, syntax.__file__, *sorted(map(str, flow.glob("*.py")))]
    return "definition-facts-" + cache.code_digest(*sources)


_NOT_KEPT: object = object()


def _kept_facts(blob_id: str) -> dict[str, dict[str, list[object] | None]]:
    stored = cache.load(_kept_namespace(), blob_id)
    if isinstance(stored, dict) and all(
        isinstance(answers, dict)
        and all(a is None or isinstance(a, list) for a in answers.values())
        for answers in stored.values()
    ):
        return stored
    return {}


def _definition_heads(text: bytes) -> dict[str, list[int]]:
    """Where each name heads a definition (every `_DEFINITION_RE` match whose
    name's line starts in column 0, overlapping ones included: a match from
    a word in a comment can run on to the next definition's brace)."""
    heads: dict[str, list[int]] = {}
    if len(text) > MAX_INDEXED_BYTES:
        return heads
    after_previous = line = scanned = 0
    for body in _BODY_OPEN_RE.finditer(text):
        close = body.start()
        # A parameter list holds no `;`, `{` or `}`.
        start = 1 + max(
            text.rfind(b";", after_previous, close),
            text.rfind(b"{", after_previous, close),
            text.rfind(b"}", after_previous, close),
            after_previous - 1,
        )
        after_previous = body.end()
        for match in _NAME_PAREN_RE.finditer(text, start, close):
            if close - match.end() > _MAX_PARAMETER_BYTES:
                continue
            # Definitions start in column 0 (`if (unlikely(x)) {` in a body
            # is indented), and not in a macro.  (The line's start is looked
            # for from the last name on: a long line is scanned once.)
            newline = text.rfind(b"\n", scanned, match.start(1))
            line = newline + 1 if newline >= 0 else line
            scanned = match.start(1)
            if text[line : line + 1] in (b" ", b"\t", b"#"):
                continue
            heads.setdefault(match.group(1).decode("ascii", "replace"), []).append(match.start(1))
    return heads


def _head_start(text: bytes, at: int) -> int:
    """Where the definition whose name is at `at` begins: its line, and the
    lines above it that carry its return type and qualifiers."""
    start = text.rfind(b"\n", 0, at) + 1
    for _ in range(_HEAD_LINES):
        if start == 0:
            break
        above = text.rfind(b"\n", 0, start - 1) + 1
        line = text[above : start - 1].strip()
        if not line or line.startswith((b"#", b"//", b"*", b"/*")) or line.endswith(_ENDS_ITEM):
            break
        start = above
    return start


def _body_end(text: bytes, brace: int) -> int | None:
    """Just past the `}` closing the body opened at `brace`: the matching
    brace (comments, strings and characters skipped), or the first `}` in
    column 0 when that comes first (braces unbalanced by `#ifdef` branches).
    None past MAX_DEFINITION_BYTES: such text is parsed whole, under the
    patch's time budget (a patch may bring a header of garbage)."""
    column_zero = _FUNCTION_END_RE.search(text, brace, brace + MAX_DEFINITION_BYTES)
    limit = column_zero.end() if column_zero is not None else brace + MAX_DEFINITION_BYTES
    depth = 0
    index = brace
    while (found := _BODY_BYTES.search(text, index, limit)) is not None:
        index = found.start()
        byte = text[index]
        if byte == 0x7B:  # {
            depth += 1
        elif byte == 0x7D:  # }
            depth -= 1
            if depth == 0:
                return index + 1
        elif text[index + 1 : index + 2] == b"*":  # /* ... */
            close = text.find(b"*/", index + 2, limit)
            index = limit if close < 0 else close + 1
        elif text[index + 1 : index + 2] == b"/":  # // ...
            close = text.find(b"\n", index, limit)
            index = limit if close < 0 else close
        elif byte in (0x22, 0x27):  # "..." or '...'
            index = _literal_end(text, index, limit)
        index += 1
    return column_zero.end() if column_zero is not None else None


def _literal_end(text: bytes, opening: int, limit: int) -> int:
    quote = text[opening]
    index = opening + 1
    while index < limit and text[index] not in (quote, 0x0A):
        index += 2 if text[index] == 0x5C else 1  # a backslash escapes the next byte
    return index


def _point(text: bytes, offset: int) -> Point:
    row = text.count(b"\n", 0, offset)
    return Point(row, offset - (text.rfind(b"\n", 0, offset) + 1))


_by_blob: OrderedDict[str, HeaderDefinitions] = OrderedDict()
_KEPT_HEADERS = 64


def _read_nothing() -> bytes | None:
    return None


def definitions(blob_id: str, read: Callable[[], bytes | None]) -> HeaderDefinitions:
    """The definitions of a header, one object per content; `read` gives
    its text if it is needed now (the caller's tree: an earlier caller's
    may be gone)."""
    found = _by_blob.get(blob_id)
    if found is None:
        found = _by_blob[blob_id] = HeaderDefinitions(blob_id, read)
        while len(_by_blob) > _KEPT_HEADERS:
            _by_blob.popitem(last=False)
    else:
        found.read = read
        _by_blob.move_to_end(blob_id)
    return found
