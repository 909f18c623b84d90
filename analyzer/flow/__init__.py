"""The flow layer: what rules ask about paths, values, locks and types.

A rule does not walk a syntax tree in text order.  It asks a `FunctionFlow`
questions, the way a smatch check or a Coccinelle rule reads:

    flow.nullness({"pte_offset_map_lock": MAY_FAIL})   # where may it be NULL?
    flow.entries().kinds_at(work, pmd)                 # may this PMD be huge here?
    flow.locks_at(node)                                # which locks are held?
    flow.every_path(start, end, passes=is_uffd_check)  # is X on every path?
    flow.type_of(arg, through_casts=True)              # what was really passed?
    flow.summaries.of("helper")                        # what does a callee do?
    lost_checks(before, after, ...)                    # which check no longer guards?

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
  Paths stay apart where they differ (up to six states per point, joined
  by least loss past that), as smatch's implication pools do; integers
  compared with constants carry them (`result = SCAN_FAIL` ... `if
  (result != SCAN_SUCCEED)`).
- **Checks and what they vouch for** (`guards`): a test (`userfaultfd_wp
  (vma)`, `pmd_same(orig, *pmd)`) vouches for the places it read along
  the edge on which the work goes on, until they change or, for a
  re-check, until a lock is taken.  A check the patch removes, narrows
  (`install && userfaultfd_wp(vma)`) or moves out of the lock is one the
  function as it was made on a path to some work and no longer makes.
- **Callers** (`callers`): a static function whose every call is in its
  file is handed what its callers hand it (`if (pmd_none(*pmd)) return;
  helper(pmd);`); a check every caller makes before calling counts.
- **Callees** (`summaries`): functions of the file under review and of the
  headers it includes, summarised by the same analyses two call levels
  deep: parameters dereferenced before a NULL test, pointer results that
  may be NULL or an error, what they call, locks they take or drop, a
  predicate they only return.
- **Types** (`analyzer.declarations`): declared types of expressions, from
  the function, the file and the tree's headers, with or without casts.

## What is not
- Threads: a value read without a lock is taken for the entry itself;
  races are lessons of their own (LOCKLESS_SNAPSHOT_NOT_REVALIDATED).
- Macros are what the sanitized parse shows: a macro call is a call, its
  body is never expanded; the kernel macros that shape control flow are
  known by name (`vocabulary`).  `#ifdef` alternatives are both taken,
  except that the configurations the lessons assume built
  (`ASSUMED_CONFIGS`: THP, THP migration) take their branch only.
- Versions: an API's behaviour follows the tree's Makefile version where
  it changed (`pte_offset_map()` fails since v6.5; `ptep_get()` since v6.5);
  an unknown version is taken for a recent one.
- Memory: no points-to analysis.  A place is a name (`pte`, `vmf->pte`,
  `*pmd`); a call handed `vmf` may change `vmf->pte`, a call handed `&x`
  may change `x`, nothing else changes behind the analysis' back.
- Loops are not unrolled or counted: facts from one iteration reach the
  next through the loop's merge.
- Callees in other `.c` files, function pointers, and more than two call
  levels: unknown callees do nothing a rule could report.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import cached_property

from tree_sitter import Node

from analyzer import syntax
from analyzer.declarations import Declarations, TypeScope, kernel_version
from analyzer.flow import cfg, paths, vocabulary
from analyzer.flow import events as ev
from analyzer.flow.entries import (
    ENTRY_POINTERS,
    MAPS,
    NONE,
    POINTER_TESTS,
    READS,
    VALUE_TESTS,
    Entries,
    EntryRead,
    entry_reads,
)
from analyzer.flow.locks import (
    LockEffect,
    Locks,
    annotated_effects,
    held,
    held_on_entry,
    helper_effects,
)
from analyzer.flow.nullness import Nullness
from analyzer.flow.summaries import Summaries, parameters_of
from analyzer.flow.values import NULL, Analysis, Kinds, Tracker, constant_text, constant_truth
from analyzer.parsing import Function, ParsedFile
from analyzer.rule import ReviewContext

__all__ = ["FunctionFlow", "flow_of"]

# Calls handed an entry pointer that do not write the entry.
_NOT_WRITES = frozenset([*vocabulary.LOCK_CALLS, *READS, *VALUE_TESTS, *POINTER_TESTS])


def _entry_of(argument: Node) -> str | None:
    address = ev.address_of(argument)
    if address is not None:
        return address
    name = ev.place(argument)
    return f"*{name}" if name is not None else None


def _stored_to(node: Node) -> bool:
    parent = syntax.unparenthesized_parent(node)
    return (
        parent is not None
        and parent.type == "assignment_expression"
        and ev.strip(parent.child_by_field_name("left") or parent) == node
    )


class _Shared:
    """What depends on the function's text alone: kept across patches."""

    def __init__(self, function: Function) -> None:
        assert function.body is not None
        self.graph = cfg.build(function.body, function.image.text)
        self._dominators: dict[int, int] | None = None
        self._scope: TypeScope | None = None
        self._calls: list[tuple[Node, str | None]] | None = None
        self._function = function

    @property
    def calls(self) -> list[tuple[Node, str | None]]:
        """Every call in the body, in document order, with the name it
        calls: the rules ask for calls of some name dozens of times."""
        if self._calls is None:
            body = self._function.body
            found = syntax.calls(body) if body is not None else []
            self._calls = [(call, syntax.call_name(call)) for call in found]
        return self._calls

    @property
    def scope(self) -> TypeScope:
        if self._scope is None:
            self._scope = TypeScope(self._function.node)
        return self._scope

    @property
    def dominators(self) -> dict[int, int]:
        if self._dominators is None:
            self._dominators = paths.dominators(self.graph)
        return self._dominators


# Functions whose graph is kept, oldest first.  Bounded by count: the graphs
# of a few hundred big functions (a 2,000-line patch of mm/memory.c, with
# callers and callees) took most of a gigabyte.  Weak: a function whose
# parse the cache evicted goes, and its tree with it.
_kept: OrderedDict[int, weakref.ref[Function]] = OrderedDict()
_KEPT_FUNCTIONS = 48


def _shared_of(function: Function) -> _Shared:
    # Kept with the parsed function, whose nodes the graph points at: a
    # re-parse of the same blob (after the parse cache evicted it) has
    # other nodes and gets its own graph.  `_kept` holds the function, so
    # its id is not reused while it is there.
    found = function.memo.get("flow")
    if found is None:
        found = function.memo["flow"] = _Shared(function)
        _kept[id(function)] = weakref.ref(function)
        while len(_kept) > _KEPT_FUNCTIONS:
            _, oldest = _kept.popitem(last=False)
            if (alive := oldest()) is not None:
                alive.memo.pop("flow", None)
    elif id(function) in _kept:
        _kept.move_to_end(id(function))
    return found  # type: ignore[return-value]


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
        self._analyses = _analyses_of(context, function)

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
        found = self._analyses.get(key)
        if found is None:
            found = self._analyses[key] = Analysis(
                self.graph, tracker, dict(parameters) if parameters else None
            )
        return found

    def nullness(self, sources: Mapping[str, Kinds], helpers_return: bool = False) -> Analysis:
        """Where the values `sources` return may be NULL (or an error
        pointer).  Helpers of the tree that only test a pointer (`return
        !vmf->pte;`) test it here too; with `helpers_return`, what helpers
        of the tree return (NULL, an error pointer) is tracked as well."""
        key = ("nullness", tuple(sorted(sources.items())), helpers_return)
        found = self._analyses.get(key)
        if found is None:
            returns = self._summary_returns if helpers_return else None
            tracker = Nullness(dict(sources), returns, self._summary_predicate)
            found = self._analyses[key] = Analysis(self.graph, tracker)
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

    def entries(self, callers: bool = True) -> Analysis:
        """What page-table entries may be, and where the maps of their PTE
        tables may have failed (returned NULL, since v6.5).  For a static
        function whose every call is in its file, an entry it is handed is
        what its callers hand it (`if (pmd_none(*pmd)) helper(pmd);`)."""
        maps_fail = self.version is None or self.version >= (6, 5) or self._tests_maps()
        key = ("entries", maps_fail, callers)
        found = self._analyses.get(key)
        if found is None:
            tracker = Entries(maps_fail, self.maps_and_may_fail, self._summary_predicate)
            tracker.entry_pointer = self._entry_pointer
            handed = self._handed_entries() if callers else {}
            found = self._analyses[key] = Analysis(self.graph, tracker, handed)
        return found

    def _tests_maps(self) -> bool:
        """Does the function test a PTE map's result for NULL?  Then it is
        written for maps that fail, whatever the tree's version says (a
        series may bring the new map and its callers together)."""
        return any(self.null_tests(call) for call in self.calls(MAPS))

    def null_tests(self, call: Node) -> list[cfg.Edge]:
        """The branch edges along which the result `call` stored is found
        NULL (`p = f(); if (!p) ...`)."""
        stored = set(ev.destinations(call))
        if not stored:
            return []
        return [
            edge
            for point in self.graph.points
            if point.kind == cfg.BRANCH and point.node is not None
            for edge in point.succs
            if edge.taken is not None and ev.null_on(point.node, edge.taken) in stored
        ]

    def _handed_entries(self) -> dict[str, Kinds]:
        """What the entries behind this static function's pointer parameters
        may be at every call of it (nothing when its callers are not all
        known)."""
        if not syntax.text(self.function.node).startswith("static"):
            return {}
        pointers = [
            (index, parameter)
            for index, parameter in enumerate(self.parameters())
            if parameter and self._shared.scope.of_name(parameter) in ENTRY_POINTERS
        ]
        sites = self.callers() if pointers else None
        if sites is None or len(sites) > 8:
            return {}
        handed: dict[str, Kinds] = {}
        for index, parameter in pointers:
            kinds: set[str] = set()
            for caller, call in sites:
                arguments = syntax.arguments(call)
                entry = _entry_of(arguments[index]) if index < len(arguments) else None
                found = caller.entries(callers=False).place_kinds_at(call, entry) if entry else None
                if not found:
                    break
                kinds |= found
            else:
                handed[f"*{parameter}"] = frozenset(kinds)
        return handed

    def entries_written_only_empty(self) -> frozenset[int]:
        """The pointer parameters whose entry the function writes, or hands
        on, only where it found it empty on every path (reads, tests and
        locks aside): `pmd_install()` populates under `pmd_none()` alone."""
        analysis = self.entries(callers=False)
        if not analysis.complete:
            return frozenset()
        found = set()
        for index, name in enumerate(self.parameters()):
            uses = [
                call
                for call in self.calls()
                if (called := syntax.call_name(call))
                and called not in _NOT_WRITES
                and name in [ev.place(ev.strip(a)) for a in syntax.arguments(call)]
            ]
            if uses and all(analysis.place_kinds_at(u, f"*{name}") == {NONE} for u in uses):
                found.add(index)
        return frozenset(found)

    def _entry_pointer(self, expression: Node) -> bool:
        declared = self.type_of(expression)
        if declared is not None:
            return declared in ENTRY_POINTERS
        return "pmd" in syntax.text(expression) or "pte" in syntax.text(expression)

    def parameters(self) -> list[str]:
        return parameters_of(self.function.node)

    def maps_and_may_fail(self, name: str) -> bool:
        """A function of the tree that returns the map of a PTE table, NULL
        when it failed (`get_locked_pte()`)."""
        if name == self.function.name:
            return False
        if not self.summaries.reaches(name, MAPS):
            return False
        summary = self.summaries.of(name)
        return summary is not None and summary.returns is not None and NULL in summary.returns

    def locks(self) -> Analysis:
        """Which locks are held; helpers of the tree that take or drop a lock
        they are handed count where they are called."""
        found = self._analyses.get("locks")
        if found is None:
            # The atomic locks a function says its caller holds are held
            # on entry (`__must_hold()`, `lockdep_assert_held()`).
            entry = held_on_entry(self.function, self.type_of, vocabulary.NO_SLEEP_CLASSES)
            # Asked at each call on each path state: answered once a name.
            tracker = Locks(functools.cache(self._lock_effects))
            found = self._analyses["locks"] = Analysis(self.graph, tracker, entry)
        return found

    def _lock_effects(self, name: str) -> tuple[LockEffect, ...]:
        if name == self.function.name:
            return ()
        rows = self.summaries.kept(name, "lock effects", _lock_effect_rows, _are_lock_effect_rows)
        return tuple(LockEffect(*row) for row in rows) if isinstance(rows, list) else ()

    def holds(self, node: Node, lock_class: str = "spin") -> bool:
        """Is a lock of this class held on every path to `node`?"""
        return any(
            kinds == {"held"} for kinds in self.locks_at(node, frozenset({lock_class})).values()
        )

    def callers(self) -> list[tuple[FunctionFlow, Node]] | None:
        """Every call of this function, when all of them are in its file and
        nothing takes its address; None when callers are not all known."""
        function, file = self.function, self.file
        if file is None:
            return None
        name = function.name
        offsets = [
            m.start()
            for m in re.finditer(rb"\b" + re.escape(name.encode()) + rb"\b", file.image.text)
        ]
        if len(offsets) < 2:
            return None
        sites = [
            (FunctionFlow(caller, file, self.context, self.path), call)
            for caller in file.functions
            if caller.name != name
            and caller.body is not None
            and any(caller.node.start_byte <= at < caller.node.end_byte for at in offsets)
            for call in syntax.calls(caller.body, name)
        ]
        if not sites or len(offsets) != len(sites) + 1:
            return None
        return sites

    def takings_held(self, node: Node, lock: re.Pattern[str]) -> frozenset[object]:
        """Which takings of the locks `lock` matches `node` runs under (the
        values of the lock): two nodes sharing one ran in one critical
        section, with no unlock between."""
        analysis = self.locks()
        found: set[object] = set()
        for state, _results in analysis.before_each(node):
            for name in held(state, analysis):
                if lock.fullmatch(name):
                    found |= {v for v in state.places[name] if "held" in state.kinds.get(v, ())}
        return frozenset(found)

    def truth_at(self, node: Node, name: str) -> bool | None:
        """The truth of the literal `name` holds on every path to `node`
        (`ret = true; ... goto out;`), None when it is not one literal."""
        kinds = self.analysis(Tracker(), "values").place_kinds_at(node, name)
        return constant_truth(kinds) if kinds else None

    def returned_name(self) -> str | None:
        """The one variable every `return name;` of the function returns."""
        names = {
            syntax.text(value)
            for point in self.graph.points
            if point.kind == cfg.RETURN
            and point.node is not None
            and (value := next(iter(point.node.named_children), None)) is not None
            and value.type == "identifier"
        }
        return names.pop() if len(names) == 1 else None

    def answers_after(self, edge: cfg.Edge) -> frozenset[str] | None:
        """What the function returns on the paths that leave by `edge`: the
        constants it returns (`0`, `-EAGAIN`; "" for `return;` or the end of
        the body), through a variable when every path sets it to one on the
        way (`ret = 0; goto out;`); None when a path returns anything else."""
        start = edge.target
        region = paths.reachable_from(self.graph, [start])
        answers: set[str] = set()
        for point_id in region:
            point = self.graph.points[point_id]
            if point is self.graph.exit and any(
                e.source.kind != cfg.RETURN and e.source.id in region for e in point.preds
            ):
                answers.add("")
            if point.kind != cfg.RETURN or point.node is None:
                continue
            value = next((c for c in point.node.named_children if c.type != "comment"), None)
            if value is None:
                answers.add("")
                continue
            constant = constant_text(value)
            if constant is None and ev.strip(value).type == "identifier":
                set_to = self._set_on_the_way(start, point, syntax.text(ev.strip(value)), region)
                if set_to is not None:
                    answers |= set_to
                    continue
            if constant is None:
                return None
            answers.add(constant)
        return frozenset(answers)

    def _set_on_the_way(
        self, start: cfg.Point, end: cfg.Point, name: str, region: set[int]
    ) -> frozenset[str] | None:
        """The constants `name` is set to between `start` and `end`, when
        every path between them sets it and only to constants."""
        stores = {
            point.id: store
            for store in self.assignments(name)
            if (point := self.point(store.node)) is not None and point.id in region
        }
        constants = {
            constant_text(store.value)
            if store.value is not None and store.operator == "="
            else None
            for store in stores.values()
        }

        def passes_one(point: cfg.Point) -> bool:
            return point.id in stores

        if not stores or None in constants:
            return None
        if start.id not in stores and self.some_path_avoids(start, end, passes_one):
            return None
        return frozenset(c for c in constants if c is not None)

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
        return _summaries_for(self.context, self.file, self.path)

    @cached_property
    def version(self) -> tuple[int, int] | None:
        return kernel_version(self.context)

    def calls(self, names: str | frozenset[str] | set[str] | None = None) -> list[Node]:
        if names is None:
            return [call for call, _ in self._shared.calls]
        wanted = {names} if isinstance(names, str) else names
        return [call for call, name in self._shared.calls if name in wanted]

    @cached_property
    def entry_reads(self) -> list[EntryRead]:
        """Reads of page-table entries, plain and through accessors."""
        events = (event for point in self.graph.points for event in self.analysis_events(point))
        return entry_reads(events, self.type_of)

    @cached_property
    def stores(self) -> list[ev.Assign]:
        """Every assignment, compound assignment, ++/-- and initializer."""
        return [
            event
            for point in self.graph.points
            for event in self.analysis_events(point)
            if isinstance(event, ev.Assign)
        ]

    def assignments(self, name: str) -> list[ev.Assign]:
        """Every store to `name` (plain, compound or ++/--, and initializers)."""
        return [store for store in self.stores if ev.place(store.target) == name]

    def store_of(self, value: Node) -> ev.Assign | None:
        """The assignment or initializer storing `value` (casts and
        parentheses around it allowed)."""
        return next(
            (s for s in self.stores if s.value is not None and ev.strip(s.value) == value), None
        )

    def uses_of(self, store: ev.Assign) -> list[Node]:
        """Reads of what `store` wrote: the target's name where some path
        from the store reaches it without passing another store to it."""
        name = ev.place(store.target)
        start = self.point(store.node)
        if name is None or start is None:
            return []
        others = {
            point.id
            for other in self.assignments(name)
            if other.node != store.node and (point := self.point(other.node)) is not None
        }
        reached = paths.reachable_from(self.graph, [start], lambda point: point.id in others)
        uses: dict[int, Node] = {}
        for point_id in reached - {start.id}:
            point = self.graph.points[point_id]
            holes = {hole.id for hole in point.holes}
            stack = [point.node] if point.node is not None else []
            while stack:
                node = stack.pop()
                if node.id in holes:
                    continue
                if node.type in ("identifier", "field_expression") and ev.place(node) == name:
                    if not _stored_to(node):
                        uses[node.id] = node
                    continue
                stack.extend(node.named_children)
        return sorted(uses.values(), key=lambda node: node.start_byte)


def _analyses_of(context: ReviewContext, function: Function) -> dict[object, Analysis]:
    # The analyses of a function ask the review context (callee summaries,
    # the tree's version) and their trackers hold flows of it: they live with
    # the context, one patch, never across patches in a kept graph, which
    # kept every patch's summaries alive.
    per_function = context.memo.setdefault("analyses", {})
    found = per_function.get(id(function))
    if found is None or found[0] is not function:
        found = per_function[id(function)] = (function, {})
    return found[1]


def _summaries_for(context: ReviewContext, file: ParsedFile | None, path: str) -> Summaries:
    # One set of summaries per review context and file: every function of
    # the file asks about the same callees.  Kept on the context (a weak
    # mapping keyed by it would keep it alive: the summaries hold it).
    per_file = context.memo.setdefault("summaries", {})
    key = (file.image.blob_id if file is not None else "", path)
    found = per_file.get(key)
    if found is None:
        if len(per_file) > 64:
            per_file.clear()
        found = per_file[key] = Summaries(context, file, path)
    return found


def flow_of(
    function: Function, file: ParsedFile | None, context: ReviewContext, path: str
) -> FunctionFlow:
    return FunctionFlow(function, file, context, path)


def _lock_effect_rows(function: Function) -> list[list[object]] | None:
    """What a callee does to the locks it is handed (LockEffect fields), as
    JSON holds them: the answer is kept with the callee's header."""
    if function.body is None:
        return None
    parameters = parameters_of(function.node)
    effects = helper_effects(function.body, parameters) + annotated_effects(function, parameters)
    return [list(effect) for effect in effects]


def _are_lock_effect_rows(rows: object) -> bool:
    return rows is None or (
        isinstance(rows, list)
        and all(
            isinstance(row, list)
            and len(row) == 4
            and (row[0] is None or type(row[0]) is str)
            and type(row[1]) is int
            and type(row[2]) is bool
            and type(row[3]) is str
            for row in rows
        )
    )
