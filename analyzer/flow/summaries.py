"""What a callee does, read from the tree under review.

A rule that meets `helper(pte)` asks the helper's summary: does it
dereference its first parameter before testing it, may it return NULL or
an `ERR_PTR()`, what does it call (transitively, to a depth)?  The cheap
facts (what it calls, whether its body only returns a condition) come from
its syntax tree; the others are computed by running the flow layer's own
analyses on the callee, two call levels deep by default, when first asked,
and are kept per content (blob id) and name.

A callee is looked for in the file under review, then in the headers that
file includes from the tree (`include/linux/...`, a local `"internal.h"`);
a header is parsed only if a definition of that name appears in it.
Functions defined in other `.c` files are not looked for: a summary that is
not found is None, and rules treat an unknown callee as doing nothing they
could complain about.

An answer about a header's definition that JSON can hold (what it calls,
what it does to the locks it is handed, whether it names a re-validation)
is asked through `kept()`: it is kept on disk by the header's blob id, so a
later run answers it without parsing the definition, or reading the header.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from tree_sitter import Node

from analyzer import cache, syntax
from analyzer.flow import cfg
from analyzer.flow import events as ev
from analyzer.flow.nullness import Nullness, risky_uses
from analyzer.flow.values import ERR, NULL, PTR, Analysis, Kinds
from analyzer.headers import DEFINITIONS, HeaderDefinitions, definitions
from analyzer.parsing import Function, ParsedFile
from analyzer.patterns import regex
from analyzer.rule import ReviewContext

if TYPE_CHECKING:
    from analyzer.flow import FunctionFlow

T = TypeVar("T")

DEPTH = 2
# Calls that dereference every pointer they are given, whatever the tree.
KNOWN_DEREFERENCES = regex(
    r"ptep_\w+|huge_ptep_\w+|pte_unmap(?:_unlock)?|set_ptes?|set_pte_at|pte_clear|"
    r"pmdp_\w+|set_pmd_at|pmd_clear|update_mmu_(?:cache|tlb)(?:_range)?|folio_pte_batch|"
    r"clear_(?:not_present_)?full_ptes"
)
_INCLUDE_RE = regex(rb'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


class Summary:
    """One function of the tree, as its callers see it."""

    def __init__(self, summaries: Summaries, function: Function, depth: int) -> None:
        assert function.body is not None
        self._summaries = summaries
        self.function = function
        self.name = function.name
        self.depth = depth
        self.parameters = tuple(parameters_of(function.node))
        # Names it calls itself.
        self.calls = _calls_of(function)
        # For a helper whose body is `return <condition>;`: the condition.
        self.predicate = _predicate(function.body)

    @cached_property
    def _analysis(self) -> Analysis:
        function = self.function
        assert function.body is not None
        graph = cfg.build(function.body, function.image.text)
        named = frozenset(p for p in self.parameters if p)
        tracker = Nullness({}, self._summaries.returns_for(self.depth), parameters=named)
        return Analysis(graph, tracker, {p: frozenset({NULL, PTR}) for p in named})

    @cached_property
    def dereferences(self) -> frozenset[tuple[int, str]]:
        """What it dereferences of its parameters (itself or through its
        callees) on some path before testing it for NULL: (index, "") for
        the parameter, (index, "->pte") for a field of what it points to."""
        index = {name: i for i, name in enumerate(self.parameters) if name}

        def dereferenced(callee: str, argument: int) -> tuple[str, ...]:
            if KNOWN_DEREFERENCES.fullmatch(callee):
                return ("",)
            if self.depth <= 1 or callee == self.name:
                return ()
            inner = self._summaries.of(callee, self.depth - 1)
            return inner.dereferenced(argument) if inner is not None else ()

        found: set[tuple[int, str]] = set()
        for use in risky_uses(self._analysis, dereferenced):
            name = ev.place(use.pointer)
            if name is None:
                continue
            root, arrow, rest = name.partition("->")
            if root in index:
                found.add((index[root], arrow + rest))
        return frozenset(found)

    def dereferenced(self, index: int) -> tuple[str, ...]:
        return tuple(suffix for i, suffix in self.dereferences if i == index)

    @cached_property
    def returns(self) -> Kinds | None:
        """What a pointer it returns may be ({null, err, ptr}); None when it
        does not return a pointer."""
        if not _returns_pointer(self.function.node):
            return None
        analysis = self._analysis
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
                found |= state.kinds_of_values(values) & {NULL, PTR, ERR}
            else:
                found.add(PTR)
        return frozenset(found)


class Summaries:
    """The summaries one review context can find, computed on demand."""

    def __init__(self, context: ReviewContext, file: ParsedFile | None, path: str = "") -> None:
        self.context = context
        self.file = file
        self.path = path
        self.directory = path.rpartition("/")[0]
        self._headers: list[tuple[str, str]] | None = None
        self._located: dict[str, tuple[Function, ParsedFile, str] | None] = {}
        # Summaries and facts hold nodes of one parse and read callees
        # through one context: they live as long as this object, never
        # across a parse cache eviction or a later patch's tree.
        self._summaries: dict[tuple[str, int, int], Summary] = {}
        self._facts: dict[tuple[str, int, str], object] = {}
        self._reached: dict[tuple[str, frozenset[str], int], bool] = {}
        self._kept: dict[str, dict[str, object | None]] = {}
        self._definer_index: dict[str, list[int]] | None = None

    def definition(self, name: str) -> Function | None:
        found = self.located(name)
        return found[0] if found is not None else None

    def located(self, name: str) -> tuple[Function, ParsedFile, str] | None:
        """The definition of `name`, the parsed file holding it, and its path."""
        if name in self._located:
            return self._located[name]
        found = self._own(name)
        if found is None and self.context.has_tree:
            for path, header in self._defining_headers(name):
                if (hit := header.function(name)) is not None:
                    found = (hit[0], hit[1], path)
                    break
        self._located[name] = found
        return found

    def _defining_headers(self, name: str) -> Iterator[tuple[str, HeaderDefinitions]]:
        """The included headers that seem to define `name`, in include order."""
        if self.file is None:
            return
        headers = self._included_headers()
        for index in self._definers().get(name, ()):
            path, blob_id = headers[index]
            yield path, definitions(blob_id, _reader(self.context, path))

    def _definers(self) -> dict[str, list[int]]:
        """Which of the included headers define each name, by index.  Rules
        ask hundreds of names, most defined in no header: one pass over the
        headers' definition heads (a few thousand names), kept per review
        context for every file including the same headers."""
        if self._definer_index is None:
            headers = tuple(self._included_headers())
            known = self.context.memo.setdefault("header definers", {})
            index = known.get(headers)
            if index is None:
                index = known[headers] = {}
                for at, (path, blob_id) in enumerate(headers):
                    for name in definitions(blob_id, _reader(self.context, path)).names():
                        index.setdefault(name, []).append(at)
            self._definer_index = index
        return self._definer_index

    def _own(self, name: str) -> tuple[Function, ParsedFile, str] | None:
        """The definition of `name` in the file itself."""
        if self.file is None:
            return None
        function = _functions_of(self.file).get(name)
        if function is not None:
            return (function, self.file, self.path)
        # A definition read out of a header alone: its siblings are read
        # out of the same header.
        own = self.file.memo.get(DEFINITIONS)
        sibling = own.function(name) if isinstance(own, HeaderDefinitions) else None
        return (sibling[0], sibling[1], self.path) if sibling is not None else None

    def _included_headers(self) -> list[tuple[str, str]]:
        """The headers the file includes that the tree has: (path, blob id)."""
        if self._headers is None:
            self._headers = []
            assert self.file is not None
            for kind, path in _INCLUDE_RE.findall(self.file.image.text[:20000]):
                name = path.decode("utf-8", "replace")
                if kind == b"<":
                    full = f"include/{name}"
                else:
                    full = f"{self.directory}/{name}" if self.directory else name
                # One look per header and review context: every file of a
                # series (and every rule) asks for the same headers.
                blobs = self.context.memo.setdefault("header blobs", {})
                if full not in blobs:
                    blobs[full] = self.context.blob_id(full)
                if blobs[full] is not None:
                    self._headers.append((full, blobs[full]))
        return self._headers

    def of(self, name: str, depth: int = DEPTH) -> Summary | None:
        found = self.located(name)
        if found is None or found[0].body is None:
            return None
        function = found[0]
        key = (function.image.blob_id, function.node.start_byte, depth)
        summary = self._summaries.get(key)
        if summary is None:
            summary = self._summaries[key] = Summary(self, function, depth)
        return summary

    def calls(self, name: str) -> frozenset[str] | None:
        """What function `name` calls itself (None: not found)."""
        found = self.kept(name, "calls", _sorted_calls, _names)
        return frozenset(found) if isinstance(found, list) else None

    def kept(
        self,
        name: str,
        key: str,
        compute: Callable[[Function], object],
        valid: Callable[[object], bool],
    ) -> object | None:
        """compute(definition) for the definition of `name` (None: not
        found).  For one in a header it is kept on disk by the header's
        content (see HeaderDefinitions.kept): `compute` gives what JSON
        holds, and `valid` checks what is read back."""
        if name in self._located or self._own(name) is not None or not self.context.has_tree:
            found = self.located(name)
            return compute(found[0]) if found is not None else None
        # What `compute` answers is its own module's code too (a rule's).
        key = f"{key} {_source_digest(compute.__code__.co_filename)}"
        answers = self._kept.setdefault(key, {})
        if name not in answers:
            answers[name] = None
            # The header located() would find, asked for what is kept of
            # the definition rather than for the definition.
            for _path, header in self._defining_headers(name):
                if known := header.kept(name, key, compute, valid):
                    answers[name] = known[0]
                    break
        return answers[name]

    def reaches(self, name: str, targets: Iterable[str], depth: int = DEPTH) -> bool:
        """Does `name` call one of `targets`, itself or through the
        functions it calls, within `depth` levels?  (Syntax only, but an
        analysis asks it of every call it passes: kept.)"""
        key = (name, frozenset(targets), depth)
        found = self._reached.get(key)
        if found is None:
            found = self._reached[key] = self._reaches(name, key[1], depth, set())
        return found

    def _reaches(self, name: str, wanted: frozenset[str], depth: int, seen: set[str]) -> bool:
        if depth <= 0 or name in seen:
            return False
        seen.add(name)
        calls = self.calls(name)
        if calls is None:
            return False
        if calls & wanted:
            return True
        return any(self._reaches(callee, wanted, depth - 1, seen) for callee in calls)

    def returns_for(self, depth: int) -> Callable[[str], Kinds | None] | None:
        """What the helpers a summary at `depth` calls return, one level down."""
        if depth <= 1:
            return None

        def returns(name: str) -> Kinds | None:
            summary = self.of(name, depth - 1)
            return summary.returns if summary is not None else None

        return returns

    def fact(
        self, name: str, key: str, compute: Callable[[FunctionFlow, int], T], depth: int = DEPTH
    ) -> T | None:
        """A rule's own question about callee `name`, answered on the
        callee's flow (`compute(flow, depth)`) and kept per content; None
        when the callee is not found."""
        found = self.located(name)
        if found is None:
            return None
        function, parsed, path = found
        if function.body is None:
            return None
        cache_key = (function.image.blob_id, function.node.start_byte, f"{key}:{depth}")
        facts = self._facts
        if cache_key in facts:
            return facts[cache_key]  # type: ignore[return-value]
        facts[cache_key] = None  # a recursive call finds nothing
        from analyzer.flow import FunctionFlow

        value = compute(FunctionFlow(function, parsed, self.context, path), depth)
        facts[cache_key] = value
        return value


_calls: dict[tuple[str, int], frozenset[str]] = {}


def _reader(context: ReviewContext, path: str) -> Callable[[], bytes | None]:
    """`path` as `context` reads it, for a header object kept across
    patches: held weakly, or each kept header would keep alive the review
    context of the patch that last asked for it, with all its analyses (20
    MiB and more over a 64-patch series)."""
    alive = weakref.ref(context)

    def read() -> bytes | None:
        found = alive()
        return found.read_file(path) if found is not None else None

    return read


def _functions_of(file: ParsedFile) -> dict[str, Function]:
    """A file's functions by name (the first definition of each), kept
    with the parse (whose nodes they are)."""
    found = file.memo.get("functions by name")
    if found is None:
        found = {}
        for function in file.functions:
            found.setdefault(function.name, function)
        file.memo["functions by name"] = found
    return found


def _calls_of(function: Function) -> frozenset[str]:
    key = (function.image.blob_id, function.node.start_byte)
    found = _calls.get(key)
    if found is None:
        if len(_calls) > 8192:
            _calls.clear()
        body = function.body
        names = (syntax.call_name(c) for c in syntax.calls(body)) if body is not None else ()
        found = _calls[key] = frozenset(n for n in names if n)
    return found


@functools.cache
def _source_digest(path: str) -> str:
    return cache.code_digest(path)


def _sorted_calls(function: Function) -> list[str] | None:
    return sorted(_calls_of(function)) if function.body is not None else None


def _names(known: object) -> bool:
    return known is None or (isinstance(known, list) and all(type(n) is str for n in known))


def parameters_of(definition: Node) -> list[str]:
    """The names of a function definition's parameters ("" for one unnamed)."""
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
