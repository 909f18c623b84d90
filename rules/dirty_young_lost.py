"""Access and dirty bits lost, or a folio freed before the TLB flush its
unmapping deferred.

## What it does
Flags what a patch does to three habits of code that takes entries down:

- a present entry cleared (`ptep_get_and_clear*()`, `ptep_clear_flush()`,
  `pmdp_huge_get_and_clear*()`, `pmdp_huge_clear_flush()`,
  `huge_ptep_get_and_clear()`, `pmdp_invalidate()`) whose dirty bit the
  function as it was moved to the folio (a `pte_dirty()`/`pmd_dirty()` test
  of the cleared value, then `folio_mark_dirty()`), and no longer does;
- the young bit cleared by read-modify-write of a live entry, added by the
  patch: `pte_mkold()`/`pmd_mkold()`/`huge_pte_mkold()` of an entry read
  through a pointer, written back through the same pointer with
  `set_pte_at()`/`set_pmd_at()`/`set_huge_pte_at()`;
- a folio freed (`destroy_large_folio()`, `folio_put()`,
  `free_unref_page_list()`, ...) on a path the function as it was flushed
  the TLB on first (`try_to_unmap_flush()`, `flush_tlb_range()`,
  `tlb_flush_mmu()`, ...), which some path now reaches without the flush.

## Why is this bad?
The hardware sets the dirty bit in the entry, not in the folio: clearing the
entry without `folio_mark_dirty()` loses the only record that a file page was
written, and writeback skips it (data loss).  The young and dirty bits are
set by the hardware at any time while the entry is live: reading the entry,
clearing the bit and writing it back loses a dirty bit set in between; the
atomic helpers (`ptep_test_and_clear_young()`, `pmdp_test_and_clear_young()`)
do not.  A deferred (batched) TLB flush leaves other CPUs able to write
through stale TLB entries until it runs: freeing the folio first lets them
write to memory that was reused.

## Example
```c
        orig_pmd = pmdp_huge_get_and_clear_full(vma, addr, pmd, tlb->fullmm);
        ...
        add_mm_counter(tlb->mm, mm_counter_file(folio), -HPAGE_PMD_NR);
        /* the dirty bit of a file THP is gone with orig_pmd */
```

## Use instead
```c
        if (pmd_present(orig_pmd) && pmd_dirty(orig_pmd))
                folio_mark_dirty(folio);
```
`ptep_test_and_clear_young()` / `pmdp_test_and_clear_young()` instead of
`*_mkold()` and a write back; `try_to_unmap_flush()` before freeing a folio
whose mappings a batched unmap took down.

## Known problems
Regression lessons: a new function, or one that never transferred the bit
or flushed first, is judged only on the young-bit pattern it adds.  A flush
made in a helper of the same file counts (one level down), one in another
file does not.  Dirty tests are counted per taken-down value: a patch that
moves the transfer into a helper is reported.

## References
- "mm/huge_memory: transfer the pmd dirty bit to the folio on zap"
- "mm/madvise: atomically clear the young bit on THP MADV_COLD"
- "mm/damon/vaddr: avoid hw-driven pte updates during damon_hugetlb_mkold()"
- "mm/vmscan: flush deferred TLB before freeing large folios"
- e4e3df290f65 ("mm/memory: fix folio_set_dirty() vs. folio_mark_dirty() in
  zap_pte_range()")
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow import events as ev
from analyzer.flow.regress import calls_reaching, lost_on_every_path, matching_node, squeezed
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

CLEARS = frozenset(
    {
        "ptep_get_and_clear",
        "ptep_get_and_clear_full",
        "get_and_clear_full_ptes",
        "ptep_clear_flush",
        "pmdp_huge_get_and_clear",
        "pmdp_huge_get_and_clear_full",
        "pmdp_huge_clear_flush",
        "pmdp_invalidate",
        "huge_ptep_get_and_clear",
        "huge_ptep_clear_flush",
        "pudp_huge_get_and_clear_full",
    }
)
DIRTY_TESTS = frozenset({"pte_dirty", "pmd_dirty", "huge_pte_dirty", "pud_dirty"})
MARK_DIRTY = frozenset(
    {
        "folio_mark_dirty",
        "folio_mark_dirty_lock",
        "set_page_dirty",
        "set_page_dirty_lock",
        "folio_set_dirty",
        "SetPageDirty",
    }
)
MKOLD = frozenset({"pte_mkold", "pmd_mkold", "huge_pte_mkold", "pud_mkold"})
# Entry writes: which argument is the pointer, which the value.
WRITES: dict[str, tuple[int, int]] = {
    "set_pte_at": (2, 3),
    "set_pmd_at": (2, 3),
    "set_huge_pte_at": (2, 3),
    "set_ptes": (2, 3),
}
# Plain reads of a live entry (the hardware may still change it): the pointer.
LIVE_READS: dict[str, int] = {
    "ptep_get": 0,
    "pmdp_get": 0,
    "huge_ptep_get": -1,
    "ptep_get_lockless": 0,
    "pmdp_get_lockless": 0,
}
FREES = frozenset(
    {
        "destroy_large_folio",
        "folio_put",
        "__folio_put",
        "put_page",
        "folios_put",
        "free_unref_page_list",
        "free_unref_folios",
        "free_pages_and_swap_cache",
        "free_page_and_swap_cache",
        "free_folio_and_swap_cache",
    }
)
FLUSH = regex(r"try_to_unmap_flush\w*|flush_tlb_\w+|tlb_flush_mmu\w*|tlb_finish_mmu")
_DIRTY_TEST = regex(r"\b(?:pte|pmd|huge_pte|pud)_dirty\b")


def _dirty_transfers(flow: FunctionFlow, clear: Node) -> int:
    """How many dirty tests of the value `clear` returned (on some path,
    before it is overwritten) decide a `folio_mark_dirty()` or the like?"""
    store = flow.store_of(clear)
    if store is None:
        return 0
    count = 0
    for use in flow.uses_of(store):
        parent = syntax.unparenthesized_parent(use)
        if (
            parent is None
            or parent.type != "argument_list"
            or parent.parent is None
            or syntax.call_name(parent.parent) not in DIRTY_TESTS
        ):
            continue
        statement = parent.parent
        while statement is not None and statement.type != "if_statement":
            statement = statement.parent
        consequence = statement.child_by_field_name("consequence") if statement else None
        if consequence is not None and syntax.calls(consequence, MARK_DIRTY):
            count += 1
    return count


def _live_written_back(flow: FunctionFlow) -> dict[int, tuple[Node, str, Node]]:
    """`*_mkold()` calls of an entry value read plainly (not taken down
    atomically) through a pointer and written back through the same
    pointer: mkold node id -> (mkold, pointer, write)."""
    found: dict[int, tuple[Node, str, Node]] = {}
    mkolds = flow.calls(MKOLD)
    if not mkolds:
        return found
    writes = flow.calls(frozenset(WRITES))
    for store in flow.stores:
        value = ev.strip(store.value) if store.value is not None else None
        if value is None:
            continue
        if value.type == "call_expression" and syntax.call_name(value) in LIVE_READS:
            arguments = syntax.arguments(value)
            index = LIVE_READS[syntax.call_name(value) or ""]
            if not arguments or not -len(arguments) <= index < len(arguments):
                continue
            pointer = squeezed(arguments[index])
        elif (
            value.type == "pointer_expression"
            and syntax.text(value.child_by_field_name("operator")) == "*"
        ):
            pointer = squeezed(value.child_by_field_name("argument"))
        else:
            continue
        used = {node.id for node in flow.uses_of(store)}
        for mkold in mkolds:
            arguments = syntax.arguments(mkold)
            if not arguments or ev.strip(arguments[0]).id not in used:
                continue
            # The write must take what the mkold made: its result, or the
            # variable it was stored to, read where that store reaches.
            mkold_store = flow.store_of(mkold)
            reached = {n.id for n in flow.uses_of(mkold_store)} if mkold_store else set()
            for write in writes:
                where, what = WRITES[syntax.call_name(write) or ""]
                write_arguments = syntax.arguments(write)
                if len(write_arguments) <= what or squeezed(write_arguments[where]) != pointer:
                    continue
                value = ev.strip(write_arguments[what])
                if value == mkold or value.id in reached:
                    found[mkold.id] = (mkold, pointer, write)
                    break
    return found


def _frees(flow: FunctionFlow) -> list[Node]:
    return flow.calls(FREES)


class DirtyYoungLost(FunctionRule):
    id = "DIRTY_YOUNG_LOST"
    severity = Severity.WARNING
    summary = (
        "a cleared entry's dirty bit no longer moved to the folio, the young bit cleared by "
        "read-modify-write of a live entry, or a folio freed before the deferred TLB flush"
    )
    paths = ()
    api = (
        r"\b(?:pte|pmd|huge_pte)_(?:dirty|mkold)\b"
        r"|\btry_to_unmap_flush|\bflush_tlb_|\btlb_flush_mmu"
    )

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        if not change.added_rows and not change.removed_rows:
            return  # a whole function on its own: nothing introduced
        yield from self._mkold_written_back(change)
        before = change.before_flow
        if before is None or not change.removed_rows:
            return
        removed = " ".join(before.function.image.line_text(row) for row in change.removed_rows)
        if _DIRTY_TEST.search(removed):
            yield from self._dirty_dropped(change, before)
        if FLUSH.search(removed):
            yield from self._flush_lost(change, before)

    def _dirty_dropped(self, change: FunctionChange, before: FunctionFlow) -> Iterator[Finding]:
        flow = change.flow
        old_clears = before.calls(CLEARS)
        new_clears = flow.calls(CLEARS)
        for clear in new_clears:
            old = matching_node(old_clears, new_clears, clear)
            if old is None or _dirty_transfers(flow, clear) or not _dirty_transfers(before, old):
                continue
            name = syntax.call_name(clear)
            message = (
                f"the dirty bit of the entry {name}() took down no longer reaches the folio: "
                "the function as it was moved pte_dirty()/pmd_dirty() to it "
                "(folio_mark_dirty()); without it a written file page is never written back"
            )
            yield change.finding(clear, message, Confidence.HIGH, key=f"dirty:{name}")

    def _flush_lost(self, change: FunctionChange, before: FunctionFlow) -> Iterator[Finding]:
        for node, _old in lost_on_every_path(before, change.flow, _frees, calls_reaching(FLUSH)):
            name = syntax.call_name(node)
            message = (
                f"{name}() frees a folio on a path that no longer flushes the TLB first (the "
                "function as it was did on every path): other CPUs may still write through "
                "stale entries of a deferred flush; flush (try_to_unmap_flush()) before freeing"
            )
            yield change.finding(node, message, Confidence.MEDIUM, key=f"flush:{name}")

    def _mkold_written_back(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        if not flow.calls(MKOLD):
            return
        before = change.before_flow
        old_live = _live_written_back(before) if before is not None else {}
        old_mkolds = before.calls(MKOLD) if before is not None else []
        for mkold, pointer, write in _live_written_back(flow).values():
            old = matching_node(old_mkolds, flow.calls(MKOLD), mkold) if old_mkolds else None
            if old is not None and old.id in old_live:
                continue  # the function already did so
            if old is None and not change.is_added(mkold):
                continue
            name = syntax.call_name(mkold)
            atomic = {
                "pte_mkold": "ptep_test_and_clear_young()",
                "pmd_mkold": "pmdp_test_and_clear_young()",
            }.get(name or "", "the test_and_clear_young helper of its level")
            message = (
                f"{name}() of a live entry read through `{pointer}`, written back with "
                f"{syntax.call_name(write)}(): the hardware may set the dirty or young bit in "
                f"between and the write loses it; use {atomic}, or take the entry down "
                "atomically (*_get_and_clear()) first"
            )
            yield change.finding(mkold, message, Confidence.MEDIUM, key=f"mkold:{name}")


RULE = DirtyYoungLost
