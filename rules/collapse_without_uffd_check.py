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

from collections.abc import Callable, Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow import events as ev
from analyzer.flow.cfg import BRANCH, RETURN, Point
from analyzer.flow.guards import Vouching, argument_places, lost_checks, vouched
from analyzer.flow.vocabulary import LOCK_CALLS
from analyzer.parsing import ParsedFile
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
# UFFDIO_REGISTER changes VMA flags under mmap_lock held for write: a check
# made while the mmap_lock is held stays true until it is dropped.
MMAP = frozenset({"mmap"})


class CollapseWithoutUffdCheck(FunctionRule):
    id = "COLLAPSE_WITHOUT_UFFD_CHECK"
    severity = Severity.ERROR
    summary = "khugepaged collapse/retract path drops or never makes the userfaultfd state check"
    paths = ("mm/khugepaged.c",)

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        removed = list(self._lost(change))
        yield from removed
        collapses = flow.calls(COLLAPSE_CALLS)
        if not collapses or removed:
            return
        if not _makes_check(flow):
            # Freeing a table someone else detached, or detaching for a
            # caller that made the check: the check is not this function's.
            detaches = [c for c in collapses if syntax.call_name(c) in DETACH_CALLS]
            if not detaches or _callers_check(flow, change.after_file):
                return
            yield change.finding(
                detaches[0],
                f"{syntax.call_name(collapses[0])}() in a function that never checks the VMA's "
                "userfaultfd state: uffd-wp markers would be dropped; check userfaultfd_wp(vma) "
                "under the lock that is held while the page table changes",
            )
            return
        yield from _not_rechecked_under_lock(change, collapses)

    @staticmethod
    def _lost(change: FunctionChange) -> Iterator[Finding]:
        before, after = change.before_flow, change.flow
        if before is None:
            return
        reported: set[str] = set()
        names = sorted(
            {
                name
                for call in before.calls(UFFD_CHECKS - REPORTED_ELSEWHERE)
                if change.is_removed(call) and (name := syntax.call_name(call) or "")
            }
        )
        for checked in names:
            check = next(c for c in before.calls(checked) if change.is_removed(c))
            if not _lost_check(change, checked):
                continue
            name = checked
            if name in reported:
                continue
            reported.add(name)
            # Only the tree shows the whole function: from the patch alone,
            # "the only" check would be a guess.
            only = not change.after.image.partial and not any(
                syntax.call_name(c) in _as_wide(name) for c in after.calls(UFFD_CHECKS)
            )
            what = "the only" if only else "a"
            yield change.finding(
                change.anchor_for(check),
                f"patch removes {what} {name}() check on this collapse/retract path; "
                "userfaultfd-registered ranges (uffd-wp markers, missing-mode holes) must be "
                "skipped, and the check repeated under the lock held while the page table "
                "changes",
                Confidence.HIGH,
                key=f"removed:{name}",
            )
        yield from _helpers_dropped(change, reported)


def _lost_check(change: FunctionChange, checked: str) -> bool:
    """Did the patch take check `checked` (removed from one of its lines)
    away from work it stood before?  Along paths: work it vouched for on
    every path, with or without the lock taken since, that it no longer
    does.  By count, for checks in loops, whose work is the next element:
    fewer checks at least as wide, unless every collapse under a lock is
    still checked after taking it."""
    before, after = change.before_flow, change.flow
    assert before is not None
    names = _as_wide(checked)
    for until_lock in (True, False):
        if next(
            lost_checks(
                before,
                after,
                removed=change.is_removed,
                is_check=lambda node: syntax.call_name(node) == checked,
                vouches_before=_vouches(before, names),
                vouches_after=_vouches(after, names),
                matters=_guarded_work,
                until_lock=until_lock,
                proceeds=_proceeds,
                key=f"uffd:{checked}",
            ),
            None,
        ):
            return True
    if _making(after, names) >= _making(before, names):
        return False
    return not _collapses_checked_under_lock(after, names)


def _making(flow: FunctionFlow, names: frozenset[str]) -> int:
    """How many checks at least as wide the function makes, itself or
    through helpers of the tree."""
    count = 0
    for call in flow.calls():
        callee = syntax.call_name(call) or ""
        if callee in names or (
            callee and callee != flow.function.name and flow.summaries.reaches(callee, names, 3)
        ):
            count += 1
    return count


def _collapses_checked_under_lock(flow: FunctionFlow, names: frozenset[str]) -> bool:
    """Is every collapse made under a page-table lock checked after taking
    it (and is there one)?"""
    collapses = [c for c in flow.calls(COLLAPSE_CALLS) if _under_spinlock(flow, c)]
    if not collapses:
        return False
    analysis = flow.analysis(
        Vouching(flow, _vouches(flow, names), True, _proceeds),
        ("vouching", f"uffd:{sorted(names)}", "locked"),
    )
    return all(vouched(analysis, c, "vma") for c in collapses)


def _under_spinlock(flow: FunctionFlow, node: Node) -> bool:
    return any(kinds == {"held"} for kinds in flow.locks_at(node, frozenset({"spin"})).values())


def _helpers_dropped(change: FunctionChange, reported: set[str]) -> Iterator[Finding]:
    """A call to a helper of the tree that made the check, on a line the
    patch removes, with nothing left in the function that makes it."""
    before, after = change.before_flow, change.flow
    assert before is not None
    called_after = {syntax.call_name(c) for c in after.calls()}
    for call in before.calls():
        name = syntax.call_name(call) or ""
        if not name or name in called_after or name in UFFD_CHECKS or not change.is_removed(call):
            continue
        made = _checks_made_by(before, name) - REPORTED_ELSEWHERE
        for check in sorted(made - reported):
            if any(
                syntax.call_name(c) in _as_wide(check)
                or after.summaries.reaches(syntax.call_name(c) or "", _as_wide(check), 3)
                for c in after.calls()
                if syntax.call_name(c) != after.function.name
            ):
                continue
            reported.add(check)
            yield change.finding(
                change.anchor_for(call),
                f"patch removes a {check}() check (via {name}()) on this collapse/retract path; "
                "userfaultfd-registered ranges (uffd-wp markers, missing-mode holes) must be "
                "skipped, and the check repeated under the lock held while the page table "
                "changes",
                Confidence.HIGH,
                key=f"removed:{check}",
            )


def _checks_made_by(flow: FunctionFlow, name: str, depth: int = 3) -> frozenset[str]:
    """The userfaultfd checks function `name` of the tree makes, itself or
    through what it calls."""
    if depth <= 0:
        return frozenset()
    calls = flow.summaries.calls(name)
    if calls is None:
        return frozenset()
    made = set(calls & UFFD_CHECKS)
    for callee in calls - UFFD_CHECKS:
        if callee != name:
            made |= _checks_made_by(flow, callee, depth - 1)
    return frozenset(made)


def _as_wide(name: str) -> frozenset[str]:
    return WIDER.get(name, frozenset()) | {name}


def _proceeds(node: Node, condition: Node) -> bool | None:
    """A check holds for a registered range, which is then skipped: the
    work goes on along the false edge.  A helper's answer could mean either."""
    return False if syntax.call_name(node) in UFFD_CHECKS else None


def _vouches(flow: FunctionFlow, names: frozenset[str]) -> Callable[[Node], list[str]]:
    """A check at least as wide as one of `names`, or a helper of the tree
    making one, vouches for what it is handed (`vma`, `pteval`)."""

    def vouched(node: Node) -> list[str]:
        if node.type != "call_expression":
            return []
        callee = syntax.call_name(node) or ""
        if callee in names or (
            callee and callee != flow.function.name and flow.summaries.reaches(callee, names, 3)
        ):
            return argument_places(node)
        return []

    return vouched


def _guarded_work(point: Point) -> bool:
    """What a check guards: the work and what the function reports, not the
    locks taken before it nor the flags it sets."""
    if point.node is None or point.kind == BRANCH:
        return False
    if point.kind == RETURN:
        return True  # what the function reports: success, for the caller to collapse
    calls = [syntax.call_name(c) or "" for c in syntax.calls(point.node)]
    return any(name not in BOOKKEEPING for name in calls)


def _makes_check(flow: FunctionFlow) -> bool:
    """Does the function check userfaultfd state, itself or in a helper?"""
    for call in flow.calls():
        name = syntax.call_name(call) or ""
        if name in UFFD_CHECKS:
            return True
        if name and name != flow.function.name and flow.summaries.reaches(name, UFFD_CHECKS, 1):
            return True
    return False


def _callers_check(flow: FunctionFlow, file: ParsedFile | None) -> bool:
    """Is every call of this function, in its file, reached only through a
    userfaultfd check of the caller?"""
    if file is None:
        return False
    name = flow.function.name
    sites = []
    for caller in file.functions:
        if caller.name == name or caller.body is None:
            continue
        for call in syntax.calls(caller.body, name):
            sites.append((caller, call))
    if not sites:
        return False
    for caller, call in sites:
        caller_flow = FunctionFlow(caller, file, flow.context, flow.path)
        target = caller_flow.point(call)
        if target is None or not caller_flow.every_path(
            None, target, passes=_any_check(caller_flow)
        ):
            return False
    return True


def _any_check(flow: FunctionFlow) -> Callable[[Point], bool]:
    """Branches on a userfaultfd check, or on a helper of the tree making one."""

    def checks(point: Point) -> bool:
        if point.kind != BRANCH or point.node is None:
            return False
        for call in syntax.calls(point.node):
            name = syntax.call_name(call) or ""
            if name in UFFD_CHECKS:
                return True
            if name and name != flow.function.name and flow.summaries.reaches(name, UFFD_CHECKS, 3):
                return True
        return False

    return checks


def _not_rechecked_under_lock(change: FunctionChange, collapses: list[Node]) -> Iterator[Finding]:
    """A collapse under a page-table lock, with no userfaultfd check on
    every path from taking the lock to it, though one was made before."""
    flow = change.flow
    checks = _any_check(flow)
    for collapse in collapses:
        target = flow.point(collapse)
        if target is None:
            continue
        held = flow.locks_at(collapse, frozenset({"spin"}))
        taken = [lock for lock, kinds in held.items() if kinds == {"held"}]
        if not taken or flow.locks_at(collapse, MMAP):
            continue
        acquisitions = [
            point for point in (flow.point(c) for c in _acquiring(flow, taken)) if point is not None
        ]
        if not acquisitions:
            continue
        last = acquisitions[-1]
        if flow.every_path(last, target, passes=checks):
            continue
        if flow.every_path(None, last, passes=lambda p: False):
            continue  # no path from the entry to the lock at all
        if not any(checks(p) for p in flow.graph.points):
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
    names = {lock.split(":", 1)[1] for lock in locks}
    found = []
    for call in flow.calls():
        spec = LOCK_CALLS.get(syntax.call_name(call) or "")
        if spec is None or spec.release:
            continue
        if spec.argument == -1:
            targets = set(ev.destinations(call))
        else:
            arguments = syntax.arguments(call)
            argument = arguments[spec.argument] if len(arguments) > spec.argument else None
            targets = (
                {ev.address_of(argument) or ev.place(argument)} if argument is not None else set()
            )
        if targets & names:
            found.append(call)
    return sorted(found, key=lambda c: c.start_byte)


RULE = CollapseWithoutUffdCheck
