"""What the function as it was did on every path, and the function as it is
no longer does: the question of lessons that only make sense as
regressions (a uffd-wp bit no longer carried, a TLB flush no longer made
before a free, an entry test no longer made before a present-only helper).

Nodes of the two versions are matched by a key that survives the lines
around them moving: the callee's name, its arguments as written (blanks
squeezed) and which occurrence of that pair it is; failing that, the
callee's name and its occurrence among calls of that name, when both
versions call it equally often.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow.cfg import Point
from analyzer.patterns import regex

if TYPE_CHECKING:
    from analyzer.flow import FunctionFlow


ENTRY_ACCESSOR = regex(r"_*(?:pte|pmd|pud|huge_pte|ptep|pmdp|pudp|swp|is)_")


def squeezed(node: Node) -> str:
    return "".join(syntax.text(node).split())


def _call_key(call: Node) -> tuple[str, str]:
    arguments = call.child_by_field_name("arguments")
    return syntax.call_name(call) or "", squeezed(arguments) if arguments is not None else ""


def matching_node(before: Iterable[Node], after: Iterable[Node], node: Node) -> Node | None:
    """The node of `before` standing for `node` of `after` (both lists of
    calls, or of other nodes keyed by their text, in document order)."""
    after = list(after)
    before = list(before)

    def key(n: Node) -> tuple[str, str]:
        return _call_key(n) if n.type == "call_expression" else (n.type, squeezed(n))

    def occurrence(nodes: list[Node], target: Node, same: Callable[[Node], object]) -> int:
        wanted = same(target)
        return sum(1 for n in nodes if n.start_byte < target.start_byte and same(n) == wanted)

    wanted = key(node)
    index = occurrence(after, node, key)
    alike = [n for n in before if key(n) == wanted]
    if index < len(alike):
        return alike[index]

    def name(n: Node) -> str:
        return key(n)[0]

    same_name_before = [n for n in before if name(n) == wanted[0]]
    same_name_after = [n for n in after if name(n) == wanted[0]]
    if same_name_before and len(same_name_before) == len(same_name_after):
        return same_name_before[occurrence(after, node, name)]
    return None


def every_path_passes(flow: FunctionFlow, node: Node, passes: Callable[[Point], bool]) -> bool:
    """Does every path from the function's entry to `node` pass a point
    `passes` accepts (the point of `node` itself included, for checks made
    in the same statement: `if (check(x) && work(x))`)?"""
    target = flow.point(node)
    if target is None or not flow.reachable(target):
        return False
    if passes(target):
        return True
    return flow.every_path(None, target, passes)


def calls_reaching(
    pattern: re.Pattern[str], depth: int = 1, headers: bool = False
) -> Callable[[FunctionFlow], Callable[[Point], bool]]:
    """A point predicate, per flow: the point calls a function whose name
    `pattern` matches, or a helper defined in the same file that calls one
    within `depth` levels: a check moved into a helper is still made.
    With `headers`, helpers of the headers it includes count too, except
    the generic entry accessors (`pte_*()`, `pmd_*()`, `swp_*()`, ...):
    they clear or test bits of their own (`pte_to_swp_entry()` clears
    uffd-wp from the value it decodes), which is not the function asking."""

    def for_flow(flow: FunctionFlow) -> Callable[[Point], bool]:
        known: dict[str, bool] = {}

        def reaches(name: str, levels: int) -> bool:
            if pattern.search(name):
                return True
            if levels <= 0 or name == flow.function.name:
                return False
            located = flow.summaries.located(name)
            if located is None:
                return False
            if located[2] != flow.path and (not headers or ENTRY_ACCESSOR.match(name)):
                return False
            callees = flow.summaries.calls(name)
            return bool(callees) and any(reaches(c, levels - 1) for c in callees)

        def matches(name: str) -> bool:
            if name not in known:
                known[name] = reaches(name, depth)
            return known[name]

        return lambda point: any(matches(called) for called in flow.calls_at(point))

    return for_flow


def lost_on_every_path(
    before: FunctionFlow,
    after: FunctionFlow,
    works: Callable[[FunctionFlow], list[Node]],
    passes: Callable[[FunctionFlow], Callable[[Point], bool]],
) -> Iterator[tuple[Node, Node]]:
    """Work nodes of `after` (with their match in `before`) that every path
    reached only through a point `passes` accepts in the function as it
    was, and that some path now reaches without one."""
    old_works = works(before)
    new_works = works(after)
    if not old_works or not new_works:
        return
    old_passes, new_passes = passes(before), passes(after)
    for node in new_works:
        old = matching_node(old_works, new_works, node)
        if old is None or not every_path_passes(before, old, old_passes):
            continue
        if not every_path_passes(after, node, new_passes):
            yield node, old
