"""khugepaged collapse or page-table retraction without the userfaultfd check.

## What it does
In `mm/khugepaged.c`, flags:
- a patch that removes a userfaultfd state check (`userfaultfd_wp()`,
  `userfaultfd_armed()`, `userfaultfd_missing()`, `pte_uffd_wp()`,
  `pte_swp_uffd_wp*()`) from a function that scans, collapses or retracts
  page tables;
- code that collapses a PMD or frees a page table (`pmdp_collapse_flush()`,
  `pte_free_defer()`) in a function that never checks the VMA's
  userfaultfd state;
- a retraction done under the page-table lock whose only `userfaultfd_wp()`
  check was made before the lock was taken.

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

from analyzer import syntax
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
COLLAPSE_CALLS = frozenset({"pmdp_collapse_flush", "pte_free_defer"})
LOCK_CALLS = frozenset({"pmd_lock", "spin_lock", "spin_lock_nested", "pte_offset_map_lock"})
UNLOCK_CALLS = frozenset({"spin_unlock", "pte_unmap_unlock"})


class CollapseWithoutUffdCheck(FunctionRule):
    id = "COLLAPSE_WITHOUT_UFFD_CHECK"
    severity = Severity.ERROR
    summary = "khugepaged collapse/retract path drops or never makes the userfaultfd state check"
    paths = ("mm/khugepaged.c",)

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None:
            return
        checks_after = syntax.calls(body, UFFD_CHECKS)
        collapses = syntax.calls(body, COLLAPSE_CALLS)
        removed = list(self._removed_checks(change, checks_after))
        yield from removed
        if not collapses or removed:
            return
        if not checks_after:
            yield change.finding(
                collapses[0],
                f"{syntax.call_name(collapses[0])}() in a function that never checks the VMA's "
                "userfaultfd state: uffd-wp markers would be dropped; check userfaultfd_wp(vma) "
                "under the lock that is held while the page table changes",
            )
            return
        yield from self._not_rechecked_under_lock(change, body, checks_after, collapses)

    @staticmethod
    def _removed_checks(change: FunctionChange, checks_after: list) -> Iterator[Finding]:
        if change.before is None or change.before.body is None:
            return
        removed = [c for c in syntax.calls(change.before.body, UFFD_CHECKS) if change.is_removed(c)]
        if not removed:
            return
        kept = {syntax.call_name(c) for c in checks_after}
        before_counts: dict[str, int] = {}
        for call in syntax.calls(change.before.body, UFFD_CHECKS):
            name = syntax.call_name(call) or ""
            before_counts[name] = before_counts.get(name, 0) + 1
        for call in removed:
            name = syntax.call_name(call) or ""
            after_count = sum(1 for c in checks_after if syntax.call_name(c) == name)
            if after_count >= before_counts[name]:
                continue  # moved or reshaped, not dropped
            what = "the only" if name not in kept else "a"
            yield change.finding(
                change.anchor_for(call),
                f"patch removes {what} {name}() check on this collapse/retract path; "
                "userfaultfd-registered ranges (uffd-wp markers, missing-mode holes) must be "
                "skipped, and the check repeated under the lock held while the page table changes",
                Confidence.HIGH,
                key=f"removed:{name}",
            )
            before_counts[name] -= 1

    @staticmethod
    def _not_rechecked_under_lock(
        change: FunctionChange, body, checks_after: list, collapses: list
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
            if not any(c.start_byte < lock.start_byte for c in checks_after):
                continue
            yield change.finding(
                collapse,
                f"{syntax.call_name(collapse)}() under {syntax.call_name(lock)}() relies on a "
                "userfaultfd check made before the lock was taken; re-check userfaultfd_wp(vma) "
                "after taking it",
                Confidence.MEDIUM,
                severity=Severity.WARNING,
            )


def _on_other_branch(node, other) -> bool:
    branch = syntax.enclosing(node, "if_statement")
    return branch is not None and not (branch.start_byte <= other.start_byte < branch.end_byte)


RULE = CollapseWithoutUffdCheck
