"""A new BUG_ON() / VM_BUG_ON*() in mm code, worst on racy state.

## What it does
Flags a `BUG_ON()`, `VM_BUG_ON()`, `VM_BUG_ON_PAGE()`, `VM_BUG_ON_FOLIO()`,
`VM_BUG_ON_VMA()`, `VM_BUG_ON_MM()`, `VM_BUG_ON_PGFLAGS()` or
`if (...) BUG();` that a patch adds to mm code:
- WARNING when it asserts page-table state read without the page-table
  lock: a `pte_*()`/`pmd_*()`/`pud_*()` predicate on `*pmd`, on
  `ptep_get()`/`pmdp_get()`/`pmdp_get_lockless()`/`READ_ONCE()` of an entry,
  or on a local holding such a read, with no page-table lock taken before it
  in the function (`pmd_lock()`, `pte_offset_map_lock()`, `spin_lock()`,
  `pmd_trans_huge_lock()`, ...) and none asserted held;
- WARNING when it asserts a reference or map count (`folio_ref_count()`,
  `page_count()`, `folio_mapcount()`, ...) that was not frozen first, against
  a value other than zero (a count of zero cannot be raised by a speculative
  `folio_try_get()`, and "we hold a reference" keeps it non-zero).
- WARNING when it replaces a `WARN_ON*()`/`VM_WARN_ON*()` of the same
  condition: a warning with a way out became a crash.
Other new crash assertions are left to checkpatch, whose AVOID_BUG already
warns on every `BUG()` and `*BUG_ON*()` a patch adds: saying it twice is
noise.

Only what the patch adds is reported (an assertion only moved, re-indented
or renamed is not new), so `mmreview scan` reports nothing for this rule.

## Why is this bad?
mmap_lock does not freeze page tables: since v6.6 khugepaged retracts PTE
tables of file mappings without it (`retract_page_tables()`), page-table
entries change under GUP-fast, reclaim and migration, and reference counts
go up and down under speculative lookups.  An assertion on such a value
holds in testing and fires in production: the machine goes down (every
`VM_BUG_ON` is a `BUG_ON` with CONFIG_DEBUG_VM, which distributions and
syzbot enable) where backing off and retrying was the right answer.
Andrea Arcangeli on exactly such an assertion: "we'd want a VM_WARN_ON
only".  checkpatch's AVOID_BUG says the same of BUG() in general; the mm
reviewers' version is: warn once, and recover.

## Example
```c
        if (unlikely(pmd_none(dst_pmdval)) &&
            unlikely(__pte_alloc(dst_mm, dst_pmd)))
                return -ENOMEM;
        /* khugepaged may have retracted the table in between */
        BUG_ON(pmd_none(*dst_pmd));
        BUG_ON(pmd_trans_huge(*dst_pmd));
```

## Use instead
```c
        dst_pmdval = pmdp_get_lockless(dst_pmd);
        if (unlikely(!pmd_present(dst_pmdval) || pmd_trans_huge(dst_pmdval) ||
                     pmd_devmap(dst_pmdval)))
                return -EEXIST;         /* raced: let the caller retry */
        if (unlikely(pmd_bad(dst_pmdval)))
                return -EFAULT;
        VM_WARN_ON_ONCE(...);           /* for a real invariant, then recover */
```

## References
- 4828d207dc51 ("userfaultfd: don't BUG_ON() if khugepaged yanks our page table"),
  Fixes: 1d65b771bc08 ("mm/khugepaged: retract_page_tables() without mmap or vma lock")
- Andrea Arcangeli, <20171106203527.GB26645@redhat.com>
  (https://lore.kernel.org/all/20171106203527.GB26645@redhat.com/), on
  https://lore.kernel.org/all/20171103075231.25416-1-ying.huang@intel.com/
- c24d37322548 ("mm/gup: fix try_grab_compound_head() race with split_huge_page()"):
  a VM_BUG_ON_PAGE on a lockless refcount/head turned into a re-check
- 71c186efc1b2 ("userfaultfd: fix checks for huge PMDs")
- checkpatch.pl AVOID_BUG; Documentation/process/coding-style.rst, "Use WARN() rather than BUG()"
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.parsing import Function, ParsedFile
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# Assertion -> what mm reviewers ask for instead.
ASSERTIONS = {
    "BUG_ON": "WARN_ON_ONCE()",
    "VM_BUG_ON": "VM_WARN_ON_ONCE()",
    "VM_BUG_ON_PAGE": "VM_WARN_ON_ONCE_PAGE()",
    "VM_BUG_ON_FOLIO": "VM_WARN_ON_ONCE_FOLIO()",
    "VM_BUG_ON_VMA": "VM_WARN_ON_ONCE()",
    "VM_BUG_ON_MM": "VM_WARN_ON_ONCE_MM()",
    "VM_BUG_ON_PGFLAGS": "VM_WARN_ON_ONCE_PAGE()",
    "BUG": "WARN_ON_ONCE()",
}
PT_PREDICATE_RE = regex(r"(?:pte|pmd|pud|p4d|pgd)_\w+|is_swap_pmd|is_swap_pte|is_pmd_\w+")
# Reads of a page-table entry; the lockless ones say so themselves.
ENTRY_READS = frozenset({"ptep_get", "pmdp_get", "pudp_get", "p4dp_get", "pgdp_get"})
LOCKLESS_READS = frozenset(
    {"ptep_get_lockless", "pmdp_get_lockless", "pudp_get_lockless", "READ_ONCE"}
)
PT_LOCKS = frozenset(
    {
        "get_locked_pte",
        "pmd_lock",
        "pud_lock",
        "pte_offset_map_lock",
        "__pte_offset_map_lock",
        "pmd_trans_huge_lock",
        "pud_trans_huge_lock",
        "huge_pte_lock",
        "spin_lock",
        "spin_lock_nested",
        "spin_lock_irq",
        "spin_lock_irqsave",
        "spin_trylock",
    }
)
PT_UNLOCKS = frozenset(
    {"spin_unlock", "pte_unmap_unlock", "spin_unlock_irq", "spin_unlock_irqrestore"}
)
# The caller holds the lock: the function says so.
HELD_ASSERTS = frozenset({"lockdep_assert_held", "assert_spin_locked"})
COUNTS = frozenset(
    {
        "folio_ref_count",
        "page_ref_count",
        "page_count",
        "folio_mapcount",
        "page_mapcount",
        "folio_entire_mapcount",
        "folio_large_mapcount",
        "folio_mapped",
        "page_mapped",
        "folio_maybe_dma_pinned",
        "page_maybe_dma_pinned",
        "folio_expected_ref_count",
    }
)
COUNTER_READS = frozenset({"atomic_read", "atomic_long_read", "refcount_read"})
COUNTER_FIELD_RE = regex(r"_refcount|_mapcount|mapcount|_users|_count\b|refcount")
FREEZES = frozenset({"folio_ref_freeze", "page_ref_freeze"})


class MmBugOn(FunctionRule):
    id = "MM_BUG_ON"
    severity = Severity.WARNING
    summary = (
        "new BUG_ON()/VM_BUG_ON*() in mm: on racy page-table state or refcounts, warn and recover"
    )
    paths = (
        "mm/*",
        "fs/userfaultfd.c",
        "include/linux/mm*.h",
        "include/linux/huge_mm.h",
        "include/linux/hugetlb.h",
        "include/linux/page_ref.h",
        "include/linux/pagemap.h",
        "include/linux/pgtable.h",
        "include/linux/rmap.h",
        "include/linux/swapops.h",
        "include/linux/userfaultfd_k.h",
    )

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None or not change.added_rows:
            return
        fresh = _new_assertions(change, body)
        if not fresh:
            return
        entries = _entry_locals(body)
        warnings_removed = _removed_warning_conditions(change)
        for assertion in fresh:
            name = syntax.call_name(assertion) or ""
            condition = _condition(assertion)
            # `if (x) BUG();` is reported where the if starts.
            call = (
                condition.parent if name == "BUG" and condition and condition.parent else assertion
            )
            instead = ASSERTIONS[name]
            reads = _table_reads(condition, entries) if condition is not None else []
            if reads and not _pt_lock_held(change.after, body, call, change.after_file):
                lockless = any(kind == "lockless" for kind, _ in reads)
                yield change.finding(
                    call,
                    f"{name}() on page-table state read without the page-table lock "
                    f"({syntax.text(reads[0][1])}): entries change under khugepaged's "
                    "retract_page_tables(), GUP-fast, reclaim and migration even with mmap_lock "
                    f"held; back off (return -EAGAIN/-EEXIST, retry) and use {instead} "
                    "for a true invariant",
                    Confidence.HIGH if lockless else Confidence.MEDIUM,
                    key=f"racy-pt:{syntax.node_key(call)}",
                )
                continue
            counts = _counts(condition) if condition is not None else []
            counts = [c for c in counts if _compared_to_nonzero(c)]
            if counts and not _frozen_before(body, call):
                yield change.finding(
                    call,
                    f"{name}() on a reference or map count ({syntax.text(counts[0])}): counts "
                    "move under speculative references (GUP-fast, page-cache lookups, "
                    f"migration) unless frozen; use {instead} and recover",
                    Confidence.MEDIUM,
                    key=f"racy-count:{syntax.node_key(call)}",
                )
                continue
            if condition is not None and _spelled(condition) in warnings_removed:
                yield change.finding(
                    call,
                    f"patch turns a warning into {name}(): the condition was judged worth a "
                    f"warning and a way out; keep {instead} and the recovery",
                    Confidence.HIGH,
                    key=f"warn-to-bug:{syntax.node_key(call)}",
                )


def _new_assertions(change: FunctionChange, body: Node) -> list[Node]:
    """Assertions on lines the patch added that were not there: one the
    file had before (names abstracted) was moved, re-indented or renamed;
    and while the function has no more assertions of a kind than before, an
    added one rewrites a removed one."""
    added = [c for c in _assertions(body) if change.is_added(c)]
    if not added:
        return []
    old = _file_assertions(change.before_file, change.before)
    new = _file_assertions(change.after_file, change.after)
    spare_keys = Counter(map(syntax.node_key, new)) - Counter(map(syntax.node_key, old))
    before = change.before.body if change.before is not None else None
    spare_kinds = Counter(map(syntax.call_name, _assertions(body))) - Counter(
        map(syntax.call_name, _assertions(before) if before is not None else [])
    )
    fresh = []
    for call in added:
        key, kind = syntax.node_key(call), syntax.call_name(call)
        if spare_keys[key] > 0 and spare_kinds[kind] > 0:
            spare_keys[key] -= 1
            spare_kinds[kind] -= 1
            fresh.append(call)
    return fresh


def _file_assertions(file: ParsedFile | None, function: Function | None) -> list[Node]:
    if file is not None:
        return [c for f in file.functions if f.body is not None for c in _assertions(f.body)]
    if function is not None and function.body is not None:
        return _assertions(function.body)
    return []


def _assertions(body: Node) -> list[Node]:
    return syntax.calls(body, ASSERTIONS)


def _condition(call: Node) -> Node | None:
    """What the assertion asserts: the argument, or for `if (x) BUG();` x."""
    if syntax.call_name(call) != "BUG":
        args = syntax.arguments(call)
        return args[0] if args else None
    statement = call.parent
    if statement is None or statement.type != "expression_statement":
        return None
    owner = statement.parent
    if owner is not None and owner.type == "compound_statement":
        if len([c for c in owner.named_children if c.type != "comment"]) != 1:
            return None
        owner = owner.parent
    if owner is None or owner.type != "if_statement":
        return None
    return owner.child_by_field_name("condition")


def _entry_locals(body: Node) -> dict[str, str]:
    """Locals assigned a page-table entry read: name -> "lockless" or "read"."""
    found: dict[str, str] = {}
    for node in syntax.walk(body):
        if node.type == "init_declarator":
            name, value = node.child_by_field_name("declarator"), node.child_by_field_name("value")
        elif (
            node.type == "assignment_expression"
            and syntax.text(node.child_by_field_name("operator")) == "="
        ):
            name, value = node.child_by_field_name("left"), node.child_by_field_name("right")
        else:
            continue
        if name is None or value is None or name.type != "identifier":
            continue
        kind = _read_kind(value)
        if kind is not None:
            found[syntax.text(name)] = kind
    return found


def _read_kind(value: Node) -> str | None:
    """Is this expression a read of a page-table entry, and of which kind?"""
    while value.type == "parenthesized_expression" and value.named_children:
        value = value.named_children[0]
    if value.type == "pointer_expression" and syntax.text(value).startswith("*"):
        return "read"
    if value.type == "call_expression":
        name = syntax.call_name(value)
        if name in LOCKLESS_READS:
            args = syntax.arguments(value)
            # READ_ONCE() of anything but an entry is not ours.
            if name != "READ_ONCE" or (args and syntax.text(args[0]).startswith("*")):
                return "lockless"
        if name in ENTRY_READS:
            return "read"
    return None


def _table_reads(condition: Node, entries: dict[str, str]) -> list[tuple[str, Node]]:
    """Page-table predicates in the condition applied to a table read."""
    reads = []
    for call in syntax.calls(condition):
        name = syntax.call_name(call) or ""
        if not PT_PREDICATE_RE.fullmatch(name) or name in ENTRY_READS | LOCKLESS_READS:
            continue
        for arg in syntax.arguments(call)[:1]:
            kind = _read_kind(arg)
            if kind is None and arg.type == "identifier":
                kind = entries.get(syntax.text(arg))
            if kind is not None:
                reads.append((kind, call))
    return reads


def _pt_lock_held(
    function: Function, body: Node, node: Node, file: ParsedFile | None = None
) -> bool:
    """A page-table lock taken before `node` and not dropped in between, or
    held by the caller: as the function states, or as walk_page_range()
    holds it for a pte_entry callback."""
    called = syntax.calls(body)
    names = {syntax.call_name(c) for c in called}
    if names & HELD_ASSERTS or function.name.endswith("_locked"):
        return True
    head = function.image.text[function.node.start_byte : body.start_byte]
    if b"__must_hold" in head or (b"struct mm_walk" in head and b"pte_t *" in head):
        return True
    acquire, release = PT_LOCKS | _lock_helpers(file, PT_LOCKS, PT_UNLOCKS), PT_UNLOCKS
    taken = [c for c in called if syntax.call_name(c) in acquire and c.end_byte <= node.start_byte]
    if not taken:
        return False
    last = max(c.start_byte for c in taken)
    return not any(
        syntax.call_name(c) in release
        and last < c.start_byte < node.start_byte
        and not _on_other_branch(c, node)
        for c in called
    )


def _lock_helpers(
    file: ParsedFile | None, acquire: frozenset[str], release: frozenset[str]
) -> frozenset[str]:
    """Same-file functions that return with a page-table lock taken."""
    if file is None:
        return frozenset()
    found = set()
    for helper in file.functions:
        if helper.body is None:
            continue
        called = {syntax.call_name(c) for c in syntax.calls(helper.body)}
        if called & acquire and not called & release:
            found.add(helper.name)
    return frozenset(found)


def _counts(condition: Node) -> list[Node]:
    return [
        call
        for call in syntax.calls(condition)
        if syntax.call_name(call) in COUNTS
        or (syntax.call_name(call) in COUNTER_READS and COUNTER_FIELD_RE.search(syntax.text(call)))
    ]


WARNINGS = frozenset(
    {
        "WARN_ON",
        "WARN_ON_ONCE",
        "VM_WARN_ON",
        "VM_WARN_ON_ONCE",
        "VM_WARN_ON_FOLIO",
        "VM_WARN_ON_ONCE_FOLIO",
        "VM_WARN_ON_ONCE_PAGE",
        "VM_WARN_ON_VMA",
        "VM_WARN_ON_ONCE_MM",
    }
)


def _removed_warning_conditions(change: FunctionChange) -> set[str]:
    """Conditions of the warnings the patch took out of the function."""
    if change.before is None or change.before.body is None:
        return set()
    # The very same condition: with names abstracted, `PageLRU(head)` and
    # `PageLRU(tail)` would look alike.
    return {
        _spelled(arguments[0])
        for warning in syntax.calls(change.before.body, WARNINGS)
        if change.is_removed(warning) and (arguments := syntax.arguments(warning))
    }


def _spelled(node: Node) -> str:
    return " ".join(syntax.text(node).split())


def _compared_to_nonzero(count: Node) -> bool:
    """`folio_ref_count(f) != 2` or `< 0`, not `folio_ref_count(f)`,
    `!page_count(p)` or `== 0`."""
    parent = syntax.unparenthesized_parent(count)
    if parent is None or parent.type != "binary_expression":
        return False
    if syntax.text(parent.child_by_field_name("operator")) not in COMPARISON_OPERATORS:
        return False
    left, right = parent.child_by_field_name("left"), parent.child_by_field_name("right")
    other = right if left is not None and left.start_byte == count.start_byte else left
    operator = syntax.text(parent.child_by_field_name("operator"))
    return operator not in ("==", "!=") or syntax.text(other).strip() not in ("0", "0UL", "0L")


COMPARISON_OPERATORS = frozenset({"==", "!=", "<", ">", "<=", ">="})


def _frozen_before(body: Node, node: Node) -> bool:
    return any(c.start_byte < node.start_byte for c in syntax.calls(body, FREEZES))


def _on_other_branch(node: Node, other: Node) -> bool:
    branch = syntax.enclosing(node, "if_statement")
    return branch is not None and not syntax.within(other, branch)


RULE = MmBugOn
