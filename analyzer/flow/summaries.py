"""What a callee does, read from the tree under review.

A rule that meets `helper(pte)` asks the helper's summary: does it
dereference its first parameter before testing it, may it return NULL or
an `ERR_PTR()`, what does it call (transitively, to a depth)?  Summaries are
computed by running the same analyses on the callee, two call levels deep
by default, and kept per content (blob id) and name.

A callee is looked for in the file under review, then in the headers that
file includes from the tree (`include/linux/...`, a local `"internal.h"`).
Functions defined in other `.c` files are not looked for: a summary that is
not found is None, and rules treat an unknown callee as doing nothing they
could complain about.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import cfg
from analyzer.flow import events as ev
from analyzer.flow.nullness import Nullness, risky_uses
from analyzer.flow.values import ERR, NULL, PTR, Analysis, Kinds
from analyzer.images import Image
from analyzer.parsing import Function, ParsedFile, parse
from analyzer.rule import ReviewContext

DEPTH = 2
# Calls that dereference every pointer they are given, whatever the tree.
KNOWN_DEREFERENCES = re.compile(
    r"ptep_\w+|huge_ptep_\w+|pte_unmap(?:_unlock)?|set_ptes?|set_pte_at|pte_clear|"
    r"pmdp_\w+|set_pmd_at|pmd_clear|update_mmu_(?:cache|tlb)(?:_range)?|folio_pte_batch|"
    r"clear_(?:not_present_)?full_ptes"
)
_INCLUDE_RE = re.compile(rb'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


@dataclass(frozen=True)
class Summary:
    name: str
    parameters: tuple[str, ...]
    # Names it calls itself.
    calls: frozenset[str]
    # What it dereferences of its parameters (itself or through its
    # callees) on some path before testing it for NULL: (index, "") for the
    # parameter, (index, "->pte") for a field of what it points to.
    dereferences: frozenset[tuple[int, str]]
    # Parameters it tests for NULL.
    tests: frozenset[int]
    # What a pointer it returns may be ({null, err, ptr}); None when it does
    # not return a pointer.
    returns: Kinds | None
    # For a helper whose body is `return <condition>;`: the condition.
    predicate: Node | None = None

    def dereferenced(self, index: int) -> tuple[str, ...]:
        return tuple(suffix for i, suffix in self.dereferences if i == index)


class Summaries:
    """The summaries one review context can find, computed on demand."""

    def __init__(self, context: ReviewContext, file: ParsedFile | None, path: str = "") -> None:
        self.context = context
        self.file = file
        self.directory = path.rpartition("/")[0]
        self._headers: list[ParsedFile] | None = None

    def definition(self, name: str) -> Function | None:
        if self.file is not None:
            found = _first_named(self.file, name)
            if found is not None:
                return found
        for header in self._included():
            found = _first_named(header, name)
            if found is not None:
                return found
        return None

    def _included(self) -> list[ParsedFile]:
        if self._headers is None:
            self._headers = []
            if self.file is not None and self.context.has_tree:
                for kind, path in _INCLUDE_RE.findall(self.file.image.text[:20000]):
                    parsed = self._read_header(kind, path.decode("utf-8", "replace"))
                    if parsed is not None:
                        self._headers.append(parsed)
        return self._headers

    def _read_header(self, kind: bytes, path: str) -> ParsedFile | None:
        if kind == b"<":
            path = f"include/{path}"
        elif self.directory:
            path = f"{self.directory}/{path}"
        # One read per header and review context: every function of a file
        # (and every rule) asks for the same headers.
        headers = _headers_read.setdefault(self.context, {})
        if path not in headers:
            text = self.context.read_file(path)
            headers[path] = parse(Image.of(text)) if text is not None else None
        return headers[path]

    def of(self, name: str, depth: int = DEPTH) -> Summary | None:
        function = self.definition(name)
        if function is None or function.body is None:
            return None
        key = (function.image.blob_id, function.node.start_byte, depth)
        cached = _cache.get(key)
        if cached is None:
            if len(_cache) > 4096:
                _cache.clear()
            _cache[key] = _PENDING  # recursion guard
            cached = _cache[key] = self._summarise(function, depth)
        return None if cached is _PENDING else cached  # type: ignore[return-value]

    def reaches(self, name: str, targets: Iterable[str], depth: int = DEPTH) -> bool:
        """Does `name` call one of `targets`, itself or through the
        functions it calls, within `depth` levels?"""
        wanted = frozenset(targets)
        return self._reaches(name, wanted, depth, set())

    def _reaches(self, name: str, wanted: frozenset[str], depth: int, seen: set[str]) -> bool:
        if depth <= 0 or name in seen:
            return False
        seen.add(name)
        summary = self.of(name, 1)
        if summary is None:
            return False
        if summary.calls & wanted:
            return True
        return any(self._reaches(callee, wanted, depth - 1, seen) for callee in summary.calls)

    def _summarise(self, function: Function, depth: int) -> Summary:
        assert function.body is not None
        parameters = _parameters(function.node)
        graph = cfg.build(function.body, function.image.text)
        calls = frozenset(
            n for n in (syntax.call_name(c) for c in syntax.calls(function.body)) if n
        )
        named = frozenset(p for p in parameters if p)
        tracker = Nullness({}, self._returns_for(depth), parameters=named)
        analysis = Analysis(graph, tracker, {p: frozenset({NULL, PTR}) for p in named})
        index = {name: i for i, name in enumerate(parameters) if name}

        def dereferences(callee: str, argument: int) -> tuple[str, ...]:
            if KNOWN_DEREFERENCES.fullmatch(callee):
                return ("",)
            if depth <= 1 or callee == function.name:
                return ()
            inner = self.of(callee, depth - 1)
            return inner.dereferenced(argument) if inner is not None else ()

        dereferenced: set[tuple[int, str]] = set()
        for use in risky_uses(analysis, dereferences):
            name = ev.place(use.pointer)
            if name is None:
                continue
            root, arrow, rest = name.partition("->")
            if root in index:
                dereferenced.add((index[root], arrow + rest))
        tested = {index[name] for name in _null_tested(function.body) if name in index}
        return Summary(
            function.name,
            tuple(parameters),
            calls,
            frozenset(dereferenced),
            frozenset(tested),
            self._returned(function, analysis) if _returns_pointer(function.node) else None,
            _predicate(function.body),
        )

    def _returns_for(self, depth: int) -> Callable[[str], Kinds | None] | None:
        if depth <= 1:
            return None

        def returns(name: str) -> Kinds | None:
            summary = self.of(name, depth - 1)
            return summary.returns if summary is not None else None

        return returns

    def _returned(self, function: Function, analysis: Analysis) -> Kinds:
        found: set[str] = set()
        for _point, event, state, results in analysis.states():
            if not isinstance(event, ev.Return) or event.value is None:
                continue
            value = ev.strip(event.value)
            if value.type == "null" or syntax.text(value) in ("NULL", "0"):
                found.add(NULL)
                continue
            if value.type == "call_expression" and syntax.call_name(value) in (
                "ERR_PTR",
                "ERR_CAST",
            ):
                found.add(ERR)
                continue
            values = analysis.value_of(state, value, results)
            if values:
                kinds = state.kinds_of_values(values)
                found |= kinds & {NULL, PTR, ERR}
            else:
                found.add(PTR)
        return frozenset(found)


_PENDING = object()
_headers_read: weakref.WeakKeyDictionary[ReviewContext, dict[str, ParsedFile | None]] = (
    weakref.WeakKeyDictionary()
)
_cache: dict[tuple[str, int, int], object] = {}


def _first_named(file: ParsedFile, name: str) -> Function | None:
    for function in file.functions:
        if function.name == name:
            return function
    return None


def _parameters(definition: Node) -> list[str]:
    declarator = definition.child_by_field_name("declarator")
    while declarator is not None and declarator.type != "function_declarator":
        declarator = declarator.child_by_field_name("declarator")
    parameters = declarator.child_by_field_name("parameters") if declarator else None
    names = []
    for parameter in parameters.named_children if parameters is not None else []:
        if parameter.type != "parameter_declaration":
            continue
        inner = parameter.child_by_field_name("declarator")
        while inner is not None and inner.type != "identifier":
            inner = inner.child_by_field_name("declarator")
        names.append(syntax.text(inner))
    return names


def _returns_pointer(definition: Node) -> bool:
    declarator = definition.child_by_field_name("declarator")
    return declarator is not None and declarator.type == "pointer_declarator"


def _predicate(body: Node) -> Node | None:
    """`return <condition>;` as the whole body: the condition."""
    statements = [c for c in body.named_children if c.type != "comment"]
    if len(statements) != 1 or statements[0].type != "return_statement":
        return None
    return next((c for c in statements[0].named_children if c.type != "comment"), None)


def _null_tested(body: Node) -> set[str]:
    """Names tested against NULL somewhere (`!p`, `p == NULL`, `if (p)`)."""
    found = set()
    for node in syntax.walk(body):
        if (
            node.type == "unary_expression"
            and syntax.text(node.child_by_field_name("operator")) == "!"
        ):
            name = ev.place(node.child_by_field_name("argument"))
            if name:
                found.add(name)
        elif node.type == "binary_expression" and syntax.text(
            node.child_by_field_name("operator")
        ) in (
            "==",
            "!=",
        ):
            sides = [node.child_by_field_name("left"), node.child_by_field_name("right")]
            if any(s is not None and syntax.text(s) in ("NULL", "0") for s in sides):
                for side in sides:
                    name = ev.place(side)
                    if name:
                        found.add(name)
    return found
