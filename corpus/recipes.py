"""Mutation recipes: structural edits of a real kernel file, for measuring
the rules (see corpus/mutations/README.md for the format).

A recipe names a file, a function and a target in it (the n-th call to a
name, the n-th if/while whose condition matches, the n-th statement that
matches) and an operation.  `apply()` parses the file with the same parser
the review uses, finds the target node and edits the bytes; the kernel text
itself is never stored in a recipe.  `Scratch` turns edited files into
commits on top of the tree's HEAD in a scratch object directory and index,
and formats them with `git format-patch`, so a mutation reaches the review as
the same patch text a developer would send.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import git
from git.objects.fun import tree_entries_from_data, tree_to_stream
from gitdb import IStream, LooseObjectDB
from tree_sitter import Node

from analyzer import syntax
from analyzer.images import Image
from analyzer.parsing import Function, parse

KINDS = ("bug", "clean")
TARGETS = ("call", "condition", "statement")
_ANY_TARGET = frozenset(TARGETS)
_COMMON = {"id", "kind", "rule", "file", "function", "edit", "why", "occurrence", *TARGETS}
_IDENT_RE = re.compile(r"^[A-Za-z_]\w*$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*$")


class RecipeError(Exception):
    """A recipe file that cannot be used: one line naming file and recipe."""


class MutationError(Exception):
    """A valid recipe that does not apply to this tree (reported, not fatal)."""


@dataclass(frozen=True)
class Operation:
    targets: frozenset[str]  # the target keys it accepts (empty: none)
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


OPERATIONS: dict[str, Operation] = {
    "replace-call": Operation(frozenset({"call"}), ("replacement",)),
    "drop-statement": Operation(_ANY_TARGET),
    "drop-condition-term": Operation(_ANY_TARGET),
    "unwrap-if": Operation(_ANY_TARGET),
    "replace-argument": Operation(frozenset({"call"}), ("argument", "replacement")),
    "replace-regex": Operation(frozenset(), ("pattern", "replacement"), ("count",)),
    "rename-local": Operation(frozenset(), ("name", "to")),
    "insert-comment": Operation(_ANY_TARGET, ("text",)),
    "extract-helper": Operation(frozenset({"call", "condition"}), ("name", "params", "args")),
}
_INT_KEYS = {"occurrence", "argument", "count"}


@dataclass(frozen=True)
class Recipe:
    id: str
    kind: str
    rule: str
    file: str
    function: str
    edit: str
    why: str
    source: str  # the .toml file it came from
    target: str | None = None  # "call", "condition" or "statement"
    target_value: str | None = None
    occurrence: int = 1
    args: dict[str, str | int] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.function}()"


# -- loading ----------------------------------------------------------------


def load_recipes(path: Path, known_rules: Iterable[str] | None = None) -> list[Recipe]:
    """Every recipe in `path` (a .toml file, or a directory of them)."""
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise RecipeError(f"{path}: no *.toml recipe files")
    elif path.is_file():
        files = [path]
    else:
        raise RecipeError(f"{path}: no such file or directory")
    known = set(known_rules) if known_rules is not None else None
    recipes: list[Recipe] = []
    seen: dict[str, str] = {}
    for file in files:
        for recipe in _load_file(file, known):
            if recipe.id in seen:
                raise RecipeError(
                    f"{file}: recipe '{recipe.id}': duplicate id (also in {seen[recipe.id]})"
                )
            seen[recipe.id] = str(file)
            recipes.append(recipe)
    return recipes


def _load_file(file: Path, known: set[str] | None) -> list[Recipe]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{file}: invalid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{file}: cannot read: {err}") from None
    extra = set(data) - {"mutation"}
    if extra:
        raise RecipeError(f"{file}: unknown top-level key(s) {', '.join(sorted(extra))}")
    entries = data.get("mutation", [])
    if not isinstance(entries, list) or not entries:
        raise RecipeError(f"{file}: no [[mutation]] tables")
    return [_recipe(file, n, entry, known) for n, entry in enumerate(entries, 1)]


def _recipe(file: Path, number: int, entry: dict, known: set[str] | None) -> Recipe:
    name = f"recipe '{entry['id']}'" if isinstance(entry.get("id"), str) else f"recipe #{number}"

    def fail(problem: str) -> RecipeError:
        return RecipeError(f"{file}: {name}: {problem}")

    for key in ("id", "kind", "rule", "file", "function", "edit", "why"):
        if key not in entry:
            raise fail(f"missing key '{key}'")
    for key, value in entry.items():
        expected = int if key in _INT_KEYS else str
        if not isinstance(value, expected) or isinstance(value, bool):
            raise fail(f"'{key}' must be {'an integer' if expected is int else 'a string'}")
    if not _ID_RE.match(entry["id"]):
        raise fail("id must be lower-case letters, digits and . _ / -")
    if entry["kind"] not in KINDS:
        raise fail(f"kind '{entry['kind']}' is not one of {', '.join(KINDS)}")
    if known is not None and entry["rule"] not in known:
        raise fail(f"unknown rule '{entry['rule']}' (see 'mmreview rules')")
    if not entry["file"].endswith((".c", ".h")) or entry["file"].startswith("/"):
        raise fail(f"file '{entry['file']}' is not a C file path relative to the tree top")
    if not _IDENT_RE.match(entry["function"]):
        raise fail(f"function '{entry['function']}' is not a C identifier")
    operation = OPERATIONS.get(entry["edit"])
    if operation is None:
        raise fail(f"unknown edit '{entry['edit']}' (one of {', '.join(OPERATIONS)})")
    allowed = _COMMON | set(operation.required) | set(operation.optional)
    if unknown := sorted(set(entry) - allowed):
        raise fail(f"key(s) {', '.join(unknown)} not used by edit '{entry['edit']}'")
    for key in operation.required:
        if key not in entry:
            raise fail(f"edit '{entry['edit']}' needs '{key}'")
    targets = [t for t in TARGETS if t in entry]
    if len(targets) > 1:
        raise fail(f"give one target, not {' and '.join(targets)}")
    if operation.targets and not targets:
        choices = " or ".join(sorted(operation.targets))
        raise fail(f"edit '{entry['edit']}' needs a target: {choices}")
    if targets and targets[0] not in operation.targets:
        raise fail(f"edit '{entry['edit']}' does not take a '{targets[0]}' target")
    target = targets[0] if targets else None
    if target is None and "occurrence" in entry:
        raise fail("'occurrence' needs a target")
    occurrence = entry.get("occurrence", 1)
    if occurrence < 1:
        raise fail("occurrence counts from 1")
    if target == "call" and not _IDENT_RE.match(entry["call"]):
        raise fail(f"call '{entry['call']}' is not a C identifier")
    for key in ("condition", "statement", "pattern"):
        if key in entry:
            try:
                re.compile(entry[key])
            except re.error as err:
                raise fail(f"{key} is not a valid regular expression: {err}") from None
    args = {k: entry[k] for k in (*operation.required, *operation.optional) if k in entry}
    _check_args(entry["edit"], args, fail)
    return Recipe(
        id=entry["id"],
        kind=entry["kind"],
        rule=entry["rule"],
        file=entry["file"],
        function=entry["function"],
        edit=entry["edit"],
        why=entry["why"],
        source=str(file),
        target=target,
        target_value=entry[target] if target else None,
        occurrence=occurrence,
        args=args,
    )


def _check_args(edit: str, args: dict, fail: Callable[[str], RecipeError]) -> None:
    if edit == "replace-call" and not _IDENT_RE.match(args["replacement"].lstrip("=").lstrip("!")):
        raise fail("replacement must be a callee name, optionally prefixed by '=' and/or '!'")
    if edit == "replace-argument" and args["argument"] < 0:
        raise fail("argument counts from 0")
    if edit == "replace-regex" and args.get("count", 1) < 0:
        raise fail("count must be >= 0 (0: every match)")
    if edit == "rename-local":
        for key in ("name", "to"):
            if not _IDENT_RE.match(args[key]):
                raise fail(f"{key} '{args[key]}' is not a C identifier")
    if edit == "insert-comment" and ("*/" in args["text"] or "\n" in args["text"]):
        raise fail("text must be one line without '*/'")
    if edit == "extract-helper" and not _IDENT_RE.match(args["name"]):
        raise fail(f"name '{args['name']}' is not a C identifier")


# -- applying -----------------------------------------------------------------

Edit = tuple[int, int, bytes]  # replace text[start:end] by the bytes


@dataclass
class _Target:
    function: Function
    text: bytes  # the whole original file
    node: Node | None  # the call, the if/while/for/do, or the statement
    focus: Node | None  # the call, or the smallest node holding the regex match

    def src(self, node: Node) -> bytes:
        return self.text[node.start_byte : node.end_byte]


def apply(recipe: Recipe, image: Image) -> bytes:
    """The file's text after the recipe's edit; MutationError if it does not
    apply (function or target not found, edit changes nothing or breaks the
    function's syntax)."""
    parsed = parse(image)
    candidates = parsed.functions_named(recipe.function)
    if not candidates:
        raise MutationError(f"{recipe.file}: no function {recipe.function}()")
    target = None
    for function in candidates:
        if function.body is None:
            continue
        target = _find_target(recipe, function, image.text)
        if target is not None:
            break
    if target is None:
        raise MutationError(f"{recipe.where}: {_describe_target(recipe)} not found")
    edits = _OPERATIONS[recipe.edit](recipe, target)
    text = _apply_edits(image.text, edits)
    if text == image.text:
        raise MutationError(f"{recipe.where}: the edit leaves the file unchanged")
    _check_syntax(recipe, target.function, text)
    return text


def _describe_target(recipe: Recipe) -> str:
    if recipe.target is None:
        key = "pattern" if recipe.edit == "replace-regex" else "name"
        return f"{key} '{recipe.args[key]}'"
    nth = f"occurrence {recipe.occurrence} of " if recipe.occurrence > 1 else ""
    return f"{nth}{recipe.target} '{recipe.target_value}'"


def _find_target(recipe: Recipe, function: Function, text: bytes) -> _Target | None:
    body = function.body
    assert body is not None
    pick = recipe.occurrence - 1
    if recipe.target == "call":
        found = syntax.calls(body, recipe.target_value)
        if len(found) <= pick:
            return None
        return _Target(function, text, found[pick], found[pick])
    if recipe.target in ("condition", "statement"):
        regex = re.compile(recipe.target_value or "")
        matches = (
            _matching_conditions(body, text, regex)
            if recipe.target == "condition"
            else _matching_statements(body, text, regex)
        )
        if len(matches) <= pick:
            return None
        node, (start, end) = matches[pick]
        return _Target(function, text, node, _covering(node, start, end))
    # Target-less edits work on the whole function.
    source = text[function.node.start_byte : function.node.end_byte].decode(
        "utf-8", "surrogateescape"
    )
    if recipe.edit == "replace-regex" and not re.search(str(recipe.args["pattern"]), source):
        return None
    if recipe.edit == "rename-local" and recipe.args["name"] not in syntax.identifiers(
        function.node
    ):
        return None
    return _Target(function, text, None, None)


def _matching_conditions(
    body: Node, text: bytes, regex: re.Pattern[str]
) -> list[tuple[Node, tuple[int, int]]]:
    found = []
    for node in syntax.walk(body):
        if node.type not in _CONDITIONAL:
            continue
        condition = node.child_by_field_name("condition")
        if condition is None:
            continue
        match = regex.search(_decode(text[condition.start_byte : condition.end_byte]))
        if match:
            found.append((node, _byte_span(text, condition.start_byte, match)))
    return found


def _matching_statements(
    body: Node, text: bytes, regex: re.Pattern[str]
) -> list[tuple[Node, tuple[int, int]]]:
    """Statements whose text matches and none of whose sub-statements does:
    the innermost ones, in document order."""
    found = []
    for node in syntax.walk(body):
        if not _is_statement(node):
            continue
        match = regex.search(_decode(text[node.start_byte : node.end_byte]))
        if match is None:
            continue
        inner = (
            n
            for n in syntax.walk(node)
            if n != node
            and _is_statement(n)
            and regex.search(_decode(text[n.start_byte : n.end_byte]))
        )
        if next(inner, None) is None:
            found.append((node, _byte_span(text, node.start_byte, match)))
    return found


def _covering(root: Node, start: int, end: int) -> Node:
    """The smallest named node under `root` covering text[start:end], or the
    call when that is only its callee's name."""
    node = root.descendant_for_byte_range(start, max(start, end - 1)) or root
    while node != root and (not node.is_named or node.start_byte > start or node.end_byte < end):
        node = node.parent or root
    parent = node.parent
    if (
        node.type == "identifier"
        and parent is not None
        and parent.type == "call_expression"
        and parent.child_by_field_name("function") == node
    ):
        return parent
    return node


def _byte_span(text: bytes, base: int, match: re.Match[str]) -> tuple[int, int]:
    """A str match inside text[base:] as byte offsets in text."""
    prefix = match.string[: match.start()].encode("utf-8", "surrogateescape")
    inside = match.group(0).encode("utf-8", "surrogateescape")
    return base + len(prefix), base + len(prefix) + len(inside)


_CONDITIONAL = ("if_statement", "while_statement", "do_statement", "for_statement")


def _is_statement(node: Node) -> bool:
    return node.type == "declaration" or (
        node.type.endswith("_statement") and node.type != "compound_statement"
    )


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _apply_edits(text: bytes, edits: list[Edit]) -> bytes:
    out = text
    last = len(text) + 1
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        if end > last:
            raise MutationError("internal: overlapping edits")
        out = out[:start] + new + out[end:]
        last = start
    return out


def _check_syntax(recipe: Recipe, before: Function, text: bytes) -> None:
    after = [f for f in parse(Image.of(text)).functions_named(recipe.function)]
    if not after:
        raise MutationError(f"{recipe.where}: the function is gone after the edit")
    broken = min(_error_count(f.node) for f in after)
    if broken > _error_count(before.node):
        raise MutationError(f"{recipe.where}: the edit breaks the function's syntax")


def _error_count(node: Node) -> int:
    return sum(1 for n in syntax.walk(node) if n.type == "ERROR" or n.is_missing)


# -- operations -----------------------------------------------------------------


def _replace_call(recipe: Recipe, target: _Target) -> list[Edit]:
    call = target.node
    assert call is not None
    callee = call.child_by_field_name("function")
    assert callee is not None
    replacement = str(recipe.args["replacement"])
    exact = replacement.startswith("=")
    replacement = replacement.removeprefix("=")
    negate = replacement.startswith("!")
    name = replacement.lstrip("!")
    negation = _negation(call)
    want = negate if exact else (negation is not None) != negate
    edits: list[Edit] = [(callee.start_byte, callee.end_byte, name.encode())]
    if want and negation is None:
        edits.append((call.start_byte, call.start_byte, b"!"))
    elif not want and negation is not None:
        edits.append(negation)
    return edits


def _negation(call: Node) -> Edit | None:
    """The edit deleting the `!` in front of `call`, if there is one."""
    if not syntax.is_negated(call):
        return None
    unary = syntax.unparenthesized_parent(call)
    assert unary is not None
    operator = unary.child_by_field_name("operator")
    argument = unary.child_by_field_name("argument")
    assert operator is not None and argument is not None
    return (operator.start_byte, argument.start_byte, b"")


def _drop_statement(recipe: Recipe, target: _Target) -> list[Edit]:
    statement = _holding_statement(recipe, target)
    parent = statement.parent
    if parent is not None and parent.type not in ("compound_statement", "function_definition"):
        owner = parent.type.removesuffix("_statement")
        raise MutationError(
            f"{recipe.where}: the statement is the body of a {owner} without braces;"
            " drop the enclosing statement instead"
        )
    return [_line_span(target.text, statement, b"")]


def _holding_statement(recipe: Recipe, target: _Target) -> Node:
    node = target.node
    assert node is not None
    if recipe.target == "call":
        found = next((a for a in syntax.ancestors(node) if _is_statement(a)), None)
        if found is None:
            raise MutationError(f"{recipe.where}: the call is not inside a statement")
        return found
    return node


def _line_span(text: bytes, node: Node, new: bytes) -> Edit:
    """Replace whole lines when the node fills its lines, else the node."""
    start = text.rfind(b"\n", 0, node.start_byte) + 1
    end = text.find(b"\n", node.end_byte)
    end = len(text) if end < 0 else end
    if text[start : node.start_byte].strip() or text[node.end_byte : end].strip():
        return (node.start_byte, node.end_byte, new)
    return (start, min(end + 1, len(text)), new)


def _drop_condition_term(recipe: Recipe, target: _Target) -> list[Edit]:
    child = target.focus
    assert child is not None
    for parent in syntax.ancestors(child):
        if _is_statement(parent):
            break
        if parent.type == "binary_expression" and syntax.text(
            parent.child_by_field_name("operator")
        ) in ("&&", "||"):
            left = parent.child_by_field_name("left")
            right = parent.child_by_field_name("right")
            assert left is not None and right is not None
            if child == right:
                return [(left.end_byte, right.end_byte, b"")]
            return [(left.start_byte, right.start_byte, b"")]
        child = parent
    raise MutationError(f"{recipe.where}: the target is not an operand of && or ||")


def _unwrap_if(recipe: Recipe, target: _Target) -> list[Edit]:
    node = target.node
    assert node is not None
    if recipe.target == "call":
        node = syntax.condition_owner(node)
    if node is None or node.type != "if_statement":
        raise MutationError(f"{recipe.where}: the target is not the condition of an if")
    if node.child_by_field_name("alternative") is not None:
        raise MutationError(f"{recipe.where}: the if has an else branch; nothing to unwrap to")
    body = node.child_by_field_name("consequence")
    assert body is not None
    text = target.text
    if body.type == "compound_statement":
        first = text.find(b"\n", body.start_byte) + 1
        last = text.rfind(b"\n", 0, body.end_byte) + 1
        if text[body.start_byte + 1 : first].strip() or text[last : body.end_byte - 1].strip():
            raise MutationError(f"{recipe.where}: braces of the if are not on lines of their own")
        lines = text[first:last]
    else:
        start = text.rfind(b"\n", 0, body.start_byte) + 1
        lines = text[start : body.end_byte] + b"\n"
    dedented = b"".join(_dedent(line) for line in lines.splitlines(keepends=True))
    edit = _line_span(text, node, dedented)
    if edit[0] == node.start_byte:
        raise MutationError(f"{recipe.where}: the if shares its lines with other code")
    return [edit]


def _dedent(line: bytes) -> bytes:
    if line.startswith(b"\t"):
        return line[1:]
    if line.startswith(b" " * 8):
        return line[8:]
    return line


def _replace_argument(recipe: Recipe, target: _Target) -> list[Edit]:
    assert target.node is not None
    arguments = syntax.arguments(target.node)
    index = int(recipe.args["argument"])
    if index >= len(arguments):
        raise MutationError(
            f"{recipe.where}: {recipe.target_value}() has {len(arguments)} argument(s),"
            f" no argument {index}"
        )
    node = arguments[index]
    return [(node.start_byte, node.end_byte, str(recipe.args["replacement"]).encode())]


def _replace_regex(recipe: Recipe, target: _Target) -> list[Edit]:
    node = target.function.node
    source = _decode(target.src(node))
    new, _ = re.subn(
        str(recipe.args["pattern"]),
        str(recipe.args["replacement"]),
        source,
        count=int(recipe.args.get("count", 1)),
    )
    return [(node.start_byte, node.end_byte, new.encode("utf-8", "surrogateescape"))]


def _rename_local(recipe: Recipe, target: _Target) -> list[Edit]:
    node = target.function.node
    name, to = str(recipe.args["name"]), str(recipe.args["to"])
    if to in syntax.identifiers(node):
        raise MutationError(f"{recipe.where}: '{to}' is already used in the function")
    return [
        (n.start_byte, n.end_byte, to.encode())
        for n in syntax.walk(node)
        if n.type == "identifier" and target.src(n) == name.encode()
    ]


def _insert_comment(recipe: Recipe, target: _Target) -> list[Edit]:
    statement = _holding_statement(recipe, target)
    text = target.text
    start = text.rfind(b"\n", 0, statement.start_byte) + 1
    indent = text[start : statement.start_byte]
    if indent.strip():
        raise MutationError(f"{recipe.where}: the statement does not start its line")
    return [(start, start, indent + f"/* {recipe.args['text']} */\n".encode())]


def _extract_helper(recipe: Recipe, target: _Target) -> list[Edit]:
    node = target.focus
    assert node is not None and target.node is not None
    if recipe.target == "condition":
        condition = target.node.child_by_field_name("condition")
        # The parentheses of the if itself stay where they are.
        if node == condition or (condition is not None and node.end_byte > condition.end_byte):
            inner = [c for c in condition.named_children if c.type != "comment"]
            if condition.type != "parenthesized_expression" or len(inner) != 1:
                raise MutationError(f"{recipe.where}: cannot read the condition")
            node = inner[0]
    expression = re.sub(rb"\s*\n\s*", b" ", target.src(node))
    name, params, args = (str(recipe.args[k]) for k in ("name", "params", "args"))
    helper = (
        f"static inline bool {name}({params})\n{{\n\treturn ".encode() + expression + b";\n}\n\n"
    )
    text = target.text
    function = target.function.node
    start = text.rfind(b"\n", 0, function.start_byte) + 1
    previous = function.prev_sibling
    # Keep the function's comment block attached to the function.
    if (
        previous is not None
        and previous.type == "comment"
        and previous.end_point.row == function.start_point.row - 1
    ):
        start = text.rfind(b"\n", 0, previous.start_byte) + 1
    return [(start, start, helper), (node.start_byte, node.end_byte, f"{name}({args})".encode())]


_OPERATIONS: dict[str, Callable[[Recipe, _Target], list[Edit]]] = {
    "replace-call": _replace_call,
    "drop-statement": _drop_statement,
    "drop-condition-term": _drop_condition_term,
    "unwrap-if": _unwrap_if,
    "replace-argument": _replace_argument,
    "replace-regex": _replace_regex,
    "rename-local": _rename_local,
    "insert-comment": _insert_comment,
    "extract-helper": _extract_helper,
}
assert set(_OPERATIONS) == set(OPERATIONS)


# -- commits ------------------------------------------------------------------

_TREE_MODE = 0o040000
_EPOCH = 1731801600  # 2024-11-17T00:00:00Z, the date in IDENTITY

IDENTITY = {
    "GIT_AUTHOR_NAME": "mm-review mutation",
    "GIT_AUTHOR_EMAIL": "mutation@mm-review.invalid",
    "GIT_AUTHOR_DATE": "2024-11-17T00:00:00+0000",
    "GIT_COMMITTER_NAME": "mm-review mutation",
    "GIT_COMMITTER_EMAIL": "mutation@mm-review.invalid",
    "GIT_COMMITTER_DATE": "2024-11-17T00:00:00+0000",
}


class Scratch:
    """Commits on top of a tree's revisions, written to a scratch object
    directory (the tree's objects borrowed read-only as alternates; a scratch
    index file so that nothing can reach the tree's own): the tree's refs,
    index, objects and work tree are never written.

    Blobs, the trees along the changed paths and the commit are written as
    loose objects with gitdb (GitPython's object store) rather than by a
    handful of git processes per commit; only `format_patch` runs git.
    """

    def __init__(self, top: str, objects: str) -> None:
        self.top = top
        self.dir = tempfile.mkdtemp(prefix="mmreview-mutate-")
        scratch_objects = os.path.join(self.dir, "objects")
        os.makedirs(scratch_objects)
        self.env = {
            **os.environ,
            **IDENTITY,
            "GIT_INDEX_FILE": os.path.join(self.dir, "index"),
            "GIT_OBJECT_DIRECTORY": scratch_objects,
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": os.path.abspath(objects),
        }
        self._scratch = LooseObjectDB(scratch_objects)
        # Reads of the tree's own objects go through one `git cat-file`.
        self._repo = git.Repo(top)
        self._trees: dict[bytes, list[tuple[bytes, int, str]]] = {}

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._repo.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def git(self, *args: str, stdin: bytes | None = None) -> bytes:
        out = subprocess.run(
            ["git", "-c", "core.hooksPath=/dev/null", *args],
            cwd=self.top,
            env=self.env,
            input=stdin,
            capture_output=True,
            check=False,
        )
        if out.returncode != 0:
            message = out.stderr.decode("utf-8", "replace").strip().splitlines()
            raise MutationError(f"git {args[0]}: {message[-1] if message else 'failed'}")
        return out.stdout

    def commit(self, parent: str, files: dict[str, bytes], message: str) -> str:
        """A commit of `files` (path -> new text) on top of `parent` (a full
        commit id), whose tree is the parent's with those files replaced or
        added."""
        kind, data = self._read(bytes.fromhex(parent))
        if kind != b"commit" or not data.startswith(b"tree "):
            raise MutationError(f"{parent}: not a commit")
        root = bytes.fromhex(data[5:45].decode())
        blobs = {path: self._store(b"blob", text) for path, text in files.items()}
        tree = self._rewrite(root, blobs)
        who = f"{IDENTITY['GIT_AUTHOR_NAME']} <{IDENTITY['GIT_AUTHOR_EMAIL']}> {_EPOCH} +0000"
        body = message if message.endswith("\n") else message + "\n"
        commit = f"tree {tree.hex()}\nparent {parent}\nauthor {who}\ncommitter {who}\n\n{body}"
        return self._store(b"commit", commit.encode()).hex()

    def _rewrite(self, tree: bytes | None, blobs: dict[str, bytes]) -> bytes:
        """`tree` with the blobs at their (tree-relative) paths."""
        entries = {name: (sha, mode) for sha, mode, name in self._entries(tree)} if tree else {}
        below: dict[str, dict[str, bytes]] = {}
        for path, blob in blobs.items():
            name, _, rest = path.partition("/")
            if rest:
                below.setdefault(name, {})[rest] = blob
            else:
                mode = entries[name][1] if name in entries else 0o100644
                entries[name] = (blob, mode)
        for name, inner in below.items():
            old = entries.get(name)
            subtree = old[0] if old and old[1] == _TREE_MODE else None
            entries[name] = (self._rewrite(subtree, inner), _TREE_MODE)
        # git's order: names as bytes, a tree's name as if it ended in "/".
        ordered = sorted(
            ((sha, mode, name) for name, (sha, mode) in entries.items()),
            key=lambda e: e[2].encode() + (b"/" if e[1] == _TREE_MODE else b""),
        )
        out = io.BytesIO()
        tree_to_stream(ordered, out.write)
        return self._store(b"tree", out.getvalue())

    def _entries(self, tree: bytes) -> list[tuple[bytes, int, str]]:
        if tree not in self._trees:
            kind, data = self._read(tree)
            if kind != b"tree":
                raise MutationError(f"{tree.hex()}: not a tree")
            self._trees[tree] = tree_entries_from_data(data)
        return self._trees[tree]

    def _read(self, sha: bytes) -> tuple[bytes, bytes]:
        database = self._scratch if self._scratch.has_object(sha) else self._repo.odb
        stream = database.stream(sha)
        return stream.type, stream.read()

    def _store(self, kind: bytes, data: bytes) -> bytes:
        return self._scratch.store(IStream(kind, len(data), io.BytesIO(data))).binsha

    def format_patch(self, commit: str, count: int = 1, *extra: str) -> bytes:
        """`git format-patch --stdout -<count> <commit>`, as sent by mail."""
        return self.git("format-patch", "--stdout", f"-{count}", *extra, commit)
