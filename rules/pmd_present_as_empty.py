"""`!pmd_present()` used where "nothing is mapped" is meant.

## What it does
Flags a `!pmd_present(pmd)` test whose branch leaves early ("nothing to do",
"must wait", "skip") in a function that never tells an empty PMD from a
non-present one: no `pmd_none()` on the same value and no migration-entry
handling.  A patch that replaces `pmd_none(x)` with `!pmd_present(x)` is
flagged with high confidence.

## Why is this bad?
Since THP migration (v4.14), a PMD can be non-present without being empty:
it may hold a migration entry (or a device-private entry).  `pmd_none()` and
`!pmd_present()` used to be equivalent and are not any longer.  Treating a
migration entry as "nothing mapped" makes a fault path wait for a page that
will never be mapped by userspace, or skips a range that is in fact mapped:
userfaultfd_must_wait() did exactly that and blocked forever (a soft lockup)
while the PMD was under migration.

## Example
```c
        pmd = pmdp_get_lockless(pmdp);
        if (!pmd_present(pmd))		/* a migration entry lands here too */
                goto out;		/* ... and we wait for userspace */
```

## Use instead
```c
        pmd = pmdp_get_lockless(pmdp);
        if (pmd_none(pmd))
                goto out;		/* really nothing mapped: wait */
        if (!pmd_present(pmd))
                goto retry;		/* migration entry: not our business */
```

## References
- a365ac09d334 ("mm, userfaultfd, THP: avoid waiting when PMD under THP migration"),
  https://lore.kernel.org/all/20171103075231.25416-1-ying.huang@intel.com/
  (Andrea Arcangeli: "before that pmd_none or !pmd_present used to be
  equivalent, not the case any longer",
  <20171106203527.GB26645@redhat.com>)
- 84c3fc4e9c563 ("mm: thp: check pmd migration entry in common path")
"""

from __future__ import annotations

from collections.abc import Iterator

from analyzer import syntax
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# Seeing any of these, the function already deals with non-present PMDs that
# are not empty.
_MIGRATION_AWARE = frozenset(
    {
        "is_pmd_migration_entry",
        "pmd_migration_entry_wait",
        "is_swap_pmd",
        "pmd_to_swp_entry",
        "thp_migration_supported",
        "is_pmd_device_private_entry",
        "pmd_is_migration_entry",
    }
)


class PmdPresentAsEmpty(FunctionRule):
    id = "PMD_PRESENT_AS_EMPTY"
    severity = Severity.WARNING
    summary = "!pmd_present() is not pmd_none(): migration entries are non-present but not empty"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None:
            return
        called = {syntax.call_name(c) for c in syntax.calls(body)}
        # The function already distinguishes migration entries.
        if called & _MIGRATION_AWARE:
            return
        none_args = {
            syntax.text(a) for c in syntax.calls(body, "pmd_none") for a in syntax.arguments(c)[:1]
        }
        swapped_args = self._args_replaced(change)
        seen: set[str] = set()
        for call in syntax.calls(body, "pmd_present"):
            args = syntax.arguments(call)
            if not args or not syntax.is_negated(call):
                continue
            arg = syntax.text(args[0])
            # After a pmd_none() test of the same value, !pmd_present() means
            # exactly "not none but not present": the author knows.
            if arg in none_args or arg in seen:
                continue
            owner = syntax.condition_owner(call)
            if owner is None or owner.type != "if_statement":
                continue
            if not syntax.branch_exits(owner.child_by_field_name("consequence")):
                continue
            seen.add(arg)
            if arg in swapped_args and change.is_added(call):
                yield change.finding(
                    call,
                    f"pmd_none({arg}) replaced by !pmd_present({arg}): a PMD migration entry is "
                    "not present but not empty either; test pmd_none() for 'nothing mapped' "
                    "and handle migration entries apart",
                    Confidence.HIGH,
                )
            else:
                yield change.finding(
                    call,
                    f"!pmd_present({arg}) leaves early as if nothing were mapped; a PMD migration "
                    "entry is non-present but not empty: use pmd_none() or handle migration "
                    "entries (pmd_migration_entry_wait())",
                    Confidence.MEDIUM,
                )

    @staticmethod
    def _args_replaced(change: FunctionChange) -> set[str]:
        """Values whose pmd_none() test the patch removed."""
        if change.before is None or change.before.body is None:
            return set()
        return {
            syntax.text(args[0])
            for call in syntax.calls(change.before.body, "pmd_none")
            if change.is_removed(call) and (args := syntax.arguments(call))
        }


RULE = PmdPresentAsEmpty
