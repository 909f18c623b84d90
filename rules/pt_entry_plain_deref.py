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

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

LOCKLESS_ACCESSORS = frozenset(
    {"pmdp_get_lockless", "ptep_get_lockless", "pmd_read_atomic", "READ_ONCE"}
)
# c33c794828f2 ("mm: ptep_get() conversion"), v6.5.
PTEP_GET_SINCE = (6, 5)


class PtEntryPlainDeref(FunctionRule):
    id = "PT_ENTRY_PLAIN_DEREF"
    severity = Severity.WARNING
    summary = "page-table entry read with a plain dereference instead of its accessor"
    paths = ()
    api = r"\b(?:pte|pmd|pud)_t\s*\*"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        reads = change.flow.entry_reads
        plain = [read for read in reads if read.accessor is None]
        flagged: set[int] = set()
        if change.before_flow is not None:
            old_reads = change.before_flow.entry_reads
            old_accessors = [read for read in old_reads if read.accessor]
            lost = len(old_accessors) - sum(1 for read in reads if read.accessor)
            gained = len(plain) - (len(old_reads) - len(old_accessors))
            removed = [read for read in old_accessors if change.is_removed(read.node)]
            for read in plain:
                if len(flagged) >= min(lost, gained) or not change.is_added(read.node):
                    continue
                by_node = {old.node.id: old for old in removed}
                replaced = change.replaced(
                    read.node,
                    [old.node for old in removed],
                    lambda node, by_node=by_node, read=read: (
                        by_node[node.id].pointer == read.pointer
                    ),
                )
                if replaced is None:
                    continue
                partner = by_node[replaced.id]
                removed.remove(partner)
                flagged.add(read.node.id)
                accessor, kind = partner.accessor, read.pointer_type or ""
                lockless = accessor in LOCKLESS_ACCESSORS
                if not lockless and kind == "pmd_t *" and change.flow.holds(read.node):
                    continue  # a PMD read under its lock may be plain
                shown = f"'{syntax.text(read.node)}' ({kind})"
                if lockless:
                    message = (
                        f"patch replaces the lockless {accessor}() by the plain {shown}: "
                        "without the lock the entry can be re-loaded between uses and tear "
                        f"on 32-bit; read it once with {_accessor_for(change.flow, kind, True)}"
                    )
                else:
                    advice = _accessor_for(change.flow, kind, False)
                    message = (
                        f"patch replaces {accessor}() by the plain {shown}: read it with "
                        f"{advice}, which architectures with contiguous entries rely on (and "
                        "which reads it once)"
                    )
                yield change.finding(
                    read.node,
                    message,
                    Confidence.HIGH,
                    severity=Severity.ERROR if lockless else None,
                )
        if change.path.startswith("include/") or "/include/" in change.path:
            return  # where the accessors themselves are implemented
        if (change.flow.version or PTEP_GET_SINCE) < PTEP_GET_SINCE:
            return  # generic code read PTEs plainly before the conversion
        for read in plain:
            if read.pointer_type != "pte_t *" or read.node.id in flagged:
                continue
            yield change.finding(
                read.node,
                f"plain '{syntax.text(read.node)}' reads a PTE: use ptep_get() "
                "(ptep_get_lockless() without the PTL), which architectures with contiguous "
                "PTEs rely on",
                Confidence.MEDIUM,
            )


def _accessor_for(flow: FunctionFlow, kind: str, lockless: bool) -> str:
    """The accessor to advise, among those the tree has (6.1 had
    pmd_read_atomic(), not pmdp_get_lockless())."""
    level = kind.split("_")[0]
    if lockless:
        candidates = [f"{level}p_get_lockless", "pmd_read_atomic" if level == "pmd" else ""]
    else:
        candidates = [f"{level}p_get"]
    found = [c for c in candidates if c and flow.declarations.declares(c) is not False]
    return f"{found[0]}()" if found else f"READ_ONCE(*{level})"


RULE = PtEntryPlainDeref
