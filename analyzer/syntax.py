"""Small questions rules ask of a function's syntax tree.

Everything here works on tree-sitter nodes of a sanitized parse, reading
names from the node text (the sanitizer never touches identifiers a rule
cares about).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator

from tree_sitter import Node

EXIT_STATEMENTS = frozenset(
    {"return_statement", "goto_statement", "continue_statement", "break_statement"}
)


def text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text else ""


def walk(node: Node) -> Iterator[Node]:
    """All descendants in document order, node first."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def call_name(call: Node) -> str | None:
    function = call.child_by_field_name("function")
    if function is not None and function.type == "identifier":
        return text(function)
    return None


def calls(node: Node, names: str | Collection[str] | None = None) -> list[Node]:
    """call_expressions under `node` (in document order), optionally only
    those calling one of `names`."""
    wanted = {names} if isinstance(names, str) else (set(names) if names is not None else None)
    return [
        n
        for n in walk(node)
        if n.type == "call_expression" and (wanted is None or call_name(n) in wanted)
    ]


def calls_matching(node: Node, pattern: str) -> list[Node]:
    regex = re.compile(pattern)
    return [
        n for n in walk(node) if n.type == "call_expression" and regex.fullmatch(call_name(n) or "")
    ]


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


def declared_type(function: Node, name: str) -> str | None:
    """The declared type of a parameter or local `name`, e.g. "pmd_t *"."""
    for node in walk(function):
        if node.type not in ("parameter_declaration", "declaration"):
            continue
        base = text(node.child_by_field_name("type"))
        for declarator in node.children_by_field_name("declarator"):
            stars = 0
            current = declarator
            while current is not None and current.type in (
                "pointer_declarator",
                "init_declarator",
                "array_declarator",
                "parenthesized_declarator",
            ):
                if current.type == "pointer_declarator":
                    stars += 1
                current = current.child_by_field_name("declarator") or (
                    current.named_children[0] if current.named_children else None
                )
            if current is not None and text(current) == name:
                return base + (" " + "*" * stars if stars else "")
    return None


_TOKEN_RE = re.compile(r"[A-Za-z_]\w*|\S")


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
