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
whose type cannot be known that way is not judged.  A cast does not change
what was passed: in `pmd_lockptr(mm, (pmd_t *)ptep)` the argument is still
the `pte_t *` it was cast from, and is judged as that; except where the code
has chosen the level by the huge page's size (`huge_pte_lockptr()`'s
`if (size >= PMD_SIZE) return pmd_lockptr(mm, (pmd_t *)pte);`), which is on
every path to the call.

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

## Known problems
A cast is accepted only where a test of a page size (`PMD_SIZE`,
`PUD_SIZE`, `huge_page_size()`) is made on every path to it; a hugetlb entry
pointer cast for another reason is reported.
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.declarations import Expected, normalize_type
from analyzer.flow import FunctionFlow
from analyzer.patterns import regex
from analyzer.rule import Finding, FunctionChange, FunctionRule, Severity

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
HELPER_RE = regex(
    r"(?:__)?(?:pte|ptep|pmd|pud|huge_pte)_(?:lockptr|lock|offset_map\w*|trans_huge_lock)"
)
PAGE_TABLE_TYPES = frozenset({"pte_t", "pmd_t", "pud_t", "p4d_t", "pgd_t", "spinlock_t"})
# Tests that choose a page-table level by size (hugetlb entries are typed
# pte_t * at every level).
SIZE_TEST = regex(r"\b(?:PMD_SIZE|PUD_SIZE|P4D_SIZE|huge_page_size|huge_page_shift)\b")


class LockHelperArgType(FunctionRule):
    id = "LOCK_HELPER_ARG_TYPE"
    severity = Severity.ERROR
    summary = "page-table lock helper given a pointer to the wrong page-table level or lock"
    paths = ()
    api = r"\b_?_?(?:pte|ptep|pmd|pud|huge_pte)_(?:lock|offset_map|trans_huge_lock|unmap_unlock)"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        for call in flow.calls():
            name = syntax.call_name(call) or ""
            if name not in BUILTIN_SIGNATURES and not HELPER_RE.fullmatch(name):
                continue
            arguments = syntax.arguments(call)
            for index, argument in enumerate(arguments):
                expected = flow.declarations.parameter(
                    name, index, len(arguments), BUILTIN_SIGNATURES
                )
                if expected is None or _base(expected.type) not in PAGE_TABLE_TYPES:
                    continue
                actual = flow.type_of(argument, through_casts=True)
                if (
                    actual is None
                    or actual == expected.type
                    or _base(actual) not in PAGE_TABLE_TYPES
                ):
                    continue
                cast = _cast_to(argument)
                if cast == expected.type and _level_chosen_by_size(flow, call):
                    continue
                yield change.finding(
                    argument,
                    _message(name, index, syntax.text(argument), actual, expected, cast),
                    expected.confidence,
                    key=f"{name}:{index}:{actual}",
                )


def _base(type_text: str) -> str:
    return type_text.rstrip("* ")


def _cast_to(argument: Node) -> str | None:
    node = argument
    while node.type == "parenthesized_expression" and node.named_children:
        node = node.named_children[0]
    if node.type != "cast_expression":
        return None
    return normalize_type(syntax.text(node.child_by_field_name("type")))


def _level_chosen_by_size(flow: FunctionFlow, call: Node) -> bool:
    """Is a page-size test on every path to `call`?"""
    target = flow.point(call)
    if target is None:
        return False
    return flow.every_path(
        None,
        target,
        passes=lambda point: (
            point.kind == "branch" and bool(SIZE_TEST.search(syntax.text(point.node)))
        ),
    )


_ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th")


def _message(
    name: str, index: int, argument: str, actual: str, expected: Expected, cast: str | None
) -> str:
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
    elif cast is not None:
        hint = "; the cast hides it, it does not change which lock this finds"
    source = "" if expected.where == "this file" else f" (per {expected.where})"
    return (
        f"{name}() takes {expected.type} as its {ordinal} argument{source}, "
        f"but '{argument}' is {actual}{hint}"
    )


RULE = LockHelperArgType
