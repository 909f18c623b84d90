"""khugepaged collapse or page-table retraction without the userfaultfd check.

## What it does
In `mm/khugepaged.c`, flags:
- a patch that removes a userfaultfd state check (`userfaultfd_wp()`,
  `userfaultfd_armed()`, `pte_uffd_wp()`, `pte_swp_uffd_wp*()`) from a
  function that scans, collapses or retracts page tables (a removed
  `userfaultfd_missing()` is PAGECACHE_HOLES_NOT_REVALIDATED's);
- code that detaches a PTE table (`pmdp_collapse_flush()`) in a function
  that never checks the VMA's userfaultfd state, unless every caller checks
  before calling it;
- a retraction done under the page-table lock whose only userfaultfd check
  was made before the lock was taken, with no mmap_lock held in between.

A check moved into a same-file helper, or made by a same-file helper the
function calls, counts as made (one level deep).  A removal is only
reported when the check, or the call to a helper making it, is on a line
the patch removes from the function itself; the rule then looks harder
before accusing: a check replaced by a wider one still counts
(`pte_swp_uffd_wp_any()` for `pte_swp_uffd_wp()`, `userfaultfd_armed()`
for any one mode), helpers count as the patch found them or as it leaves
them (a helper the patch changes is judged on its own), and calls the
patch adds are followed a few same-file levels deep.

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

from collections import Counter
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
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
# How far the calls a patch adds are followed to find a check still made:
# a check moved two new helpers down is still made on that path.
ADDED_CALL_DEPTH = 3
COLLAPSE_CALLS = frozenset({"pmdp_collapse_flush", "pte_free_defer"})
DETACH_CALLS = frozenset({"pmdp_collapse_flush"})
LOCK_CALLS = frozenset({"pmd_lock", "spin_lock", "spin_lock_nested", "pte_offset_map_lock"})
UNLOCK_CALLS = frozenset({"spin_unlock", "pte_unmap_unlock"})
# UFFDIO_REGISTER changes VMA flags under mmap_lock held for write: a check
# made while the mmap_lock is held stays true until it is dropped.
MMAP_HELD_ASSERTS = frozenset({"mmap_assert_locked", "mmap_assert_write_locked"})
MMAP_LOCKS = frozenset({"mmap_read_lock", "mmap_write_lock"})
MMAP_UNLOCKS = frozenset({"mmap_read_unlock", "mmap_write_unlock"})


class CollapseWithoutUffdCheck(FunctionRule):
    id = "COLLAPSE_WITHOUT_UFFD_CHECK"
    severity = Severity.ERROR
    summary = "khugepaged collapse/retract path drops or never makes the userfaultfd state check"
    paths = ("mm/khugepaged.c",)

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None:
            return
        checks_after = _check_sites(body, change.after_file, change.after.name)
        collapses = syntax.calls(body, COLLAPSE_CALLS)
        removed = list(self._removed_checks(change, checks_after))
        yield from removed
        if not collapses or removed:
            return
        if not checks_after:
            # Freeing a table someone else detached, or detaching for a
            # caller that made the check: the check is not this function's.
            detaches = [c for c in collapses if syntax.call_name(c) in DETACH_CALLS]
            if not detaches or _callers_check(change.after_file, change.after.name):
                return
            yield change.finding(
                detaches[0],
                f"{syntax.call_name(collapses[0])}() in a function that never checks the VMA's "
                "userfaultfd state: uffd-wp markers would be dropped; check userfaultfd_wp(vma) "
                "under the lock that is held while the page table changes",
            )
            return
        yield from self._not_rechecked_under_lock(change, body, list(checks_after), collapses)

    @staticmethod
    def _removed_checks(
        change: FunctionChange, checks_after: dict[Node, Counter[str]]
    ) -> Iterator[Finding]:
        if change.before is None or change.before.body is None:
            return
        # Only what this function's own '-' lines held: a check, or a call
        # to a helper making one.  Helpers never create a removal.
        checks_before = _check_sites(change.before.body, change.before_file, change.before.name)
        removed = [site for site in checks_before if change.is_removed(site)]
        if not removed:
            return
        before_counts = sum(checks_before.values(), Counter())
        after_counts = _made_after(change)
        for site in removed:
            for name in sorted(checks_before[site]):
                # Moved, reshaped, widened or pulled into a helper: not dropped.
                if name in REPORTED_ELSEWHERE or _making(after_counts, name) >= _making(
                    before_counts, name
                ):
                    continue
                # An early check dropped while the one under the lock stays.
                if _every_collapse_rechecks(change.after.body, checks_after, name):
                    continue
                what = "the only" if _making(after_counts, name) == 0 else "a"
                via = "" if syntax.call_name(site) == name else f" (via {syntax.call_name(site)}())"
                yield change.finding(
                    change.anchor_for(site),
                    f"patch removes {what} {name}() check{via} on this collapse/retract path; "
                    "userfaultfd-registered ranges (uffd-wp markers, missing-mode holes) must be "
                    "skipped, and the check repeated under the lock held while the page table "
                    "changes",
                    Confidence.HIGH,
                    key=f"removed:{name}",
                )
                before_counts[name] -= 1

    @staticmethod
    def _not_rechecked_under_lock(
        change: FunctionChange, body: Node, checks_after: list[Node], collapses: list[Node]
    ) -> Iterator[Finding]:
        locks = syntax.calls(body, LOCK_CALLS)
        unlocks = syntax.calls(body, UNLOCK_CALLS)
        for collapse in collapses:
            lock = max(
                (c for c in locks if c.start_byte < collapse.start_byte),
                key=lambda c: c.start_byte,
                default=None,
            )
            # Only a collapse made while the lock is still held counts; an
            # unlock on a bail-out branch does not release it for us.
            if lock is None or any(
                lock.start_byte < u.start_byte < collapse.start_byte
                and not _on_other_branch(u, collapse)
                for u in unlocks
            ):
                continue
            if any(lock.start_byte < c.start_byte < collapse.start_byte for c in checks_after):
                continue
            early = [c for c in checks_after if c.start_byte < lock.start_byte]
            if not early or any(_under_mmap_lock(body, c, collapse) for c in early):
                continue
            yield change.finding(
                collapse,
                f"{syntax.call_name(collapse)}() under {syntax.call_name(lock)}() relies on a "
                "userfaultfd check made before the lock was taken; re-check userfaultfd_wp(vma) "
                "after taking it",
                Confidence.MEDIUM,
                severity=Severity.WARNING,
            )


def _check_sites(body: Node, file: ParsedFile | None, name: str) -> dict[Node, Counter[str]]:
    """Where a function checks userfaultfd state, and which checks: its own
    calls, and calls to same-file helpers that make the check themselves
    (one level: a check moved into a helper is still made)."""
    sites: dict[Node, Counter[str]] = {
        call: Counter({syntax.call_name(call) or "": 1}) for call in syntax.calls(body, UFFD_CHECKS)
    }
    if file is not None:
        helpers = {f.name: f.body for f in file.functions if f.body is not None}
        for call, helper in syntax.called_definitions(body, helpers, exclude=name):
            inner = Counter(syntax.call_name(c) or "" for c in syntax.calls(helper, UFFD_CHECKS))
            if inner:
                sites[call] = inner
    return dict(sorted(sites.items(), key=lambda item: item[0].start_byte))


def _making(counts: Counter[str], name: str) -> int:
    """How many of the checks counted test at least what `name` tests."""
    return sum(counts[wider] for wider in WIDER.get(name, frozenset()) | {name})


def _made_after(change: FunctionChange) -> Counter[str]:
    """The checks the post-image still makes, read generously: each helper
    as the patch found it or as it leaves it, whichever checks more (a
    helper the patch changes is judged on its own), and a call the patch
    adds followed ADDED_CALL_DEPTH same-file levels deep."""
    body = change.after.body
    assert body is not None
    made = Counter(syntax.call_name(c) or "" for c in syntax.calls(body, UFFD_CHECKS))
    for call in syntax.calls(body):
        name = syntax.call_name(call) or ""
        if name in UFFD_CHECKS or name == change.after.name:
            continue
        depth = ADDED_CALL_DEPTH if change.is_added(call) else 1
        through: Counter[str] = Counter()
        for file in (change.before_file, change.after_file):
            through |= _helper_checks(file, name, depth)
        made += through
    return made


_reached: dict[tuple[str, str, int], Counter[str]] = {}


def _helper_checks(file: ParsedFile | None, name: str, depth: int) -> Counter[str]:
    """The checks same-file function `name` makes itself and, `depth` - 1
    levels further, through the same-file functions it calls."""
    if file is None or depth <= 0:
        return Counter()
    key = (file.image.blob_id, name, depth)
    if key not in _reached:
        if len(_reached) > 4096:
            _reached.clear()
        made: Counter[str] = Counter()
        # #ifdef'd alternatives of one helper: whichever checks more.
        for helper in file.functions_named(name):
            if helper.body is None:
                continue
            own = Counter(syntax.call_name(c) or "" for c in syntax.calls(helper.body, UFFD_CHECKS))
            for call in syntax.calls(helper.body):
                callee = syntax.call_name(call) or ""
                if callee not in UFFD_CHECKS and callee != name:
                    own += _helper_checks(file, callee, depth - 1)
            made |= own
        _reached[key] = made
    return _reached[key]


def _callers_check(file: ParsedFile | None, name: str) -> bool:
    """Is `name` a same-file helper whose every caller checks userfaultfd
    state before calling it?"""
    if file is None:
        return False
    calls = [
        (caller, call)
        for caller in file.functions
        if caller.name != name and caller.body is not None
        for call in syntax.calls(caller.body, name)
    ]
    return bool(calls) and all(
        any(
            site.start_byte < call.start_byte
            for site in _check_sites(caller.body, file, caller.name)
        )
        for caller, call in calls
        if caller.body is not None
    )


def _under_mmap_lock(body: Node, check: Node, collapse: Node) -> bool:
    """Is the mmap_lock held from `check` to `collapse`: asserted on entry,
    or taken before the check and not dropped in between?"""
    called = syntax.calls(body)
    if any(syntax.call_name(c) in MMAP_HELD_ASSERTS for c in called):
        return True
    taken = [
        c for c in called if syntax.call_name(c) in MMAP_LOCKS and c.start_byte < check.start_byte
    ]
    return bool(taken) and not any(
        syntax.call_name(c) in MMAP_UNLOCKS
        and max(t.start_byte for t in taken) < c.start_byte < collapse.start_byte
        and not _on_other_branch(c, collapse)
        for c in called
    )


def _every_collapse_rechecks(
    body: Node | None, checks: dict[Node, Counter[str]], name: str
) -> bool:
    """Does a `name` check follow the lock of every collapse made under a
    lock (and is there such a collapse)?"""
    if body is None:
        return False
    sites = [site for site, names in checks.items() if _making(names, name)]
    guarded = [
        (lock, collapse)
        for collapse in syntax.calls(body, COLLAPSE_CALLS)
        if (lock := _held_lock(body, collapse)) is not None
    ]
    return bool(guarded) and all(
        any(lock.start_byte < s.start_byte < collapse.start_byte for s in sites)
        for lock, collapse in guarded
    )


def _held_lock(body: Node, collapse: Node) -> Node | None:
    """The lock taken last before `collapse` if it is still held there (an
    unlock on a bail-out branch does not release it for the collapse)."""
    lock = max(
        (c for c in syntax.calls(body, LOCK_CALLS) if c.start_byte < collapse.start_byte),
        key=lambda c: c.start_byte,
        default=None,
    )
    if lock is None or any(
        lock.start_byte < u.start_byte < collapse.start_byte and not _on_other_branch(u, collapse)
        for u in syntax.calls(body, UNLOCK_CALLS)
    ):
        return None
    return lock


def _on_other_branch(node: Node, other: Node) -> bool:
    branch = syntax.enclosing(node, "if_statement")
    return branch is not None and not (branch.start_byte <= other.start_byte < branch.end_byte)


RULE = CollapseWithoutUffdCheck
