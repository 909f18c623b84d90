"""`!pmd_present()` used where "nothing is mapped" is meant.

## What it does
Flags, with high confidence, a patch that replaces an emptiness test of a
PMD value by a presence test of the same polarity: `pmd_none(x)` becoming
`!pmd_present(x)`, or `!pmd_none(x)` becoming `pmd_present(x)` (the new
test on the same value, or in the lines that replaced the old one).  It
stays silent where both tests agree: when, on every path to the new test,
the value can no longer be a migration entry (an earlier exit on
`!pmd_present()` or `is_swap_pmd()`, the `else` of such a test, a
`split_huge_pmd()` that falls through), when the old and the new condition
hold for the same kinds of entry (`pmd_none(x) || is_pmd_migration_entry(x)`
is `!pmd_present(x)`), when all the test guards is handing the entry to a
function of the tree that writes it only where it tests it empty itself
(`pmd_install()` re-tests `pmd_none()` under the lock), and for kernel page
tables (vmalloc, vmemmap), which never hold migration entries.

With medium confidence it also flags a waiting decision taken on
`!pmd_present(x)`: in a function deciding whether to wait (its name says
"wait"), a non-present branch that answers "wait" when the function never
asks `pmd_none()` of that value.

A plain early exit on `!pmd_present()` ("nothing for us here") is not
flagged: page-table walkers legitimately skip migration entries.

## Why is this bad?
Since THP migration (v4.14), a PMD can be non-present without being empty:
it may hold a migration entry (or a device-private entry).  `pmd_none()` and
`!pmd_present()` used to be equivalent and are not any longer.  Treating a
migration entry as "nothing mapped" makes a fault path wait for a page that
userspace will never provide, or installs a new table or huge page over an
entry that is in fact mapped: userfaultfd_must_wait() waited on
`!pmd_present()` and blocked forever (a soft lockup) while the PMD was under
migration.

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
        ret = false;
        if (!pmd_present(pmd))
                goto out;		/* migration entry: retry the fault */
```

## Known problems
Callees are read from the file and the headers it includes: a helper
defined in another `.c` file (`pmd_install()` in mm/memory.c, called from
mm/filemap.c) is not, and the test in front of it is flagged.

## References
- a365ac09d334 ("mm, userfaultfd, THP: avoid waiting when PMD under THP migration"),
  https://lore.kernel.org/all/20171103075231.25416-1-ying.huang@intel.com/
  (Andrea Arcangeli: "before that pmd_none or !pmd_present used to be
  equivalent, not the case any longer",
  https://lore.kernel.org/all/20171106203527.GB26645@redhat.com/)
- 84c3fc4e9c563 ("mm: thp: check pmd migration entry in common path")
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow import events as ev
from analyzer.flow.entries import DEVICE, LEVELS, MIGRATION, truth_kinds
from analyzer.flow.values import literal_truth
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# Kernel page tables: no migration or swap entries, the two tests agree.
KERNEL_PAGE_TABLE_FILES = (
    "mm/vmalloc.c",
    "mm/sparse-vmemmap.c",
    "mm/hugetlb_vmemmap.c",
    "mm/ptdump.c",
    "mm/early_ioremap.c",
    "mm/kasan/*",
)


class PmdPresentAsEmpty(FunctionRule):
    id = "PMD_PRESENT_AS_EMPTY"
    severity = Severity.WARNING
    summary = "!pmd_present() is not pmd_none(): migration entries are non-present but not empty"
    paths = ()
    api = r"\bpmd_(?:none|present)\b"

    # The level's vocabulary; the PTE rule reuses the logic with its own.
    level = "PMD"
    none_tests = frozenset({"pmd_none"})
    primary_none = "pmd_none"
    present_test = "pmd_present"
    not_empty = "a PMD migration entry"
    # Non-present entries of this level that are not empty.
    not_empty_kinds = frozenset({MIGRATION, DEVICE})
    handle_hint = "handle migration entries apart"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None or self._kernel_page_tables(change, body):
            return
        swapped = list(self._swapped(change, body))
        yield from (finding for _, finding in swapped)
        flagged = {node.id for node, _ in swapped}
        yield from self._waits_on_non_present(change, body, flagged)

    # -- a patch turning an emptiness test into a presence test ------------

    def _swapped(self, change: FunctionChange, body: Node) -> Iterator[tuple[Node, Finding]]:
        if change.before is None or change.before.body is None:
            return
        old, new = change.before.body, body
        for negated in (False, True):
            # none(x) -> !present(x), or !none(x) -> present(x)
            lost = self._count(old, self.none_tests, negated) - self._count(
                new, self.none_tests, negated
            )
            gained = self._count(new, {self.present_test}, not negated) - self._count(
                old, {self.present_test}, not negated
            )
            if lost <= 0 or gained <= 0:
                continue
            removed = [
                call
                for call in self._tests(old, self.none_tests, negated)
                if change.is_removed(call) and syntax.arguments(call)
            ]
            added = [
                call
                for call in self._tests(new, {self.present_test}, not negated)
                if change.is_added(call) and syntax.arguments(call)
            ]
            budget = min(lost, gained)
            for call in added:
                arg = syntax.text(syntax.arguments(call)[0])
                partner = change.replaced(
                    call, removed, lambda old, arg=arg: syntax.text(syntax.arguments(old)[0]) == arg
                )
                if partner is None or budget == 0:
                    continue
                removed.remove(partner)
                budget -= 1
                if (
                    self._non_present_left_before(change, call)
                    or self._same_truth(partner, call)
                    or _repeats_next_test(call)
                    or _only_hands_to_rechecking(change.flow, call)
                ):
                    continue
                old_name = syntax.call_name(partner) or self.primary_none
                old_arg = syntax.text(syntax.arguments(partner)[0])
                if negated:
                    message = (
                        f"!{old_name}({old_arg}) replaced by {self.present_test}({arg}): "
                        f"{self.not_empty} is neither empty nor present, and is now handled "
                        f"as empty; test {old_name}() and {self.handle_hint}"
                    )
                else:
                    message = (
                        f"{old_name}({old_arg}) replaced by !{self.present_test}({arg}): "
                        f"{self.not_empty} is not present but not empty either; test "
                        f"{old_name}() for 'nothing mapped' and {self.handle_hint}"
                    )
                yield call, change.finding(call, message, Confidence.HIGH)

    @staticmethod
    def _tests(body: Node, names: frozenset[str] | set[str], negated: bool) -> list[Node]:
        return [c for c in syntax.calls(body, names) if syntax.is_negated(c) == negated]

    def _count(self, body: Node, names: frozenset[str] | set[str], negated: bool) -> int:
        return len(self._tests(body, names, negated))

    def _non_present_left_before(self, change: FunctionChange, call: Node) -> bool:
        """Is the value this test reads, on every path to it, already known
        not to be a non-present entry that is not empty (handled by an
        earlier exit, an else-if, a split that falls through)?  Then
        !present and none agree here."""
        arguments = syntax.arguments(call)
        if not arguments:
            return False
        kinds = change.flow.entries().kinds_at(call, arguments[0])
        return kinds is not None and not kinds & self.not_empty_kinds

    def _same_truth(self, partner: Node, call: Node) -> bool:
        """Do the old and the new condition hold for the same kinds of entry
        (`pmd_none(x) || is_pmd_migration_entry(x)` is `!pmd_present(x)`)?"""
        old_owner, new_owner = syntax.condition_owner(partner), syntax.condition_owner(call)
        if old_owner is None or new_owner is None:
            return False
        old_condition = old_owner.child_by_field_name("condition")
        new_condition = new_owner.child_by_field_name("condition")
        if old_condition is None or new_condition is None:
            return False
        universe = LEVELS[self.level]
        old = truth_kinds(old_condition, _squeezed(syntax.arguments(partner)[0]), universe)
        new = truth_kinds(new_condition, _squeezed(syntax.arguments(call)[0]), universe)
        return old is not None and old == new

    @staticmethod
    def _kernel_page_tables(change: FunctionChange, body: Node) -> bool:
        if any(fnmatch.fnmatchcase(change.path, p) for p in KERNEL_PAGE_TABLE_FILES):
            return True
        return "init_mm" in syntax.identifiers(body)

    # -- a waiting decision taken on a non-present entry -------------------

    def _waits_on_non_present(
        self, change: FunctionChange, body: Node, flagged: set[int]
    ) -> Iterator[Finding]:
        if "wait" not in change.after.name:
            return
        asked_none = {
            syntax.text(args[0])
            for call in syntax.calls(body, self.none_tests)
            if (args := syntax.arguments(call))
        }
        result = change.flow.returned_name()
        seen: set[str] = set()
        for call in syntax.calls(body, self.present_test):
            args = syntax.arguments(call)
            if not args or not syntax.is_negated(call) or call.id in flagged:
                continue
            arg = syntax.text(args[0])
            if arg in asked_none or arg in seen:
                continue
            owner = syntax.condition_owner(call)
            if owner is None or owner.type != "if_statement":
                continue
            if self._non_present_left_before(change, call):
                continue
            if not _answers_wait(owner, change.flow, result):
                continue
            seen.add(arg)
            yield change.finding(
                call,
                f"waits when !{self.present_test}({arg}): {self.not_empty} is non-present but "
                f"not empty, and nobody will fill it; wait only on "
                f"{self.primary_none}() and retry the fault otherwise",
                Confidence.MEDIUM,
            )


def _repeats_next_test(call: Node) -> bool:
    """Is the swapped test's `if` followed at once by the very same `if`
    (same condition, same exiting branch)?  Then the swap only folds the
    emptiness case into the presence test that came next: no change."""
    owner = syntax.condition_owner(call)
    if owner is None or owner.type != "if_statement":
        return False
    following = owner.next_named_sibling
    while following is not None and following.type == "comment":
        following = following.next_named_sibling
    if following is None or following.type != "if_statement":
        return False
    branch = owner.child_by_field_name("consequence")
    return (
        owner.child_by_field_name("alternative") is None
        and following.child_by_field_name("alternative") is None
        and syntax.branch_exits(branch)
        and all(
            _squeezed(owner.child_by_field_name(part))
            == _squeezed(following.child_by_field_name(part))
            for part in ("condition", "consequence")
        )
    )


def _only_hands_to_rechecking(flow: FunctionFlow, call: Node) -> bool:
    """Is all the test guards handing the entry's pointer to functions of
    the tree that write the entry only where they found it empty themselves
    (`if (!pmd_present(*pmd)) pmd_install(mm, pmd, &new);`, and pmd_install()
    tests pmd_none() under the lock)?  Then the test only saves a call."""
    argument = ev.strip(syntax.arguments(call)[0])
    pointer = ev.place(argument)
    owner = syntax.condition_owner(call)
    if pointer is None or not pointer.startswith("*") or owner is None:
        return False
    consequence = owner.child_by_field_name("consequence")
    if owner.type != "if_statement" or consequence is None:
        return False
    if owner.child_by_field_name("alternative") is not None or syntax.branch_exits(consequence):
        return False
    pointer = pointer[1:]
    handed = [
        (name, arguments.index(pointer))
        for inner in syntax.calls(consequence)
        if (name := syntax.call_name(inner))
        and pointer in (arguments := [ev.place(ev.strip(a)) for a in syntax.arguments(inner)])
    ]
    return bool(handed) and all(
        index in (flow.summaries.fact(name, "writes-only-empty", _written_only_empty) or ())
        for name, index in handed
    )


def _written_only_empty(callee: FunctionFlow, _depth: int) -> frozenset[int]:
    return callee.entries_written_only_empty()


def _squeezed(node: Node | None) -> str:
    return "".join(syntax.text(node).split())


def _answers_wait(branch: Node, flow: FunctionFlow, result: str | None) -> bool:
    """Does the if's consequence answer "yes, wait" (return true, or set
    the returned variable to true and leave)?"""
    consequence = branch.child_by_field_name("consequence")
    if consequence is None:
        return False
    statements = (
        [c for c in consequence.named_children if c.type != "comment"]
        if consequence.type == "compound_statement"
        else [consequence]
    )
    for statement in statements:
        stores = [s for s in flow.stores if s.node.parent == statement and s.operator == "="]
        if result is not None and any(
            ev.place(s.target) == result and literal_truth(s.value) for s in stores
        ):
            return True
        if statement.type == "return_statement":
            value = next(iter(statement.named_children), None)
            if value is not None and value.type == "identifier":
                return result is not None and flow.truth_at(statement, result) is True
            return literal_truth(value) is True
        if statement.type == "goto_statement":
            return result is not None and flow.truth_at(statement, result) is True
    return False


RULE = PmdPresentAsEmpty
