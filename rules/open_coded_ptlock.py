"""A page-table lock looked up by hand instead of through its helper.

## What it does
Flags `ptlock_ptr()` called outside the page-table lock helpers themselves
(`ptlock_ptr(page_ptdesc(pmd_page(*pmd)))`, `ptlock_ptr(virt_to_ptdesc(pte))`,
`ptlock_ptr(pmd_ptdesc(pmd))`), and a split lock taken straight from a page
table descriptor (`&ptdesc->ptl`).  The helpers' own definitions (functions
named `*_lockptr`, `ptlock_*`, `pmd_lock`, ... in `include/linux/`, and the
`ptlock_*` allocation helpers in `mm/memory.c`) are where this belongs and
are left alone.

## Why is this bad?
Which lock guards a page table depends on the configuration:
`CONFIG_SPLIT_PTE_PTLOCKS` / `CONFIG_SPLIT_PMD_PTLOCKS` off means
`mm->page_table_lock` for everything, and `ptlock_ptr()` is not even
defined; `ALLOC_SPLIT_PTLOCKS` moves the lock out of the descriptor; with
`CONFIG_HIGHPTE` a PTE table is not addressable for `virt_to_ptdesc()`.
`pte_lockptr()`, `ptep_lockptr()` and `pmd_lockptr()` encode all of that in
one place.  An open-coded lookup builds on one configuration, takes a
different lock than the helper on another, and no longer serialises with
the code that uses the helper.  David Hildenbrand, reviewing such a lookup:
"I really don't like open-coding that".

## Example
```c
        ptl = ptlock_ptr(page_ptdesc(pmd_page(*pmd)));
        spin_lock(ptl);
```

## Use instead
```c
        ptl = pte_lockptr(mm, pmd);	/* ptep_lockptr(mm, pte), pmd_lockptr(mm, pmd) */
        spin_lock(ptl);
```

## References
- 5f75cfbd6bb0 ("mm/hugetlb: fix hugetlb vs. core-mm PT locking"), which added
  `ptep_lockptr()` rather than open-coding the lookup;
  Fixes: 9cb28da54643 ("mm/gup: handle hugetlb in the generic follow_page_mask code")
- Thread "[PATCH v1 0/2] mm/hugetlb: fix hugetlb vs. core-mm PT locking",
  https://lore.kernel.org/all/20240725183955.2268884-1-david@redhat.com/ ;
  Peter Xu proposing the open-coded lookup <ZqPCjd35OdNRrcfl@x1n>, David
  Hildenbrand's answer <bf2069ed-f2b8-49d4-baf0-dbd2189362f9@redhat.com>;
  v3 <20240731122103.382509-1-david@redhat.com>
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.patterns import regex
from analyzer.rule import Finding, FunctionChange, FunctionRule, Severity

# The helpers that are allowed, indeed meant, to look the lock up.
HELPER_NAME_RE = regex(
    r"\w*_lockptr|ptlock_\w+|(?:pmd|pud|pte)_lock|\w*_ptlock_\w+|pagetable_\w+_(?:c|d)tor"
)
DESCRIPTOR_CALLS = frozenset({"page_ptdesc", "virt_to_ptdesc", "pmd_ptdesc", "pfn_ptdesc"})


class OpenCodedPtlock(FunctionRule):
    id = "OPEN_CODED_PTLOCK"
    severity = Severity.WARNING
    summary = "page-table lock looked up by hand: use pte_lockptr()/ptep_lockptr()/pmd_lockptr()"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None or HELPER_NAME_RE.fullmatch(change.after.name):
            return
        for call in syntax.calls(body, "ptlock_ptr"):
            arguments = syntax.arguments(call)
            argument = syntax.text(arguments[0]) if arguments else ""
            yield change.finding(
                call,
                f"ptlock_ptr({argument}) open-codes the page-table lock lookup, which depends "
                f"on the split-lock and HIGHPTE configuration; use {_helper_for(arguments)}",
            )
        for field in _descriptor_locks(change, body):
            yield change.finding(
                field,
                f"'{syntax.text(field)}' takes the split page-table lock straight from the "
                "descriptor; use pte_lockptr()/ptep_lockptr()/pmd_lockptr(), which also cover "
                "configurations without split locks",
            )


def _helper_for(arguments: list[Node]) -> str:
    if not arguments:
        return "pte_lockptr(), ptep_lockptr() or pmd_lockptr()"
    called = {syntax.call_name(c) for c in syntax.calls(arguments[0])}
    if "pmd_page" in called:
        return "pte_lockptr(mm, pmd)"
    if "virt_to_ptdesc" in called:
        return "ptep_lockptr(mm, pte)"
    if called & {"pmd_ptdesc", "pmd_pgtable_page"}:
        return "pmd_lockptr(mm, pmd)"
    return "pte_lockptr(), ptep_lockptr() or pmd_lockptr()"


def _descriptor_locks(change: FunctionChange, body: Node) -> Iterator[Node]:
    """`x->ptl` where x is a page-table descriptor (a `struct ptdesc *`
    variable, or one of the *_ptdesc() lookups)."""
    for node in syntax.walk(body):
        if node.type != "field_expression" or syntax.text(node.child_by_field_name("field")) != (
            "ptl"
        ):
            continue
        owner = node.child_by_field_name("argument")
        if owner is None:
            continue
        if owner.type == "call_expression":
            is_descriptor = syntax.call_name(owner) in DESCRIPTOR_CALLS
        else:
            is_descriptor = change.flow.type_of(owner) == "struct ptdesc *"
        if is_descriptor:
            yield node


RULE = OpenCodedPtlock
