"""A patch drops the `pmd_same()` / `pte_same()` re-validation of a lockless snapshot.

## What it does
Flags a patch that takes away a re-validation of a page-table entry
snapshot — a `pmd_same()`, `pte_same()` or `pud_same()` test, or a
comparison of `pmd_val()` / `pte_val()` values (GUP-fast's form) — while
what it guarded is still done: on some path the work that only ran when
the entry was unchanged (setting the entry, making it young or writable,
taking a reference) is now reached with no such test of the same entry.
The snapshot may be the function's own (`pmdp_get_lockless()`,
`pte_offset_map_nolock()`) or its caller's (`vmf->orig_pte`,
`vmf->orig_pmd`, a GUP-fast `orig`).  A test removed, narrowed (one of two
entries no longer compared), turned into a bare `VM_WARN_ON_ONCE()`, or
moved after the work is reported; one moved into a helper of the tree,
reshaped, or renamed is not.

Whole functions are not judged: upstream has correct code that re-reads the
entry under the lock instead, or relies on the mmap lock held for writing,
and that takes a reviewer to tell apart.

## Why is this bad?
A value read without the page-table lock is only a guess: by the time the
lock is taken, the entry may have been zapped, split, collapsed by
khugepaged, turned into a migration entry, or had its table freed.  Code
that decides on the snapshot and then changes the page table under the lock
must first check that the entry is still the one it looked at, and back off
(retry, `-EAGAIN`) when it is not.  GUP-fast, which takes no lock at all,
has to compare the PMD again after taking its folio reference, or it races
with THP collapse (70cbc3cc78a9).

## Example
```c
        orig_pmd = pmdp_get_lockless(pmd);
        ...
        ptl = pmd_lock(mm, pmd);
        set_pmd_at(mm, addr, pmd, pmd_mkyoung(orig_pmd));	/* stale */
```

## Use instead
```c
        orig_pmd = pmdp_get_lockless(pmd);
        ...
        ptl = pmd_lock(mm, pmd);
        if (unlikely(!pmd_same(pmdp_get(pmd), orig_pmd))) {
                spin_unlock(ptl);
                return -EAGAIN;
        }
        set_pmd_at(mm, addr, pmd, pmd_mkyoung(orig_pmd));
```

## Known problems
A re-check made by a helper of the tree counts without looking at what it
compares; one replaced by a different mechanism (a sequence count, holding
the mmap lock for writing) is reported and needs a reviewer's eye.  Paths
are followed without knowing which pointer is NULL where: a function that
re-validates on two branches and jumps between them on `if (vmf->pte)` can
look as if one path skipped both (two of the 6 findings left on the 6.1 ->
6.12 history of mm/).

## References
- 70cbc3cc78a9 ("mm: gup: fix the fast GUP race against THP collapse"),
  Yang Shi, v6.0 cycle
- 3a5a8d343e1c ("mm: fix race between __split_huge_pmd_locked() and GUP-fast"),
  Ryan Roberts, v6.10
- pte_offset_map_rw_nolock() contract (v6.13): writers re-check with
  `pmd_same()` or `pte_same()` after taking the lock,
  https://lore.kernel.org/all/5aeecfa131600a454b1f3a038a1a54282ca3b856.1727332572.git.zhengqi.arch@bytedance.com/
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow import events as ev
from analyzer.flow.cfg import Point
from analyzer.flow.entries import read_place, reads_entry
from analyzer.flow.guards import argument_places, checks_by, lost_checks
from analyzer.flow.vocabulary import LOCK_CALLS
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

SAME_CALLS = frozenset({"pmd_same", "pte_same", "pud_same"})
VAL_CALLS = frozenset({"pmd_val", "pte_val", "pud_val"})


class LocklessSnapshotNotRevalidated(FunctionRule):
    id = "LOCKLESS_SNAPSHOT_NOT_REVALIDATED"
    severity = Severity.WARNING
    summary = "patch drops the pmd_same()/pte_same() re-validation of a page-table snapshot"
    paths = ()
    api = r"\b(?:pmd|pte|pud)_(?:same|val)\b"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        before, after = change.before_flow, change.flow
        if before is None or not any(_is_check(c) for c in before.calls(SAME_CALLS | VAL_CALLS)):
            return
        reported: set[int] = set()
        for lost in lost_checks(
            before,
            after,
            removed=change.is_removed,
            is_check=_is_check,
            vouches_before=_vouches(before),
            vouches_after=_vouches(after),
            matters=_guarded_work,
            until_lock=True,
            proceeds=_proceeds,
            key="same",
        ):
            if lost.check.id in reported or _no_snapshot_left(after, lost.check):
                continue
            reported.add(lost.check.id)
            shown = _comparison(lost.check)
            yield change.finding(
                change.anchor_for(shown),
                f"patch removes the re-validation '{syntax.one_line(shown)}': what it guarded "
                "still runs, and the entry may have changed since it was read (zap, split, "
                "collapse, migration); compare it again under the lock and back off if it differs",
                Confidence.HIGH,
                key=f"removed:{syntax.node_key(shown)}",
            )


_DIAGNOSTICS = regex(r"^(?:VM_)?WARN|^pr_|^dump_")


def _guarded_work(point: Point) -> bool:
    """What a re-validation guards: not the read that takes the fresh copy
    to compare (`old = ptep_get(pte);` before `pte_same(old, orig)`), nor
    taking or dropping the lock, nor a warning."""
    node = point.node
    if node is None:
        return False
    expression = node.named_children[0] if node.type == "expression_statement" else node
    if expression is None:
        return False
    if expression.type == "assignment_expression":
        value = expression.child_by_field_name("right")
        return value is None or not reads_entry(ev.strip(value))
    if expression.type == "call_expression":
        name = syntax.call_name(expression) or ""
        return name not in LOCK_CALLS and not _DIAGNOSTICS.search(name)
    if node.type == "return_statement":
        return bool(syntax.calls(node))  # `return 0;` does nothing to guard
    return True


def _is_check(call: Node) -> bool:
    name = syntax.call_name(call) or ""
    if name in SAME_CALLS:
        return True
    return name in VAL_CALLS and _val_comparison(call) is not None


def _val_comparison(call: Node) -> Node | None:
    """`pmd_val(a) != pmd_val(b)` holding this pmd_val() call."""
    parent = syntax.unparenthesized_parent(call)
    if parent is None or parent.type != "binary_expression":
        return None
    if syntax.text(parent.child_by_field_name("operator")) not in ("==", "!="):
        return None
    return parent


def _comparison(call: Node) -> Node:
    return _val_comparison(call) or call


def _proceeds(node: Node, condition: Node) -> bool | None:
    """The edge on which the entry is unchanged and the work goes on; a
    helper's answer could mean either (None)."""
    if not _is_check(node):
        return None
    condition = ev.strip(condition)
    if condition.type == "binary_expression":
        return syntax.text(condition.child_by_field_name("operator")) == "=="
    return True


def _vouches(flow: FunctionFlow) -> Callable[[Node], list[str]]:
    """A same-test vouches for the entries and snapshots it compares; a
    helper of the tree making one, for what it is handed."""
    helpers = checks_by(flow, SAME_CALLS | VAL_CALLS, depth=2)
    return lambda node: sorted(_compared(flow, node)) if _is_check(node) else helpers(node)


def _compared(flow: FunctionFlow, check: Node) -> set[str]:
    """What a check compares, and the entry behind a copy it compares: in
    `old = ptep_get(pte); if (!pte_same(old, orig))` the entry `*pte` is
    the one checked."""
    found = _operands(check)
    for name in [n for n in found if not n.startswith("*")]:
        stores = flow.assignments(name)
        values = [ev.strip(s.value) for s in stores if s.value is not None]
        if not values or len(values) != len(stores) or not all(map(reads_entry, values)):
            continue
        found.update(entry for value in values if (entry := read_place(value)) is not None)
    return found


def _operands(check: Node) -> set[str]:
    """The entries a check compares: `*pte` for ptep_get(pte), the snapshot's name."""
    comparison = _comparison(check)
    if comparison is check:
        return set(argument_places(check))
    sides = (ev.strip(comparison.child_by_field_name(side)) for side in ("left", "right"))
    return {
        name for side in sides if side.type == "call_expression" for name in argument_places(side)
    }


def _no_snapshot_left(flow: FunctionFlow, check: Node) -> bool:
    """Is every value the removed test compared now read fresh, under a
    page-table lock, in the function as it is (nothing left to re-validate)?"""
    snapshots = [name for name in _operands(check) if not name.startswith("*")]
    return bool(snapshots) and all(
        (stores := flow.assignments(name))
        and all(
            store.value is not None and reads_entry(store.value) and flow.holds(store.node)
            for store in stores
        )
        for name in snapshots
    )


RULE = LocklessSnapshotNotRevalidated
