"""Declared types: of the expressions of a function, and of the helpers and
structs the tree under review declares.

Rules ask two questions: "what is the declared type of this expression?"
(`type_of`), and "what does this helper take / this struct hold?"
(`Declarations.parameter`, `.field`).  Types come from declarations alone,
never guessed: a parameter or local, `&x`, `*x`, `x[i]`, `p + n`, a field
of a struct the tree defines, a call to a function it declares.  A cast
states a type but hides the one underneath: `type_of(e, through_casts=True)`
gives the type of what was cast (`(pmd_t *)ptep` is still a `pte_t *`).

Headers are read from the tree under review as the patch leaves it, so a
tree that changes a signature is followed.  What a header declares is
computed once per content, ever: it is kept on disk by blob id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from weakref import WeakKeyDictionary

from tree_sitter import Node

from analyzer import cache, syntax
from analyzer.headers import DEFINITIONS
from analyzer.images import Image
from analyzer.parsing import ParsedFile, parse
from analyzer.patterns import regex
from analyzer.records import Record
from analyzer.rule import Confidence, ReviewContext

_QUALIFIERS_RE = regex(r"\b(?:const|volatile|restrict|__restrict)\b")

SIGNATURE_HEADERS = (
    "include/linux/mm.h",
    "include/linux/pgtable.h",
    "include/linux/huge_mm.h",
    "include/linux/hugetlb.h",
)
STRUCT_HEADERS = (
    "include/linux/mm.h",
    "include/linux/mm_types.h",
    "include/linux/rmap.h",
    "include/linux/pagewalk.h",
)
# For reviews without a tree: the page-table fields of the structs mm code
# passes around most.
BUILTIN_FIELDS = {
    "vm_fault": {
        "pmd": "pmd_t *",
        "pud": "pud_t *",
        "pte": "pte_t *",
        "ptl": "spinlock_t *",
        "orig_pte": "pte_t",
        "orig_pmd": "pmd_t",
        "vma": "struct vm_area_struct *",
        "page": "struct page *",
    },
    "page_vma_mapped_walk": {"pmd": "pmd_t *", "pte": "pte_t *", "ptl": "spinlock_t *"},
}

_QUALIFIERS = _QUALIFIERS_RE


class TypeScope:
    """The declared types of one function's names, read once."""

    def __init__(self, function: Node) -> None:
        self.names: dict[str, set[str]] = {}
        for node in syntax.walk(function):
            if node.type not in ("parameter_declaration", "declaration"):
                continue
            base = node.child_by_field_name("type")
            for declarator in node.children_by_field_name("declarator"):
                declared, stars = _declarator_name_and_stars(declarator)
                if declared is not None and stars >= 0:
                    self.names.setdefault(declared, set()).add(_typed(base, stars))

    def of_name(self, name: str) -> str | None:
        types = self.names.get(name)
        if types is None:
            return None
        # Declared differently in different scopes: "it depends where".
        return next(iter(types)) if len(types) == 1 else None

    def type_of(
        self,
        expression: Node,
        declarations: Declarations | None = None,
        through_casts: bool = False,
    ) -> str | None:
        """The declared type of `expression`, None when declarations alone
        cannot say (struct fields need `declarations`).  With
        `through_casts`, the type of what a cast was applied to."""
        node = expression
        while node.type == "parenthesized_expression" and node.named_children:
            node = node.named_children[0]
        kind = node.type
        if kind == "identifier":
            return self.of_name(syntax.text(node))
        if kind == "cast_expression":
            value = node.child_by_field_name("value")
            if through_casts and value is not None:
                return self.type_of(value, declarations, through_casts)
            return normalize_type(syntax.text(node.child_by_field_name("type")))
        if kind == "pointer_expression":
            inner = self.type_of(node.child_by_field_name("argument"), declarations, through_casts)
            if inner is None:
                return None
            if syntax.text(node.child_by_field_name("operator")) == "&":
                return normalize_type(inner + " *")
            return _dereferenced(inner)
        if kind == "subscript_expression":
            inner = self.type_of(node.child_by_field_name("argument"), declarations, through_casts)
            return _dereferenced(inner) if inner is not None else None
        if kind == "update_expression":
            return self.type_of(node.child_by_field_name("argument"), declarations, through_casts)
        if (
            kind == "binary_expression"
            and syntax.text(node.child_by_field_name("operator")) in "+-"
        ):
            left = self.type_of(node.child_by_field_name("left"), declarations, through_casts)
            return left if left is not None and left.endswith("*") else None
        if kind == "field_expression" and declarations is not None:
            owner = self.type_of(node.child_by_field_name("argument"), declarations, through_casts)
            operator = syntax.text(node.child_by_field_name("operator"))
            if owner is None or not owner.startswith(("struct ", "union ")):
                return None
            if (operator == "->") != owner.endswith(" *") or owner.endswith("**"):
                return None
            struct = owner.split()[1]
            return declarations.field(struct, syntax.text(node.child_by_field_name("field")))
        return None


class Expected(Record):
    """A parameter type a helper declares, and where it was read."""

    type: str
    where: str  # the header (or "this file", or "Linux 6.12")
    confidence: Confidence


class _Declared(Record):
    signatures: dict[str, list[list[str | None]]]
    structs: dict[str, dict[str, str]]


_by_blob: dict[str, _Declared] = {}
_declares_by_context: WeakKeyDictionary[ReviewContext, dict[str, bool]] = WeakKeyDictionary()
# The headers one review context (one patch, or one scan) has read.
_read_by_context: WeakKeyDictionary[ReviewContext, dict[str, _Declared | None]] = (
    WeakKeyDictionary()
)


def _code_digest() -> str:
    return cache.code_digest(__file__, syntax.__file__)


_CACHE_NAMESPACE = "declarations-" + _code_digest()


def _declared(parsed: ParsedFile) -> _Declared:
    if DEFINITIONS in parsed.memo:
        # One definition read out of a header: what the header declares is
        # in the header's whole text.
        image = parsed.image
        declared = _header_declarations(image.blob_id, lambda: image.text)
        assert declared is not None  # its text is at hand
        return declared
    blob = parsed.image.blob_id
    if blob not in _by_blob:
        if len(_by_blob) > 64:
            _by_blob.clear()
        root = parsed.tree.root_node
        _by_blob[blob] = _Declared(function_signatures(root), struct_fields(root))
    return _by_blob[blob]


def _header_declarations(blob_id: str, read: Callable[[], bytes | None]) -> _Declared | None:
    """What a header declares, by blob id: its text is read (and parsed)
    only when an earlier run has not kept the answer.  None: the tree
    named a blob it cannot give."""
    if blob_id in _by_blob:
        return _by_blob[blob_id]
    stored = cache.load(_CACHE_NAMESPACE, blob_id)
    if stored is not None:
        declared = _Declared(stored["signatures"], stored["structs"])
        _by_blob[blob_id] = declared
        return declared
    text = read()
    if text is None:
        return None
    declared = _declared(parse(Image(text=text, blob_id=blob_id)))
    cache.store(
        _CACHE_NAMESPACE,
        blob_id,
        {"signatures": declared.signatures, "structs": declared.structs},
    )
    return declared


class Declarations:
    """What the file under review and the tree's mm headers declare."""

    def __init__(self, context: ReviewContext, file: ParsedFile | None) -> None:
        self.context = context
        self.file = file

    def _header(self, path: str) -> _Declared | None:
        headers = _read_by_context.setdefault(self.context, {})
        if path not in headers:
            blob_id = self.context.blob_id(path)
            headers[path] = (
                _header_declarations(blob_id, partial(self.context.read_file, path))
                if blob_id is not None
                else None
            )
        return headers[path]

    def _sources(
        self, headers: tuple[str, ...], own: re.Pattern[bytes]
    ) -> Iterator[tuple[str, _Declared | None]]:
        # Walking a whole .c file for its declarations costs more than the
        # rest of the review; a top-level line naming the thing says whether
        # it is worth it.
        if self.file is not None and own.search(self.file.image.text):
            yield "this file", _declared(self.file)
        if self.context.has_tree:
            for path in headers:
                yield path, self._header(path)

    def parameter(
        self, name: str, index: int, arity: int, builtin: dict[str, list[str | None]] | None = None
    ) -> Expected | None:
        """The declared type of parameter `index` of helper `name` called
        with `arity` arguments; `builtin` are signatures to fall back on
        without a tree."""
        own = re.compile(rb"^[A-Za-z_#][^\n;=]*\b" + re.escape(name.encode()) + rb"\b", re.M)
        for where, declared in self._sources(SIGNATURE_HEADERS, own):
            if declared is None or name not in declared.signatures:
                continue
            candidates = [s for s in declared.signatures[name] if len(s) == arity]
            types = {s[index] for s in candidates}
            if len(types) != 1:
                return None  # declared differently per configuration, or arity differs
            found = types.pop()
            return Expected(found, where, Confidence.HIGH) if found else None
        fallback = (builtin or {}).get(name)
        if fallback is None or len(fallback) != arity or fallback[index] is None:
            return None
        return Expected(fallback[index], "Linux 6.12", Confidence.MEDIUM)

    def field(self, struct: str, field: str) -> str | None:
        own = re.compile(rb"^(?:struct|union)\s+" + re.escape(struct.encode()) + rb"\b", re.M)
        for _, declared in self._sources(STRUCT_HEADERS, own):
            if declared is not None and struct in declared.structs:
                return declared.structs[struct].get(field)
        return BUILTIN_FIELDS.get(struct, {}).get(field)

    def declares(self, name: str) -> bool | None:
        """Does the tree declare function `name` in its mm headers (None:
        no tree to ask)?"""
        if not self.context.has_tree:
            return None
        known = _declares_by_context.setdefault(self.context, {})
        if name not in known:
            known[name] = self._declares(name)
        return known[name]

    def _declares(self, name: str) -> bool:
        own = re.compile(rb"^[A-Za-z_#][^\n;=]*\b" + re.escape(name.encode()) + rb"\b", re.M)
        return any(
            d is not None and name in d.signatures for _, d in self._sources(SIGNATURE_HEADERS, own)
        )


_VERSION_RE = regex(rb"^(VERSION|PATCHLEVEL)\s*=\s*(\d+)", re.M)


def kernel_version(context: ReviewContext) -> tuple[int, int] | None:
    """VERSION.PATCHLEVEL from the tree's top Makefile, if there is a tree."""
    if not context.has_tree:
        return None
    makefile = context.read_file("Makefile")
    if makefile is None:
        return None
    found = dict(_VERSION_RE.findall(makefile[:2000]))
    try:
        return int(found[b"VERSION"]), int(found[b"PATCHLEVEL"])
    except (KeyError, ValueError):
        return None


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
        return syntax.text(current), stars
    return None, -1  # function pointers and other shapes nobody types here


def _typed(base: Node | None, stars: int) -> str:
    spelled = syntax.text(base)
    if base is not None and base.type in ("struct_specifier", "union_specifier"):
        name = base.child_by_field_name("name")
        spelled = f"{base.type.split('_')[0]} {syntax.text(name)}" if name is not None else "?"
    return normalize_type(spelled + " " + "*" * stars)


def _dereferenced(type_text: str) -> str | None:
    return normalize_type(type_text[:-1]) if type_text.endswith("*") else None


def function_signatures(root: Node) -> dict[str, list[list[str | None]]]:
    """Parameter types of every function declared or defined in a parsed
    file (a header, typically), by name; one entry per declaration, since
    `#ifdef` branches may declare a helper twice.  A parameter whose type
    cannot be spelled (a function pointer) is None."""
    signatures: dict[str, list[list[str | None]]] = {}
    for node in syntax.walk(root):
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
            signatures.setdefault(syntax.text(name_node), []).append(types)
    return signatures


def struct_fields(root: Node) -> dict[str, dict[str, str]]:
    """Field types of every named struct or union defined in a parsed file;
    members of anonymous inner structs and unions count as the outer one's."""
    structs: dict[str, dict[str, str]] = {}
    for node in syntax.walk(root):
        if node.type not in ("struct_specifier", "union_specifier"):
            continue
        name = node.child_by_field_name("name")
        body = node.child_by_field_name("body")
        if name is None or body is None:
            continue
        fields = structs.setdefault(syntax.text(name), {})
        _collect_fields(body, fields)
    return structs


def _collect_fields(body: Node, fields: dict[str, str]) -> None:
    for member in body.named_children:
        if member.type != "field_declaration":
            continue
        base = member.child_by_field_name("type")
        declarators = member.children_by_field_name("declarator")
        if (
            not declarators
            and base is not None
            and base.type
            in (
                "struct_specifier",
                "union_specifier",
            )
        ):
            inner = base.child_by_field_name("body")
            if base.child_by_field_name("name") is None and inner is not None:
                _collect_fields(inner, fields)
            continue
        for declarator in declarators:
            name, stars = _declarator_name_and_stars(declarator)
            if name is not None and stars >= 0:
                fields.setdefault(name, _typed(base, stars))
