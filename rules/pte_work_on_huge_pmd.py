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
  removal: the guards of each kind are counted before and after.
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
"""

from __future__ import annotations

from collections.abc import Iterator
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
            for c in syntax.calls(before_body, GUARD_KINDS)
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
    for call in syntax.calls(body, GUARD_KINDS):
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
            for call in syntax.calls(scope, GUARD_KINDS):
                kind = GUARD_KINDS[syntax.call_name(call) or ""]
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def handles_huge(self, body: Node, own: str) -> bool:
        wanted = set(GUARD_KINDS) | OTHER_HANDLING
        return any(syntax.calls(scope, wanted) for scope in [body, *self._helpers(body, own)])


_views: dict[str, _FileView] = {}


RULE = PteWorkOnHugePmd
