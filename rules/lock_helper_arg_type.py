"""A page-table lock helper called with an argument of the wrong type.

## What it does
Checks the page-table pointers and lock out-parameters passed to the lock
helpers (`pte_lockptr()`, `ptep_lockptr()`, `pmd_lockptr()`,
`pud_lockptr()`, `pmd_lock()`, `huge_pte_lockptr()`,
`pte_offset_map_lock()`, `pte_offset_map_nolock()`, ...) against their
declarations, and flags an argument whose declared type is a different
page-table level (`pte_t *` where a `pmd_t *` is taken) or a different
pointer depth (`spinlock_t *` where the `spinlock_t **` out-parameter is).

The declarations are read from the tree under review, as the patch leaves
it (`include/linux/mm.h`, `pgtable.h`, `huge_mm.h`, `hugetlb.h`), so the
rule follows a tree that changes a signature.  Without a tree it falls back
to the Linux 6.12 signatures, with lower confidence.  The argument's type is
taken from the function's parameters and locals, `&local`, casts, and
fields of structs the headers or the file define (`vmf->pmd`); an argument
whose type cannot be known that way is not judged.

## Why is this bad?
The helpers look alike and their names mislead: `pte_lockptr(mm, pmd)`
takes the *PMD entry* that points to the PTE table and finds the table's
lock through `pmd_page()`; `ptep_lockptr(mm, pte)` (v6.11) takes a pointer
*into* the PTE table and finds the lock from its address.  Passing one for
the other computes the lock of some unrelated page, so two paths that must
serialise take different locks.  A proposal to change `pte_lockptr()` to
take a `pte_t *` was discussed for hugetlb and not merged: in 6.12 and
later trees it still takes a `pmd_t *`.

## Example
```c
        pte = pte_offset_map(pmd, addr);
        ptl = pte_lockptr(mm, pte);		/* pte_t * where pmd_t * is taken */
        spin_lock(ptl);
```

## Use instead
```c
        pte = pte_offset_map(pmd, addr);
        ptl = pte_lockptr(mm, pmd);		/* or ptep_lockptr(mm, pte) */
        spin_lock(ptl);
```

## References
- 5f75cfbd6bb0 ("mm/hugetlb: fix hugetlb vs. core-mm PT locking"), which added
  `ptep_lockptr()` and left `pte_lockptr(struct mm_struct *, pmd_t *)` as it was;
  Fixes: 9cb28da54643 ("mm/gup: handle hugetlb in the generic follow_page_mask code");
  v3 https://lore.kernel.org/all/20240731122103.382509-1-david@redhat.com/
- The proposal that was not merged, "mm: let pte_lockptr() consume a pte_t pointer",
  https://lore.kernel.org/all/20240725183955.2268884-2-david@redhat.com/
  (dropped: `virt_to_page()` does not work on kmap'ed CONFIG_HIGHPTE page tables)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from analyzer import cache, syntax
from analyzer.images import Image
from analyzer.parsing import ParsedFile, parse
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, ReviewContext, Severity

MM = "struct mm_struct *"
VMA = "struct vm_area_struct *"
# Linux 6.12, for reviews without a tree; pte_offset_map_ro/rw_nolock() are
# v6.13's replacements of pte_offset_map_nolock().
BUILTIN_SIGNATURES: dict[str, list[str | None]] = {
    "pte_lockptr": [MM, "pmd_t *"],
    "ptep_lockptr": [MM, "pte_t *"],
    "pmd_lockptr": [MM, "pmd_t *"],
    "pud_lockptr": [MM, "pud_t *"],
    "pmd_lock": [MM, "pmd_t *"],
    "pud_lock": [MM, "pud_t *"],
    "pte_offset_map": ["pmd_t *", "unsigned long"],
    "__pte_offset_map": ["pmd_t *", "unsigned long", "pmd_t *"],
    "pte_offset_map_lock": [MM, "pmd_t *", "unsigned long", "spinlock_t **"],
    "__pte_offset_map_lock": [MM, "pmd_t *", "unsigned long", "spinlock_t **"],
    "pte_offset_map_nolock": [MM, "pmd_t *", "unsigned long", "spinlock_t **"],
    "pte_offset_map_ro_nolock": [MM, "pmd_t *", "unsigned long", "spinlock_t **"],
    "pte_offset_map_rw_nolock": [MM, "pmd_t *", "unsigned long", "pmd_t *", "spinlock_t **"],
    "pte_alloc_map_lock": [MM, "pmd_t *", "unsigned long", "spinlock_t **"],
    "pte_unmap_unlock": ["pte_t *", "spinlock_t *"],
    "pmd_trans_huge_lock": ["pmd_t *", VMA],
    "pud_trans_huge_lock": ["pud_t *", VMA],
    "huge_pte_lockptr": ["struct hstate *", MM, "pte_t *"],
    "huge_pte_lock": ["struct hstate *", MM, "pte_t *"],
}
# Helpers of the same family a tree may add later.
HELPER_RE = re.compile(
    r"(?:__)?(?:pte|ptep|pmd|pud|huge_pte)_(?:lockptr|lock|offset_map\w*|trans_huge_lock)"
)
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
# For patch-only reviews: the page-table fields of the structs mm code
# passes around most.
BUILTIN_FIELDS = {
    "vm_fault": {"pmd": "pmd_t *", "pud": "pud_t *", "pte": "pte_t *", "ptl": "spinlock_t *"},
    "page_vma_mapped_walk": {"pmd": "pmd_t *", "pte": "pte_t *", "ptl": "spinlock_t *"},
}
PAGE_TABLE_TYPES = frozenset({"pte_t", "pmd_t", "pud_t", "p4d_t", "pgd_t", "spinlock_t"})


@dataclass(frozen=True)
class _Declarations:
    signatures: dict[str, list[list[str | None]]]
    structs: dict[str, dict[str, str]]


_by_blob: dict[str, _Declarations] = {}


def _declarations(parsed: ParsedFile) -> _Declarations:
    """What one parsed file declares, computed once per blob."""
    blob = parsed.image.blob_id
    if blob not in _by_blob:
        if len(_by_blob) > 64:
            _by_blob.clear()
        root = parsed.tree.root_node
        _by_blob[blob] = _Declarations(syntax.function_signatures(root), syntax.struct_fields(root))
    return _by_blob[blob]


# The headers one review context (one patch, or one scan) has read.
_read_by_context: WeakKeyDictionary[ReviewContext, dict[str, _Declarations | None]] = (
    WeakKeyDictionary()
)


# Headers are parsed once per content, ever: the result is kept on disk.
_CACHE_NAMESPACE = "lock-helper-declarations-" + cache.code_digest(__file__, syntax.__file__)


def _header(context: ReviewContext, path: str) -> _Declarations | None:
    headers = _read_by_context.setdefault(context, {})
    if path not in headers:
        text = context.read_file(path)
        headers[path] = _header_declarations(text) if text is not None else None
    return headers[path]


def _header_declarations(text: bytes) -> _Declarations:
    image = Image.of(text)
    if image.blob_id in _by_blob:
        return _by_blob[image.blob_id]
    stored = cache.load(_CACHE_NAMESPACE, image.blob_id)
    if stored is not None:
        declarations = _Declarations(stored["signatures"], stored["structs"])
        _by_blob[image.blob_id] = declarations
        return declarations
    declarations = _declarations(parse(image))
    cache.store(
        _CACHE_NAMESPACE,
        image.blob_id,
        {"signatures": declarations.signatures, "structs": declarations.structs},
    )
    return declarations


@dataclass(frozen=True)
class _Expected:
    type: str
    where: str  # the header (or file) the declaration was read from
    confidence: Confidence


class LockHelperArgType(FunctionRule):
    id = "LOCK_HELPER_ARG_TYPE"
    severity = Severity.ERROR
    summary = "page-table lock helper given a pointer to the wrong page-table level or lock"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None:
            return
        helpers = [
            c
            for c in syntax.calls(body)
            if (name := syntax.call_name(c)) in BUILTIN_SIGNATURES
            or (name is not None and HELPER_RE.fullmatch(name))
        ]
        if not helpers:
            return
        lookup = _Lookup(change)
        for call in helpers:
            name = syntax.call_name(call) or ""
            arguments = syntax.arguments(call)
            for index, argument in enumerate(arguments):
                expected = lookup.parameter(name, index, len(arguments))
                if expected is None or _base(expected.type) not in PAGE_TABLE_TYPES:
                    continue
                actual = syntax.expression_type(change.after.node, argument, lookup.field)
                if actual is None or actual == expected.type or not _comparable(actual):
                    continue
                yield change.finding(
                    argument,
                    _message(name, index, syntax.text(argument), actual, expected),
                    expected.confidence,
                    key=f"{name}:{index}:{actual}",
                )


class _Lookup:
    """Declarations as the reviewed tree has them, else Linux 6.12's."""

    def __init__(self, change: FunctionChange) -> None:
        self.context = change.context
        self.file = change.after_file

    def _sources(
        self, headers: tuple[str, ...], own: re.Pattern[bytes]
    ) -> Iterator[tuple[str, _Declarations | None]]:
        # Walking a whole .c file for its declarations costs more than the
        # rest of the review; a top-level line naming the thing says whether
        # it is worth it.
        if self.file is not None and own.search(self.file.image.text):
            yield "this file", _declarations(self.file)
        if self.context.has_tree:
            for path in headers:
                yield path, _header(self.context, path)

    def parameter(self, name: str, index: int, arity: int) -> _Expected | None:
        own = re.compile(rb"^[A-Za-z_#][^\n;=]*\b" + re.escape(name.encode()) + rb"\b", re.M)
        for where, declarations in self._sources(SIGNATURE_HEADERS, own):
            if declarations is None or name not in declarations.signatures:
                continue
            candidates = [s for s in declarations.signatures[name] if len(s) == arity]
            types = {s[index] for s in candidates}
            if len(types) != 1:
                return None  # declared differently per configuration, or arity differs
            declared = types.pop()
            return _Expected(declared, where, Confidence.HIGH) if declared else None
        builtin = BUILTIN_SIGNATURES.get(name)
        if builtin is None or len(builtin) != arity or builtin[index] is None:
            return None
        return _Expected(builtin[index], "Linux 6.12", Confidence.MEDIUM)

    def field(self, struct: str, field: str) -> str | None:
        own = re.compile(rb"^(?:struct|union)\s+" + re.escape(struct.encode()) + rb"\b", re.M)
        for _, declarations in self._sources(STRUCT_HEADERS, own):
            if declarations is not None and struct in declarations.structs:
                return declarations.structs[struct].get(field)
        return BUILTIN_FIELDS.get(struct, {}).get(field)


def _base(type_text: str) -> str:
    return type_text.rstrip("* ")


def _comparable(actual: str) -> bool:
    """Only page-table entry and lock pointers are judged; `void *`,
    integers and unknown typedefs are left to the compiler."""
    return _base(actual) in PAGE_TABLE_TYPES


_ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th")


def _message(name: str, index: int, argument: str, actual: str, expected: _Expected) -> str:
    ordinal = _ORDINALS[index] if index < len(_ORDINALS) else f"#{index + 1}"
    hint = ""
    if name == "pte_lockptr" and actual == "pte_t *":
        hint = "; for a pointer into the PTE table use ptep_lockptr()"
    elif name == "ptep_lockptr" and actual == "pmd_t *":
        hint = "; for the PMD entry pointing to the PTE table use pte_lockptr()"
    elif expected.type == "spinlock_t **" and actual == "spinlock_t *":
        hint = f"; pass &{argument}, the helper stores the lock there"
    elif expected.type == "spinlock_t *" and actual == "spinlock_t **":
        lock = argument[1:].strip() if argument.startswith("&") else f"*{argument}"
        hint = f"; pass the lock itself ({lock})"
    source = "" if expected.where == "this file" else f" (per {expected.where})"
    return (
        f"{name}() takes {expected.type} as its {ordinal} argument{source}, "
        f"but '{argument}' is {actual}{hint}"
    )


RULE = LockHelperArgType
