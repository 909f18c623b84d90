"""A page-table entry read with a plain `*pmdp` / `*ptep` dereference.

## What it does
Flags, with high confidence, a patch that replaces an accessor read of a
page-table entry (`pmdp_get_lockless()`, `ptep_get_lockless()`,
`READ_ONCE(*p)`, `ptep_get()`, `pmdp_get()`, `pudp_get()`) by a plain
dereference `*p` or `p[i]` of a `pte_t *`, `pmd_t *` or `pud_t *` (types
resolved from the function's declarations).  With medium confidence it flags
any new plain read of a `pte_t *` outside include/ (where the accessors
are implemented): generic mm code reads PTEs through `ptep_get()` since
v6.5.

Plain `*pmd` reads are common and legitimate under the PMD lock, so a new
one is only flagged when it takes the place of an accessor, and only where
the lock is not held on every path to it (the flow layer says which locks
are) unless the accessor replaced was a lockless one.  Before v6.5 (the
tree's Makefile says), generic code read PTEs plainly and new plain PTE
reads are not flagged.

## Why is this bad?
A page-table entry read without its lock can change at any moment: the
compiler may re-load a plain `*pmdp` between two uses (two different values
for one decision), and on 32-bit PAE a 64-bit PMD or PTE read with one plain
load can tear into halves of two different entries.  `pmdp_get_lockless()`
and `ptep_get_lockless()` read the entry once and consistently;
`READ_ONCE()` at least reads it once.  And since the `ptep_get()`
conversion (v6.5), architectures such as arm64 with contiguous PTEs rely on
every generic PTE read going through `ptep_get()` to fold in the access and
dirty bits of the whole block: a plain `*ptep` misses them.

## Example
```c
        pmd_t pmdval = *pmdp;		/* lockless: may tear or be re-read */

        if (pmd_none(pmdval) || pmd_trans_huge(pmdval))
                return 0;
```

## Use instead
```c
        pmd_t pmdval = pmdp_get_lockless(pmdp);

        if (pmd_none(pmdval) || pmd_trans_huge(pmdval))
                return 0;
```

## References
- c33c794828f2 ("mm: ptep_get() conversion"), Ryan Roberts, v6.5
- dab6e717429e ("mm: Rename pmd_read_atomic()"), Peter Zijlstra, v6.2
  (pmdp_get_lockless() for torn PAE reads)
- a365ac09d334 ("mm, userfaultfd, THP: avoid waiting when PMD under THP migration"):
  "Read the PMD once",
  https://lore.kernel.org/all/20171103075231.25416-1-ying.huang@intel.com/
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

ENTRY_POINTERS = frozenset({"pte_t *", "pmd_t *", "pud_t *"})
LOCKLESS_ACCESSORS = frozenset({"pmdp_get_lockless", "ptep_get_lockless", "READ_ONCE"})
ACCESSORS = LOCKLESS_ACCESSORS | {"ptep_get", "pmdp_get", "pudp_get", "huge_ptep_get"}
# c33c794828f2 ("mm: ptep_get() conversion"), v6.5.
PTEP_GET_SINCE = (6, 5)


class PtEntryPlainDeref(FunctionRule):
    id = "PT_ENTRY_PLAIN_DEREF"
    severity = Severity.WARNING
    summary = "page-table entry read with a plain dereference instead of its accessor"
    paths = ()
    api = r"\b(?:pte|pmd|pud)_t\s*\*"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None:
            return
        reads = _plain_reads(change.flow, body)
        flagged: set[int] = set()
        if change.before is not None and change.before.body is not None:
            old_body = change.before.body
            before = change.before_flow
            assert before is not None
            old_accessors = _accessor_reads(before, old_body, ACCESSORS)
            lost = len(old_accessors) - len(_accessor_reads(change.flow, body, ACCESSORS))
            gained = len(reads) - len(_plain_reads(before, old_body))
            removed = [c for c in old_accessors if change.is_removed(c)]
            budget = min(lost, gained)
            for node, kind in reads:
                if budget <= 0 or not change.is_added(node):
                    continue
                partner = _partner(change, node, removed)
                if partner is None:
                    continue
                removed.remove(partner)
                budget -= 1
                flagged.add(node.id)
                lockless = syntax.call_name(partner) in LOCKLESS_ACCESSORS
                if not lockless and kind == "pmd_t *" and change.flow.holds(node):
                    continue  # a PMD read under its lock may be plain
                plain = f"'{syntax.text(node)}' ({kind})"
                if lockless:
                    message = (
                        f"patch replaces the lockless {syntax.call_name(partner)}() by the plain "
                        f"{plain}: without the lock the entry can be re-loaded between uses and "
                        f"tear on 32-bit; read it once with {_accessor_for(kind, True)}"
                    )
                else:
                    message = (
                        f"patch replaces {syntax.call_name(partner)}() by the plain {plain}: "
                        f"read it with {_accessor_for(kind, False)}, which architectures with "
                        "contiguous entries rely on (and which reads it once)"
                    )
                yield change.finding(
                    node,
                    message,
                    Confidence.HIGH,
                    severity=Severity.ERROR if lockless else None,
                )
        if change.path.startswith("include/") or "/include/" in change.path:
            return  # where the accessors themselves are implemented
        if (change.flow.version or PTEP_GET_SINCE) < PTEP_GET_SINCE:
            return  # generic code read PTEs plainly before the conversion
        for node, kind in reads:
            if kind != "pte_t *" or node.id in flagged:
                continue
            yield change.finding(
                node,
                f"plain '{syntax.text(node)}' reads a PTE: use ptep_get() "
                "(ptep_get_lockless() without the PTL), which architectures with contiguous "
                "PTEs rely on",
                Confidence.MEDIUM,
            )


def _accessor_for(kind: str, lockless: bool) -> str:
    level = kind.split("_")[0]
    if level == "pud":
        return "pudp_get()"
    return f"{level}p_get_lockless()" if lockless else f"{level}p_get()"


def _entry_pointer(flow: FunctionFlow, node: Node | None) -> str | None:
    """The entry-pointer type of a name or field (`pvmw->pmd`), if it is one."""
    if node is None or node.type not in ("identifier", "field_expression"):
        return None
    declared = flow.type_of(node)
    return declared if declared in ENTRY_POINTERS else None


def _plain_reads(flow: FunctionFlow, body: Node) -> list[tuple[Node, str]]:
    """`*p` and `p[i]` reads (not stores) of entry pointers, in order."""
    reads = []
    for node in syntax.walk(body):
        if node.type == "pointer_expression":
            if syntax.text(node.child_by_field_name("operator")) != "*":
                continue
            target = node.child_by_field_name("argument")
        elif node.type == "subscript_expression":
            target = node.child_by_field_name("argument")
        else:
            continue
        kind = _entry_pointer(flow, target)
        if kind is None or _is_store(node) or _inside_accessor(node):
            continue
        reads.append((node, kind))
    return reads


def _is_store(node: Node) -> bool:
    parent = node.parent
    while parent is not None and parent.type == "parenthesized_expression":
        node, parent = parent, parent.parent
    if parent is None:
        return False
    if parent.type == "assignment_expression" and parent.child_by_field_name("left") == node:
        return True
    # &p[i] is an address, not a read
    return (
        parent.type == "pointer_expression"
        and syntax.text(parent.child_by_field_name("operator")) == "&"
    )


def _inside_accessor(node: Node) -> bool:
    """`READ_ONCE(*pmdp)` is the accessor, not a plain read."""
    parent = node.parent
    while parent is not None and parent.type == "parenthesized_expression":
        parent = parent.parent
    if parent is None or parent.type != "argument_list" or parent.parent is None:
        return False
    return syntax.call_name(parent.parent) in ("READ_ONCE", "WRITE_ONCE")


def _accessor_reads(flow: FunctionFlow, body: Node, names: frozenset[str]) -> list[Node]:
    found = []
    for call in syntax.calls(body, names):
        args = syntax.arguments(call)
        if not args:
            continue
        if syntax.call_name(call) == "READ_ONCE":
            # READ_ONCE(*p) / READ_ONCE(p[i]) of an entry pointer only
            arg = args[0]
            if arg.type not in ("pointer_expression", "subscript_expression"):
                continue
            if _entry_pointer(flow, arg.child_by_field_name("argument")) is None:
                continue
        found.append(call)
    return found


def _pointer(node: Node) -> str:
    """The entry pointer a read goes through: `pmd` for *pmd, pmd[i],
    pmdp_get_lockless(pmd), READ_ONCE(*pmd)."""
    if node.type == "call_expression":
        args = syntax.arguments(node)
        node = args[0] if args else node
    while node.type in ("pointer_expression", "subscript_expression", "parenthesized_expression"):
        inner = node.child_by_field_name("argument") or next(iter(node.named_children), None)
        if inner is None:
            break
        node = inner
    return syntax.text(node)


def _partner(change: FunctionChange, read: Node, removed: list[Node]) -> Node | None:
    """The removed accessor call this plain read replaces: one through the
    same pointer, else one whose lines the added block holding it replaced."""
    same = [c for c in removed if _pointer(c) == _pointer(read)]
    if same:
        return same[0]
    assert change.before is not None
    line = change.after.image.real_line(read.start_point.row)
    for call in removed:
        start = end = change.post_line_of(change.before.image.real_line(call.start_point.row))
        while end + 1 in change.added_lines:
            end += 1
        if start - 1 <= line <= end + 1:
            return call
    return None


RULE = PtEntryPlainDeref
