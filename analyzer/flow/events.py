"""What a point of the graph does, as a list of events in evaluation order.

The analyses never walk syntax trees themselves: they see calls,
assignments, dereferences and returns, each with the tree node it came
from.  An expression's events come in post-order (arguments before the
call, the right side before the assignment), which is the order C
evaluates them in every case the rules care about.
"""

from __future__ import annotations

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow.cfg import ITERATE, SCOPE_END, SWITCH, Point
from analyzer.records import Record

# Subtrees that are not evaluated at run time.
_UNEVALUATED = frozenset(
    {
        "sizeof_expression",
        "alignof_expression",
        "type_descriptor",
        "macro_type_specifier",
        "comment",
    }
)


class Call(Record):
    node: Node
    name: str | None  # None for `(*fn)(...)` and `guard(x)(...)`'s outer call
    arguments: tuple[Node, ...]


class Assign(Record):
    node: Node
    target: Node
    value: Node | None  # None for ++ / --
    operator: str  # "=", "+=", ..., "++", "--"


class Deref(Record):
    """`*p`, `p[i]` or `p->f`: the pointer `pointer` is dereferenced."""

    node: Node
    pointer: Node


class Return(Record):
    node: Node
    value: Node | None


class Store(Record):
    """The value of a `?:` arm goes into its temporary."""

    node: Node
    temporary: str


class Iterate(Record):
    """An iterator macro steps: its plain-name arguments get new values."""

    node: Node
    names: tuple[Node, ...]


class ScopeEnd(Record):
    """A `guard()` or `scoped_guard()` scope ends: its lock is dropped."""

    node: Node


Event = Call | Assign | Deref | Return | Store | Iterate | ScopeEnd


def events_of(point: Point) -> list[Event]:
    """What `point` does (the list is shared: read it, do not change it)."""
    if point.events is None:
        point.events = _events_of(point)
    return point.events


def _events_of(point: Point) -> list[Event]:
    node = point.node
    if node is None:
        return []
    if point.kind == SCOPE_END:
        return [ScopeEnd(node)]
    if point.kind == SWITCH:
        return []
    if point.kind == ITERATE:
        return _iterate(node)
    events: list[Event] = []
    hole_ids = {h.id for h in point.holes}
    _expression_events(node, hole_ids, events)
    if node.type == "return_statement":
        value = next((c for c in node.named_children if c.type != "comment"), None)
        events.append(Return(node, value))
    if point.result is not None:
        events.append(Store(node, point.result))
    return events


def _iterate(node: Node) -> list[Event]:
    """`list_for_each_entry(pos, head, member)` read as `while (pos, head,
    member)`, or `vma_interval_tree_foreach(vma, root, s, e)` as a call:
    every bare name may be stepped (member names are harmless extras)."""
    events: list[Event] = []
    _expression_events(node, set(), events, calls_only=True)
    names = tuple(n for n in _top_level_items(node) if n.type == "identifier")
    events.append(Iterate(node, names))
    return events


def _top_level_items(node: Node) -> list[Node]:
    while node.type == "parenthesized_expression" and node.named_children:
        node = node.named_children[0]
    if node.type == "call_expression":
        return list(syntax.arguments(node))
    return comma_items(node)


def comma_items(node: Node) -> list[Node]:
    """The expressions of `a, b, c` (parentheses around it dropped)."""
    while node.type == "parenthesized_expression" and node.named_children:
        node = node.named_children[0]
    items: list[Node] = []
    while node.type == "comma_expression":
        left = node.child_by_field_name("left")
        if left is not None:
            items.append(left)
        right = node.child_by_field_name("right")
        if right is None:
            break
        node = right
    items.append(node)
    return items


def _expression_events(
    root: Node, hole_ids: set[int], events: list[Event], calls_only: bool = False
) -> None:
    # Iterative post-order: (node, children done?).
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            event = _event(node, calls_only)
            if event is not None:
                events.append(event)
            continue
        if node.id in hole_ids or node.type in _UNEVALUATED:
            continue
        stack.append((node, True))
        children = node.children
        if node.type == "assignment_expression":
            # The right side is evaluated before the store.
            right = node.child_by_field_name("right")
            left = node.child_by_field_name("left")
            children = [c for c in (left, right) if c is not None]
        for child in reversed(children):
            if child.is_named:
                stack.append((child, False))


def _event(node: Node, calls_only: bool) -> Event | None:
    kind = node.type
    if kind == "call_expression":
        return Call(node, syntax.call_name(node), tuple(syntax.arguments(node)))
    if calls_only:
        return None
    if kind == "assignment_expression":
        target = node.child_by_field_name("left")
        if target is None:
            return None
        operator = syntax.text(node.child_by_field_name("operator"))
        return Assign(node, target, node.child_by_field_name("right"), operator)
    if kind == "init_declarator":
        declarator = node.child_by_field_name("declarator")
        while declarator is not None and declarator.type in (
            "pointer_declarator",
            "array_declarator",
            "parenthesized_declarator",
        ):
            declarator = declarator.child_by_field_name("declarator") or (
                declarator.named_children[0] if declarator.named_children else None
            )
        value = node.child_by_field_name("value")
        if declarator is None or value is None:
            return None
        return Assign(node, declarator, value, "=")
    if kind == "update_expression":
        argument = node.child_by_field_name("argument")
        if argument is None:
            return None
        return Assign(node, argument, None, syntax.text(node.child_by_field_name("operator")))
    if kind == "pointer_expression":
        if syntax.text(node.child_by_field_name("operator")) == "*":
            pointer = node.child_by_field_name("argument")
            return Deref(node, pointer) if pointer is not None else None
        return None
    if kind == "subscript_expression":
        pointer = node.child_by_field_name("argument")
        return Deref(node, pointer) if pointer is not None else None
    if kind == "field_expression":
        if syntax.text(node.child_by_field_name("operator")) == "->":
            pointer = node.child_by_field_name("argument")
            return Deref(node, pointer) if pointer is not None else None
        return None
    return None


def strip(node: Node) -> Node:
    """An expression without the parentheses and casts around it."""
    while True:
        if node.type == "parenthesized_expression":
            inner = [c for c in node.named_children if c.type != "comment"]
            if len(inner) != 1 or inner[0].type == "compound_statement":
                return node
            node = inner[0]
        elif node.type == "cast_expression":
            value = node.child_by_field_name("value")
            if value is None:
                return node
            node = value
        else:
            return node


def place(node: Node | None, rename: dict[str, str] | None = None) -> str | None:
    """The storage an expression names, spelled one way: `pte`,
    `vmf->pte`, `pvmw.ptl`, `*pmd` (the entry `pmd` points to).  None for
    anything that is not a name for storage the analyses can follow.
    `rename` maps a callee's parameter names to the caller's places."""
    if node is None:
        return None
    node = strip(node)
    kind = node.type
    if kind == "identifier":
        name = syntax.text(node)
        return rename.get(name) if rename is not None else name
    if kind == "field_expression":
        base = place(node.child_by_field_name("argument"), rename)
        field = node.child_by_field_name("field")
        if base is None or field is None:
            return None
        return f"{base}{syntax.text(node.child_by_field_name('operator'))}{syntax.text(field)}"
    if kind == "pointer_expression" and syntax.text(node.child_by_field_name("operator")) == "*":
        base = place(node.child_by_field_name("argument"), rename)
        return f"*{base}" if base is not None else None
    return None


def address_of(node: Node) -> str | None:
    """The place `&x` takes the address of."""
    node = strip(node)
    if (
        node.type == "pointer_expression"
        and syntax.text(node.child_by_field_name("operator")) == "&"
    ):
        return place(node.child_by_field_name("argument"))
    return None


def destinations(call: Node) -> list[str]:
    """Where a call's result is stored: `x = f()`, `T *x = f()`, and each
    name of a chain `a = b = f()`."""
    found: list[str] = []
    node = call
    while True:
        parent = node.parent
        while parent is not None and parent.type in ("parenthesized_expression", "cast_expression"):
            node, parent = parent, parent.parent
        if parent is None:
            return found
        if parent.type == "assignment_expression" and parent.child_by_field_name("right") == node:
            name = place(parent.child_by_field_name("left"))
            if name is None or syntax.text(parent.child_by_field_name("operator")) != "=":
                return found
            found.append(name)
            node = parent
            continue
        if parent.type == "init_declarator" and parent.child_by_field_name("value") == node:
            declarator = parent.child_by_field_name("declarator")
            while declarator is not None and declarator.type == "pointer_declarator":
                declarator = declarator.child_by_field_name("declarator")
            name = place(declarator)
            if name is not None:
                found.append(name)
        return found


def null_on(condition: Node, taken: bool) -> str | None:
    """The pointer `condition` finds NULL on its `taken` edge, if it is one
    (`!p` taken, `p` not taken, `p == NULL` taken, `p != NULL` not taken)."""
    node = strip(condition)
    if node.type == "unary_expression" and syntax.text(node.child_by_field_name("operator")) == "!":
        return place(strip(node.child_by_field_name("argument"))) if taken else None
    if node.type in ("identifier", "field_expression"):
        return None if taken else place(node)
    if node.type == "binary_expression":
        operator = syntax.text(node.child_by_field_name("operator"))
        left, right = (strip(node.child_by_field_name(s)) for s in ("left", "right"))
        if (
            operator in ("==", "!=")
            and syntax.text(right) == "NULL"
            and taken == (operator == "==")
        ):
            return place(left)
    return None
