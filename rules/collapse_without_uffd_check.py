"""khugepaged collapse or page-table retraction without the userfaultfd check.

## What it does
In `mm/khugepaged.c`, flags:
- a patch that takes a userfaultfd state check (`userfaultfd_wp()`,
  `userfaultfd_armed()`, `pte_uffd_wp()`, `pte_swp_uffd_wp*()`) away from
  the work it guarded: on some path, what only ran once the check had said
  "not registered" (isolating the PTEs, collapsing, retracting the table)
  is now reached without a check at least as wide.  A check removed,
  narrowed (`install_pmd && userfaultfd_wp(vma)`), turned into a bare
  warning, or moved after the work is reported; one moved earlier, into a
  helper of the tree, reshaped or widened (`pte_swp_uffd_wp_any()` for
  `pte_swp_uffd_wp()`, `userfaultfd_armed()` for any one mode) is not, and
  neither is an early check dropped while the re-check under the lock
  still stands before the page table changes (taking locks and starting
  notifiers is not work it guarded).  A removed `userfaultfd_missing()` is
  PAGECACHE_HOLES_NOT_REVALIDATED's;
- code that detaches a PTE table (`pmdp_collapse_flush()`) in a function
  that never checks the VMA's userfaultfd state, unless every caller checks
  before calling it;
- a retraction done under the page-table lock when no userfaultfd check is
  on every path from taking the lock to it, though one was made before the
  lock, with no mmap_lock held.

## Why is this bad?
A VMA registered for userfaultfd write-protect keeps its protection in the
page table itself: uffd-wp bits and PTE markers, which are neither none nor
present.  Collapsing the range or freeing the PTE table silently drops them,
and userspace never hears of writes it asked to trap.  Missing-mode
registration promises that a hole stays a hole until userspace fills it.
The check has to be made under the lock that serialises against
UFFDIO_REGISTER / UFFDIO_WRITEPROTECT, and repeated whenever that lock was
dropped in between: a check made before taking the lock proves nothing
afterwards.

## Example
```c
        pml = pmd_lock(mm, pmd);
        ptl = pte_lockptr(mm, pmd);
        if (ptl != pml)
                spin_lock_nested(ptl, SINGLE_DEPTH_NESTING);
        pgt_pmd = pmdp_collapse_flush(vma, addr, pmd);	/* uffd-wp markers lost */
```

## Use instead
```c
        pml = pmd_lock(mm, pmd);
        ptl = pte_lockptr(mm, pmd);
        if (ptl != pml)
                spin_lock_nested(ptl, SINGLE_DEPTH_NESTING);
        /* Re-check under the locks: registration may have raced with us. */
        if (unlikely(vma->anon_vma || userfaultfd_wp(vma))) {
                skipped_uffd = true;
        } else {
                pgt_pmd = pmdp_collapse_flush(vma, addr, pmd);
                ...
        }
```

## References
- deb4c93a9871 ("mm/khugepaged: don't recycle vma pgtable if uffd-wp registered"),
  https://lore.kernel.org/all/20220405014921.14994-1-peterx@redhat.com/
- dd47ac428c3f ("mm/khugepaged: check again on anon uffd-wp during isolation"),
  https://lore.kernel.org/all/20230405155120.3608140-1-peterx@redhat.com/
- e1e267c7928f ("khugepaged: skip collapse if uffd-wp detected")
- 1d65b771bc08 ("mm/khugepaged: retract_page_tables() without mmap or vma lock")
- Thread: https://lore.kernel.org/all/20210922175156.130228-1-peterx@redhat.com/
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow.cfg import BRANCH, RETURN, Point
from analyzer.flow.guards import (
    Vouching,
    branches_checking,
    checks_by,
    checks_made,
    helpers_dropped,
    lost_checks,
    vouched,
)
from analyzer.flow.locks import lock_name
from analyzer.flow.vocabulary import LOCK_CALLS
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

UFFD_CHECKS = frozenset(
    {
        "userfaultfd_wp",
        "userfaultfd_armed",
        "userfaultfd_missing",
        "userfaultfd_minor",
        "pte_uffd_wp",
        "pte_swp_uffd_wp",
        "pte_swp_uffd_wp_any",
        "pmd_uffd_wp",
    }
)
# A removed missing-mode check is PAGECACHE_HOLES_NOT_REVALIDATED's to report:
# in khugepaged it guards hole filling in collapse_file(), not a page table.
REPORTED_ELSEWHERE = frozenset({"userfaultfd_missing"})
# A check replaced by one at least as wide keeps the range skipped: these
# checks all guard "leave this VMA/PTE alone", so testing more can only
# skip more.  Never the other way round: pte_swp_uffd_wp() instead of
# pte_swp_uffd_wp_any() misses the PTE markers, userfaultfd_minor() instead
# of userfaultfd_wp() asks about another mode.  pte_swp_uffd_wp_any() reads
# false with CONFIG_PTE_MARKER_UFFD_WP=n, where only anon uffd-wp exists and
# the swapped-in PTE keeps its bit for the isolation re-check
# (<YbrSeADehDoToV6L@xz-m1.local>); the scan itself switched to it when
# anon VMAs got markers with UFFD_FEATURE_WP_UNPOPULATED (<ZB2/8jPhD3fpx5U8@x1n>).
WIDER = {
    "pte_swp_uffd_wp": frozenset({"pte_swp_uffd_wp_any"}),
    "userfaultfd_wp": frozenset({"userfaultfd_armed"}),
    "userfaultfd_minor": frozenset({"userfaultfd_armed"}),
    "userfaultfd_missing": frozenset({"userfaultfd_armed"}),
}
COLLAPSE_CALLS = frozenset({"pmdp_collapse_flush", "pte_free_defer"})
DETACH_CALLS = frozenset({"pmdp_collapse_flush"})
# What a check does not guard: taking locks and starting notifiers before
# the work (the re-check under the lock guards the work itself).
BOOKKEEPING = frozenset(LOCK_CALLS) | frozenset(
    {
        "pte_lockptr",
        "pmd_lockptr",
        "mmu_notifier_range_init",
        "mmu_notifier_invalidate_range_start",
        "mmu_notifier_invalidate_range_end",
        "pmdp_get_lockless_sync",
        "READ_ONCE",
        "unlikely",
        "likely",
    }
)


class CollapseWithoutUffdCheck(FunctionRule):
    id = "COLLAPSE_WITHOUT_UFFD_CHECK"
    severity = Severity.ERROR
    summary = "khugepaged collapse/retract path drops or never makes the userfaultfd state check"
    paths = ("mm/khugepaged.c",)

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        removed = list(_removed(change))
        yield from removed
        collapses = flow.calls(COLLAPSE_CALLS)
        if not collapses or removed:
            return
        if not checks_made(flow, UFFD_CHECKS):
            # Freeing a table someone else detached, or detaching for a
            # caller that made the check: the check is not this function's.
            detaches = flow.calls(DETACH_CALLS)
            if detaches and not _callers_check(flow):
                yield change.finding(
                    detaches[0],
                    f"{syntax.call_name(collapses[0])}() in a function that never checks the "
                    "VMA's userfaultfd state: uffd-wp markers would be dropped; check "
                    "userfaultfd_wp(vma) under the lock that is held while the page table changes",
                )
            return
        yield from _not_rechecked_under_lock(change, collapses)


def _removed(change: FunctionChange) -> Iterator[Finding]:
    """Checks the patch takes away from this function, or from it through
    a helper it no longer calls."""
    before, after = change.before_flow, change.flow
    if before is None:
        return
    names = {
        syntax.call_name(call) or ""
        for call in before.calls(UFFD_CHECKS - REPORTED_ELSEWHERE)
        if change.is_removed(call)
    }
    lost = [(call, name) for name in sorted(names) if (call := _lost(change, name)) is not None]
    lost += [
        (call, check)
        for call, check in helpers_dropped(
            before, after, change.is_removed, UFFD_CHECKS - REPORTED_ELSEWHERE, _as_wide
        )
        if check not in names
    ]
    for call, name in lost:
        via = "" if syntax.call_name(call) == name else f" (via {syntax.call_name(call)}())"
        # Only the tree shows the whole function: from the patch alone, "the
        # only" check would be a guess.
        only = not change.after.image.partial and not checks_made(after, _as_wide(name))
        yield change.finding(
            change.anchor_for(call),
            f"patch removes {'the only' if only else 'a'} {name}() check{via} on this "
            "collapse/retract path; userfaultfd-registered ranges (uffd-wp markers, missing-mode "
            "holes) must be skipped, and the check repeated under the lock held while the page "
            "table changes",
            Confidence.HIGH,
            key=f"removed:{name}",
        )


def _lost(change: FunctionChange, checked: str) -> Node | None:
    """The call of `checked` the patch removed, if it took the check away
    from work it stood before.  Along paths: work it vouched for on every
    path, with or without the lock taken since, that it no longer does.  By
    count, for checks in loops, whose work is the next element: fewer checks
    at least as wide, unless every collapse under a lock is still checked
    after taking it."""
    before, after = change.before_flow, change.flow
    assert before is not None
    call = next(c for c in before.calls(checked) if change.is_removed(c))
    names = _as_wide(checked)
    for until_lock in (True, False):
        for _ in lost_checks(
            before,
            after,
            removed=change.is_removed,
            is_check=lambda node: syntax.call_name(node) == checked,
            vouches_before=checks_by(before, names),
            vouches_after=checks_by(after, names),
            matters=_guarded_work,
            until_lock=until_lock,
            proceeds=_proceeds,
            key=f"uffd:{checked}",
        ):
            return call
    if checks_made(after, names) >= checks_made(before, names):
        return None
    return None if _collapses_checked_under_lock(after, names) else call


def _as_wide(name: str) -> frozenset[str]:
    return WIDER.get(name, frozenset()) | {name}


def _proceeds(node: Node, condition: Node) -> bool | None:
    """A check holds for a registered range, which is then skipped: the
    work goes on along the false edge.  A helper's answer could mean either."""
    return False if syntax.call_name(node) in UFFD_CHECKS else None


def _guarded_work(point: Point) -> bool:
    """What a check guards: the work and what the function reports, not the
    locks taken before it nor the flags it sets."""
    if point.node is None or point.kind == BRANCH:
        return False
    if point.kind == RETURN:
        return True  # what the function reports: success, for the caller to collapse
    return any(syntax.call_name(c) not in BOOKKEEPING for c in syntax.calls(point.node))


def _collapses_checked_under_lock(flow: FunctionFlow, names: frozenset[str]) -> bool:
    """Is every collapse made under a page-table lock checked after taking
    it (and is there one)?"""
    collapses = [c for c in flow.calls(COLLAPSE_CALLS) if flow.holds(c)]
    if not collapses:
        return False
    analysis = flow.analysis(
        Vouching(flow, checks_by(flow, names), True, _proceeds), ("vouching", tuple(sorted(names)))
    )
    return all(vouched(analysis, c, "vma") for c in collapses)


def _callers_check(flow: FunctionFlow) -> bool:
    """Is every call of this function reached only through a userfaultfd
    check of its caller?"""
    sites = flow.callers()
    if not sites:
        return False
    for caller, call in sites:
        target = caller.point(call)
        if target is None or not caller.every_path(
            None, target, passes=branches_checking(caller, UFFD_CHECKS)
        ):
            return False
    return True


def _not_rechecked_under_lock(change: FunctionChange, collapses: list[Node]) -> Iterator[Finding]:
    """A collapse under a page-table lock, with no userfaultfd check on
    every path from taking the lock to it, though one was made before; not
    while the mmap_lock is held (UFFDIO_REGISTER changes VMA flags under it,
    for write: a check made under it stays true until it is dropped)."""
    flow = change.flow
    checks = branches_checking(flow, UFFD_CHECKS)
    if not any(checks(p) for p in flow.graph.points):
        return
    for collapse in collapses:
        target = flow.point(collapse)
        held = [
            lock
            for lock, kinds in flow.locks_at(collapse, frozenset({"spin"})).items()
            if kinds == {"held"}
        ]
        if target is None or not held or flow.locks_at(collapse, frozenset({"mmap"})):
            continue
        taken = [p for c in _acquiring(flow, held) if (p := flow.point(c)) is not None]
        if not taken or flow.every_path(taken[-1], target, passes=checks):
            continue
        yield change.finding(
            collapse,
            f"{syntax.call_name(collapse)}() under a page-table lock relies on a userfaultfd "
            "check made before the lock was taken; re-check userfaultfd_wp(vma) after taking it",
            Confidence.MEDIUM,
            severity=Severity.WARNING,
        )


def _acquiring(flow: FunctionFlow, locks: list[str]) -> list[Node]:
    """The calls that take any of `locks` (`spin:pml` by `pml = pmd_lock(...)`)."""
    return [c for c in flow.calls() if lock_name(c, acquire=True) in locks]


RULE = CollapseWithoutUffdCheck
