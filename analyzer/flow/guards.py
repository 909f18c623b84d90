"""Checks a patch takes away: what a removed test used to guard, and whether
something still guards it.

A check is a branch: on one edge the work goes on (`proceeds`), on the
other it does not.  What it guarded, in the function as it was, is the
points only that edge reaches (the work it let through, not what both
edges share).  After the patch, those points (matched by their text) must
still lie behind an equivalent check on every path; a check removed,
narrowed (`a && check`), turned into a bare warning, or moved after the
work leaves some path that reaches them without one.  A check moved
earlier, into a helper, or reshaped still stands on every path, and is
not a loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import paths
from analyzer.flow.cfg import BRANCH, RETURN, STATEMENT, Point

if TYPE_CHECKING:
    from analyzer.flow import FunctionFlow


@dataclass(frozen=True)
class Lost:
    check: Node  # the removed check (a call in the function as it was)
    guarded: tuple[Point, ...]  # what it guarded, in the function as it is now
    unguarded: Point  # one of them a path now reaches without a check


def lost_checks(
    before: FunctionFlow,
    after: FunctionFlow,
    removed: Callable[[Node], bool],
    is_check: Callable[[Node], bool],
    proceeds: Callable[[Node, Node], bool | None],
    still_checks: Callable[[Node], Callable[[Point], bool]],
    matters: Callable[[Point], bool] | None = None,
    standing: Callable[[Node], Node | None] | None = None,
) -> Iterator[Lost]:
    """Checks of the function as it was (calls `is_check` accepts, on lines
    `removed` accepts) whose guarded work a path of the function as it is
    now reaches without passing a point `still_checks(check)` accepts.
    `proceeds(call, atom)` is the edge (True/False) of the branch on `atom`
    along which the work goes on, None when the call does not steer it.
    `standing(call)` is the node of the function as it is that stands where
    the check stood: paths are followed from there (a check in a loop guards
    the rest of the loop, not its first iteration), and from the entry when
    there is none."""
    after_points = _by_key(after)
    for point in before.graph.reverse_postorder():
        if point.kind != BRANCH or point.node is None:
            continue
        for call in _calls_in(point.node):
            if not is_check(call) or not removed(call):
                continue
            edge_taken = proceeds(call, point.node)
            if edge_taken is None:
                continue
            guarded = _guarded(before, point, edge_taken, matters)
            now = [after_points[key] for key in guarded if key in after_points]
            equivalent = still_checks(call)
            start = None
            if standing is not None and (node := standing(call)) is not None:
                start = after.point(node)
            if start is not None and equivalent(start):
                continue  # the same check, or a wider one, stands there
            for target in now:
                if after.reachable(target) and after.some_path_avoids(start, target, equivalent):
                    yield Lost(call, tuple(now), target)
                    break


def _guarded(
    flow: FunctionFlow, branch: Point, taken: bool, matters: Callable[[Point], bool] | None
) -> list[tuple[str, str, int]]:
    """Keys of the points only the `taken` edge of `branch` reaches."""
    go = [e.target for e in branch.succs if e.taken is taken]
    stop = [e.target for e in branch.succs if e.taken is not taken]
    through = paths.reachable_from(flow.graph, go)
    around = paths.reachable_from(flow.graph, stop)
    keys = _keys(flow)
    return [
        keys[p.id]
        for p in flow.graph.reverse_postorder()
        if p.id in through
        and p.id not in around
        and p.id in keys
        and (matters is None or matters(p))
    ]


def _keys(flow: FunctionFlow) -> dict[int, tuple[str, str, int]]:
    found: dict[int, tuple[str, str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    points = [
        p for p in flow.graph.points if p.node is not None and p.kind in (STATEMENT, RETURN, BRANCH)
    ]
    for point in sorted(points, key=lambda p: p.node.start_byte):  # type: ignore[union-attr]
        text = " ".join(syntax.text(point.node).split())
        occurrence = seen.get((point.kind, text), 0)
        seen[(point.kind, text)] = occurrence + 1
        found[point.id] = (point.kind, text, occurrence)
    return found


def _by_key(flow: FunctionFlow) -> dict[tuple[str, str, int], Point]:
    points = {p.id: p for p in flow.graph.points}
    return {key: points[pid] for pid, key in _keys(flow).items()}


def _calls_in(node: Node) -> list[Node]:
    return syntax.calls(node)


def branches_calling(
    flow: FunctionFlow, names: frozenset[str], helpers: bool = True
) -> Callable[[Point], bool]:
    """A `still_checks` for checks that are calls to `names`, or to functions
    of the tree that make one (a check moved into a helper)."""

    def checks(point: Point) -> bool:
        if point.kind != BRANCH or point.node is None:
            return False
        for call in syntax.calls(point.node):
            name = syntax.call_name(call) or ""
            if name in names:
                return True
            if (
                helpers
                and name
                and name != flow.function.name
                and flow.summaries.reaches(name, names, 2)
            ):
                return True
        return False

    return checks
