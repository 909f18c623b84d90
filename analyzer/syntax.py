"""Small questions rules ask of a function's syntax tree.

Everything here works on tree-sitter nodes of a sanitized parse, reading
names from the node text (the sanitizer never touches identifiers a rule
cares about).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from functools import lru_cache

from tree_sitter import Node, Query, QueryCursor

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


def calls_matching(node: Node, pattern: str) -> list[Node]:
    regex = re.compile(pattern)
    return [n for n in _all_calls(node) if regex.fullmatch(call_name(n) or "")]


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


def declared_type(function: Node, name: str) -> str | None:
    """The declared type of a parameter or local `name`, e.g. "pmd_t *"."""
    return _declarations(function)[0].get(name)


@lru_cache(maxsize=64)
def _declarations(function: Node) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """Every declaration of a function, read in one walk: for each name the
    first declared type as written (declared_type), and all its normalised
    types (declared_types).  A rule asks for one name per read it checks,
    and a walk per question made a 3,000-line function take minutes.  The
    cache is small: it keeps the trees of the nodes it holds alive."""
    first: dict[str, str] = {}
    every: dict[str, set[str]] = {}
    for node in walk(function):
        if node.type not in ("parameter_declaration", "declaration"):
            continue
        base_node = node.child_by_field_name("type")
        base = text(base_node)
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
            if current is not None:
                first.setdefault(text(current), base + (" " + "*" * stars if stars else ""))
            declared, typed_stars = _declarator_name_and_stars(declarator)
            if declared is not None and typed_stars >= 0:
                every.setdefault(declared, set()).add(_typed(base_node, typed_stars))
    return first, {name: frozenset(types) for name, types in every.items()}


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


# --- Declared types of expressions, and declarations read from headers ---

_QUALIFIERS_RE = re.compile(r"\b(?:const|volatile|restrict|__restrict)\b")


def normalize_type(type_text: str) -> str:
    """A type spelled one way: qualifiers dropped, `pmd_t*` and `pmd_t  *`
    both as "pmd_t *"."""
    plain = " ".join(_QUALIFIERS_RE.sub(" ", type_text).split())
    base = plain.rstrip("* ").strip()
    stars = plain.count("*")
    return base + (" " + "*" * stars if stars else "")


def _declarator_name_and_stars(declarator: Node | None) -> tuple[str | None, int]:
    stars = 0
    current = declarator
    while current is not None and current.type in (
        "pointer_declarator",
        "abstract_pointer_declarator",
        "init_declarator",
        "array_declarator",
        "parenthesized_declarator",
        "attributed_declarator",
    ):
        if current.type in ("pointer_declarator", "abstract_pointer_declarator"):
            stars += 1
        inner = current.child_by_field_name("declarator")
        if inner is None and current.type in ("parenthesized_declarator", "attributed_declarator"):
            inner = current.named_children[0] if current.named_children else None
        current = inner
    if current is None:
        return None, stars
    if current.type in ("identifier", "field_identifier"):
        return text(current), stars
    return None, -1  # function pointers and other shapes nobody types here


def _typed(base: Node | None, stars: int) -> str:
    spelled = text(base)
    if base is not None and base.type in ("struct_specifier", "union_specifier"):
        name = base.child_by_field_name("name")
        spelled = f"{base.type.split('_')[0]} {text(name)}" if name is not None else "?"
    return normalize_type(spelled + " " + "*" * stars)


def declared_types(function: Node, name: str) -> set[str]:
    """Every type `name` is declared with in `function` (parameters and
    locals of all scopes), normalised; more than one means "it depends
    where", and a careful rule gives up."""
    return set(_declarations(function)[1].get(name, ()))


def expression_type(
    function: Node,
    expression: Node,
    field_type: Callable[[str, str], str | None] | None = None,
) -> str | None:
    """The declared type of `expression` inside `function`, when it follows
    from declarations alone: a parameter or local, `&x`, `*x`, `x[i]`,
    `p + n`, a cast, or `a->f` / `a.f` when `field_type(struct, field)`
    can say.  None when it cannot be known without guessing."""
    node = expression
    while node.type == "parenthesized_expression" and node.named_children:
        node = node.named_children[0]
    if node.type == "identifier":
        types = declared_types(function, text(node))
        return next(iter(types)) if len(types) == 1 else None
    if node.type == "cast_expression":
        return normalize_type(text(node.child_by_field_name("type")))
    if node.type == "pointer_expression":
        inner = expression_type(function, node.child_by_field_name("argument"), field_type)
        if inner is None:
            return None
        if text(node.child_by_field_name("operator")) == "&":
            return normalize_type(inner + " *")
        return _dereferenced(inner)
    if node.type == "subscript_expression":
        inner = expression_type(function, node.child_by_field_name("argument"), field_type)
        return _dereferenced(inner) if inner is not None else None
    if node.type == "update_expression":
        return expression_type(function, node.child_by_field_name("argument"), field_type)
    if node.type == "binary_expression" and text(node.child_by_field_name("operator")) in "+-":
        left = expression_type(function, node.child_by_field_name("left"), field_type)
        return left if left is not None and left.endswith("*") else None
    if node.type == "field_expression" and field_type is not None:
        owner = expression_type(function, node.child_by_field_name("argument"), field_type)
        operator = text(node.child_by_field_name("operator"))
        if owner is None or not owner.startswith(("struct ", "union ")):
            return None
        if (operator == "->") != owner.endswith(" *") or owner.endswith("**"):
            return None
        struct = owner.split()[1]
        return field_type(struct, text(node.child_by_field_name("field")))
    return None


def _dereferenced(type_text: str) -> str | None:
    return normalize_type(type_text[:-1]) if type_text.endswith("*") else None


def function_signatures(root: Node) -> dict[str, list[list[str | None]]]:
    """Parameter types of every function declared or defined in a parsed
    file (a header, typically), by name; one entry per declaration, since
    `#ifdef` branches may declare a helper twice.  A parameter whose type
    cannot be spelled (a function pointer) is None."""
    signatures: dict[str, list[list[str | None]]] = {}
    for node in walk(root):
        if node.type not in ("declaration", "function_definition"):
            continue
        declarators = node.children_by_field_name("declarator")
        for declarator in declarators:
            function = declarator
            while function is not None and function.type != "function_declarator":
                if function.type not in ("pointer_declarator", "parenthesized_declarator"):
                    function = None
                    break
                function = function.child_by_field_name("declarator")
            if function is None:
                continue
            name_node = function.child_by_field_name("declarator")
            parameters = function.child_by_field_name("parameters")
            if name_node is None or name_node.type != "identifier" or parameters is None:
                continue
            types: list[str | None] = []
            for parameter in parameters.named_children:
                if parameter.type != "parameter_declaration":
                    continue
                base = parameter.child_by_field_name("type")
                declarator_node = parameter.child_by_field_name("declarator")
                _, stars = _declarator_name_and_stars(declarator_node)
                types.append(_typed(base, stars) if stars >= 0 else None)
            if types == ["void"]:
                types = []
            signatures.setdefault(text(name_node), []).append(types)
    return signatures


def struct_fields(root: Node) -> dict[str, dict[str, str]]:
    """Field types of every named struct or union defined in a parsed file;
    members of anonymous inner structs and unions count as the outer one's."""
    structs: dict[str, dict[str, str]] = {}
    for node in walk(root):
        if node.type not in ("struct_specifier", "union_specifier"):
            continue
        name = node.child_by_field_name("name")
        body = node.child_by_field_name("body")
        if name is None or body is None:
            continue
        fields = structs.setdefault(text(name), {})
        _collect_fields(body, fields)
    return structs


def _collect_fields(body: Node, fields: dict[str, str]) -> None:
    for member in body.named_children:
        if member.type != "field_declaration":
            continue
        base = member.child_by_field_name("type")
        declarators = member.children_by_field_name("declarator")
        if not declarators and base is not None and base.type in (
            "struct_specifier",
            "union_specifier",
        ):
            inner = base.child_by_field_name("body")
            if base.child_by_field_name("name") is None and inner is not None:
                _collect_fields(inner, fields)
            continue
        for declarator in declarators:
            name, stars = _declarator_name_and_stars(declarator)
            if name is not None and stars >= 0:
                fields.setdefault(name, _typed(base, stars))
