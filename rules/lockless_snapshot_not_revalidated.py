"""A patch drops the `pmd_same()` / `pte_same()` re-validation of a lockless snapshot.

## What it does
Flags a patch that removes a re-validation of a page-table entry snapshot:
a `pmd_same()`, `pte_same()` or `pud_same()` call, or a comparison of
`pmd_val()` / `pte_val()` values (GUP-fast's form), while the function keeps
using the snapshot (the compared value is still referenced) or keeps taking
one (`pmdp_get_lockless()`, `ptep_get_lockless()`, `pte_offset_map_nolock()`
and friends).  A check moved into a same-file helper that the function now
calls, or a renamed snapshot, is not a removal.

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
A re-check made by a same-file helper counts only one call deep; a re-check
replaced by a different mechanism (a sequence count, holding the mmap lock
for writing) is reported and needs a reviewer's eye.

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

import re
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.parsing import ParsedFile
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

SAME_CALLS = frozenset({"pmd_same", "pte_same", "pud_same"})
VAL_CALLS = frozenset({"pmd_val", "pte_val", "pud_val"})
SNAPSHOT_CALLS = frozenset(
    {
        "pmdp_get_lockless",
        "ptep_get_lockless",
        "pte_offset_map_nolock",
        "pte_offset_map_ro_nolock",
        "pte_offset_map_rw_nolock",
    }
)

FRESH_READS = frozenset({"ptep_get", "pmdp_get", "pudp_get", "huge_ptep_get", "READ_ONCE"})
LOCK_CALLS = frozenset(
    {"pmd_lock", "pte_offset_map_lock", "pmd_trans_huge_lock", "spin_lock", "spin_lock_nested"}
)


class LocklessSnapshotNotRevalidated(FunctionRule):
    id = "LOCKLESS_SNAPSHOT_NOT_REVALIDATED"
    severity = Severity.WARNING
    summary = "patch drops the pmd_same()/pte_same() re-validation of a page-table snapshot"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        if change.before is None or change.before.body is None or change.after.body is None:
            return
        old_body, body = change.before.body, change.after.body
        old_checks = _revalidations(old_body)
        lost = (
            len(old_checks)
            + _in_helpers(old_body, change.before_file, change.before.name)
            - len(_revalidations(body))
            - _in_helpers(body, change.after_file, change.after.name)
        )
        if lost <= 0:
            return
        # The whole definition: a snapshot may come in as a parameter.
        references = _references(change.after.node)
        takes_snapshot = bool(syntax.calls(body, SNAPSHOT_CALLS))
        for check in [c for c in old_checks if change.is_removed(c)][:lost]:
            kept = [
                s
                for s in _snapshot_operands(check)
                if s in references and not _read_under_lock(body, s)
            ]
            if kept:
                confidence = Confidence.HIGH
                why = f"'{kept[0]}' is still used"
            elif takes_snapshot:
                confidence = Confidence.MEDIUM
                why = "the function still reads entries without the lock"
            else:
                continue
            yield change.finding(
                change.anchor_for(check),
                f"patch removes the re-validation '{_one_line(check)}' but {why}: the entry "
                "may have changed since it was read (zap, split, collapse, migration); "
                "compare it again under the lock and back off if it differs",
                confidence,
                key=f"removed:{syntax.node_key(check)}",
            )


def _revalidations(body: Node) -> list[Node]:
    """pmd_same()-style calls and `pmd_val(a) != pmd_val(b)` comparisons."""
    found = []
    for node in syntax.walk(body):
        if node.type == "call_expression" and syntax.call_name(node) in SAME_CALLS:
            found.append(node)
        elif node.type == "binary_expression" and syntax.text(
            node.child_by_field_name("operator")
        ) in ("==", "!="):
            sides = [_strip(node.child_by_field_name(f)) for f in ("left", "right")]
            if all(
                s is not None and s.type == "call_expression" and syntax.call_name(s) in VAL_CALLS
                for s in sides
            ):
                found.append(node)
    return found


def _in_helpers(body: Node, parsed: ParsedFile | None, own_name: str) -> int:
    """Re-validations one call away, in functions of the same file."""
    if parsed is None:
        return 0
    helpers = {f.name: f.body for f in parsed.functions if f.body is not None}
    return sum(
        len(_revalidations(helpers[name]))
        for call in syntax.calls(body)
        if (name := syntax.call_name(call)) in helpers and name != own_name
    )


def _read_under_lock(body: Node, name: str) -> bool:
    """Does `name` only ever get entries read fresh after a lock is taken?
    Then it is no snapshot any more, and needs no re-check.  A copy of
    another value (`entry = vmf->orig_pte`) is no fresh read."""
    locks = syntax.calls(body, LOCK_CALLS)
    if not locks:
        return False
    values = []
    for node in syntax.walk(body):
        if node.type == "assignment_expression" and (
            _normalized(node.child_by_field_name("left")) == name
        ):
            values.append(node.child_by_field_name("right"))
        elif node.type == "init_declarator" and (
            _normalized(node.child_by_field_name("declarator")) == name
        ):
            values.append(node.child_by_field_name("value"))
    return bool(values) and all(
        value is not None and value.start_byte > locks[0].start_byte and _fresh_read(value)
        for value in values
    )


def _fresh_read(value: Node) -> bool:
    return bool(syntax.calls(value, FRESH_READS)) or any(
        n.type == "pointer_expression" and syntax.text(n.child_by_field_name("operator")) == "*"
        for n in syntax.walk(value)
    )


def _strip(node: Node | None) -> Node | None:
    while node is not None and node.type == "parenthesized_expression":
        node = next(iter(node.named_children), None)
    return node


def _snapshot_operands(check: Node) -> list[str]:
    """The compared values that are names (the snapshot), not fresh reads."""
    if check.type == "call_expression":
        operands = syntax.arguments(check)
    else:
        operands = [
            arg
            for side in ("left", "right")
            if (call := _strip(check.child_by_field_name(side))) is not None
            for arg in syntax.arguments(call)[:1]
        ]
    return [
        _normalized(o)
        for o in map(_strip, operands)
        if o is not None and o.type in ("identifier", "field_expression")
    ]


def _references(body: Node) -> set[str]:
    return {
        _normalized(n) for n in syntax.walk(body) if n.type in ("identifier", "field_expression")
    }


def _normalized(node: Node) -> str:
    return re.sub(r"\s+", "", syntax.text(node))


def _one_line(node: Node) -> str:
    text = re.sub(r"\s+", " ", syntax.text(node))
    return text if len(text) <= 60 else text[:57] + "..."


RULE = LocklessSnapshotNotRevalidated
