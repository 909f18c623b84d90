"""For which orders of two integers a condition holds.

`nr_none != nr_none_check` notices every difference between two counts;
`nr_none < nr_none_check` only some.  A rule about a re-count asks which
orders of the two sides a condition is true for, through `!`, `&&`, `||`,
parentheses and likely()/unlikely(); a condition that speaks of anything
else has no answer.
"""

from __future__ import annotations

from tree_sitter import Node

from analyzer import syntax

LESS, SAME, MORE = "<", "=", ">"
ANY = frozenset({LESS, SAME, MORE})
DIFFERENT, EQUAL = frozenset({LESS, MORE}), frozenset({SAME})
ORDERS = {
    "<": frozenset({LESS}),
    ">": frozenset({MORE}),
    "<=": frozenset({LESS, SAME}),
    ">=": frozenset({MORE, SAME}),
    "==": EQUAL,
    "!=": DIFFERENT,
}
_FLIPPED = {LESS: MORE, MORE: LESS, SAME: SAME}


def orders_holding(condition: Node, a: str, b: str) -> frozenset[str] | None:
    """The orders of `a` against `b` (LESS, SAME, MORE) for which the
    condition holds; None when it speaks of something else too."""
    node = condition
    while node.type == "parenthesized_expression" and node.named_children:
        node = node.named_children[0]
    if node.type == "call_expression" and syntax.call_name(node) in ("likely", "unlikely"):
        arguments = syntax.arguments(node)
        return orders_holding(arguments[0], a, b) if arguments else None
    if node.type == "unary_expression" and syntax.text(node.child_by_field_name("operator")) == "!":
        argument = node.child_by_field_name("argument")
        inner = orders_holding(argument, a, b) if argument is not None else None
        return ANY - inner if inner is not None else None
    if node.type != "binary_expression":
        return None
    operator = syntax.text(node.child_by_field_name("operator"))
    left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
    if left is None or right is None:
        return None
    if operator in ("&&", "||"):
        one, other = orders_holding(left, a, b), orders_holding(right, a, b)
        if one is None or other is None:
            return None
        return one & other if operator == "&&" else one | other
    sides = (syntax.text(left), syntax.text(right))
    if operator not in ORDERS or set(sides) != {a, b}:
        return None
    orders = ORDERS[operator]
    return orders if sides == (a, b) else frozenset(_FLIPPED[o] for o in orders)


def notices_every_difference(condition: Node, a: str, b: str) -> bool:
    """Is the condition true exactly when `a` and `b` differ, or exactly
    when they are equal (either way it tells them apart)?"""
    return orders_holding(condition, a, b) in (DIFFERENT, EQUAL)
