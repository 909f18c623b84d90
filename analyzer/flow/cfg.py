"""A control-flow graph of one C function, built from its tree-sitter tree.

Each `Point` evaluates one piece of the function: a statement, or the part of
an expression that runs before control splits.  Conditions are lowered into
branch points with a true and a false edge, so that `&&`, `||`, `!` and `?:`
are branches, as the compiler sees them: in `if (!pte || !pte_present(*pte))`
the path on which `pte` is NULL leaves through the first test's edge and never
reaches the second.

Kernel idioms:
- iterator macros (`list_for_each_entry(...) {`, which the sanitizer turns
  into `while (...)`, and `vma_interval_tree_foreach(...) {`, which the
  grammar reads as a call missing its `;`) are loops whose condition is
  opaque: both edges, no refinement;
- `scoped_guard(...) { ... }` runs its block once; `guard(...)(...)` holds
  until the end of the enclosing block, where a `scope-end` point stands;
- `BUG()`, `panic()`, `unreachable()` and `BUG_ON(cond)` lead to `abort`, a
  second exit that is not a return (a path that dies leaks nothing);
- `WARN_ON*(cond)` in a condition is its condition; as a statement it is no
  branch at all (the code goes on either way), and `VM_BUG_ON*()` is no
  branch either, since it is compiled out without CONFIG_DEBUG_VM;
- `#if`/`#ifdef` alternatives inside a body are branches: either may be the
  built one;
- `do { } while (0)`, `for (;;)` and `while (1)`: constant conditions take
  one edge only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import vocabulary

# What each point is.
ENTRY, EXIT, ABORT = "entry", "exit", "abort"
STATEMENT, BRANCH, JOIN = "statement", "branch", "join"
RETURN, SCOPE_END, ITERATE, SWITCH = "return", "scope-end", "iterate", "switch"


class Edge:
    """A way from one point of the graph to the next."""

    __slots__ = ("case", "source", "taken", "target")

    def __init__(
        self, source: Point, target: Point, taken: bool | None = None, case: Node | None = None
    ) -> None:
        self.source = source
        self.target = target
        # True/False on the edges leaving a branch point; None otherwise.
        self.taken = taken
        # On the edges leaving a `switch` head: the `case` value, or None.
        self.case = case

    def __repr__(self) -> str:
        return f"<edge {self.source.id} -> {self.target.id} taken={self.taken}>"


class Point:
    """One step of a function's control flow graph."""

    __slots__ = ("events", "holes", "id", "kind", "node", "preds", "result", "succs")

    def __init__(
        self,
        id: int,
        kind: str,
        node: Node | None = None,
        holes: tuple[Node, ...] = (),
        result: str | None = None,
    ) -> None:
        self.id = id
        self.kind = kind
        # What runs here: an expression, a declaration, a return statement,
        # the condition atom of a branch; None for entry, exit, joins.
        self.node = node
        # Subtrees of `node` that other points evaluate (the arms of `?:`,
        # the right side of `&&`): not part of this point's work.
        self.holes = holes
        # For an arm of a `?:` whose value is used: the temporary it is
        # stored in.
        self.result = result
        self.succs: list[Edge] = []
        self.preds: list[Edge] = []
        # What runs here as events (analyzer.flow.events): the same for
        # every analysis of the graph, so made once.
        self.events: list[Any] | None = None

    def __repr__(self) -> str:
        text = syntax.text(self.node).split("\n")[0][:40] if self.node is not None else ""
        return f"<{self.id} {self.kind} {text!r}>"


class Graph:
    """The control-flow graph of one function body."""

    def __init__(self) -> None:
        self.points: list[Point] = []
        self.entry = self._new(ENTRY)
        self.exit = self._new(EXIT)
        self.abort = self._new(ABORT)
        # The temporary holding the value of each `?:` whose value is used.
        self.temporaries: dict[int, str] = {}
        # Which point evaluates each expression a point holds, and the
        # expressions themselves (by node id: values are named after them).
        self._owner: dict[int, Point] = {}
        self.nodes_by_id: dict[int, Node] = {}
        self._order: list[Point] | None = None

    def _new(self, kind: str, node: Node | None = None, **kw: object) -> Point:
        point = Point(len(self.points), kind, node, **kw)  # type: ignore[arg-type]
        self.points.append(point)
        return point

    @staticmethod
    def connect(
        source: Point, target: Point, taken: bool | None = None, case: Node | None = None
    ) -> None:
        edge = Edge(source, target, taken, case)
        source.succs.append(edge)
        target.preds.append(edge)

    def point_of(self, node: Node) -> Point | None:
        """The point that evaluates `node` (or the expression holding it)."""
        current: Node | None = node
        while current is not None:
            point = self._owner.get(current.id)
            if point is not None:
                return point
            current = current.parent
        # A statement no point evaluates as a whole (an `if`): its first
        # part that one does (the condition).
        stack = [node]
        while stack:
            current = stack.pop()
            point = self._owner.get(current.id)
            if point is not None:
                return point
            stack.extend(reversed(current.children))
        return None

    def reverse_postorder(self) -> list[Point]:
        if self._order is None:
            seen: set[int] = set()
            order: list[Point] = []
            stack: list[tuple[Point, Iterator[Edge]]] = [(self.entry, iter(self.entry.succs))]
            seen.add(self.entry.id)
            while stack:
                point, edges = stack[-1]
                for edge in edges:
                    if edge.target.id not in seen:
                        seen.add(edge.target.id)
                        stack.append((edge.target, iter(edge.target.succs)))
                        break
                else:
                    stack.pop()
                    order.append(point)
            order.reverse()
            self._order = order
        return self._order

    def reachable(self) -> list[Point]:
        return self.reverse_postorder()


def build(body: Node, source: bytes) -> Graph:
    """The graph of a function body; `source` is the original file text (the
    parse is of a sanitized copy, where iterator macros read `while`)."""
    builder = _Builder(source)
    end = builder.statement(body, builder.graph.entry)
    if end is not None:
        Graph.connect(end, builder.graph.exit)
    builder.resolve_gotos()
    return builder.graph


class _Builder:
    def __init__(self, source: bytes) -> None:
        self.graph = Graph()
        self.source = source
        self.breaks: list[list[Point]] = []
        self.continues: list[Point] = []
        self.labels: dict[str, Point] = {}
        self.gotos: list[tuple[Point, str]] = []
        self.switch_heads: list[tuple[Point, Node]] = []

    # -- points ---------------------------------------------------------------

    def point(
        self, kind: str, node: Node | None, after: Point | None, holes: tuple[Node, ...] = ()
    ) -> Point:
        point = self.graph._new(kind, node, holes=holes)
        if node is not None:
            self._own(node, point, holes)
        if after is not None:
            Graph.connect(after, point)
        return point

    def _own(self, node: Node, point: Point, holes: tuple[Node, ...]) -> None:
        hole_ids = {h.id for h in holes}
        stack = [node]
        owner = self.graph._owner
        nodes = self.graph.nodes_by_id
        while stack:
            current = stack.pop()
            if current.id in hole_ids:
                continue
            if current.id not in owner:
                owner[current.id] = point
                nodes[current.id] = current
            stack.extend(current.children)

    def join(self, *sources: Point | None) -> Point | None:
        live = [s for s in sources if s is not None]
        if not live:
            return None
        if len(live) == 1:
            return live[0]
        point = self.graph._new(JOIN)
        for source in live:
            Graph.connect(source, point)
        return point

    def resolve_gotos(self) -> None:
        for point, label in self.gotos:
            target = self.labels.get(label)
            # A goto into a label the parser lost: end the path at exit.
            Graph.connect(point, target if target is not None else self.graph.exit)

    # -- statements -------------------------------------------------------------

    def statement(self, node: Node, current: Point | None) -> Point | None:
        """Lower one statement; returns where control goes on, or None when
        it cannot fall through."""
        kind = node.type
        if kind == "compound_statement":
            return self.block(node, current)
        if kind == "labeled_statement":
            label = self.graph._new(JOIN)
            if current is not None:
                Graph.connect(current, label)
            name = node.child_by_field_name("label")
            self.labels[syntax.text(name)] = label
            end: Point | None = label
            for inner in node.named_children:
                if inner.type not in ("statement_identifier", "comment"):
                    end = self.statement(inner, end)
            return end
        if current is None:
            # Dead code (after a return, before the next label): still lowered
            # so that its labels and gotos exist, from a point nobody reaches.
            current = self.graph._new(JOIN)
        if kind == "if_statement":
            return self.if_statement(node, current)
        if kind == "while_statement":
            if self._is_iterator(node):
                return self.loop(node, current, node.child_by_field_name("condition"), None, True)
            return self.loop(node, current, node.child_by_field_name("condition"), None)
        if kind == "for_statement":
            initializer = node.child_by_field_name("initializer")
            if initializer is not None:
                current = self.value(initializer, current)
            return self.loop(
                node,
                current,
                node.child_by_field_name("condition"),
                node.child_by_field_name("update"),
            )
        if kind == "do_statement":
            return self.do_loop(node, current)
        if kind == "switch_statement":
            return self.switch(node, current)
        if kind == "case_statement":
            return self.case(node, current)
        if kind == "break_statement":
            if self.breaks:
                self.breaks[-1].append(current)
            return None
        if kind == "continue_statement":
            if self.continues:
                Graph.connect(current, self.continues[-1])
            return None
        if kind == "return_statement":
            value = next((c for c in node.named_children if c.type != "comment"), None)
            if value is not None:
                # `return a ? b : c;`: the value itself may branch.
                current = self.branches_in(node, current)
            point = self.point(RETURN, node, current, self._holes(node) if value else ())
            Graph.connect(point, self.graph.exit)
            return None
        if kind == "goto_statement":
            point = self.point(STATEMENT, node, current)
            self.gotos.append((point, syntax.text(node.child_by_field_name("label"))))
            return None
        if kind == "expression_statement":
            return self.expression_statement(node, current)
        if kind == "declaration":
            return self.value(node, current)
        if kind in ("preproc_if", "preproc_ifdef", "preproc_elif", "preproc_elifdef"):
            return self.conditional_compilation(node, current)
        if kind in ("preproc_else",):
            return self.block(node, current)
        if kind in ("comment", "preproc_call", "preproc_def", "preproc_function_def"):
            return current
        if kind == "function_definition":
            # `scoped_guard(rcu) { ... }` reads as a nested definition: its
            # block still runs here (the guard's lock is not known).
            body = node.child_by_field_name("body")
            return self.block(body, current) if body is not None else current
        if kind in ("attributed_statement",):
            inner = [c for c in node.named_children if c.type != "attribute_declaration"]
            return self.statement(inner[0], current) if inner else current
        # Anything else (a type definition, an ERROR the parser made of a
        # stretch of code): one opaque step.
        return self.point(STATEMENT, node, current)

    def block(self, node: Node, current: Point | None) -> Point | None:
        children = [c for c in node.named_children if c.type != "comment"]
        guards: list[Node] = []
        index = 0
        while index < len(children):
            child = children[index]
            body = children[index + 1] if index + 1 < len(children) else None
            macro = self._block_macro(child, body)
            if macro is not None and body is not None:
                current = self.block_macro(child, macro, body, current)
                index += 2
                continue
            current = self.statement(child, current)
            if _is_guard(child):
                guards.append(child)
            index += 1
        # `guard(lock)(...)` holds until the block ends.
        for guard in reversed(guards):
            if current is not None:
                current = self.point(SCOPE_END, None, current)
                current.node = guard
        return current

    def if_statement(self, node: Node, current: Point) -> Point | None:
        condition = node.child_by_field_name("condition")
        then_entry = self.graph._new(JOIN)
        else_entry = self.graph._new(JOIN)
        self.condition(condition, current, then_entry, else_entry)
        then_end = self.statement(node.child_by_field_name("consequence"), then_entry)
        alternative = node.child_by_field_name("alternative")
        if alternative is not None:
            inner = [c for c in alternative.named_children if c.type != "comment"]
            else_end = self.statement(inner[0], else_entry) if inner else else_entry
        else:
            else_end = else_entry
        return self.join(then_end, else_end)

    def loop(
        self,
        node: Node,
        current: Point,
        condition: Node | None,
        update: Node | None,
        iterator: bool = False,
    ) -> Point | None:
        head = self.graph._new(JOIN)
        Graph.connect(current, head)
        body_entry = self.graph._new(JOIN)
        after = self.graph._new(JOIN)
        if iterator and condition is not None:
            step = self.point(ITERATE, condition, head)
            Graph.connect(step, body_entry, taken=True)
            Graph.connect(step, after, taken=False)
        elif condition is None:
            Graph.connect(head, body_entry)
        else:
            self.condition(condition, head, body_entry, after)
        step_entry = self.graph._new(JOIN)
        self.breaks.append([])
        self.continues.append(step_entry)
        body_end = self.statement(node.child_by_field_name("body"), body_entry)
        self.continues.pop()
        broken = self.breaks.pop()
        if body_end is not None:
            Graph.connect(body_end, step_entry)
        step_end: Point | None = step_entry
        if update is not None:
            step_end = self.value(update, step_entry)
        if step_end is not None:
            Graph.connect(step_end, head)
        for source in broken:
            Graph.connect(source, after)
        return after if after.preds else None

    def do_loop(self, node: Node, current: Point) -> Point | None:
        body_entry = self.graph._new(JOIN)
        Graph.connect(current, body_entry)
        condition_entry = self.graph._new(JOIN)
        after = self.graph._new(JOIN)
        self.breaks.append([])
        self.continues.append(condition_entry)
        body_end = self.statement(node.child_by_field_name("body"), body_entry)
        self.continues.pop()
        broken = self.breaks.pop()
        if body_end is not None:
            Graph.connect(body_end, condition_entry)
        self.condition(node.child_by_field_name("condition"), condition_entry, body_entry, after)
        for source in broken:
            Graph.connect(source, after)
        return after if after.preds else None

    def switch(self, node: Node, current: Point) -> Point | None:
        condition = node.child_by_field_name("condition")
        head = self.value(condition, current) if condition is not None else current
        if head is None:
            return None
        # The switch head holds the value compared (evaluated just before).
        switch_point = self.graph._new(SWITCH, condition)
        Graph.connect(head, switch_point)
        after = self.graph._new(JOIN)
        self.breaks.append([])
        self.switch_heads.append((switch_point, node))
        body = node.child_by_field_name("body")
        end = self.block(body, None) if body is not None else None
        self.switch_heads.pop()
        broken = self.breaks.pop()
        if not self._has_default(body):
            Graph.connect(switch_point, after)  # the value may match no case
        if end is not None:
            Graph.connect(end, after)
        for source in broken:
            Graph.connect(source, after)
        return after if after.preds else None

    @staticmethod
    def _has_default(body: Node | None) -> bool:
        return body is not None and any(
            c.type == "case_statement" and c.child_by_field_name("value") is None
            for c in body.named_children
        )

    def case(self, node: Node, current: Point | None) -> Point | None:
        label = self.graph._new(JOIN)
        if current is not None:
            Graph.connect(current, label)  # fall-through from the case above
        value = node.child_by_field_name("value")
        if self.switch_heads:
            Graph.connect(self.switch_heads[-1][0], label, case=value)
        end: Point | None = label
        for child in node.named_children:
            if child == value or child.type == "comment":
                continue
            end = self.statement(child, end)
        return end

    def expression_statement(self, node: Node, current: Point) -> Point | None:
        expression = next((c for c in node.named_children if c.type != "comment"), None)
        if expression is None:
            return current
        name = syntax.call_name(expression) if expression.type == "call_expression" else None
        if name in vocabulary.NORETURN:
            point = self.point(STATEMENT, node, current)
            Graph.connect(point, self.graph.abort)
            return None
        if name in vocabulary.ASSERT_CRASH:
            arguments = syntax.arguments(expression)
            if arguments:
                dies = self.graph._new(JOIN)
                goes_on = self.graph._new(JOIN)
                self.condition(arguments[0], current, dies, goes_on)
                Graph.connect(
                    self.point(STATEMENT, node, dies, self._argument_holes(expression)),
                    self.graph.abort,
                )
                return goes_on
        # `a && f(b);`, `c ? f() : g();`: the expression itself may branch.
        current = self.branches_in(node, current)
        return self.point(STATEMENT, node, current, self._holes(node))

    def conditional_compilation(self, node: Node, current: Point) -> Point | None:
        ends: list[Point | None] = []
        alternative = node.child_by_field_name("alternative")
        fork = self.point(JOIN, None, current)
        branch: Point | None = self.graph._new(JOIN)
        Graph.connect(fork, branch)
        skipped = {
            c.id
            for c in (
                alternative,
                node.child_by_field_name("name"),
                node.child_by_field_name("condition"),
            )
            if c is not None
        }
        for child in node.named_children:
            if child.id not in skipped:
                branch = self.statement(child, branch)
        ends.append(branch)
        if _assumed_on(node):
            return branch  # the configuration every lesson here is about
        if alternative is not None:
            other = self.graph._new(JOIN)
            Graph.connect(fork, other)
            ends.append(self.statement(alternative, other))
        else:
            ends.append(fork)  # none of the branches is built
        return self.join(*ends)

    def block_macro(
        self, head: Node, macro: str, body: Node, current: Point | None
    ) -> Point | None:
        """`vma_interval_tree_foreach(...) { }` and `scoped_guard(...) { }`."""
        if current is None:
            current = self.graph._new(JOIN)
        if macro == "guard":
            start = self.point(STATEMENT, head, current)
            end = self.statement(body, start)
            if end is None:
                return None
            scope_end = self.point(SCOPE_END, head, None)
            scope_end.result = syntax.text(head)
            Graph.connect(end, scope_end)
            return scope_end
        loop_head = self.graph._new(JOIN)
        Graph.connect(current, loop_head)
        step = self.point(ITERATE, head, loop_head)
        body_entry = self.graph._new(JOIN)
        after = self.graph._new(JOIN)
        Graph.connect(step, body_entry, taken=True)
        Graph.connect(step, after, taken=False)
        self.breaks.append([])
        self.continues.append(loop_head)
        end = self.statement(body, body_entry)
        self.continues.pop()
        for source in self.breaks.pop():
            Graph.connect(source, after)
        if end is not None:
            Graph.connect(end, loop_head)
        return after

    # -- expressions ------------------------------------------------------------

    def value(self, node: Node, current: Point | None) -> Point | None:
        """Evaluate `node` for its value and side effects."""
        if current is None:
            current = self.graph._new(JOIN)
        current = self.branches_in(node, current)
        return self.point(STATEMENT, node, current, self._holes(node))

    def branches_in(self, node: Node, current: Point) -> Point:
        """Lower the `&&`, `||` and `?:` inside an expression evaluated for
        its value, in evaluation order, before the rest of it."""
        for branching in self._holes(node):
            current = self.branching_value(branching, current)
        return current

    def branching_value(self, node: Node, current: Point) -> Point:
        after = self.graph._new(JOIN)
        if node.type == "conditional_expression":
            temporary = f"$t{node.id}"
            self.graph.temporaries[node.id] = temporary
            arms = []
            for field_name in ("consequence", "alternative"):
                arm = node.child_by_field_name(field_name)
                entry = self.graph._new(JOIN)
                arms.append((arm, entry))
            self.condition(node.child_by_field_name("condition"), current, arms[0][1], arms[1][1])
            for arm, entry in arms:
                if arm is None:  # GNU `a ?: b`
                    Graph.connect(entry, after)
                    continue
                end = self.value(arm, entry)
                assert end is not None
                end.result = temporary
                Graph.connect(end, after)
            return after
        # `a && b` / `a || b` for its value: b runs on one edge of a only.
        left = node.child_by_field_name("left")
        right = node.child_by_field_name("right")
        operator = syntax.text(node.child_by_field_name("operator"))
        right_entry = self.graph._new(JOIN)
        if operator == "&&":
            self.condition(left, current, right_entry, after)
        else:
            self.condition(left, current, after, right_entry)
        end = self.value(right, right_entry)
        assert end is not None
        Graph.connect(end, after)
        return after

    def condition(self, node: Node | None, current: Point, true: Point, false: Point) -> None:
        """Lower a condition into branch points leading to `true` and `false`."""
        if node is None:
            Graph.connect(current, true)
            return
        node = _strip(node)
        if (
            node.type == "unary_expression"
            and syntax.text(node.child_by_field_name("operator")) == "!"
        ):
            self.condition(node.child_by_field_name("argument"), current, false, true)
            return
        if node.type == "binary_expression":
            operator = syntax.text(node.child_by_field_name("operator"))
            if operator in ("&&", "||"):
                middle = self.graph._new(JOIN)
                if operator == "&&":
                    self.condition(node.child_by_field_name("left"), current, middle, false)
                else:
                    self.condition(node.child_by_field_name("left"), current, true, middle)
                self.condition(node.child_by_field_name("right"), middle, true, false)
                return
        if node.type == "conditional_expression":
            yes, no = self.graph._new(JOIN), self.graph._new(JOIN)
            self.condition(node.child_by_field_name("condition"), current, yes, no)
            consequence = node.child_by_field_name("consequence")
            # GNU `a ?: b`: the condition's truth is the value.
            self.condition(
                consequence, yes, true, false
            ) if consequence is not None else Graph.connect(yes, true)
            self.condition(node.child_by_field_name("alternative"), no, true, false)
            return
        if node.type == "comma_expression":
            left = node.child_by_field_name("left")
            if left is not None:
                after = self.value(left, current)
                assert after is not None
                current = after
            self.condition(node.child_by_field_name("right"), current, true, false)
            return
        if (
            node.type == "call_expression"
            and syntax.call_name(node) in vocabulary.TRANSPARENT_TESTS
        ):
            arguments = syntax.arguments(node)
            if arguments:
                self.condition(arguments[0], current, true, false)
                return
        constant = _constant(node)
        if constant is not None:
            Graph.connect(current, true if constant else false)
            return
        current = self.branches_in(node, current)
        point = self.point(BRANCH, node, current, self._holes(node))
        Graph.connect(point, true, taken=True)
        Graph.connect(point, false, taken=False)

    # -- helpers ----------------------------------------------------------------

    @staticmethod
    def _holes(node: Node) -> tuple[Node, ...]:
        """The outermost `&&`, `||` and `?:` inside `node` (not inside a
        statement expression, which is evaluated as one opaque step)."""
        found: list[Node] = []
        stack = [node]
        while stack:
            current = stack.pop()
            if current is not node and _is_branching(current):
                found.append(current)
                continue
            if current.type == "compound_statement":
                continue
            stack.extend(reversed(current.children))
        return tuple(found)

    def _argument_holes(self, call: Node) -> tuple[Node, ...]:
        arguments = call.child_by_field_name("arguments")
        return (arguments,) if arguments is not None else ()

    def _is_iterator(self, node: Node) -> bool:
        """A `while` the sanitizer made of an iterator macro."""
        return self.source[node.start_byte : node.start_byte + 5] != b"while"

    @staticmethod
    def _block_macro(statement: Node, following: Node | None) -> str | None:
        """`NAME(...) {` read as a call missing its `;`, followed by a block."""
        if following is None or statement.type != "expression_statement":
            return None
        if syntax.text(statement).rstrip().endswith(";"):
            return None
        call = statement.named_children[0] if statement.named_children else None
        if call is None or call.type != "call_expression":
            return None
        name = syntax.call_name(call) or ""
        if name in vocabulary.SCOPED_GUARDS:
            return "guard"
        if vocabulary.LOOP_MACRO.search(name):
            return "loop"
        return None


def _assumed_on(node: Node) -> bool:
    """`#ifdef CONFIG_TRANSPARENT_HUGEPAGE`: the mm lessons are about the
    kernels that have THPs and their migration; without them the code
    between is not built, and a path around it would be a path in another
    kernel."""
    if node.type not in ("preproc_ifdef", "preproc_if"):
        return False
    if node.type == "preproc_ifdef" and syntax.text(node).lstrip().startswith("#ifndef"):
        return False
    condition = node.child_by_field_name("name") or node.child_by_field_name("condition")
    text = syntax.text(condition)
    return "!" not in text and any(config in text for config in vocabulary.ASSUMED_CONFIGS)


def _is_branching(node: Node) -> bool:
    if node.type == "conditional_expression":
        return True
    return node.type == "binary_expression" and syntax.text(
        node.child_by_field_name("operator")
    ) in ("&&", "||")


def _is_guard(statement: Node) -> bool:
    """`guard(name)(args);`: a call whose callee is itself a call to guard."""
    if statement.type != "expression_statement" or not statement.named_children:
        return False
    call = statement.named_children[0]
    if call.type != "call_expression":
        return False
    callee = call.child_by_field_name("function")
    return (
        callee is not None
        and callee.type == "call_expression"
        and syntax.call_name(callee) == "guard"
    )


def _strip(node: Node) -> Node:
    while True:
        if node.type == "parenthesized_expression" and node.named_children:
            inner = [c for c in node.named_children if c.type != "comment"]
            if len(inner) != 1 or inner[0].type == "compound_statement":
                return node
            node = inner[0]
        elif node.type == "cast_expression" and node.child_by_field_name("value") is not None:
            node = node.child_by_field_name("value")  # type: ignore[assignment]
        else:
            return node


def _constant(node: Node) -> bool | None:
    if node.type == "true":
        return True
    if node.type in ("false", "null"):
        return False
    if node.type == "number_literal":
        digits = syntax.text(node).rstrip("uUlL").lower()
        try:
            return int(digits, 0) != 0
        except ValueError:
            return None
    return None
