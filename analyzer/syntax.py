"""Small questions rules ask of a function's syntax tree.

Everything here works on tree-sitter nodes of a sanitized parse, reading
names from the node text (the sanitizer never touches identifiers a rule
cares about).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from functools import lru_cache

from tree_sitter import Node, Query, QueryCursor

from analyzer.patterns import regex

EXIT_STATEMENTS = frozenset(
    {"return_statement", "goto_statement", "continue_statement", "break_statement"}
)


def text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text else ""


def walk(node: Node) -> Iterator[Node]:
    """All descendants in document order, node first."""
    # A cursor, not node.children: rules walk whole functions many times,
    # and building the child lists was most of the review's time.
    yield node
    cursor = node.walk()
    if not cursor.goto_first_child():
        return
    depth = 1
    while True:
        yield cursor.node
        if cursor.goto_first_child():
            depth += 1
            continue
        while True:
            if depth == 0:
                return
            if cursor.goto_next_sibling():
                break
            cursor.goto_parent()
            depth -= 1


def call_name(call: Node) -> str | None:
    function = call.child_by_field_name("function")
    if function is not None and function.type == "identifier":
        return text(function)
    return None


def calls(node: Node, names: str | Collection[str] | None = None) -> list[Node]:
    """call_expressions under `node` (in document order), optionally only
    those calling one of `names`."""
    wanted = {names} if isinstance(names, str) else (set(names) if names is not None else None)
    return [n for n in _all_calls(node) if wanted is None or call_name(n) in wanted]


def calls_matching(node: Node, pattern: re.Pattern[str]) -> list[Node]:
    return [n for n in _all_calls(node) if pattern.fullmatch(call_name(n) or "")]


def _all_calls(node: Node) -> list[Node]:
    """Every call_expression in `node`'s subtree, node included, in the
    order walk() visits them; found by tree-sitter's query engine (in C)."""
    found = QueryCursor(_calls_query()).captures(node).get("call", [])
    # Outer calls first where two start together: `f(x)(y)` before `f(x)`.
    found.sort(key=lambda n: (n.start_byte, -n.end_byte))
    return found


@lru_cache(maxsize=1)
def _calls_query() -> Query:
    from analyzer.parsing import C_LANGUAGE

    return Query(C_LANGUAGE, "(call_expression) @call")


def arguments(call: Node) -> list[Node]:
    args = call.child_by_field_name("arguments")
    return [] if args is None else [a for a in args.named_children if a.type != "comment"]


def unparenthesized_parent(node: Node) -> Node | None:
    parent = node.parent
    while parent is not None and parent.type == "parenthesized_expression":
        parent = parent.parent
    return parent


def is_negated(node: Node) -> bool:
    """`!node`, allowing parentheses between."""
    parent = unparenthesized_parent(node)
    return (
        parent is not None
        and parent.type == "unary_expression"
        and text(parent.child_by_field_name("operator")) == "!"
    )


def ancestors(node: Node) -> Iterator[Node]:
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def enclosing(node: Node, *types: str) -> Node | None:
    return next((a for a in ancestors(node) if a.type in types), None)


def condition_owner(node: Node) -> Node | None:
    """The if/while/for/do statement whose condition contains `node`."""
    child = node
    for parent in ancestors(node):
        if parent.type in ("if_statement", "while_statement", "do_statement", "for_statement"):
            condition = parent.child_by_field_name("condition")
            if condition is not None and _within(child, condition):
                return parent
            return None
        if parent.type in ("compound_statement", "function_definition", "expression_statement"):
            return None
        child = parent
    return None


def _within(node: Node, container: Node) -> bool:
    return container.start_byte <= node.start_byte and node.end_byte <= container.end_byte


def branch_exits(statement: Node | None) -> bool:
    """Does this branch leave the current flow (return/goto/continue/break),
    directly or as the last statement of a block?"""
    if statement is None:
        return False
    if statement.type in EXIT_STATEMENTS:
        return True
    if statement.type == "compound_statement":
        body = [c for c in statement.named_children if c.type != "comment"]
        return bool(body) and branch_exits(body[-1])
    if statement.type == "expression_statement":
        call = statement.named_children[0] if statement.named_children else None
        return (
            call is not None
            and call.type == "call_expression"
            and call_name(call)
            in (
                "BUG",
                "panic",
            )
        )
    return False


def identifiers(node: Node) -> set[str]:
    return {text(n) for n in walk(node) if n.type == "identifier"}


_TOKEN_RE = regex(r"[A-Za-z_]\w*|\S")
_SPACES_RE = regex(r"\s+")


def one_line(node: Node, width: int = 60) -> str:
    """The node's text on one line, cut to `width` for a message."""
    squeezed = _SPACES_RE.sub(" ", text(node))
    return squeezed if len(squeezed) <= width else squeezed[: width - 3] + "..."


def node_key(node: Node) -> str:
    """The construct with names abstracted: calls keep their callee, every
    other identifier becomes `_`, so a renamed local does not make an old
    finding look new."""
    tokens = _TOKEN_RE.findall(text(node))
    out = []
    for i, token in enumerate(tokens):
        is_name = token[0].isalpha() or token[0] == "_"
        followed_by_call = i + 1 < len(tokens) and tokens[i + 1] == "("
        out.append(token if not is_name or followed_by_call or token.isupper() else "_")
    return "".join(out)


def macro_loop_body(call: Node) -> Node | None:
    """The statement an iterator macro heads, for the ones the sanitizer does
    not turn into `while` (`vma_interval_tree_foreach(vma, root, s, e) {`):
    tree-sitter reads the call as an expression statement missing its `;`
    and the body as the next statement."""
    statement = call.parent
    if statement is None or statement.type != "expression_statement":
        return None
    if statement.named_children and statement.named_children[0] != call:
        return None
    if text(statement).rstrip().endswith(";"):
        return None
    body = statement.next_named_sibling
    while body is not None and body.type == "comment":
        body = body.next_named_sibling
    return body


def enclosing_macro_loop(node: Node, name: str) -> Node | None:
    """The iterator macro call `name(...) { }` whose body holds `node`."""
    for ancestor in ancestors(node):
        statement = ancestor.prev_named_sibling
        while statement is not None and statement.type == "comment":
            statement = statement.prev_named_sibling
        head = statement.named_children[0] if statement and statement.named_children else None
        if (
            head is not None
            and head.type == "call_expression"
            and call_name(head) == name
            and macro_loop_body(head) == ancestor
        ):
            return head
    return None


def within(node: Node, container: Node) -> bool:
    """Is `node` inside `container` (or `container` itself)?"""
    return container.start_byte <= node.start_byte and node.end_byte <= container.end_byte


def called_definitions(
    body: Node, functions: dict[str, Node], exclude: str = ""
) -> list[tuple[Node, Node]]:
    """(call, definition body) for each call in `body` to a function defined
    in the same file (`functions`: name -> body), for rules that look one
    level into same-file helpers."""
    return [
        (call, functions[name])
        for call in calls(body)
        if (name := call_name(call)) in functions and name != exclude
    ]
