"""Checks a patch takes away: where a test used to stand on every path, and
no longer does.

A check *vouches* for the value it tested (`userfaultfd_wp(vma)` for
`vma`, `pte_same(ptep_get(pte), orig)` for `*pte` and `orig`) from the
branch that made it until that value changes: the place is assigned, an
iterator steps it, or (for checks that must be made under the lock) a
page-table lock is taken after it.  A `Vouching` tracker follows that
along paths, with everything the value analysis knows (constants, path
states), so that `skipped = true; ... if (!skipped)` does not count as a
path around the check.

What the patch lost is then a question of two answers: the points of the
function that were vouched for on every path before the patch (matched
by their text), and are not after it.  A check removed, narrowed
(`a && check`), turned into a bare warning, or moved after the work loses
that; one moved earlier, into a helper, reshaped, or replaced by a wider
one does not.  Checks in loops vouch for one element at a time: the next
element is a new value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow.cfg import BRANCH, RETURN, STATEMENT, Point
from analyzer.flow.values import Analysis, Kinds, State, Tracker, Value
from analyzer.flow.vocabulary import LOCK_CALLS
from analyzer.records import Record

if TYPE_CHECKING:
    from analyzer.flow import FunctionFlow

YES, NO = "vouched", "unvouched"
_PREFIX = "vouched:"
_NULL = "known-null:"


class Vouching(Tracker):
    """Which values a check has vouched for, along paths."""

    name = "vouching"

    def __init__(
        self,
        flow: FunctionFlow,
        vouches: Callable[[Node], Iterable[str]],
        until_lock: bool = False,
        proceeds: Callable[[Node, Node], bool | None] | None = None,
    ) -> None:
        self.flow = flow
        # The places a check vouches for (nothing for other calls), and the
        # edge of a branch on it along which the work goes on (None: both).
        self.vouches = vouches
        self.until_lock = until_lock
        self.proceeds = proceeds
        self._partners_found: dict[str, set[str]] | None = None
        self._null_stored: str | None = None

    def default(self, name: str) -> Kinds | None:
        return frozenset({NO}) if name.startswith((_PREFIX, _NULL)) else None

    def killed_by_call(self, name: str) -> bool:
        return not name.startswith(_PREFIX)

    def assign(
        self,
        analysis: Analysis,
        state: State,
        assign: ev.Assign,
        results: dict[int, frozenset[Value]],
    ) -> None:
        # `vmf->pte = NULL;`: known NULL until stored to again (see forgot()).
        value = ev.strip(assign.value) if assign.value is not None else None
        null = assign.operator == "=" and value is not None and syntax.text(value) == "NULL"
        self._null_stored = ev.place(assign.target) if null else None

    def call(
        self, analysis: Analysis, state: State, call: ev.Call, results: dict[int, frozenset[Value]]
    ) -> None:
        # A callee handed the struct may set the pointer.
        handed = [syntax.text(ev.strip(argument)) for argument in call.arguments]
        for known in [p for p in state.places if p.startswith(_NULL)]:
            place = known[len(_NULL) :]
            if any(
                place.startswith(argument + "->")
                or argument == "&" + place
                or (argument.startswith("&") and place.startswith(argument[1:] + "."))
                for argument in handed
            ):
                del state.places[known]
        spec = LOCK_CALLS.get(call.name or "")
        if self.until_lock and spec is not None and not spec.release and spec.lock_class == "spin":
            for tracked in [p for p in state.places if p.startswith(_PREFIX)]:
                del state.places[tracked]
            return

    def taken(self, analysis: Analysis, state: State, condition: Node, taken: bool) -> bool | None:
        # A pointer known NULL on this path cannot pass a test for non-NULL:
        # that edge is not a path (`vmf->pte = NULL; ... if (vmf->pte) goto warn;`).
        present = ev.null_on(condition, not taken)
        known = state.places.get(_NULL + present) if present is not None else None
        if known and state.kinds_of_values(known) == frozenset({YES}):
            return False
        # Where the pointer to an entry is NULL there is no entry to check:
        # `if (!pte || !pte_same(ptep_get(pte), orig)) goto out;` checks
        # every entry there is.
        if (absent := ev.null_on(condition, taken)) is not None:
            for name in sorted({absent, "*" + absent} | self._partners().get("*" + absent, set())):
                analysis.bind(state, _PREFIX + name, f"vouch:null:{name}", frozenset({YES}))
        # Only a check that steers a branch vouches: a bare assertion tests,
        # but the code goes on either way.
        for node in syntax.walk(condition):
            if node.type != "call_expression":
                continue
            names = list(self.vouches(node))
            if not names:
                continue
            wanted = self.proceeds(node, condition) if self.proceeds is not None else None
            if wanted is not None and wanted != taken:
                continue
            for name in names:
                analysis.bind(state, _PREFIX + name, f"vouch:{node.id}:{name}", frozenset({YES}))

    def _partners(self) -> dict[str, set[str]]:
        """For an entry `*p`, every place a check of this function compares
        with it (`vmf->orig_pte` for `pte_same(ptep_get(vmf->pte),
        vmf->orig_pte)`): with no entry, none of them needs checking."""
        if self._partners_found is None:
            found: dict[str, set[str]] = {}
            for point in self.flow.graph.points:
                if point.kind != BRANCH or point.node is None:
                    continue
                for node in syntax.walk(point.node):
                    if node.type == "call_expression" and (names := set(self.vouches(node))):
                        for name in names:
                            if name.startswith("*"):
                                found.setdefault(name, set()).update(names)
            self._partners_found = found
        return self._partners_found

    def forgot(self, analysis: Analysis, state: State, name: str) -> None:
        state.places.pop(_PREFIX + name, None)
        for known in [p for p in state.places if p.startswith(_NULL)]:
            place = known[len(_NULL) :]
            if place == name or place.startswith((name + "->", name + ".")):
                del state.places[known]
        if name == self._null_stored:
            analysis.bind(state, _NULL + name, f"null:{name}", frozenset({YES}))
            self._null_stored = None


def vouched(analysis: Analysis, node: Node, name: str) -> bool:
    """Was `name`, or what it is reached through (a helper handed `vmf`
    checks `vmf->orig_pte`), vouched for on every path to `node`?"""
    for place in _roots(name):
        if analysis.place_kinds_at(node, _PREFIX + place) == frozenset({YES}):
            return True
    return False


def _roots(name: str) -> list[str]:
    """`*vmf->pte`, `vmf->pte`, `vmf`."""
    found = [name]
    plain = name.lstrip("*")
    if plain != name:
        found.append(plain)
    while "->" in plain or "." in plain:
        cut = max(plain.rfind("->"), plain.rfind("."))
        plain = plain[:cut]
        found.append(plain)
    return found


class Lost(Record):
    check: Node  # the removed check (in the function as it was)
    place: str  # what it vouched for
    unguarded: Point  # a point now reached without it, in the function as it is


def lost_checks(
    before: FunctionFlow,
    after: FunctionFlow,
    removed: Callable[[Node], bool],
    is_check: Callable[[Node], bool],
    vouches_before: Callable[[Node], Iterable[str]],
    vouches_after: Callable[[Node], Iterable[str]],
    matters: Callable[[Point], bool] | None = None,
    until_lock: bool = False,
    proceeds: Callable[[Node, Node], bool | None] | None = None,
    key: str = "",
) -> Iterator[Lost]:
    """Checks of the function as it was (nodes `is_check` accepts, on lines
    `removed` accepts) that vouched, on every path, for points that matter,
    where the function as it is leaves some path unvouched.  `vouches_*`
    say which places a call vouches for (a check, a helper making one),
    in each version."""
    checks = [
        node
        for point in before.graph.points
        if point.kind == BRANCH and point.node is not None
        for node in syntax.walk(point.node)
        if is_check(node) and removed(node)
    ]
    if not checks:
        return
    old = before.analysis(
        Vouching(before, vouches_before, until_lock, proceeds), ("vouching", key, until_lock)
    )
    new = after.analysis(
        Vouching(after, vouches_after, until_lock, proceeds), ("vouching", key, until_lock)
    )
    if not old.complete or not new.complete:
        return
    now = _by_key(after)
    names_after = syntax.identifiers(after.function.node)
    for check in checks:
        for name in vouches_before(check):
            if _roots(name)[-1].lstrip("*") not in names_after:
                continue  # renamed: the new name is another check's business
            for point_key, point in _by_key(before).items():
                if matters is not None and not matters(point):
                    continue
                if point.node is not None and point.node.type in _JUMPS:
                    continue  # a jump does nothing; where it leads is judged there
                if point.node is None or not vouched(old, point.node, name):
                    continue
                target = now.get(point_key)
                if target is None or target.node is None or not after.reachable(target):
                    continue
                if not vouched(new, target.node, name):
                    yield Lost(check, name, target)
                    break
            else:
                continue
            break


_JUMPS = frozenset({"goto_statement", "break_statement", "continue_statement"})


def _keys(flow: FunctionFlow) -> dict[int, tuple[str, str, int]]:
    found: dict[int, tuple[str, str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    points = [p for p in flow.graph.points if p.node is not None and p.kind in (STATEMENT, RETURN)]
    for point in sorted(points, key=lambda p: p.node.start_byte):  # type: ignore[union-attr]
        text = " ".join(syntax.text(point.node).split())
        occurrence = seen.get((point.kind, text), 0)
        seen[(point.kind, text)] = occurrence + 1
        found[point.id] = (point.kind, text, occurrence)
    return found


def _by_key(flow: FunctionFlow) -> dict[tuple[str, str, int], Point]:
    points = {p.id: p for p in flow.graph.points}
    return {key: points[pid] for pid, key in _keys(flow).items()}


def argument_places(call: Node) -> list[str]:
    """The places a check's arguments name (`vma`, `pteval`, `*pte` for
    `ptep_get(pte)`)."""
    found = []
    for argument in syntax.arguments(call):
        argument = ev.strip(argument)
        if argument.type == "call_expression":
            inner = syntax.arguments(argument)
            name = ev.place(inner[0]) if inner else None
            if name is not None:
                found.append(name if name.startswith("*") else f"*{name}")
            continue
        name = ev.place(argument)
        if name is not None:
            found.append(name)
    return found


def checks_by(
    flow: FunctionFlow, names: frozenset[str], depth: int = 3
) -> Callable[[Node], list[str]]:
    """`vouches` for checks that are calls to `names`, or to a function of
    the tree making one (`depth` levels down): they vouch for what they are
    handed."""

    def vouched_for(node: Node) -> list[str]:
        if node.type != "call_expression":
            return []
        callee = syntax.call_name(node) or ""
        if callee in names or (
            callee and callee != flow.function.name and flow.summaries.reaches(callee, names, depth)
        ):
            return argument_places(node)
        return []

    return vouched_for


def checks_made(flow: FunctionFlow, names: frozenset[str], depth: int = 3) -> int:
    """How many calls the function makes to `names`, or to helpers of the
    tree making one."""
    vouched_for = checks_by(flow, names, depth)
    return sum(1 for call in flow.calls() if vouched_for(call) or syntax.call_name(call) in names)


def branches_checking(
    flow: FunctionFlow, names: frozenset[str], depth: int = 3
) -> Callable[[Point], bool]:
    """Branch points on a call to `names` or to a helper of the tree making one."""
    vouched_for = checks_by(flow, names, depth)

    def checks(point: Point) -> bool:
        if point.kind != BRANCH or point.node is None:
            return False
        return any(syntax.call_name(c) in names or vouched_for(c) for c in syntax.calls(point.node))

    return checks


def helpers_dropped(
    before: FunctionFlow,
    after: FunctionFlow,
    removed: Callable[[Node], bool],
    names: frozenset[str],
    wider: Callable[[str], frozenset[str]],
) -> Iterator[tuple[Node, str]]:
    """Calls on removed lines to helpers of the tree that made a check of
    `names`, with the check, when nothing in the function as it is makes
    it (or a wider one): (the call, the check's name)."""
    called_after = {syntax.call_name(c) for c in after.calls()}
    for call in before.calls():
        name = syntax.call_name(call) or ""
        if not name or name in called_after or name in names or not removed(call):
            continue
        for check in sorted(_made_by(before, name, names)):
            if checks_made(after, wider(check)) == 0:
                yield call, check


def _made_by(
    flow: FunctionFlow, name: str, names: frozenset[str], depth: int = 3
) -> frozenset[str]:
    if depth <= 0:
        return frozenset()
    calls = flow.summaries.calls(name)
    if calls is None:
        return frozenset()
    made = set(calls & names)
    for callee in calls - names:
        if callee != name:
            made |= _made_by(flow, callee, names, depth - 1)
    return frozenset(made)
