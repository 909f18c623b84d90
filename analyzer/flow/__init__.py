"""The flow layer: what rules ask about paths, values, locks and types.

A rule does not walk a syntax tree in text order.  It asks a `FunctionFlow`
questions, the way a smatch check or a Coccinelle rule reads:

    flow.nullness({"pte_offset_map_lock": MAY_FAIL})   # where may it be NULL?
    flow.entries().kinds_at(work, pmd)                 # may this PMD be huge here?
    flow.locks_at(node)                                # which locks are held?
    flow.every_path(start, end, passes=is_uffd_check)  # is X on every path?
    flow.type_of(arg, through_casts=True)              # what was really passed?
    flow.summaries.of("helper")                        # what does a callee do?

## What is modelled
- **Paths** (`cfg`): one graph per function, built lazily from its
  tree-sitter tree and cached with it: `if`/`else`, `switch` with
  fall-through, loops, `break`/`continue`, `goto`, `return`; `&&`, `||`,
  `!` and `?:` as branches; iterator macros as loops; `guard()`/
  `scoped_guard()` scopes; `BUG()`/`panic()`/`BUG_ON()` as paths that
  end; `WARN_ON*()` as a branch only inside a condition; `#ifdef`
  alternatives as branches.
- **Values** (`values`): a forward dataflow analysis per tracker (a table
  of kernel API facts): pointers that may be NULL or an error pointer
  (`nullness`), what a page-table entry may be (`entries`), which locks are
  held (`locks`).  Aliases follow plain, chained (`a = b = f()`) and
  compound (`p += n`, `p++`) assignment; branch edges refine (`!p`,
  `IS_ERR(p)`, `pmd_none(x)`); conditional facts are links between values
  (the PTE lock is held exactly when `pte_offset_map_lock()` did not return
  NULL).  Merges unite; the lattice is finite, so loops converge without
  widening, and a visit budget bounds the pathological rest.
- **Callees** (`summaries`): functions of the file under review and of the
  headers it includes, summarised by the same analyses two call levels
  deep: parameters dereferenced before a NULL test, pointer results that
  may be NULL or an error, what they call.
- **Types** (`analyzer.declarations`): declared types of expressions, from
  the function, the file and the tree's headers, with or without casts.

## What is not
- Threads: a value read without a lock is taken for the entry itself;
  races are lessons of their own (LOCKLESS_SNAPSHOT_NOT_REVALIDATED).
- Macros are what the sanitized parse shows: a macro call is a call, its
  body is never expanded; the kernel macros that shape control flow are
  known by name (`vocabulary`).
- Memory: no points-to analysis.  A place is a name (`pte`, `vmf->pte`,
  `*pmd`); a call handed `vmf` may change `vmf->pte`, a call handed `&x`
  may change `x`, nothing else changes behind the analysis' back.
- Loops are not unrolled or counted: facts from one iteration reach the
  next through the loop's merge.
- Callees in other `.c` files, function pointers, and more than two call
  levels: unknown callees do nothing a rule could report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cached_property

from tree_sitter import Node

from analyzer import syntax
from analyzer.declarations import Declarations, TypeScope, kernel_version
from analyzer.flow import cfg, paths
from analyzer.flow import events as ev
from analyzer.flow.entries import MAPS, Entries
from analyzer.flow.locks import Locks, held
from analyzer.flow.nullness import Nullness
from analyzer.flow.summaries import Summaries
from analyzer.flow.values import NULL, Analysis, Kinds, Tracker
from analyzer.parsing import Function, ParsedFile
from analyzer.rule import ReviewContext

__all__ = ["FunctionFlow", "flow_of"]


class _Shared:
    """What depends on the function's text alone: kept across patches."""

    def __init__(self, function: Function) -> None:
        assert function.body is not None
        self.graph = cfg.build(function.body, function.image.text)
        self.analyses: dict[object, Analysis] = {}
        self._dominators: dict[int, int] | None = None
        self.scope = TypeScope(function.node)

    @property
    def dominators(self) -> dict[int, int]:
        if self._dominators is None:
            self._dominators = paths.dominators(self.graph)
        return self._dominators


_shared: dict[tuple[str, int, str], _Shared] = {}
_SHARED_LIMIT = 2048


def _shared_of(function: Function) -> _Shared:
    key = (function.image.blob_id, function.node.start_byte, function.name)
    found = _shared.get(key)
    if found is None:
        if len(_shared) >= _SHARED_LIMIT:
            _shared.clear()
        found = _shared[key] = _Shared(function)
    return found


class FunctionFlow:
    """The flow questions about one function, in one review context."""

    def __init__(
        self, function: Function, file: ParsedFile | None, context: ReviewContext, path: str
    ) -> None:
        self.function = function
        self.file = file
        self.context = context
        self.path = path
        self._shared = _shared_of(function)

    # -- the graph -----------------------------------------------------------------

    @property
    def graph(self) -> cfg.Graph:
        return self._shared.graph

    def point(self, node: Node) -> cfg.Point | None:
        return self.graph.point_of(node)

    def calls_at(self, point: cfg.Point) -> list[str]:
        """Names of the functions a point calls."""
        return [e.name for e in self.analysis_events(point) if isinstance(e, ev.Call) and e.name]

    def analysis_events(self, point: cfg.Point) -> list[ev.Event]:
        return ev.events_of(point)

    def every_path(
        self, source: cfg.Point | None, target: cfg.Point, passes: Callable[[cfg.Point], bool]
    ) -> bool:
        """Does every path from `source` (the entry when None) to `target`
        pass a point `passes` accepts?"""
        start = source if source is not None else self.graph.entry
        return not paths.reaches(self.graph, start, target, avoiding=passes)

    def some_path_avoids(
        self, source: cfg.Point | None, target: cfg.Point, avoiding: Callable[[cfg.Point], bool]
    ) -> bool:
        start = source if source is not None else self.graph.entry
        return paths.reaches(self.graph, start, target, avoiding=avoiding)

    def dominates(self, a: cfg.Point, b: cfg.Point) -> bool:
        return paths.dominates(self._shared.dominators, a.id, b.id)

    def reachable(self, point: cfg.Point) -> bool:
        return point.id in self._shared.dominators

    # -- values ----------------------------------------------------------------------

    def analysis(
        self, tracker: Tracker, key: object, parameters: Mapping[str, Kinds] | None = None
    ) -> Analysis:
        """Run `tracker` (once per function and `key`); `parameters` are
        places with a value (and its kinds) at the entry."""
        found = self._shared.analyses.get(key)
        if found is None:
            found = self._shared.analyses[key] = Analysis(
                self.graph, tracker, dict(parameters) if parameters else None
            )
        return found

    def nullness(self, sources: Mapping[str, Kinds], helpers_return: bool = False) -> Analysis:
        """Where the values `sources` return may be NULL (or an error
        pointer).  Helpers of the tree that only test a pointer (`return
        !vmf->pte;`) test it here too; with `helpers_return`, what helpers
        of the tree return (NULL, an error pointer) is tracked as well."""
        key = ("nullness", tuple(sorted(sources.items())), helpers_return)
        found = self._shared.analyses.get(key)
        if found is None:
            returns = self._summary_returns if helpers_return else None
            tracker = Nullness(dict(sources), returns, self._summary_predicate)
            found = self._shared.analyses[key] = Analysis(self.graph, tracker)
        return found

    def dereferences(self, accessors: re.Pattern[str]) -> Callable[[str, int], tuple[str, ...]]:
        """What a call dereferences of argument k: everything for a call
        matching `accessors`, else what the callee's summary says."""

        def dereferenced(callee: str, index: int) -> tuple[str, ...]:
            if accessors.fullmatch(callee):
                return ("",)
            if callee == self.function.name:
                return ()
            summary = self.summaries.of(callee)
            return summary.dereferenced(index) if summary is not None else ()

        return dereferenced

    def _summary_returns(self, name: str) -> Kinds | None:
        summary = self.summaries.of(name) if name != self.function.name else None
        return summary.returns if summary is not None else None

    def _summary_predicate(self, name: str) -> tuple[Node, list[str]] | None:
        summary = self.summaries.of(name) if name != self.function.name else None
        if summary is None or summary.predicate is None:
            return None
        return summary.predicate, list(summary.parameters)

    def entries(self) -> Analysis:
        """What page-table entries may be, and where the maps of their PTE
        tables may have failed (returned NULL, since v6.5)."""
        maps_fail = self.version is None or self.version >= (6, 5)
        key = ("entries", maps_fail)
        found = self._shared.analyses.get(key)
        if found is None:
            tracker = Entries(maps_fail, self.maps_and_may_fail, self._summary_predicate)
            found = self._shared.analyses[key] = Analysis(self.graph, tracker)
        return found

    def maps_and_may_fail(self, name: str) -> bool:
        """A function of the tree that returns the map of a PTE table, NULL
        when it failed (`get_locked_pte()`)."""
        if name == self.function.name:
            return False
        summary = self.summaries.of(name)
        return (
            summary is not None
            and summary.returns is not None
            and NULL in summary.returns
            and self.summaries.reaches(name, MAPS)
        )

    def locks(self) -> Analysis:
        return self.analysis(Locks(), "locks")

    def locks_at(self, node: Node, classes: frozenset[str] | None = None) -> dict[str, Kinds]:
        """Locks that may be held just before `node` runs, with their kinds
        over every path that reaches it ({'held'}: held on all of them)."""
        analysis = self.locks()
        per_path = [held(state, analysis, classes) for state, _ in analysis.before_each(node)]
        names = {name for locks in per_path for name in locks}
        free = frozenset({"free"})
        return {
            name: frozenset().union(*(locks.get(name, free) for locks in per_path))
            for name in names
        }

    # -- types, callees, the tree ------------------------------------------------------

    @cached_property
    def declarations(self) -> Declarations:
        return Declarations(self.context, self.file)

    def type_of(self, expression: Node, through_casts: bool = False) -> str | None:
        return self._shared.scope.type_of(expression, self.declarations, through_casts)

    @cached_property
    def summaries(self) -> Summaries:
        return Summaries(self.context, self.file, self.path)

    @cached_property
    def version(self) -> tuple[int, int] | None:
        return kernel_version(self.context)

    def calls(self, names: str | frozenset[str] | set[str] | None = None) -> list[Node]:
        body = self.function.body
        return syntax.calls(body, names) if body is not None else []


def flow_of(
    function: Function, file: ParsedFile | None, context: ReviewContext, path: str
) -> FunctionFlow:
    return FunctionFlow(function, file, context, path)
