"""A page-table entry helper applied to an entry it does not fit.

## What it does
Follows what each page-table entry value may be along every path (none,
present, swap, migration, device-private, marker: `flow.entries()`, refined
by `pte_none()`, `pte_present()`, `is_swap_pte()`, `is_pte_marker()`,
`is_hugetlb_entry_migration()`, `is_hugetlb_entry_hwpoisoned()` and their
PMD forms) and flags, in what a patch adds or reshapes:

- a helper that reads the bits of a *present* entry (`pte_pfn()`,
  `pte_page()`, `pte_dirty()`, `pte_write()`, `pte_young()`,
  `pte_uffd_wp()`, `huge_pte_write()`, `huge_pte_uffd_wp()`,
  `huge_pte_clear_uffd_wp()`, `pmd_page()`, `pmd_pfn()`, `pmd_write()`,
  `vm_normal_page()`, ...) applied where the entry may not be present,
  when the function as it was made it present first (the patch dropped or
  narrowed the `pte_present()` gate), or where it cannot be present on
  any path (a swap or migration branch);
- a swap-entry helper (`pte_to_swp_entry()`, `pte_swp_uffd_wp()`,
  `pte_swp_clear_uffd_wp()`, `pmd_to_swp_entry()`, ...) applied where the
  entry may be present under the same conditions;
- `ptep_get()` added on a hugetlb entry: under `is_vm_hugetlb_page()` or
  `folio_test_hugetlb()`, or on the result of `huge_pte_offset()` /
  `hugetlb_walk()` / `huge_pte_alloc()`, where `huge_ptep_get()` belongs.

A whole function with no earlier version (`mmreview scan`) is judged on the
second and third kinds of evidence only, in the lines a patch adds.

## Why is this bad?
A non-present entry keeps a swap or migration entry in the bits a present
one keeps its pfn, dirty, write and uffd-wp bits: `pte_write()` of a
migration entry reads an offset bit, `huge_pte_clear_uffd_wp()` of a
migration or hwpoison entry clears a bit of the swap offset (corrupting the
entry the child inherits at fork), `pte_pfn()` of a device-private entry
flushes the cache of a random pfn.  The other way round, a swap helper on a
present entry decodes its pfn as a swap type and offset.  And a hugetlb
entry may be a contiguous range of entries (arm64): `ptep_get()` reads one of
them and misses the dirty and young bits the hardware set on the others.

## Example
```c
        if (pte_none_mostly(ptent))
                ret = true;
        if (!pte_write(ptent) && (reason & VM_UFFD_WP))	/* swap entry? */
                ret = true;
```

## Use instead
```c
        if (pte_present(ptent) && !pte_write(ptent) && (reason & VM_UFFD_WP))
                ret = true;
```
and the swap forms (`pte_swp_uffd_wp()`, `pte_swp_clear_uffd_wp()`) in swap
and migration branches, `huge_ptep_get()` for hugetlb entries.

## Known problems
An entry the code knows to be present for a reason the analysis does not
see (a `VM_PFNMAP` VMA, a table the function just filled) is taken for
anything; that is why, without an earlier version to compare with, only a
helper that cannot fit on any path is reported.  The swap value used as a
pfn ("mm: khugepaged: fix swap entry value to folio_pfn()") is not modelled.

## References
- "userfaultfd: gate must_wait writability check on pte_present()"
  (`userfaultfd_must_wait()`, `userfaultfd_huge_must_wait()`)
- "mm: migrate_device: fix pte_pfn/pte_dirty called on non-present PTE"
- "mm/hugetlb: fix swap entry corruption when clearing uffd-wp at fork()"
- "mm/rmap: use huge_ptep_get() in try_to_migrate_one()" (and the same fix
  in try_to_unmap_one(), remove_migration_pte(), page_vma_mapped_walk())
- "mm: khugepaged: fix swap entry value to folio_pfn()"
- 24bf08c4376b ("mm/userfaultfd: fix uffd-wp handling for THP migration
  entries"): non-present entries carry their uffd-wp bit in the swap form
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow.entries import (
    BAD,
    DEVICE,
    ENTRY,
    HUGE,
    LEVELS,
    MARKER,
    MIGRATION,
    NONE,
    PMD_PRESENT,
    PRESENT,
    SWAP,
    Kinds,
)
from analyzer.flow.regress import matching_node
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# A none entry's bits are all clear: the helpers read zeroes, not another
# entry's bits.  What does not fit is a swap, migration, device entry or marker.
NOT_PRESENT = frozenset({MIGRATION, SWAP, DEVICE, MARKER})
IS_PRESENT = frozenset({PRESENT}) | PMD_PRESENT

# Helpers that read or set bits of a present entry: which argument is the entry.
PRESENT_ONLY: dict[str, int] = {
    **{
        f"{level}_{bit}": 0
        for level in ("pte", "pmd", "huge_pte")
        for bit in (
            "pfn",
            "page",
            "folio",
            "dirty",
            "write",
            "young",
            "uffd_wp",
            "soft_dirty",
            "mkuffd_wp",
            "clear_uffd_wp",
            "wrprotect",
            "mkold",
            "mkclean",
            "mkdirty",
            "mkyoung",
            "mkwrite_novma",
        )
    },
    "vm_normal_page": 2,
    "vm_normal_folio": 2,
    "vm_normal_page_pmd": 2,
    "vm_normal_folio_pmd": 2,
}
# Helpers that decode or set bits of a swap (or migration, device, marker) entry.
SWAP_ONLY: dict[str, int] = {
    **{
        f"{level}_swp_{bit}": 0
        for level in ("pte", "pmd")
        for bit in (
            "uffd_wp",
            "mkuffd_wp",
            "clear_uffd_wp",
            "soft_dirty",
            "mksoft_dirty",
            "clear_soft_dirty",
            "exclusive",
            "mkexclusive",
        )
    },
    "pte_to_swp_entry": 0,
    "pmd_to_swp_entry": 0,
    "huge_pte_to_swp_entry": 0,
}
HELPERS = frozenset(PRESENT_ONLY) | frozenset(SWAP_ONLY)
HUGETLB_TESTS = frozenset({"is_vm_hugetlb_page", "folio_test_hugetlb", "PageHuge"})
# What an entry helper or an entry test looks like in a changed line.
_ENTRY_WORDS = regex(r"\b(?:huge_)?(?:pte|pmd)_\w+|\bis_\w+entry\w*|\bis_swap_\w+|\bvm_normal_")
HUGETLB_LOOKUPS = frozenset({"huge_pte_offset", "hugetlb_walk", "huge_pte_alloc"})
KIND_WORDS = {
    NONE: "none",
    MIGRATION: "migration",
    SWAP: "swap",
    DEVICE: "device-private",
    MARKER: "marker",
    PRESENT: "present",
    HUGE: "present",
}


def misfit(name: str) -> tuple[int, Kinds, str]:
    if name in PRESENT_ONLY:
        return PRESENT_ONLY[name], NOT_PRESENT, "present"
    return SWAP_ONLY[name], IS_PRESENT, "swap"


def level_kinds(helper: str, kinds: Kinds | None) -> Kinds:
    """The entry kinds among `kinds` an entry handed to `helper` can be:
    those of its level (a `pte_*()` helper gets a PTE), never a corrupt one
    (not this lesson)."""
    if kinds is None:
        return frozenset()
    kinds = kinds & ENTRY - {BAD}
    if helper.startswith("pte_"):
        kinds &= LEVELS["PTE"] | {HUGE}  # hugetlb entries go through pte_*() too
    elif helper.startswith("pmd_"):
        kinds &= LEVELS["PMD"]
    return kinds


def _words(kinds: Kinds) -> str:
    return "/".join(sorted({KIND_WORDS.get(k, "present") for k in kinds}))


class EntryHelperMisfit(FunctionRule):
    id = "ENTRY_HELPER_MISFIT"
    severity = Severity.WARNING
    summary = (
        "a present-only entry helper on an entry that may not be present, a swap helper on a "
        "present one, or ptep_get() on a hugetlb entry"
    )
    paths = ()
    api = (
        r"\b(?:pte|pmd|huge_pte)_(?:pfn|page|folio|dirty|write|young|uffd_wp|clear_uffd_wp|swp_\w+)\b"
        r"|\bptep_get\b|\b(?:pte|pmd)_to_swp_entry\b|\bvm_normal_"
    )

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        before = change.before_flow
        if before is None and not change.added_rows:
            return  # a whole function with nothing added: nothing to judge
        flow = change.flow
        yield from self._hugetlb_reads(change, flow)
        calls = flow.calls(HELPERS)
        if not calls:
            return
        if before is not None and not _text_changed(change):
            return
        analysis = flow.entries()
        if not analysis.complete:
            return
        old_calls = before.calls(HELPERS) if before is not None else []
        # The function as it was is analysed only for a call that misfits.
        old_analysis = functools.cache(
            lambda: before.entries() if old_calls and before is not None else None
        )
        for call in calls:
            name = syntax.call_name(call) or ""
            index, bad, wants = misfit(name)
            arguments = syntax.arguments(call)
            if len(arguments) <= index:
                continue
            entry = arguments[index]
            kinds = level_kinds(name, analysis.kinds_at(call, entry))
            wrong = kinds & bad
            if not kinds or not wrong:
                continue
            definite = kinds <= bad
            old = matching_node(old_calls, calls, call) if old_calls else None
            text = syntax.text(entry)
            if old is not None and (entries := old_analysis()) is not None and entries.complete:
                old_arguments = syntax.arguments(old)
                old_kinds = (
                    entries.kinds_at(old, old_arguments[index])
                    if len(old_arguments) > index
                    else None
                )
                old_kinds = level_kinds(name, old_kinds)
                if old_kinds and not old_kinds & bad:
                    message = (
                        f"{name}() reads a {wants} entry, but `{text}` may now be a "
                        f"{_words(wrong)} entry here: the function as it was made sure it "
                        f"was {wants} first; keep that test"
                    )
                    yield change.finding(call, message, Confidence.HIGH, key=f"{name}:{text}")
                    continue
                if not definite or old_kinds <= bad:
                    continue  # the old function had the same problem
            if not definite or not change.is_added(call):
                continue
            fix = (
                "use the swap form (pte_swp_*(), pmd_swp_*()) or test pte_present() first"
                if wants == "present"
                else "use the present form or test is_swap_pte() first"
            )
            message = (
                f"{name}() reads a {wants} entry, but `{text}` is a {_words(kinds)} entry "
                f"on every path here: {fix}"
            )
            yield change.finding(call, message, Confidence.HIGH, key=f"{name}:{text}")

    def _hugetlb_reads(self, change: FunctionChange, flow: FunctionFlow) -> Iterator[Finding]:
        for call in flow.calls("ptep_get"):
            if not change.is_added(call):
                continue
            arguments = syntax.arguments(call)
            if not arguments:
                continue
            why = _hugetlb_entry(flow, call, arguments[0])
            if why is None:
                continue
            message = (
                f"ptep_get() on a hugetlb entry ({why}): a hugetlb entry may span several "
                "contiguous PTEs whose dirty and young bits only huge_ptep_get() gathers; "
                "use huge_ptep_get()"
            )
            yield change.finding(
                call, message, Confidence.MEDIUM, key=f"ptep_get:{syntax.text(arguments[0])}"
            )


def _text_changed(change: FunctionChange) -> bool:
    """Did the patch touch an entry helper or an entry test?  (Laziness: the
    entries analysis runs only then.)"""
    before = change.before
    assert before is not None
    lines = [change.after.image.line_text(row) for row in change.added_rows]
    lines += [before.image.line_text(row) for row in change.removed_rows]
    return any(_ENTRY_WORDS.search(line) for line in lines)


def _hugetlb_entry(flow: FunctionFlow, call: Node, pointer: Node) -> str | None:
    """Why the entry `pointer` points to is a hugetlb one at `call`, if it is."""
    name = syntax.text(pointer)
    stores = flow.assignments(name)
    lookups = {
        syntax.call_name(store.value)
        for store in stores
        if store.value is not None and store.value.type == "call_expression"
    }
    if (
        stores
        and len(lookups) == 1
        and lookups <= HUGETLB_LOOKUPS
        and all(
            store.value is not None and store.value.type == "call_expression" for store in stores
        )
    ):
        return f"`{name}` is from {next(iter(lookups))}()"
    node: Node | None = call
    while node is not None and node != flow.function.body:
        parent = node.parent
        if parent is not None and parent.type == "if_statement":
            condition = parent.child_by_field_name("condition")
            consequence = parent.child_by_field_name("consequence")
            if consequence is not None and node == consequence and condition is not None:
                test = _positive_test(condition)
                if test is not None:
                    return f"under {test}()"
        node = parent
    return None


def _positive_test(condition: Node) -> str | None:
    """A hugetlb test the condition holds on its true side (a conjunct, not negated)."""
    node = condition
    while node.type == "parenthesized_expression" and node.named_child_count == 1:
        node = node.named_children[0]
    if (
        node.type == "binary_expression"
        and syntax.text(node.child_by_field_name("operator")) == "&&"
    ):
        for side in ("left", "right"):
            found = _positive_test(node.child_by_field_name(side))
            if found is not None:
                return found
        return None
    if node.type == "call_expression":
        name = syntax.call_name(node)
        if name in ("unlikely", "likely"):
            arguments = syntax.arguments(node)
            return _positive_test(arguments[0]) if arguments else None
        return name if name in HUGETLB_TESTS else None
    return None


RULE = EntryHelperMisfit
