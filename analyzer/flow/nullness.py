"""Pointers that may be NULL or an ERR_PTR(), along paths.

A `Nullness` tracker follows the values returned by the calls it is given
(and, with summaries, by functions of the tree that return NULL or an error
pointer), refines them by `if (!p)`, `p == NULL`, `IS_ERR(p)`,
`IS_ERR_OR_NULL(p)`, and reports where one is *used* while it may still be
NULL: dereferenced (`*p`, `p[i]`, `p->f`) or handed to a function that
dereferences it (a table of accessors, or the callee's summary).  Returning
it hands the check to the caller, and is not a use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow.values import ERR, NULL, PTR, Analysis, Kinds, State, Tracker, Value
from analyzer.records import Record

MAY_FAIL = frozenset({NULL, PTR})
MAY_ERR = frozenset({ERR, PTR})
MAY_EITHER = frozenset({NULL, ERR, PTR})

ERROR_TESTS: dict[str, tuple[Kinds, Kinds]] = {
    "IS_ERR": (frozenset({ERR}), frozenset({NULL, PTR})),
    "IS_ERR_OR_NULL": (frozenset({NULL, ERR}), frozenset({PTR})),
    "IS_ERR_VALUE": (frozenset({ERR}), frozenset({NULL, PTR})),
}


class Nullness(Tracker):
    name = "nullness"

    def __init__(
        self,
        sources: dict[str, Kinds],
        returns: Callable[[str], Kinds | None] | None = None,
        predicates: Callable[[str], tuple[Node, list[str]] | None] | None = None,
        parameters: frozenset[str] = frozenset(),
    ) -> None:
        # Calls whose result is tracked, with the kinds it may be; `returns`
        # and `predicates` answer for functions of the tree (their summaries).
        self.sources = sources
        self.returns = returns
        self.predicates = predicates
        # For a summary: what the parameters point to may be anything.
        self.parameters = parameters
        # Calls that hand their result back through a pointer, with what it is.
        self.out_parameters: dict[str, Kinds] = {}

    def default(self, name: str) -> Kinds | None:
        if self.parameters and "->" in name and name.split("->", 1)[0] in self.parameters:
            return MAY_FAIL
        return None

    def call(
        self, analysis: Analysis, state: State, call: ev.Call, results: dict[int, frozenset[Value]]
    ) -> None:
        name = call.name or ""
        kinds = self.sources.get(name)
        if kinds is None and self.returns is not None and name:
            kinds = self.returns(name)
        if kinds is None:
            return
        out = self.out_parameters.get(name)
        if out is not None:
            # `shmem_get_folio(inode, index, ..., &folio, sgp)`: the value goes
            # into the first argument handed by address.
            target = next((t for a in call.arguments if (t := ev.address_of(a)) is not None), None)
            if target is not None:
                analysis.bind(state, target, call.node.id, out)
            return
        results[call.node.id] = frozenset({analysis.new_value(state, call.node, kinds)})

    def tests(self, call: Node) -> Iterable[tuple[Node | str, Kinds, Kinds]]:
        found = ERROR_TESTS.get(syntax.call_name(call) or "")
        arguments = syntax.arguments(call)
        if found and arguments:
            yield arguments[0], found[0], found[1]


class Use(Record):
    """A tracked pointer used while it may be NULL (or an error pointer)."""

    node: Node  # the dereference, or the call handed the pointer
    pointer: Node  # the expression holding the pointer
    kinds: Kinds
    sources: tuple[Node, ...]  # the calls it may come from


def risky_uses(
    analysis: Analysis,
    dereferences: Callable[[str, int], Iterable[str]],
    bad: Kinds = frozenset({NULL}),
) -> Iterator[Use]:
    """Each place a tracked value is dereferenced while it may be one of
    `bad`.  `dereferences(callee, argument index)` names what a call
    dereferences of an argument: "" for the pointer itself, "->pte" for
    a field of the struct it points to."""
    seen: set[int] = set()
    for _point, event, state, results in analysis.states():
        if not isinstance(event, ev.Deref | ev.Call):
            continue
        # Nothing here may be bad (past its checks, the usual case): no use
        # is risky, and no callee need be summarized (a path analysis of its
        # own) to say what it dereferences.
        if all(bad.isdisjoint(kinds) for kinds in state.kinds.values()):
            continue
        if isinstance(event, ev.Deref):
            candidates = [
                (event.node, event.pointer, analysis.value_of(state, event.pointer, results))
            ]
        elif isinstance(event, ev.Call) and event.name:
            candidates = []
            for index, argument in enumerate(event.arguments):
                for suffix in dereferences(event.name, index):
                    if not suffix:
                        values = analysis.value_of(state, argument, results)
                    else:
                        base = ev.place(argument)
                        values = state.places.get(base + suffix) if base else None
                    candidates.append((event.node, argument, values))
        else:
            continue
        for node, pointer, values in candidates:
            if not values:
                continue
            kinds = state.kinds_of_values(values)
            if not kinds & bad or node.id in seen:
                continue
            seen.add(node.id)
            sources = tuple(analysis.site(v) for v in values)
            yield Use(node, pointer, kinds, tuple(s for s in sources if s is not None))


def accessor_table(pattern: str) -> Callable[[str, int], tuple[str, ...]]:
    """Calls matching `pattern` dereference every pointer they are given."""
    regex = re.compile(pattern)
    return lambda name, index: ("",) if regex.fullmatch(name) else ()
