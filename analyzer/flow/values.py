"""What a value can be, at each point of a function: a forward dataflow
analysis over the graph, one `Tracker` (a table of kernel API facts) at a time.

The state maps each tracked *place* (`pte`, `vmf->pte`, `*pmd`, a lock) to
the *values* it may hold, and each value to the *kinds* it may be: `null`
or `ptr` or `err` for a pointer, `none`, `present`, `huge`, `migration` ...
for a page-table entry, `held` or `free` for a lock.  Values are named by
the place in the code that made them, so aliases share them: after
`start_pte = pte = pte_offset_map_lock(...)` both names hold one value,
and `if (!start_pte) return;` makes `pte` non-NULL too.  `pte += nr` and
`pte++` keep the value (a pointer moved within its table is still NULL
if the table was), and forget what `*pte` was.

Branch edges refine: on the true edge of `!pte` the value is `null`, on
the false edge it is not; a tracker's `tests` table does the same for
calls (`pmd_none(x)`, `IS_ERR(x)`).  A path whose refinement leaves a value
with no kind is infeasible and is not followed.  A value can carry *links*:
"when I am refined to these kinds, that other value becomes those kinds" —
how `pte_offset_map_lock()` says the lock is held exactly when the pointer
it returned is not NULL.

Paths are kept apart where they differ, as smatch keeps its implication
pools: each point holds up to `WIDTH` states, one per kind of path that
reached it, so that `result = SCAN_PMD_NULL` on the path where `pte` is
NULL is still tied to it when `if (result != SCAN_SUCCEED) goto out;` is
tested later.  Integer places compared with constants in the function
(`result`, `ret`) hold the constants assigned to them (`=SCAN_PMD_NULL`),
refined by `==`, `!=` and `switch` cases.  Past `WIDTH` the two states
whose join loses least are merged (a place paired with kinds it never had
on either side is the worst loss): the sets of values and kinds are
united; a place
tracked on one side only gets, from the other, what the tracker says an
untracked place holds (nothing for a pointer that did not come from a
tracked call, `free` for a lock, "anything" for a page-table entry nobody
has read).  The lattice is finite (values are per call site, kinds per
tracker), and a point visited often is reduced to one merged state, so
the fixpoint is reached; a budget of visits per point ends pathological
cases, and an analysis that ran out says so (`complete` is False) so that
rules can stay silent instead of guessing.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow.cfg import BRANCH, RETURN, SWITCH, Edge, Graph, Point
from analyzer.patterns import regex
from analyzer.records import Record

Kinds = frozenset[str]
Value = int | str  # a call site's id, or "top:<place>" for "whatever it held"

NULL, PTR, ERR = "null", "ptr", "err"
TRUE, FALSE = "true", "false"
POINTER = frozenset({NULL, PTR, ERR})
BOOLEAN = frozenset({TRUE, FALSE})
FALSY = frozenset({NULL, FALSE})
TRUTH_KINDS = POINTER | BOOLEAN

# Visits per point before an analysis gives up (loops converge in a few),
# and before a point's path states are merged into one.
VISIT_BUDGET = 60
MERGE_AFTER = 12
# Path states kept apart at a point.
WIDTH = 6
CONSTANT = "="


# How value_of() reads an expression (Analysis._shape).
_NOTHING, _RESULT, _PLACE, _HELD, _INNER = "nothing", "result", "place", "held", "inner"


class Link(Record):
    """When the value carrying this link is refined within `when`, the value
    `target` is narrowed to `then`."""

    when: Kinds
    target: Value
    then: Kinds


class State:
    """What one path knows at a point: the values each place may hold,
    their kinds, and the facts linking them."""

    __slots__ = ("kinds", "links", "places")

    def __init__(
        self,
        places: dict[str, frozenset[Value]] | None = None,
        kinds: dict[Value, Kinds] | None = None,
        links: dict[Value, frozenset[Link]] | None = None,
    ) -> None:
        self.places = places if places is not None else {}
        self.kinds = kinds if kinds is not None else {}
        self.links = links if links is not None else {}

    def __repr__(self) -> str:
        return f"State({self.places!r}, {self.kinds!r}, {self.links!r})"

    def copy(self) -> State:
        return State(dict(self.places), dict(self.kinds), dict(self.links))

    def values(self, name: str) -> frozenset[Value] | None:
        return self.places.get(name)

    def kinds_of_values(self, values: Iterable[Value]) -> Kinds:
        found: set[str] = set()
        for value in values:
            found |= self.kinds.get(value, frozenset())
        return frozenset(found)


class Tracker:
    """The facts one analysis knows about the kernel API.  Subclasses fill
    the tables; the defaults track nothing."""

    name = "values"

    def default(self, name: str) -> Kinds | None:
        """What an untracked place holds when read or merged (None: it is
        simply not tracked)."""
        return None

    def call(
        self, analysis: Analysis, state: State, call: ev.Call, results: dict[int, frozenset[Value]]
    ) -> None:
        """The effect of a call: values it returns (`results[call.node.id]`),
        places it writes."""

    def tests(self, call: Node) -> Iterable[tuple[Node | str, Kinds, Kinds]]:
        """(argument or place tested, kinds on the true edge, on the false edge)."""
        return ()

    def killed_by_call(self, name: str) -> bool:
        """May a call handed the struct holding this place change it?"""
        return True

    def reads_only(self, call: str) -> bool:
        """Does `call` only read what it is handed the address of?"""
        return False

    def taken(self, analysis: Analysis, state: State, condition: Node, taken: bool) -> bool | None:
        """A branch on `condition` goes along its `taken` edge (False: it
        cannot, on this path)."""
        return None

    def forgot(self, analysis: Analysis, state: State, name: str) -> None:
        """Place `name` has just been given a new value (facts about the old
        one a tracker keeps elsewhere are gone)."""

    # Answers from the summaries of the tree's functions, when the flow
    # layer has them: a helper that only returns a condition (`return
    # !vmf->pte;`) gives that condition and its parameter names, so that
    # testing the call tests the condition.
    predicates: Callable[[str], tuple[Node, list[str]] | None] | None = None

    def predicate(self, call: Node) -> tuple[Node, list[str]] | None:
        name = syntax.call_name(call)
        if self.predicates is None or not name:
            return None
        return self.predicates(name)

    def scope_end(self, analysis: Analysis, state: State, node: Node) -> None:
        """A guard scope ends (`guard()`, `scoped_guard()`)."""

    def assign(
        self,
        analysis: Analysis,
        state: State,
        assign: ev.Assign,
        results: dict[int, frozenset[Value]],
    ) -> None:
        """An assignment is about to store (`x->f = p`): what the stored
        value was is still in `state`."""

    def constant_places(self, graph: Graph) -> frozenset[str]:
        """Integer places worth following through the constants assigned to
        them, beyond those the function compares with constants."""
        return frozenset()

    def weight(self, name: str) -> int:
        """How much keeping paths apart on place `name` matters, when too
        many path states reach a point and two must be merged."""
        return 1

    def iterate(self, analysis: Analysis, state: State, names: tuple[Node, ...]) -> None:
        """An iterator macro steps: by default its bare names get values
        nobody tracks."""
        for name in names:
            analysis.forget(state, syntax.text(name))


class Analysis:
    """One tracker run over one function's graph."""

    def __init__(
        self, graph: Graph, tracker: Tracker, parameters: dict[str, Kinds] | None = None
    ) -> None:
        self.graph = graph
        self.tracker = tracker
        self.entry_states: dict[int, list[State]] = {}
        self.complete = True
        self._handed_by_call: dict[int, list[tuple[str | None, tuple[str, ...]]]] = {}
        self._shapes: dict[int, tuple[str, object, Node]] = {}
        self.compared = _compared_with_constants(graph) | tracker.constant_places(graph)
        self._weights: dict[str, int] = {}
        # Only a tracker with weights of its own pays for them in merges.
        self._weights_of = self._weight if type(tracker).weight is not Tracker.weight else None
        initial = State()
        for name, kinds in (parameters or {}).items():
            value = f"param:{name}"
            initial.places[name] = frozenset({value})
            initial.kinds[value] = kinds
        self._solve(initial)

    # -- the fixpoint -------------------------------------------------------------

    def _weight(self, name: str) -> int:
        found = self._weights.get(name)
        if found is None:
            found = self._weights[name] = self.tracker.weight(name)
        return found

    def events(self, point: Point) -> list[ev.Event]:
        return ev.events_of(point)

    def _solve(self, initial: State) -> None:
        order = self.graph.reverse_postorder()
        rank = {p.id: i for i, p in enumerate(order)}
        self.entry_states[self.graph.entry.id] = [initial]
        queue = [(rank[self.graph.entry.id], self.graph.entry.id)]
        queued = {self.graph.entry.id}
        visits: dict[int, int] = {}
        points = {p.id: p for p in order}
        # The path states each point has passed on already, by identity (held,
        # so that no id is reused): a point visited again passes on only the
        # states that are new there.
        passed: dict[int, dict[int, State]] = {}
        while queue:
            _, point_id = heapq.heappop(queue)
            queued.discard(point_id)
            visits[point_id] = visits.get(point_id, 0) + 1
            if visits[point_id] > VISIT_BUDGET:
                self.complete = False
                return
            point = points[point_id]
            arriving: dict[int, list[State]] = {}
            done = passed.setdefault(point_id, {})
            for state in self.entry_states[point_id]:
                if id(state) in done:
                    continue
                done[id(state)] = state
                out, results = self.transfer(point, state)
                for edge in point.succs:
                    refined = self.refine(edge, out, results)
                    if refined is not None and edge.target.id in rank:
                        arriving.setdefault(edge.target.id, []).append(refined)
            for target, states in arriving.items():
                old = self.entry_states.get(target, [])
                merged = self._add(old, states, visits.get(target, 0) >= MERGE_AFTER)
                if merged is not old:
                    self.entry_states[target] = merged
                    if target not in queued:
                        queued.add(target)
                        heapq.heappush(queue, (rank[target], target))

    def _add(self, old: list[State], new: list[State], collapse: bool) -> list[State]:
        """`old` with the path states `new`; `old` itself when nothing changed."""
        combined = list(old)
        changed = False
        for state in map(_collected, new):
            if any(_same(state, kept) for kept in combined):
                continue
            combined.append(state)
            changed = True
        if not changed:
            return old
        if collapse and len(combined) > 1:
            single = combined[0]
            for state in combined[1:]:
                single = self._join(single, state)
            return old if len(old) == 1 and _same(old[0], single) else [single]
        weight = self._weights_of
        # Losses of pairs already weighed in this merge, by the states' ids (a
        # join makes a new state; the ones it replaced are kept in `retired`
        # so that no id is reused while `weighed` holds it).
        weighed: dict[tuple[int, int], int] = {}
        retired: list[State] = []
        while len(combined) > WIDTH:
            # The newest state goes into the one whose join with it loses least.
            newest = combined.pop()
            losses = [_weighed_loss(state, newest, weight, weighed) for state in combined]
            index = min(range(len(combined)), key=losses.__getitem__)
            if weight is not None and losses[index] >= _WEIGHTY:
                # A tracker with weights, and the newest state differs from
                # every other where it weighs: the two states whose join
                # loses least, old or new (a failure arriving at a label
                # where successes fill the pool must not become one of them).
                combined.append(newest)
                i, j = _least_loss_pair(combined, weight, weighed)
                retired += (combined[i], combined[j])
                combined[i] = self._join(combined[i], combined.pop(j))
                continue
            retired += (combined[index], newest)
            combined[index] = self._join(combined[index], newest)
        if len(combined) == len(old) and all(
            _same(a, b) for a, b in zip(combined, old, strict=True)
        ):
            return old
        return combined

    def transfer(self, point: Point, state: State) -> tuple[State, dict[int, frozenset[Value]]]:
        state = state.copy()
        results: dict[int, frozenset[Value]] = {}
        for event in self.events(point):
            self.step(state, event, results)
        return state, results

    def step(self, state: State, event: ev.Event, results: dict[int, frozenset[Value]]) -> None:
        if isinstance(event, ev.Call):
            self._call(state, event, results)
        elif isinstance(event, ev.Assign):
            self._assign(state, event, results)
        elif isinstance(event, ev.Deref):
            self.read(state, event.node, results)
        elif isinstance(event, ev.Store):
            values = self.value_of(state, event.node, results)
            if values:
                state.places[event.temporary] = values
        elif isinstance(event, ev.Iterate):
            self.tracker.iterate(self, state, event.names)
        elif isinstance(event, ev.ScopeEnd):
            self.tracker.scope_end(self, state, event.node)

    def _call(self, state: State, call: ev.Call, results: dict[int, frozenset[Value]]) -> None:
        reads_only = self.tracker.reads_only(call.name or "")
        for target, fields in self._handed(call):
            if target is not None and not reads_only:
                # `&x` handed over: x may be written.  A tracker that knows
                # the call re-binds it below.
                self.forget(state, target)
                continue
            if fields:
                for tracked in list(state.places):
                    if tracked.lstrip("*").startswith(fields) and self.tracker.killed_by_call(
                        tracked
                    ):
                        self.forget(state, tracked, subplaces=False)
        self.tracker.call(self, state, call, results)

    def _handed(self, call: ev.Call) -> list[tuple[str | None, tuple[str, ...]]]:
        """For each argument of `call`: the place `&x` hands over, and the
        beginnings of the places reached through a field of a pointer
        handed over (`p->`, `p.`).  Syntax: worked out once per call, though
        the call is passed on every path."""
        found = self._handed_by_call.get(call.node.id)
        if found is None:
            found = []
            for argument in call.arguments:
                target = ev.address_of(argument)
                name = ev.place(argument) if target is None else None
                fields = _field_prefixes(name) if name and not name.startswith("*") else ()
                found.append((target, fields))
            self._handed_by_call[call.node.id] = found
        return found

    def _assign(
        self, state: State, assign: ev.Assign, results: dict[int, frozenset[Value]]
    ) -> None:
        self.tracker.assign(self, state, assign, results)
        name = ev.place(assign.target)
        if name is None:
            return
        if assign.operator == "=":
            values = (
                self.value_of(state, assign.value, results) if assign.value is not None else None
            )
            self.forget(state, name)
            if values:
                state.places[name] = values
            elif name in self.compared and assign.value is not None:
                constant = constant_text(assign.value)
                if constant is not None:
                    self.bind(
                        state, name, f"const:{assign.node.id}", frozenset({CONSTANT + constant})
                    )
            return
        values = state.places.get(name, frozenset())
        if any(k.startswith(CONSTANT) for k in state.kinds_of_values(values)):
            # `nr++` on a counter known to be 0: not 0 any more.
            self.forget(state, name)
            return
        # `p += n`, `p++`: the same value, moved; what it pointed to is not known.
        self.tracker.forgot(self, state, "*" + name)
        for tracked in list(state.places):
            if tracked == "*" + name or (tracked.startswith("*") and _rooted_at(tracked[1:], name)):
                del state.places[tracked]

    # -- helpers for trackers ------------------------------------------------------

    def forget(self, state: State, name: str, subplaces: bool = True) -> None:
        """`name` (and what is reached through it) holds something new."""
        state.places.pop(name, None)
        self.tracker.forgot(self, state, name)
        if subplaces:
            fields = _field_prefixes(name)
            for tracked in list(state.places):
                if tracked != name and (
                    tracked.startswith(fields) or tracked.lstrip("*").startswith(fields)
                ):
                    del state.places[tracked]

    def bind(
        self, state: State, name: str, value: Value, kinds: Kinds, links: Iterable[Link] = ()
    ) -> None:
        state.places[name] = frozenset({value})
        state.kinds[value] = kinds
        links = frozenset(links)
        if links:
            state.links[value] = links
        else:
            state.links.pop(value, None)

    def new_value(
        self, state: State, site: Node, kinds: Kinds, links: Iterable[Link] = ()
    ) -> Value:
        value: Value = site.id
        state.kinds[value] = kinds
        links = frozenset(links)
        if links:
            state.links[value] = links
        else:
            state.links.pop(value, None)
        return value

    def held_values(self, state: State, name: str, site: Node) -> frozenset[Value]:
        """The values of `name`, made up from the tracker's default when the
        place is untracked and the tracker has one (a read of an entry)."""
        values = state.places.get(name)
        if values is not None:
            return values
        default = self.tracker.default(name)
        if default is None:
            return frozenset()
        value: Value = f"read:{site.id}:{name}"
        self.bind(state, name, value, default)
        return frozenset({value})

    def read(
        self, state: State, node: Node, results: dict[int, frozenset[Value]]
    ) -> frozenset[Value]:
        """Values read by evaluating `node` (binding defaults on first read)."""
        name = ev.place(node)
        if name is not None and name.startswith("*"):
            return self.held_values(state, name, node)
        return frozenset()

    def value_of(
        self,
        state: State,
        node: Node | None,
        results: dict[int, frozenset[Value]],
        rename: dict[str, str] | None = None,
    ) -> frozenset[Value] | None:
        """The tracked values an expression evaluates to, if any."""
        if node is None:
            return None
        if rename is None:
            # The common case, asked on every path state: what the
            # expression is, read once.
            shape = self._shapes.get(node.id)
            if shape is None:
                shape = self._shapes[node.id] = self._shape(node)
        else:
            shape = self._shape(node, rename)
        how, what, site = shape
        if how is _NOTHING:
            return None
        if how is _RESULT:
            return results.get(what)
        if how is _PLACE:
            return state.places.get(what)
        if how is _HELD:
            return self.held_values(state, what, site)
        return self.value_of(state, what, results, rename)

    def _shape(self, node: Node, rename: dict[str, str] | None = None) -> tuple[str, object, Node]:
        """How value_of() reads `node`: nothing, a call's result, a place as
        it is, a place read with its default, or an inner expression.  With
        `rename` (a callee's parameters as the caller's places), a call's
        result is not known."""
        node = ev.strip(node)
        kind = node.type
        if kind == "call_expression":
            return (_RESULT, node.id, node) if rename is None else (_NOTHING, None, node)
        if kind == "conditional_expression":
            temporary = self.graph.temporaries.get(node.id)
            return (_PLACE, temporary, node) if temporary else (_NOTHING, None, node)
        if kind == "assignment_expression":
            return _PLACE, ev.place(node.child_by_field_name("left"), rename) or "", node
        if kind in ("update_expression", "comma_expression", "binary_expression"):
            inner = {
                "update_expression": "argument",
                "comma_expression": "right",
                "binary_expression": "left",
            }[kind]
            if kind == "binary_expression" and syntax.text(
                node.child_by_field_name("operator")
            ) not in ("+", "-"):
                return _NOTHING, None, node
            inner_node = node.child_by_field_name(inner)
            return (_INNER, inner_node, node) if inner_node is not None else (_NOTHING, None, node)
        name = ev.place(node, rename)
        if name is None:
            return _NOTHING, None, node
        if name.startswith("*") or self.tracker.default(name) is not None:
            return _HELD, name, node
        return _PLACE, name, node

    # -- branches ---------------------------------------------------------------------

    def refine(
        self, edge: Edge, state: State, results: dict[int, frozenset[Value]]
    ) -> State | None:
        point = edge.source
        if point.kind == SWITCH and point.node is not None:
            name = ev.place(point.node)
            if name is None or name not in state.places:
                return state
            state = state.copy()
            if edge.case is not None:
                constant = constant_text(edge.case)
                if constant is not None and not self._constant(state, name, constant, True):
                    return None
            return state
        if point.kind != BRANCH or edge.taken is None or point.node is None:
            return state
        state = state.copy()
        if not self._refine_condition(state, point.node, edge.taken, results):
            return None
        if self.tracker.taken(self, state, point.node, edge.taken) is False:
            return None
        return state

    def _constant(self, state: State, name: str, constant: str, equal: bool) -> bool:
        """Refine place `name` by `== constant` (or `!=`); False: infeasible."""
        values = state.places.get(name)
        if not values:
            if equal and name in self.compared:
                # `if (result != SCAN_SUCCEED) goto out;`: past it, it is.
                self.bind(state, name, f"const:{name}={constant}", frozenset({CONSTANT + constant}))
            return True
        wanted = CONSTANT + constant
        return self._narrow_constants(
            state, values, lambda c: {k for k in c if (k == wanted) == equal}
        )

    def _narrow_constants(
        self, state: State, values: frozenset[Value], keep: Callable[[set[str]], set[str]]
    ) -> bool:
        alive = False
        for value in values:
            kinds = state.kinds.get(value, frozenset())
            constants = {k for k in kinds if k.startswith(CONSTANT)}
            if not constants:
                alive = True
                continue
            kept = keep(constants)
            if kept != constants:
                state.kinds[value] = (kinds - constants) | frozenset(kept)
            alive = alive or bool(kept)
        return alive

    def _refine_condition(
        self,
        state: State,
        node: Node,
        taken: bool,
        results: dict[int, frozenset[Value]],
        rename: dict[str, str] | None = None,
    ) -> bool:
        node = ev.strip(node)
        if (
            node.type == "unary_expression"
            and syntax.text(node.child_by_field_name("operator")) == "!"
        ):
            argument = node.child_by_field_name("argument")
            return argument is None or self._refine_condition(
                state, argument, not taken, results, rename
            )
        if node.type == "binary_expression":
            operator = syntax.text(node.child_by_field_name("operator"))
            left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
            if left is None or right is None:
                return True
            if (operator == "&&" and taken) or (operator == "||" and not taken):
                # Both sides hold (a predicate helper's `return a && b;`).
                return self._refine_condition(state, left, taken, results, rename) and (
                    self._refine_condition(state, right, taken, results, rename)
                )
            if operator in ("==", "!="):
                if _is_null(right):
                    return self._truth(state, left, taken != (operator == "=="), results, rename)
                if _is_null(left):
                    return self._truth(state, right, taken != (operator == "=="), results, rename)
                for side, other in ((left, right), (right, left)):
                    constant = constant_text(other)
                    name = ev.place(side, rename)
                    if constant is not None and name is not None:
                        return self._constant(state, name, constant, taken == (operator == "=="))
            # `err < 0` taken, `ret >= 0` not taken: the value is not 0 there
            # (on the other edge nothing is known).
            if (
                operator in ("<", ">", "<=", ">=")
                and _is_null(right)
                and taken == (operator in ("<", ">"))
            ):
                return self._truth(state, left, True, results, rename)
            return True
        if node.type == "call_expression":
            for argument, on_true, on_false in self.tracker.tests(node):
                values = self._tested_values(state, argument, node, results, rename)
                if values and not self.narrow(state, values, on_true if taken else on_false):
                    return False
            predicate = self.tracker.predicate(node)
            if predicate is not None and rename is None:
                expression, parameters = predicate
                mapping = {}
                for parameter, argument in zip(parameters, syntax.arguments(node), strict=False):
                    name = ev.place(argument)
                    if parameter and name is not None:
                        mapping[parameter] = name
                return self._refine_condition(state, expression, taken, results, mapping)
        return self._truth(state, node, taken, results, rename)

    def _tested_values(
        self,
        state: State,
        tested: Node | str,
        call: Node,
        results: dict[int, frozenset[Value]],
        rename: dict[str, str] | None = None,
    ) -> frozenset[Value]:
        if isinstance(tested, str):
            return self.held_values(state, tested, call)
        return self.value_of(state, tested, results, rename) or frozenset()

    def _truth(
        self,
        state: State,
        node: Node,
        truthy: bool,
        results: dict[int, frozenset[Value]],
        rename: dict[str, str] | None = None,
    ) -> bool:
        values = self.value_of(state, node, results, rename)
        if not values:
            return True
        zero = {CONSTANT + "0", CONSTANT + "false"}
        if not self._narrow_constants(
            state, values, (lambda c: c - zero) if truthy else (lambda c: c & zero)
        ):
            return False
        if truthy:
            return self._narrow_with(state, values, TRUTH_KINDS, lambda kinds: kinds - FALSY)
        return self._narrow_with(state, values, TRUTH_KINDS, lambda kinds: kinds & FALSY)

    def narrow(self, state: State, values: frozenset[Value], kinds: Kinds) -> bool:
        """Refine `values` to `kinds` (in the dimension `kinds` speaks of:
        a pointer test does not erase what a value is as an entry); False
        when no value is left: the path is infeasible."""
        return self._narrow_with(
            state, values, _dimension_of(kinds), lambda current: current & kinds
        )

    def _narrow_with(
        self,
        state: State,
        values: frozenset[Value],
        dimension: Kinds,
        keep: Callable[[Kinds], Kinds],
    ) -> bool:
        alive = False
        pending: list[Value] = []
        for value in values:
            current = state.kinds.get(value, frozenset())
            spoken = current & dimension
            if not spoken:
                alive = True
                continue
            kept = keep(spoken)
            if kept != spoken:
                state.kinds[value] = (current - dimension) | kept
                pending.append(value)
            if kept:
                alive = True
        for value in pending:
            self._fire_links(state, value)
        return alive

    def _fire_links(self, state: State, value: Value, depth: int = 0) -> None:
        kinds = state.kinds.get(value, frozenset())
        for link in state.links.get(value, ()):
            if kinds and kinds <= link.when and depth < 4:
                current = state.kinds.get(link.target)
                if current is None:
                    continue
                refined = _intersect(current, link.then)
                if refined != current:
                    state.kinds[link.target] = refined
                    self._fire_links(state, link.target, depth + 1)

    def site(self, value: Value) -> Node | None:
        """The call or expression that made `value` (None for a default)."""
        if isinstance(value, str) and value.endswith(SPLIT):
            value = value.removesuffix(SPLIT)
            value = int(value) if value.isdigit() else value
        return self.graph.nodes_by_id.get(value) if isinstance(value, int) else None

    def _join(self, a: State, b: State) -> State:
        a = _split_apart(a, b)
        joined = State(dict(a.places), dict(a.kinds), dict(a.links))
        for name in set(a.places) | set(b.places):
            left, right = a.places.get(name), b.places.get(name)
            if left is not None and right is not None:
                joined.places[name] = left | right
                continue
            default = self.tracker.default(name)
            present = left if left is not None else right
            assert present is not None
            if name in self.compared and any(
                k.startswith(CONSTANT) for k in _kinds_in(a, b, present)
            ):
                # A constant on one side, any value on the other: not known.
                joined.places.pop(name, None)
            elif default is None:
                joined.places[name] = present
            else:
                top: Value = f"top:{name}"
                joined.places[name] = present | {top}
                joined.kinds[top] = joined.kinds.get(top, frozenset()) | default
        for value, kinds in b.kinds.items():
            joined.kinds[value] = joined.kinds.get(value, frozenset()) | kinds
        for value, links in b.links.items():
            joined.links[value] = joined.links.get(value, frozenset()) | links
        return joined

    # -- queries -------------------------------------------------------------------------

    def states(self) -> Iterator[tuple[Point, ev.Event, State, dict[int, frozenset[Value]]]]:
        """Every event of every reachable point with each path state before it."""
        for point in self.graph.reverse_postorder():
            for entry in self.entry_states.get(point.id, ()):
                state = entry.copy()
                results: dict[int, frozenset[Value]] = {}
                for event in self.events(point):
                    yield point, event, state, results
                    self.step(state, event, results)

    def before_each(self, node: Node) -> list[tuple[State, dict[int, frozenset[Value]]]]:
        """Each path state just before the event of `node` (or the first
        event inside it) runs; empty where no path reaches it."""
        point = self.graph.point_of(node)
        if point is None:
            return []
        found = []
        for entry in self.entry_states.get(point.id, ()):
            state = entry.copy()
            results: dict[int, frozenset[Value]] = {}
            for event in self.events(point):
                if syntax.within(event.node, node):
                    break
                self.step(state, event, results)
            found.append((state, results))
        return found

    def kinds_at(self, node: Node, expression: Node | None = None) -> Kinds | None:
        """The kinds `expression` (default: `node`) may be just before
        `node` runs, on any path; None when no path reaches it or nothing
        is tracked."""
        found: set[str] = set()
        tracked = False
        for state, results in self.before_each(node):
            values = self.value_of(state, expression if expression is not None else node, results)
            if values:
                tracked = True
                found |= state.kinds_of_values(values)
        return frozenset(found) if tracked else None

    def place_kinds_at(self, node: Node, name: str) -> Kinds | None:
        """The kinds place `name` may hold just before `node`, on any path."""
        found: set[str] = set()
        tracked = False
        for state, _results in self.before_each(node):
            values = self.held_values(state, name, node)
            if values:
                tracked = True
                found |= state.kinds_of_values(values)
        return frozenset(found) if tracked else None


def _kinds_in(a: State, b: State, values: frozenset[Value]) -> set[str]:
    found: set[str] = set()
    for value in values:
        found |= a.kinds.get(value, frozenset()) | b.kinds.get(value, frozenset())
    return found


def _same(a: State, b: State) -> bool:
    return a.places == b.places and a.kinds == b.kinds and a.links == b.links


def _collected(state: State) -> State:
    """The state without the values no place holds any more (their kinds
    would keep apart states that are the same)."""
    if len(state.kinds) <= len(state.places) + 2:
        return state  # not worth a walk: at most a few dead values
    live = set()
    for values in state.places.values():
        live |= values
    pending = list(live)
    while pending:
        for link in state.links.get(pending.pop(), ()):
            if link.target not in live:
                live.add(link.target)
                pending.append(link.target)
    if len(live) == len(state.kinds) and len(state.links) <= len(live):
        return state
    state.kinds = {v: k for v, k in state.kinds.items() if v in live}
    state.links = {v: k for v, k in state.links.items() if v in live}
    return state


# The suffix of a value split from its namesake by a join (see _split_apart).
SPLIT = "~"


def _split_apart(a: State, b: State) -> State:
    """`a`, with each value that it and `b` give other kinds *and* other
    holders renamed: joined as one value, its kinds on one side would be
    paired with places that held it on the other only (after `if
    (is_migration(pmd)) wait(pmd);`, the waited entry with the kinds of the
    one not waited for)."""
    other_kinds = {v for v, _ in a.kinds.items() ^ b.kinds.items() if v in a.kinds and v in b.kinds}
    if not other_kinds:
        return a
    holders_a, holders_b = _holders(a, other_kinds), _holders(b, other_kinds)
    renamed = {
        value: _split_name(value)
        for value in other_kinds
        if holders_a.get(value) != holders_b.get(value)
    }
    if not renamed:
        return a

    def name(value: Value) -> Value:
        return renamed.get(value, value)

    return State(
        {place: frozenset(map(name, values)) for place, values in a.places.items()},
        {name(value): kinds for value, kinds in a.kinds.items()},
        {
            name(value): frozenset(Link(k.when, name(k.target), k.then) for k in links)
            for value, links in a.links.items()
        },
    )


def _holders(state: State, values: set[Value]) -> dict[Value, frozenset[str]]:
    found: dict[Value, set[str]] = {}
    for place, held in state.places.items():
        for value in held & values:
            found.setdefault(value, set()).add(place)
    return {value: frozenset(places) for value, places in found.items()}


def _split_name(value: Value) -> Value:
    # Once split is enough: the lattice stays finite (a split value joined
    # again unites its kinds, as any value does).
    text = str(value)
    return text if text.endswith(SPLIT) else text + SPLIT


def _join_loss(a: State, b: State, weight: Callable[[str], int] | None = None) -> int:
    """What joining two path states forgets.  A value of other kinds on the
    other side widens (1); a place holding other values costs more (4);
    worst (16) is a value one side's place holds while the other side gave
    it other kinds: the join pairs that place with kinds it never had (the
    split PMD with the unsplit one's kinds).  A tracker's `weight` of a place
    scales what a difference there costs, in its values or in their kinds."""
    # The symmetric differences of the item views run in C: most places
    # and values are alike.
    other_kinds = {value for value, _ in a.kinds.items() ^ b.kinds.items()}
    loss = len(other_kinds)
    empty: frozenset[Value] = frozenset()
    differ = {name for name, _ in a.places.items() ^ b.places.items()}
    for name in differ:
        loss += 4 if weight is None else 4 * weight(name)
        for value in a.places.get(name, empty) ^ b.places.get(name, empty):
            if value in other_kinds and value in a.kinds and value in b.kinds:
                loss += 16
    if weight is not None and other_kinds:
        # The same values with other kinds (owned on one side, released on
        # the other): as costly as other values where the place weighs more.
        for name, values in a.places.items():
            if name not in differ and not values.isdisjoint(other_kinds):
                loss += 4 * (weight(name) - 1)
    return loss


def _weighed_loss(
    a: State, b: State, weight: Callable[[str], int] | None, weighed: dict[tuple[int, int], int]
) -> int:
    pair = (id(a), id(b))
    loss = weighed.get(pair)
    if loss is None:
        loss = weighed[pair] = _join_loss(a, b, weight)
    return loss


# A join loss from which a tracker with weights looks for a better pair: a
# difference in a place weighing 8 (4 * 8).
_WEIGHTY = 32


def _least_loss_pair(
    states: list[State], weight: Callable[[str], int], weighed: dict[tuple[int, int], int]
) -> tuple[int, int]:
    """The indices `i < j` of the two states whose join loses least
    (`weighed`: losses known by the states' ids, kept while they live)."""
    best = (0, 1)
    least: int | None = None
    for j in range(len(states) - 1, 0, -1):
        for i in range(j):
            loss = _weighed_loss(states[i], states[j], weight, weighed)
            if least is None or loss < least:
                best, least = (i, j), loss
    return best


def _compared_with_constants(graph: Graph) -> frozenset[str]:
    """Places the function compares with constants (`result != SCAN_SUCCEED`,
    `switch (ret)`): the integers worth following through constants."""
    found = set()
    for point in graph.points:
        node = point.node
        if node is None:
            continue
        if point.kind == SWITCH:
            name = ev.place(node)
            if name is not None:
                found.add(name)
            continue
        if point.kind == RETURN:
            value = next((c for c in node.named_children if c.type != "comment"), None)
            if value is not None and value.type == "identifier":  # `return ret;`
                found.add(syntax.text(value))
            continue
        if point.kind != BRANCH:
            continue
        node = ev.strip(node)
        if node.type == "identifier":  # `if (ret)`
            found.add(syntax.text(node))
            continue
        if node.type != "binary_expression":
            continue
        if syntax.text(node.child_by_field_name("operator")) not in ("==", "!="):
            continue
        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        for side, other in ((left, right), (right, left)):
            if side is not None and other is not None and constant_text(other) is not None:
                name = ev.place(side)
                if name is not None:
                    found.add(name)
    return frozenset(found)


_CONSTANT_NAME = regex(r"[A-Z][A-Z0-9_]*")


def constant_text(node: Node) -> str | None:
    """`0`, `-1`, `true`, `SCAN_SUCCEED`, `-EAGAIN`, `VM_FAULT_OOM`: a
    constant spelled one way; None for anything else (NULL is no constant
    here: pointers have their own kinds)."""
    node = ev.strip(node)
    if node.type == "number_literal":
        digits = syntax.text(node).rstrip("uUlL").lower()
        try:
            return str(int(digits, 0))
        except ValueError:
            return None
    if node.type in ("true", "false"):
        return node.type
    if node.type == "identifier" and _CONSTANT_NAME.fullmatch(syntax.text(node)):
        return None if syntax.text(node) == "NULL" else syntax.text(node)
    if node.type == "unary_expression" and syntax.text(node.child_by_field_name("operator")) == "-":
        inner = constant_text(node.child_by_field_name("argument"))
        return f"-{inner}" if inner is not None else None
    return None


def literal_truth(node: Node | None) -> bool | None:
    """True or False for a literal (`1`, `false`, `0x0`), None for anything
    else (a named constant's value is not known here)."""
    constant = constant_text(node) if node is not None else None
    return _truth(constant) if constant is not None else None


def constant_truth(kinds: Kinds) -> bool | None:
    """The truth of a value every path gives a literal of one truth
    (`ret = 1` on one path, `ret = true` on another), None otherwise."""
    truths = {_truth(k.removeprefix(CONSTANT)) for k in kinds if k.startswith(CONSTANT)}
    return truths.pop() if len(truths) == 1 else None


def _truth(constant: str) -> bool | None:
    if constant in ("true", "false"):
        return constant == "true"
    return constant != "0" if constant.lstrip("-").isdigit() else None


def _intersect(current: Kinds, wanted: Kinds) -> Kinds:
    """Narrow the kinds of `wanted`'s dimension only."""
    dimension = _dimension_of(wanted)
    if not current & dimension:
        return current
    return (current - dimension) | (current & wanted)


# Kinds that answer the same question, and narrow each other.
DIMENSIONS: list[Kinds] = [POINTER | BOOLEAN]


def register_dimension(kinds: Iterable[str]) -> Kinds:
    dimension = frozenset(kinds)
    DIMENSIONS.append(dimension)
    return dimension


def _dimension_of(kinds: Kinds) -> Kinds:
    found: set[str] = set()
    for dimension in DIMENSIONS:
        if kinds & dimension:
            found |= dimension
    return frozenset(found)


def _rooted_at(name: str, root: str) -> bool:
    return name.startswith(_field_prefixes(root))


def _field_prefixes(root: str) -> tuple[str, str]:
    """How the places reached through a field of `root` begin."""
    return (root + "->", root + ".")


def _is_null(node: Node) -> bool:
    node = ev.strip(node)
    return (
        node.type == "null"
        or (node.type == "number_literal" and syntax.text(node) == "0")
        or (node.type == "identifier" and syntax.text(node) == "NULL")
    )
