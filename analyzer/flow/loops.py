"""The loops of a function: what they iterate over, whether they yield, whether they end.

A loop is a statement (`while`, `for`, `do`, or an iterator macro such as
`list_for_each_entry()` or `vma_interval_tree_foreach()`) together with the
points of the graph that run on its iterations: the strongly connected
component of the graph, restricted to the loop's own text, that holds its
body.  Every point of it is on some iteration, so "the loop yields" is
"one of its points is a rescheduling point" (`cond_resched()`, a sleeping
call, a helper of the tree that reschedules, or a `need_resched()` test the
loop bails out on).

What it iterates over is read from its header:
- every task (`for_each_process()`, `for_each_process_thread()`), every
  memcg (`for_each_mem_cgroup()`, a loop stepping with `mem_cgroup_iter()`),
  every entry of an xarray or idr, a list whose head is a global
  (`list_for_each_entry(obj, &object_list, node)`): unbounded;
- every PFN of a zone or node (a `pfn` loop bounded by `zone_end_pfn()`,
  `pgdat_end_pfn()`, `max_pfn`...): unbounded;
- anything else: not known to be long (a pageblock, a folio's pages, the
  CPUs or nodes, a caller's range).
"""

from __future__ import annotations

from collections.abc import Callable

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow.cfg import ABORT, ENTRY, EXIT, Graph, Point
from analyzer.patterns import regex

# Iterator macros over sets with no useful bound.
UNBOUNDED_ITERATORS: dict[str, str] = {
    "for_each_process": "every process",
    "for_each_process_thread": "every thread",
    "for_each_thread": "every thread of a process",
    "for_each_mem_cgroup": "every memcg",
    "for_each_mem_cgroup_tree": "every memcg of a subtree",
    "xa_for_each": "every entry of an xarray",
    "xa_for_each_start": "every entry of an xarray",
    "xa_for_each_range": "every entry of an xarray",
    "xa_for_each_marked": "every marked entry of an xarray",
    "idr_for_each_entry": "every entry of an idr",
    "idr_for_each_entry_ul": "every entry of an idr",
}
_LIST_ITERATOR = regex(r"(?:h?list|llist)_for_each_entry\w*|(?:h?list)_for_each(?:_safe)?")
# Calls that step over every memcg.
MEMCG_STEPS = frozenset({"mem_cgroup_iter"})
# A PFN loop bounded by the end of a zone, a node or memory.
_PFN_NAME = regex(r"\w*pfn\w*")
_ITERATOR_NAME = regex(r"for_?each|_foreach")
_FIRST_WORD = regex(rb"\w+")
_WHOLE_RANGE = regex(
    r"\b(?:zone_end_pfn|pgdat_end_pfn|node_end_pfn|max_pfn|max_low_pfn|highest_memmap_pfn|"
    r"spanned_pages|node_spanned_pages)\b"
)


class Loop:
    """One loop of a function, with what its iterations run."""

    def __init__(
        self, node: Node, kind: str, macro: str | None, header: Node | None, body: Node | None
    ) -> None:
        self.node = node  # the loop statement (for an iterator macro: its call statement)
        self.kind = kind  # "while", "for", "do", "iterator"
        self.macro = macro  # the iterator macro's name
        self.header = header  # the condition, or the iterator's argument list
        self.body = body
        self.points: frozenset[int] = frozenset()  # graph points run on its iterations
        self.head: Point | None = None  # where each iteration starts
        self.unbounded: str | None = None  # what it iterates over, when that is unbounded
        self.ordinal = 0  # n-th loop of its kind and header in the function

    def __repr__(self) -> str:
        return f"<{self.kind} loop {self.key}>"

    @property
    def key(self) -> str:
        """The loop spelled without names, to match it across a patch."""
        header = syntax.node_key(self.header) if self.header is not None else ""
        return f"{self.kind}:{self.macro or ''}:{header}:{self.ordinal}"

    def contains(self, node: Node) -> bool:
        start, end = loop_extent(self)
        return start <= node.start_byte and node.end_byte <= end


def find_loops(
    body: Node, source: bytes, graph: Graph, globals_: Callable[[str], bool]
) -> list[Loop]:
    """Every loop of a function body, outermost first, with its points."""
    found: list[Loop] = []
    for node in syntax.walk(body):
        loop = _loop_at(node, source)
        if loop is not None:
            found.append(loop)
    counts: dict[tuple[str, str | None, str], int] = {}
    for loop in found:
        header = syntax.node_key(loop.header) if loop.header is not None else ""
        index = (loop.kind, loop.macro, header)
        loop.ordinal = counts.get(index, 0)
        counts[index] = loop.ordinal + 1
        loop.points, loop.head = _iteration_points(graph, loop)
        loop.unbounded = _unbounded(loop, globals_)
    return found


def _loop_at(node: Node, source: bytes) -> Loop | None:
    kind = node.type
    if kind == "while_statement":
        macro = _macro_name(node, source)
        condition = node.child_by_field_name("condition")
        return Loop(
            node,
            "iterator" if macro else "while",
            macro,
            condition,
            node.child_by_field_name("body"),
        )
    if kind == "for_statement":
        return Loop(node, "for", None, _for_header(node), node.child_by_field_name("body"))
    if kind == "do_statement":
        return Loop(
            node,
            "do",
            None,
            node.child_by_field_name("condition"),
            node.child_by_field_name("body"),
        )
    if kind == "expression_statement" and node.named_children:
        call = node.named_children[0]
        if call.type != "call_expression":
            return None
        name = syntax.call_name(call) or ""
        if not _ITERATOR_NAME.search(name):
            return None
        body = syntax.macro_loop_body(call)
        if body is None or body.type != "compound_statement":
            return None
        # Two sibling statements: the call, then the block it heads.
        return Loop(node, "iterator", name, call.child_by_field_name("arguments"), body)
    return None


def _for_header(node: Node) -> Node | None:
    return node.child_by_field_name("condition") or node.child_by_field_name("initializer")


def _macro_name(node: Node, source: bytes) -> str | None:
    """The iterator macro a sanitized `while` stands for."""
    head = source[node.start_byte : node.start_byte + 80]
    if head.startswith(b"while"):
        return None
    match = _FIRST_WORD.match(head)
    return match.group().decode() if match else None


def loop_extent(loop: Loop) -> tuple[int, int]:
    """The bytes of the loop: header and body (for a macro loop, the call
    statement and the block after it)."""
    end = loop.body.end_byte if loop.body is not None else loop.node.end_byte
    return loop.node.start_byte, max(end, loop.node.end_byte)


def _iteration_points(graph: Graph, loop: Loop) -> tuple[frozenset[int], Point | None]:
    start, end = loop_extent(loop)

    def inside(point: Point) -> bool:
        if point.kind in (ENTRY, EXIT, ABORT):
            return False
        node = point.node
        return node is None or (start <= node.start_byte and node.end_byte <= end)

    members = [p for p in graph.reverse_postorder() if inside(p)]
    allowed = {p.id for p in members}
    component = _component_of(members, allowed, loop, start, end)
    if not component:
        return frozenset(), None
    head = None
    for point in graph.reverse_postorder():
        if point.id in component and any(e.source.id not in component for e in point.preds):
            head = point
            break
    return frozenset(component), head


def _component_of(
    members: list[Point], allowed: set[int], loop: Loop, start: int, end: int
) -> set[int]:
    """The strongly connected component (of the graph restricted to the
    loop's text) that holds the loop's body or header."""
    components = _strongly_connected(members, allowed)
    seeds_start = loop.body.start_byte if loop.body is not None else start
    best: set[int] = set()
    by_id = {p.id: p for p in members}
    for component in components:
        if len(component) < 2 and not any(
            e.target.id in component for i in component for e in by_id[i].succs
        ):
            continue
        has_own = any(
            by_id[i].node is not None
            and (
                seeds_start <= by_id[i].node.start_byte
                or (loop.header is not None and syntax.within(by_id[i].node, loop.header))
            )
            for i in component
        )
        if has_own and len(component) > len(best):
            best = component
    return best


def _strongly_connected(members: list[Point], allowed: set[int]) -> list[set[int]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    result: list[set[int]] = []
    counter = 0
    by_id = {p.id: p for p in members}
    for root in members:
        if root.id in index:
            continue
        work: list[tuple[int, int]] = [(root.id, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = [e.target.id for e in by_id[node].succs if e.target.id in allowed]
            if position < len(successors):
                work.append((node, position + 1))
                nxt = successors[position]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                result.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _unbounded(loop: Loop, globals_: Callable[[str], bool]) -> str | None:
    if loop.macro is not None:
        if loop.macro in UNBOUNDED_ITERATORS:
            return UNBOUNDED_ITERATORS[loop.macro]
        if _LIST_ITERATOR.fullmatch(loop.macro):
            head = _list_head(loop)
            if head is not None and globals_(head):
                return f"every entry of the global list {head}"
        return None
    header_nodes = [
        n
        for n in (
            loop.header,
            loop.node.child_by_field_name("update") if loop.kind == "for" else None,
            loop.node.child_by_field_name("initializer") if loop.kind == "for" else None,
        )
        if n is not None
    ]
    for node in header_nodes:
        if syntax.calls(node, MEMCG_STEPS):
            return "every memcg"
    if loop.kind == "for":
        condition = loop.node.child_by_field_name("condition")
        initializer = loop.node.child_by_field_name("initializer")
        if condition is not None and _steps_pfn(loop):
            text = syntax.text(condition) + " " + syntax.text(initializer)
            if _WHOLE_RANGE.search(text):
                return "every PFN of a zone, node or of memory"
    return None


def _steps_pfn(loop: Loop) -> bool:
    update = loop.node.child_by_field_name("update")
    return update is not None and any(
        _PFN_NAME.fullmatch(name) for name in syntax.identifiers(update)
    )


def _list_head(loop: Loop) -> str | None:
    """The root name of a list iterator's head argument (`&object_list` ->
    object_list, `&init_mm.mmlist` -> init_mm)."""
    items = _header_items(loop)
    # (pos, head, member), or (pos, n, head, member) for the _safe forms.
    index = 2 if loop.macro is not None and "_safe" in loop.macro else 1
    if len(items) <= index:
        return None
    head = ev.strip(items[index])
    if (
        head.type == "pointer_expression"
        and syntax.text(head.child_by_field_name("operator")) == "&"
    ):
        head = head.child_by_field_name("argument") or head
    while head.type in ("field_expression", "subscript_expression"):
        head = head.child_by_field_name("argument") or head
        if head.type not in ("field_expression", "subscript_expression", "identifier"):
            return None
    return syntax.text(head) if head.type == "identifier" else None


def _header_items(loop: Loop) -> list[Node]:
    header = loop.header
    if header is None:
        return []
    if header.type == "argument_list":
        return [c for c in header.named_children if c.type != "comment"]
    return ev.comma_items(header)
