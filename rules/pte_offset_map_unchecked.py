"""The page table from `pte_offset_map*()` used without a NULL check.

## What it does
Follows the pointer returned by `pte_offset_map()`, `pte_offset_map_lock()`,
`pte_offset_map_nolock()`, `pte_offset_map_ro_nolock()`,
`pte_offset_map_rw_nolock()` (and their `__` forms) along every path, and
flags each place it is dereferenced while it may still be NULL on some path
there: `*pte`, `ptep_get(pte)`, `set_pte_at()`, `pte_unmap_unlock()` (also
on an error path reached with the NULL pointer), or a helper of the tree
whose summary dereferences it (or, for `vmf->pte`, the struct holding it).
A NULL test on one name counts for its aliases (`start_pte = pte = ...`,
`pte += nr`); `if (WARN_ON_ONCE(!pte)) return;` is a test, a bare
`VM_WARN_ON_ONCE(!pte);` is not (nothing bails out).  A helper that only
tests the pointer (`return !vmf->pte;`) tests it where it is called.
Returning the pointer leaves the check to the caller.  When the patch
removed the NULL check the function had, the finding says so.

Before v6.5 (read from the tree's Makefile) the helpers never fail, and the
rule is silent.

## Why is this bad?
Since v6.5 these helpers return NULL when the PMD did not point to a page
table by the time they looked: it was none, became a huge PMD or a migration
entry, or khugepaged retracted the table under a caller that holds only the
mmap (or VMA) lock for reading.  This is a normal race, not an error: the
caller must back off (`-EAGAIN`, `ACTION_AGAIN`, retry the fault, skip the
range).  Using the pointer unchecked is a NULL dereference, or worse a walk
from address 0 when arithmetic is done first.

## Example
```c
        pte = pte_offset_map_lock(mm, pmd, addr, &ptl);
        if (!pte_none(ptep_get(pte)))	/* NULL when the PMD changed */
                goto out_unlock;
```

## Use instead
```c
        pte = pte_offset_map_lock(mm, pmd, addr, &ptl);
        if (!pte)
                return -EAGAIN;		/* or walk->action = ACTION_AGAIN */
        if (!pte_none(ptep_get(pte)))
                goto out_unlock;
```

## Known problems
Helpers defined in other `.c` files are trusted to check.  A pointer stored
into a struct and read back through another name is not followed.

## References
- 0d940a9b270b ("mm/pgtable: allow pte_offset_map[_lock]() to fail"),
  Hugh Dickins, v6.5, posted as
  https://lore.kernel.org/r/8218ffdc-8be-54e5-0a8-83f5542af283@google.com
  in the series "mm: allow pte_offset_map[_lock]() to fail",
  https://lore.kernel.org/linux-mm/c1c9a74a-bc5b-15ea-e5d2-8ec34bc921d@google.com/
- 04dee9e85cf5 ("mm/various: give up if pte_offset_map[_lock]() fails")
- 71c186efc1b2 ("userfaultfd: fix checks for huge PMDs"), which NULL-checks
  pte_offset_map_lock() in mfill_atomic_install_pte()'s callers' paths
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow import events as ev
from analyzer.flow.entries import ALLOCATING_MAPS, TABLE_MAPS
from analyzer.flow.nullness import MAY_FAIL, risky_uses
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

MAPPERS = dict.fromkeys(TABLE_MAPS, MAY_FAIL)
# Callees that dereference the pte_t * they are given.
ACCESSORS = regex(
    r"ptep_\w+|huge_ptep_\w+|pte_unmap(_unlock)?|set_ptes?|set_pte_at|pte_clear|"
    r"update_mmu_(cache|tlb)(_range)?|folio_pte_batch|pte_range_none|clear_(not_present_)?full_ptes"
)
# Since 0d940a9b270b (v6.5) the helpers return NULL when the PMD changed.
FAILING_SINCE = (6, 5)


class PteOffsetMapUnchecked(FunctionRule):
    id = "PTE_OFFSET_MAP_UNCHECKED"
    severity = Severity.ERROR
    summary = "pte_offset_map*() may return NULL (v6.5+): check it before using the page table"
    paths = ()
    api = r"\bpte_(?:offset|alloc)_map"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        # Before v6.5 only the allocating maps can fail.
        maps_fail = (flow.version or FAILING_SINCE) >= FAILING_SINCE
        if not maps_fail and not flow.calls(ALLOCATING_MAPS):
            return
        analysis = flow.entries()
        if not analysis.complete:
            return
        # The function as it was is analysed only to word a finding.
        checked_before = functools.cache(lambda: _checked_before(change))
        reported: set[tuple[int, ...]] = set()
        for use in risky_uses(analysis, flow.dereferences(ACCESSORS)):
            if not any(_a_map(flow, s, maps_fail) for s in use.sources):
                continue  # a NULL of another kind (a trans-huge lock)
            # The first use of an unchecked pointer is the crash; later ones
            # on the same path add nothing.
            origin = tuple(sorted(s.id for s in use.sources))
            if origin in reported:
                continue
            reported.add(origin)
            source = use.sources[0] if use.sources else None
            mapper = (syntax.call_name(source) if source is not None else None) or "pte_offset_map"
            name = ev.place(use.pointer) or "the page table"
            via = (
                f"; {syntax.call_name(use.node)}() uses it"
                if use.node.type == "call_expression"
                and not ACCESSORS.fullmatch(syntax.call_name(use.node))
                else ""
            )
            why = (
                "when the PMD changed under us (none, huge, migration, retracted)"
                if maps_fail
                else "when the page table cannot be allocated"
            )
            if name in checked_before():
                message = (
                    f"patch removes the NULL check of {name} = {mapper}(){via}: it returns NULL "
                    f"{why}; back off (-EAGAIN, retry, ACTION_AGAIN) before using it"
                )
            else:
                message = (
                    f"{name} from {mapper}() is used without a NULL check{via}: it returns NULL "
                    f"{why}; test it and back off (-EAGAIN, retry, ACTION_AGAIN) first"
                )
            yield change.finding(use.node, message, Confidence.HIGH, key=f"{mapper}:{name}")


def _checked_before(change: FunctionChange) -> set[str]:
    """Pointers the function as it was mapped and never used unchecked."""
    before = change.before_flow
    if before is None or not before.calls(MAPPERS):
        return set()
    analysis = before.entries()
    unchecked = {ev.place(u.pointer) for u in risky_uses(analysis, before.dereferences(ACCESSORS))}
    mapped = {name for call in before.calls(MAPPERS) for name in ev.destinations(call)}
    return mapped - unchecked


def _a_map(flow: FunctionFlow, source: Node, maps_fail: bool) -> bool:
    name = syntax.call_name(source) or ""
    if name in ALLOCATING_MAPS:
        return True
    return maps_fail and (name in MAPPERS or flow.maps_and_may_fail(name))


RULE = PteOffsetMapUnchecked
