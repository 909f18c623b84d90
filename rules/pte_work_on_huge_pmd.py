"""PTE-level work on a PMD that may map a huge page.

## What it does
Two checks, both about the PMD under which PTE-level work happens
(`pte_offset_map*()`, `pte_alloc*()`, `pte_lockptr()`, `pmd_pgtable()`, or
a function of the same file that does such work):

- a patch that removes a huge-PMD guard in front of that work: a
  `pmd_trans_huge()` / `pmd_leaf()` / `pmd_devmap()` / `pmd_trans_huge_lock()`
  test, a `split_huge_pmd()`, a migration-entry test (`is_pmd_migration_entry()`,
  `is_swap_pmd()`) or a `pmd_migration_entry_wait()`.  A guard that moves
  (into a helper of the same file, or into another condition) is not a
  removal: the guards of each kind are counted before and after.  Nor is
  one the post-image makes up for, in front of the same PTE-level work:
  - a test of the same kind on the same PMD that sends it away (its branch
    leaves or splits the PMD, or the work is in the branch it does not
    take); a migration-entry test counts as replaced by `!pmd_present()`,
    a split by a huge-PMD test that keeps THPs away;
  - a `split_huge_pmd()` of that PMD in the block that runs the work;
  - the guard (or a split) inside the same-file function that does the
    work, a few calls deep, other than in a `WARN_ON*()` (that callee
    relies on its caller to have checked);
  - for a bail-out (an `if` that only leaves): a `pte_offset_map*()` that
    is the first PTE-level work and leaves on NULL, as it does for such a
    PMD since v6.5 (0d940a9b270b);
  - for a `pmd_migration_entry_wait()`: only when the wait was optional
    (its block already left without waiting, as GUP did without
    FOLL_MIGRATION) and the retry after it goes too, while migration
    entries are still sent away.

  A test inside an assertion statement (`VM_BUG_ON(pmd_trans_huge(*pmd));`)
  steers nothing and is not a guard.
- PTE-level work on a PMD the function looked up itself (`pmd_offset()`,
  `pmd_alloc()`, `mm_find_pmd()`, ...) in a function that never deals with a
  huge or non-present PMD at all.  A `pte_offset_map*()` whose NULL return is
  checked (or handed to the caller) counts as dealing with it: since v6.5 it
  fails on such a PMD.

## Why is this bad?
A PMD can map a THP (or a devmap page), or hold a migration entry, as well
as point to a PTE table, and it can change under a reader holding only the
mmap or VMA lock: khugepaged collapses, a fault installs a THP, migration
replaces it.  Walking "PTEs" under a huge PMD reads the huge page's data as
page-table entries, takes the wrong lock, or installs a PTE table over a
mapped THP.  Code before PTE-level work therefore either splits the huge
PMD (`split_huge_pmd()`), or bails out, and a PMD migration entry is waited
for (`pmd_migration_entry_wait()`) and retried, not treated as an error.
UFFDIO_COPY lost the `pmd_trans_huge()` bail-out's completeness
(CVE-2024-46787), and UFFDIO_MOVE's review spent several rounds on the same
checks in move_pages().

## Example
```c
        dst_pmdval = pmdp_get_lockless(dst_pmd);
        if (unlikely(!pmd_present(dst_pmdval) || pmd_devmap(dst_pmdval))) {
                err = -EEXIST;		/* a THP at dst_pmd goes on to the PTE path */
                break;
        }
        err = mfill_atomic_pte(dst_pmd, dst_vma, dst_addr, src_addr, flags, &folio);
```

## Use instead
```c
        dst_pmdval = pmdp_get_lockless(dst_pmd);
        if (unlikely(!pmd_present(dst_pmdval) || pmd_trans_huge(dst_pmdval) ||
                     pmd_devmap(dst_pmdval))) {
                err = -EEXIST;
                break;
        }
        err = mfill_atomic_pte(dst_pmd, dst_vma, dst_addr, src_addr, flags, &folio);
```

## References
- 71c186efc1b2 ("userfaultfd: fix checks for huge PMDs"), CVE-2024-46787;
  Fixes: c1a4de99fada ("userfaultfd: mcopy_atomic|mfill_zeropage:
  UFFDIO_COPY|UFFDIO_ZEROPAGE preparation")
- adef440691ba ("userfaultfd: UFFDIO_MOVE uABI") and its review: Jann Horn on
  swap PMDs passing pmd_trans_huge_lock(),
  https://lore.kernel.org/all/CAG48ez0WQiZvBzYBHXVP8ZVFXJEfRsHxNuXvMTFL+ietgyB9yQ@mail.gmail.com/
  (thread https://lore.kernel.org/all/20230914152620.2743033-3-surenb@google.com/);
  aba6faec0103 ("userfaultfd: fix a crash in UFFDIO_MOVE when PMD is a migration entry")
- 6fa1066fc5d0 ("mm/mremap: fix move_normal_pmd/retract_page_tables race")
- 24d7275ce279 ("fs/proc: task_mmu.c: don't read mapcount for migration entry")
- 0d940a9b270b ("mm/pgtable: allow pte_offset_map[_lock]() to fail") and
  04dee9e85cf5 ("mm/various: give up if pte_offset_map[_lock]() fails"):
  why a bail-out in front of such a map may go
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from tree_sitter import Node

from analyzer import syntax
from analyzer.parsing import ParsedFile
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# Guards by kind: a guard replaced by another of its kind is not removed.
GUARD_KINDS: dict[str, str] = {
    "pmd_trans_huge": "huge-PMD test",
    "pmd_leaf": "huge-PMD test",
    "pmd_devmap": "huge-PMD test",
    "pmd_is_huge": "huge-PMD test",
    "pmd_trans_huge_lock": "huge-PMD test",
    "split_huge_pmd": "split",
    "split_huge_pmd_address": "split",
    "__split_huge_pmd": "split",
    "split_huge_pmd_locked": "split",
    "is_pmd_migration_entry": "migration-entry test",
    "pmd_is_migration_entry": "migration-entry test",
    "is_swap_pmd": "migration-entry test",
    "pmd_migration_entry_wait": "migration wait",
}
# Tests that only refine a THP test: dropping one while the same value still
# goes through a THP test is not a lost guard.
REFINEMENTS = frozenset({"pmd_devmap"})
PRIMARY_TESTS = frozenset({"pmd_trans_huge", "pmd_leaf", "pmd_is_huge", "pmd_trans_huge_lock"})
CONSEQUENCE = {
    "huge-PMD test": "a PMD mapping a THP now reaches it; bail out, or split_huge_pmd() first",
    "split": "a PMD mapping a THP is no longer split before it",
    "migration-entry test": "a PMD migration entry now reaches it; wait for it "
    "(pmd_migration_entry_wait()) and retry",
    "migration wait": "a PMD migration entry must be waited for and retried, "
    "not reported as an error or walked",
}
# Handling of odd PMDs that does not count as a removable guard but shows the
# function knows about them.
OTHER_HANDLING = frozenset(
    {"pmd_none_or_trans_huge_or_clear_bad", "pmd_trans_unstable", "pmd_bad", "pmd_present"}
)
# Which argument is the PMD, for the PTE-level primitives.
PTE_WORK: dict[str, int] = {
    "pte_offset_map": 0,
    "__pte_offset_map": 0,
    "pte_offset_map_lock": 1,
    "__pte_offset_map_lock": 1,
    "pte_offset_map_nolock": 1,
    "pte_offset_map_ro_nolock": 1,
    "pte_offset_map_rw_nolock": 1,
    "pte_alloc_map": 1,
    "pte_alloc_map_lock": 1,
    "pte_alloc": 1,
    "__pte_alloc": 1,
    "pte_lockptr": 1,
    "pmd_pgtable": 0,
}
# These return NULL on a huge or non-present PMD (v6.5+).
FAILING_MAPS = frozenset(
    {
        "pte_offset_map",
        "__pte_offset_map",
        "pte_offset_map_lock",
        "__pte_offset_map_lock",
        "pte_offset_map_nolock",
        "pte_offset_map_ro_nolock",
        "pte_offset_map_rw_nolock",
        "pte_alloc_map",
        "pte_alloc_map_lock",
    }
)
# Allocation of a missing table is not work under an existing PMD.
ALLOCATIONS = frozenset({"pte_alloc", "__pte_alloc"})
PMD_LOOKUPS = frozenset(
    {"pmd_offset", "pmd_alloc", "mm_find_pmd", "walk_to_pmd", "mm_alloc_pmd", "pmd_off"}
)
# How deep to follow calls into same-file functions that do PTE work.
CALL_DEPTH = 3
SPLITS = frozenset(name for name, kind in GUARD_KINDS.items() if kind == "split")
MIGRATION_TESTS = frozenset({"is_pmd_migration_entry", "pmd_is_migration_entry", "is_swap_pmd"})
# Tests that keep a PMD of a guard's kind away from PTE-level work, with the
# value each has on such a PMD: a migration entry is not present.
_HUGE_TESTS = {name: True for name in PRIMARY_TESTS if name != "pmd_trans_huge_lock"}
STEERING: dict[str, dict[str, bool]] = {
    "huge-PMD test": _HUGE_TESTS,
    "split": _HUGE_TESTS,
    "migration-entry test": {**{name: True for name in MIGRATION_TESTS}, "pmd_present": False},
}
# A guard found in a same-file callee that does the work stands for one of
# these kinds (a split deals with a THP and with a migration entry alike).
CALLEE_GUARDS: dict[str, frozenset[str]] = {
    kind: frozenset(n for n, k in GUARD_KINDS.items() if k in (kind, "split"))
    for kind in ("huge-PMD test", "split", "migration-entry test")
}
# Assertions: a test inside one used as a statement steers nothing (and
# VM_BUG_ON() is compiled out without CONFIG_DEBUG_VM).
ASSERTION = re.compile(r"(?:VM_)?(?:BUG|WARN)(?:_ON)?(?:_ONCE)?(?:_[A-Z]+)?")
# Calls that pass their (first) argument's truth value through.
TRANSPARENT = frozenset({"likely", "unlikely", "WARN_ON", "WARN_ON_ONCE", "WARN", "WARN_ONCE"})
# Reads of a PMD entry: the value stands for the PMD it was read from.
PMD_READS = frozenset({"pmdp_get_lockless", "pmdp_get", "READ_ONCE", "pmd_read_atomic"})


class PteWorkOnHugePmd(FunctionRule):
    id = "PTE_WORK_ON_HUGE_PMD"
    severity = Severity.WARNING
    summary = "PTE-level work without handling a huge or migrating PMD (split or bail first)"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None:
            return
        after = _FileView.of(change.after_file)
        work_after = after.pte_work(body)
        if not work_after:
            return
        removed = list(self._removed_guards(change, after, work_after))
        yield from removed
        if not removed:
            yield from self._unguarded_lookup(change, after, body)

    @staticmethod
    def _removed_guards(
        change: FunctionChange, after: _FileView, work_after: list[Node]
    ) -> Iterator[Finding]:
        before_function = change.before
        if before_function is None or before_function.body is None:
            return
        before = _FileView.of(change.before_file)
        before_body = before_function.body
        counts_before = before.guard_counts(before_body, before_function.name)
        counts_after = after.guard_counts(change.after.body, change.after.name)
        names_before = _name_counts(before_body)
        names_after = _name_counts(change.after.body)
        work_before = before.pte_work(before_body)
        removed = [
            c
            for c in _guard_calls(before_body, GUARD_KINDS)
            if change.is_removed(c) and any(w.start_byte > c.start_byte for w in work_before)
        ]
        deficit = {k: counts_before.get(k, 0) - counts_after.get(k, 0) for k in counts_before}
        # A removed line may have been rewritten with the same calls: only a
        # name with fewer calls than before lost one.
        lost = {n: names_before[n] - names_after.get(n, 0) for n in names_before}
        for call in removed:
            name = syntax.call_name(call) or ""
            kind = GUARD_KINDS[name]
            if deficit.get(kind, 0) <= 0 or lost.get(name, 0) <= 0:
                continue
            lost[name] -= 1
            if kind == "huge-PMD test" and deficit.get("split", 0) <= 0 and _gates_split(call):
                continue  # split_huge_pmd() tests for itself; the split is still there
            if name in REFINEMENTS and _still_tested(change.after.body, call):
                continue  # e.g. pmd_devmap() dropped with devmap itself: THPs still caught
            if _replaced(change, after, call, kind, work_before, work_after):
                continue
            deficit[kind] -= 1
            anchor = change.anchor_for(call)
            work = next((w for w in work_after if w.start_byte >= anchor.start_byte), work_after[0])
            remaining = counts_after.get(kind, 0)
            yield change.finding(
                anchor,
                f"patch removes the {name}() {kind} before PTE-level work "
                f"({syntax.call_name(work)}()): {CONSEQUENCE[kind]}",
                Confidence.HIGH if remaining == 0 else Confidence.MEDIUM,
                key=f"removed:{name}",
            )

    @staticmethod
    def _unguarded_lookup(change: FunctionChange, view: _FileView, body: Node) -> Iterator[Finding]:
        if view.handles_huge(body, change.after.name):
            return
        function = change.after.node
        for call in syntax.calls(body, PTE_WORK):
            name = syntax.call_name(call) or ""
            if name in ALLOCATIONS or (name in FAILING_MAPS and _failure_handled(call)):
                continue
            arguments = syntax.arguments(call)
            index = PTE_WORK[name]
            if len(arguments) <= index:
                continue
            pmd = _pmd_variable(arguments[index])
            lookup = _looked_up(function, pmd, call) if pmd else None
            if lookup is None:
                continue
            yield change.finding(
                call,
                f"{name}() under a PMD from {syntax.call_name(lookup)}(), in a function that "
                "never checks for a huge or migrating PMD: split it (split_huge_pmd()) or "
                "bail out on pmd_trans_huge()/!pmd_present() first",
                Confidence.MEDIUM,
            )
            return


def _replaced(
    change: FunctionChange,
    after: _FileView,
    guard: Node,
    kind: str,
    work_before: list[Node],
    work_after: list[Node],
) -> bool:
    """Is the PTE-level work the removed `guard` stood before still kept
    safe in the post-image: by an equivalent guard, by a callee's own, or by
    a pte_offset_map*() that fails on a PMD that is not a table?"""
    names = {syntax.call_name(w) for w in work_before if w.start_byte > guard.start_byte}
    targets = [w for w in work_after if syntax.call_name(w) in names] or work_after
    bail_out = False
    if kind == "migration wait":
        # Only a wait that was optional goes without a word: the branch
        # already answered a migration entry without waiting (GUP without
        # FOLL_MIGRATION), and the patch takes the waiting path away with
        # the retry behind it, so that answer is now the only one.
        if not _optional_wait_dropped(change, guard):
            return False
        kind = "migration-entry test"
    else:
        bail_out = _bails_out(guard)
    body = change.after.body
    assert body is not None
    return all(after.protects(body, work, kind, bail_out) for work in targets)


def _guard_calls(body: Node, names: Collection[str]) -> list[Node]:
    """Calls to `names` that decide something: not inside an assertion
    statement (VM_BUG_ON(pmd_trans_huge(*pmd));)."""
    return [c for c in syntax.calls(body, names) if not _asserted(c, statement_only=True)]


def _asserted(call: Node, statement_only: bool = False) -> bool:
    """Is `call` inside an assertion macro (one used as a statement only)?"""
    for node in syntax.ancestors(call):
        if node.type in ("expression_statement", "compound_statement", "function_definition"):
            return False
        if node.type == "call_expression" and ASSERTION.fullmatch(syntax.call_name(node) or ""):
            parent = syntax.unparenthesized_parent(node)
            return not statement_only or (
                parent is not None and parent.type == "expression_statement"
            )
    return False


def _implied(test: Node, value: bool, condition: Node) -> bool | None:
    """The value `condition` must take when `test` has `value`, or None
    when that is not decided by `test` alone."""
    node = test
    while node != condition:
        parent = node.parent
        if parent is None:
            return None
        if parent.type == "unary_expression":
            if syntax.text(parent.child_by_field_name("operator")) != "!":
                return None
            value = not value
        elif parent.type == "binary_expression":
            operator = syntax.text(parent.child_by_field_name("operator"))
            if (operator, value) not in (("||", True), ("&&", False)):
                return None
        elif parent.type == "argument_list":
            call = parent.parent
            arguments = syntax.arguments(call) if call is not None else []
            if call is None or syntax.call_name(call) not in TRANSPARENT or arguments[:1] != [node]:
                return None
            parent = call
        elif parent.type != "parenthesized_expression":
            return None
        node = parent
    return value


def _bails_out(guard: Node) -> bool:
    """Is `guard` the test of an `if` that only leaves (unlocking on the way)
    when it holds: a bail-out, not handling of the huge PMD?"""
    owner = syntax.condition_owner(guard)
    if owner is None or owner.type != "if_statement":
        return False
    if _implied(guard, True, owner.child_by_field_name("condition")) is not True:
        return False
    consequence = owner.child_by_field_name("consequence")
    return syntax.branch_exits(consequence) and all(
        any(word in (syntax.call_name(c) or "") for word in ("unlock", "unmap"))
        for c in syntax.calls(consequence)
    )


def _optional_wait_dropped(change: FunctionChange, wait: Node) -> bool:
    """Was the removed pmd_migration_entry_wait() preceded, in its block, by
    an exit that skips it, and did everything after it in the block (the
    retry) go with it?"""
    statement = syntax.unparenthesized_parent(wait)
    block = statement.parent if statement is not None else None
    if statement is None or statement.type != "expression_statement" or block is None:
        return False
    if block.type != "compound_statement":
        return False
    siblings = [c for c in block.named_children if c.type != "comment"]
    index = siblings.index(statement)
    skipped = any(
        n.type in syntax.EXIT_STATEMENTS for s in siblings[:index] for n in syntax.walk(s)
    )
    return skipped and all(_wholly_removed(change, s) for s in siblings[index + 1 :])


def _wholly_removed(change: FunctionChange, node: Node) -> bool:
    first = node.start_point.row
    return all(
        first + offset in change.removed_rows
        for offset, line in enumerate(syntax.text(node).split("\n"))
        if line.strip() and not line.strip().startswith(("/*", "*", "//"))
    )


def _steers_away(test: Node, work: Node, odd: bool) -> bool:
    """Does `test` (which is `odd` on the PMD in question) keep that PMD
    from reaching `work`: work in the branch it does not take, or after an
    if whose branch it takes leaves or splits the PMD?"""
    owner = syntax.condition_owner(test)
    if owner is None or owner.type != "if_statement":
        return False
    implied = _implied(test, odd, owner.child_by_field_name("condition"))
    if implied is None:
        return False
    consequence = owner.child_by_field_name("consequence")
    alternative = owner.child_by_field_name("alternative")
    if alternative is not None and alternative.type == "else_clause":
        alternative = alternative.named_children[0] if alternative.named_children else None
    taken, other = (consequence, alternative) if implied else (alternative, consequence)
    if other is not None and syntax.within(work, other):
        return True
    if syntax.within(work, owner) or work.start_byte < owner.end_byte:
        return False
    return taken is not None and _encloses(owner, work) and _handles(taken)


def _handles(branch: Node) -> bool:
    return syntax.branch_exits(branch) or bool(_guard_calls(branch, SPLITS))


def _encloses(statement: Node, work: Node) -> bool:
    """Is `work` in the block that runs `statement` (so passes it first)?"""
    block = statement.parent
    while block is not None and block.type == "labeled_statement":
        block = block.parent
    return block is not None and syntax.within(work, block)


def _pmd_roots(body: Node) -> dict[str, str]:
    """Locals holding a PMD's value, mapped to the PMD pointer read."""
    roots: dict[str, str] = {}
    for node in syntax.walk(body):
        if node.type == "assignment_expression":
            left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        elif node.type == "init_declarator":
            left, right = node.child_by_field_name("declarator"), node.child_by_field_name("value")
        else:
            continue
        read = _strip(right) if right is not None else None
        if left is not None and read is not None and read is not right:
            roots[syntax.text(left)] = syntax.text(read)
    return roots


def _strip(node: Node) -> Node:
    """`*pmd`, `&pmd`, `(pmd)`, `pmdp_get_lockless(pmd)` -> `pmd`."""
    while True:
        if node.type == "parenthesized_expression" and node.named_children:
            node = node.named_children[0]
        elif node.type == "pointer_expression" and node.child_by_field_name("argument"):
            node = node.child_by_field_name("argument")
        elif node.type == "call_expression" and syntax.call_name(node) in PMD_READS:
            arguments = syntax.arguments(node)
            if not arguments:
                return node
            node = arguments[0]
        else:
            return node


def _root(node: Node, roots: dict[str, str]) -> str:
    name = syntax.text(_strip(node))
    return roots.get(name, name)


def _same_pmd(names: set[str], others: set[str]) -> bool:
    return any(
        a == b or a.startswith((b + ".", b + "->")) or b.startswith((a + ".", a + "->"))
        for a in names
        for b in others
    )


def _failure_exits(call: Node) -> bool:
    """Is the NULL a pte_offset_map*() returns answered by leaving?"""
    owner = syntax.condition_owner(call)
    if owner is not None:
        return (
            owner.type == "if_statement"
            and _implied(call, False, owner.child_by_field_name("condition")) is True
            and syntax.branch_exits(owner.child_by_field_name("consequence"))
        )
    parent = syntax.unparenthesized_parent(call)
    target = None
    if parent is not None and parent.type == "assignment_expression":
        target = syntax.text(parent.child_by_field_name("left"))
    elif parent is not None and parent.type == "init_declarator":
        target = syntax.text(_strip_declarator(parent.child_by_field_name("declarator")))
    statement = syntax.enclosing(call, "expression_statement", "declaration")
    scope = syntax.enclosing(call, "compound_statement")
    if not target or statement is None or scope is None:
        return False
    for node in syntax.walk(scope):
        if node.start_byte < statement.end_byte or syntax.text(node) != target:
            continue
        if node.type not in ("identifier", "field_expression"):
            continue
        owner = syntax.condition_owner(node)
        return (
            owner is not None
            and owner.type == "if_statement"
            and _implied(node, False, owner.child_by_field_name("condition")) is True
            and syntax.branch_exits(owner.child_by_field_name("consequence"))
        )
    return False


def _strip_declarator(declarator: Node | None) -> Node | None:
    while declarator is not None and declarator.type == "pointer_declarator":
        declarator = declarator.child_by_field_name("declarator")
    return declarator


def _still_tested(body: Node, removed: Node) -> bool:
    """Does `body` still put the removed test's argument through a THP test?"""
    arguments = syntax.arguments(removed)
    if not arguments:
        return False
    value = syntax.text(arguments[0])
    return any(
        (args := syntax.arguments(c)) and syntax.text(args[0]) == value
        for c in syntax.calls(body, PRIMARY_TESTS)
    )


def _gates_split(test: Node) -> bool:
    """Is `test` the condition of an if whose body is a split_huge_pmd()?"""
    owner = syntax.condition_owner(test)
    consequence = owner.child_by_field_name("consequence") if owner is not None else None
    if consequence is None:
        return False
    return any(
        GUARD_KINDS.get(syntax.call_name(c) or "") == "split" for c in syntax.calls(consequence)
    )


def _name_counts(body: Node) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in _guard_calls(body, GUARD_KINDS):
        name = syntax.call_name(call) or ""
        counts[name] = counts.get(name, 0) + 1
    return counts


def _pmd_variable(argument: Node) -> str | None:
    node = argument
    while node.type == "parenthesized_expression" and node.named_children:
        node = node.named_children[0]
    return syntax.text(node) if node.type == "identifier" else None


def _looked_up(function: Node, pmd: str, use: Node) -> Node | None:
    """The PMD lookup call last assigned to `pmd` before `use`, if any."""
    last = None
    for node in syntax.walk(function):
        if node.start_byte >= use.start_byte:
            break
        value = None
        if node.type == "assignment_expression":
            left = node.child_by_field_name("left")
            if left is not None and syntax.text(left) == pmd:
                value = node.child_by_field_name("right")
        elif node.type == "init_declarator":
            declarator = node.child_by_field_name("declarator")
            while declarator is not None and declarator.type == "pointer_declarator":
                declarator = declarator.child_by_field_name("declarator")
            if declarator is not None and syntax.text(declarator) == pmd:
                value = node.child_by_field_name("value")
        if value is not None:
            last = value
    if (
        last is not None
        and last.type == "call_expression"
        and (syntax.call_name(last) in PMD_LOOKUPS)
    ):
        return last
    return None


def _failure_handled(call: Node) -> bool:
    """Is the NULL a failing pte_offset_map*() returns tested, or handed back?"""
    parent = syntax.unparenthesized_parent(call)
    if parent is None:
        return False
    if parent.type == "return_statement":
        return True
    if syntax.condition_owner(call) is not None:
        return True  # `if (!pte_offset_map_lock(...))`
    target = None
    if parent.type == "assignment_expression":
        target = syntax.text(parent.child_by_field_name("left"))
    elif parent.type == "init_declarator":
        declarator = parent.child_by_field_name("declarator")
        while declarator is not None and declarator.type == "pointer_declarator":
            declarator = declarator.child_by_field_name("declarator")
        target = syntax.text(declarator)
    if not target:
        return False
    statement = syntax.enclosing(call, "expression_statement", "declaration")
    scope = syntax.enclosing(call, "compound_statement")
    if statement is None or scope is None:
        return False
    for node in syntax.walk(scope):
        if node.start_byte < statement.end_byte or node.type != "identifier":
            continue
        if syntax.text(node) == target and syntax.condition_owner(node) is not None:
            return True
    return False


@dataclass
class _FileView:
    """The functions of one file, for looking into same-file callees."""

    bodies: dict[str, Node]
    _works: dict[str, bool]

    @classmethod
    def of(cls, parsed: ParsedFile | None) -> _FileView:
        if parsed is None:
            return cls({}, {})
        key = parsed.image.blob_id
        cached = _views.get(key)
        if cached is None:
            bodies = {f.name: f.body for f in parsed.functions if f.body is not None}
            cached = cls(bodies, {})
            if len(_views) > 32:
                _views.clear()
            _views[key] = cached
        return cached

    def does_pte_work(self, name: str, depth: int = CALL_DEPTH) -> bool:
        if name in self._works:
            return self._works[name]
        self._works[name] = False  # recursion guard
        body = self.bodies.get(name)
        result = body is not None and (
            bool(syntax.calls(body, PTE_WORK))
            or (
                depth > 0
                and any(
                    self.does_pte_work(callee, depth - 1)
                    for c in syntax.calls(body)
                    if (callee := syntax.call_name(c)) in self.bodies and callee != name
                )
            )
        )
        self._works[name] = result
        return result

    def pte_work(self, body: Node) -> list[Node]:
        """PTE-level primitives in `body`, and calls to same-file functions
        that reach them, in document order."""
        return [
            c
            for c in syntax.calls(body)
            if (name := syntax.call_name(c)) in PTE_WORK
            or (name in self.bodies and self.does_pte_work(name))
        ]

    def _helpers(self, body: Node, own: str) -> list[Node]:
        return [
            self.bodies[name]
            for c in syntax.calls(body)
            if (name := syntax.call_name(c)) in self.bodies and name != own
        ]

    def guard_counts(self, body: Node, own: str) -> dict[str, int]:
        """Guards by kind in `body` and in the same-file functions it calls."""
        counts: dict[str, int] = {}
        for scope in [body, *self._helpers(body, own)]:
            for call in _guard_calls(scope, GUARD_KINDS):
                kind = GUARD_KINDS[syntax.call_name(call) or ""]
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def protects(self, body: Node, work: Node, kind: str, bail_out: bool) -> bool:
        """Is a PMD of `kind` kept from `work` in `body`?  By a test of that
        kind on the same PMD, or a split of it, ahead of the work; by the
        work's own failure on it (a pte_offset_map*() whose NULL leaves,
        with nothing but such maps before it) when the removed guard only
        bailed out; or by the guard living on in the same-file function
        that does the work."""
        roots = _pmd_roots(body)
        name = syntax.call_name(work) or ""
        arguments = syntax.arguments(work)
        if name in PTE_WORK:
            index = PTE_WORK[name]
            arguments = arguments[index : index + 1]
        pmds = {_root(a, roots) for a in arguments}
        steering = STEERING[kind]
        for test in _guard_calls(body, [*steering, *SPLITS]):
            if test.start_byte >= work.start_byte:
                break
            if not _same_pmd({_root(a, roots) for a in syntax.arguments(test)}, pmds):
                continue
            test_name = syntax.call_name(test) or ""
            if test_name in SPLITS:
                statement = syntax.unparenthesized_parent(test)
                if (
                    statement is not None
                    and statement.type == "expression_statement"
                    and _encloses(statement, work)
                ):
                    return True
            elif _steers_away(test, work, steering[test_name]):
                return True
        if (
            bail_out
            and name in FAILING_MAPS
            and _failure_exits(work)
            and all(
                syntax.call_name(w) in FAILING_MAPS
                for w in self.pte_work(body)
                if w.start_byte < work.start_byte
            )
        ):
            return True
        return name in self.bodies and self._guarded_inside(name, CALLEE_GUARDS[kind])

    def _guarded_inside(self, name: str, guards: frozenset[str], depth: int = CALL_DEPTH) -> bool:
        """Does same-file function `name`, or one it calls for PTE-level
        work, test or split the PMD itself?  Assertions do not count: a
        WARN_ON_ONCE(pmd_trans_huge(*pmd)) in the callee relies on its
        caller to have checked."""
        body = self.bodies.get(name)
        if body is None:
            return False
        if any(not _asserted(c) for c in syntax.calls(body, guards)):
            return True
        return depth > 0 and any(
            self._guarded_inside(callee, guards, depth - 1)
            for c in syntax.calls(body)
            if (callee := syntax.call_name(c)) in self.bodies
            and callee != name
            and self.does_pte_work(callee)
        )

    def handles_huge(self, body: Node, own: str) -> bool:
        wanted = set(GUARD_KINDS) | OTHER_HANDLING
        return any(syntax.calls(scope, wanted) for scope in [body, *self._helpers(body, own)])


_views: dict[str, _FileView] = {}


RULE = PteWorkOnHugePmd
