"""Questions about paths through a function's graph.

`reaches(a, b, avoiding)` — does some path go from a to b without passing
any point of `avoiding`?  From it: "is X on every path from A to B" is
"B is not reachable from A avoiding X".  Dominators answer "must every path
from the entry to here pass there?".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from analyzer.flow.cfg import Graph, Point


def reaches(
    graph: Graph,
    source: Point,
    target: Point,
    avoiding: Callable[[Point], bool] | None = None,
) -> bool:
    """Is there a path from `source` to `target` (both excluded from
    `avoiding`) through no point `avoiding` accepts?  A path of length zero
    counts when source is target."""
    if source is target:
        return True
    seen = {source.id}
    stack = [source]
    while stack:
        point = stack.pop()
        for edge in point.succs:
            nxt = edge.target
            if nxt.id in seen:
                continue
            if nxt is target:
                return True
            seen.add(nxt.id)
            if avoiding is not None and avoiding(nxt):
                continue
            stack.append(nxt)
    return False


def reachable_from(
    graph: Graph, sources: Iterable[Point], avoiding: Callable[[Point], bool] | None = None
) -> set[int]:
    """Ids of the points some path from `sources` reaches (sources included)
    without passing a point `avoiding` accepts (such points are reached but
    not passed)."""
    seen: set[int] = set()
    stack = list(sources)
    for point in stack:
        seen.add(point.id)
    while stack:
        point = stack.pop()
        if avoiding is not None and avoiding(point) and point.id not in {s.id for s in sources}:
            continue
        for edge in point.succs:
            if edge.target.id not in seen:
                seen.add(edge.target.id)
                stack.append(edge.target)
    return seen


def dominators(graph: Graph) -> dict[int, int]:
    """Immediate dominator of each reachable point (Cooper, Harvey and
    Kennedy's iterative algorithm)."""
    order = graph.reverse_postorder()
    index = {p.id: i for i, p in enumerate(order)}
    idom: dict[int, int] = {graph.entry.id: graph.entry.id}
    changed = True
    while changed:
        changed = False
        for point in order[1:]:
            new = None
            for edge in point.preds:
                pred = edge.source.id
                if pred not in idom:
                    continue
                new = pred if new is None else _intersect(idom, index, pred, new)
            if new is not None and idom.get(point.id) != new:
                idom[point.id] = new
                changed = True
    return idom


def _intersect(idom: dict[int, int], index: dict[int, int], a: int, b: int) -> int:
    while a != b:
        while index[a] > index[b]:
            a = idom[a]
        while index[b] > index[a]:
            b = idom[b]
    return a


def dominates(idom: dict[int, int], a: int, b: int) -> bool:
    """Does point `a` dominate point `b`?"""
    if b not in idom:
        return False
    while True:
        if a == b:
            return True
        parent = idom[b]
        if parent == b:
            return False
        b = parent
