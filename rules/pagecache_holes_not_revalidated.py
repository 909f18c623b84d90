"""A patch removes the re-validation done before holes are filled.

## What it does
Flags a patch that takes away one of the checks made before the kernel
fills a hole that userspace may be watching:
- in file/shmem collapse (`collapse_file()`), the re-count of the holes
  under the final lock: the walk over the range that stores
  `XA_RETRY_ENTRY` into every empty slot and counts them, under
  `xas_lock_irq()`, and the comparison of that count with the one taken
  during the scan (`nr_none`);
- the missing-mode userfaultfd check, `userfaultfd_missing(vma)`, for every
  VMA mapping the range (`vma_interval_tree_foreach(..., start, end)`
  under `i_mmap_lock_read()`), or on a fault path before a page or the
  zero page is mapped into the hole (`do_anonymous_page()`,
  `shmem_get_folio_gfp()`, `hugetlb_no_page()`, ...);
- a walk over the mappings of the collapsed range narrowed to a single
  index (`start, start` instead of `start, end`), and re-validation moved
  out from under the lock it needs.

A check moved into a helper of the tree counts as made.  The rule looks at
what a patch removes, so it never reports code as it already is, and a
removed missing-mode check must be on a line the patch removes from the
function itself (the test, or the call to a helper making it).  A check
still there but narrowed counts as removed: a re-count compared with `<`
instead of `!=` misses the holes that were filled, and a missing-mode
test that no longer stands on every path to the hole filling (`wp &&
userfaultfd_missing(vma)`) misses the others.  Which locks are held comes
from the flow layer, helpers that take the lock included.  Before
accusing, the rule reads the post-image generously: helpers as the patch
found them or as it leaves them (a helper the patch changes is judged on
its own), and calls the patch adds followed a few levels deep
(`do_anonymous_page()` reached through a new `do_pte_missing()`).

## Why is this bad?
Between the scan of the page cache and the moment the huge folio replaces
the small ones, khugepaged drops the xarray lock many times.  Holes it
counted early may have been filled (a fault, `fallocate()`, UFFDIO_COPY),
so the count must be taken again, under the lock held while the huge
folio goes in; the `XA_RETRY_ENTRY` stored in each hole makes RCU readers
retry instead of seeing a state that may still be rolled back.
A VMA registered with userfaultfd in MISSING mode has been promised a fault
for every missing page: filling the hole behind its back (with a copy of
zeroes, a new folio or the zero page) means userspace never gets the
UFFD_EVENT_PAGEFAULT it waits for and its UFFDIO_COPY then fails with
-EEXIST.  Only MISSING mode gives that promise (wp and minor modes do not),
so this is the check that must stay, for every VMA mapping the range.

## Example
```c
        i_mmap_lock_read(mapping);
        xas_lock_irq(&xas);
        /* holes counted during the scan are trusted: */
        vma_interval_tree_foreach(vma, &mapping->i_mmap, start, start) {
                ...
```

## Use instead
```c
        i_mmap_lock_read(mapping);
        xas_lock_irq(&xas);
        xas_set(&xas, start);
        for (index = start; index < end; index++) {
                if (!xas_next(&xas)) {
                        xas_store(&xas, XA_RETRY_ENTRY);
                        nr_none_check++;
                }
        }
        if (nr_none != nr_none_check) {
                result = SCAN_PAGE_FILLED;
                goto immap_locked;
        }
        vma_interval_tree_foreach(vma, &mapping->i_mmap, start, end) {
                if (userfaultfd_missing(vma)) {
                        result = SCAN_EXCEED_NONE_PTE;
                        goto immap_locked;
                }
        }
```

## References
- ac492b9c70ca ("mm/khugepaged: skip shmem with userfaultfd"),
  https://lore.kernel.org/all/20230404120117.2562166-4-stevensd@google.com/
- Thread (v2): https://lore.kernel.org/all/20230206112856.1802547-1-stevensd@google.com/
  (Matthew Wilcox on not filling holes early,
  <Y+EN6oDi5k5L9651@casper.infradead.org>; Peter Xu on synchronising with
  new registrations, <Y+Fq8lwsl7RXwlNS@x1n>)
- cae106dd67b9 ("mm/khugepaged: refactor collapse_file control flow")
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow.guards import checks_by, lost_checks
from analyzer.flow.orders import ORDERS, notices_every_difference
from analyzer.parsing import Function
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

MISSING_CHECKS = frozenset({"userfaultfd_missing"})
# Replacing the missing-mode test by the wider "any mode" one keeps the promise.
MISSING_OR_WIDER = MISSING_CHECKS | {"userfaultfd_armed"}
XA_READERS = frozenset(
    {"xas_next", "xas_load", "xas_find", "xas_next_entry", "xas_find_marked", "xas_prev"}
)
# The xarray's lock: `spin:xas` for xas_lock_irq(&xas), `spin:mapping->i_pages`.
XA_LOCK = regex(r"spin:.*\b(?:xas|i_pages|xa)\b")
# A function none of whose words these match makes no re-validation (it
# tests no uffd mode, stores no retry entry, walks no VMAs, reads no xarray):
# a helper is read through only when its text has one.
GUARD_WORDS = regex(r"\b(?:userfaultfd_\w+|xas?_\w+|vma_interval_tree_foreach)\b")
LOOPS = ("for_statement", "while_statement", "do_statement")
# How far a call the patch adds is followed for a missing-mode check still
# made: handle_pte_fault() -> do_pte_missing() -> do_anonymous_page() is two.
ADDED_CALL_DEPTH = 3

MESSAGES = {
    "missing": (
        Severity.ERROR,
        "patch removes the userfaultfd_missing() check before a hole is filled: a VMA "
        "registered in MISSING mode was promised a fault for every missing page, and gets a "
        "page it never asked for instead",
    ),
    "missing-locked": (
        Severity.WARNING,
        "the missing-mode userfaultfd check over mapping->i_mmap is no longer made under "
        "i_mmap_lock_read() taken before the holes were re-counted: a registration racing with "
        "the collapse goes unseen",
    ),
    "recount": (
        Severity.ERROR,
        "patch removes the re-count of the holes under the final lock: holes counted during "
        "the scan may have been filled since the xarray lock was dropped; count them again "
        "under xas_lock_irq() and bail out (SCAN_PAGE_FILLED) when the counts differ",
    ),
    "retry": (
        Severity.ERROR,
        "patch removes the XA_RETRY_ENTRY store into the holes: RCU readers and late "
        "userfaultfd registrations would see holes that are about to be filled",
    ),
    "ranged-walk": (
        Severity.ERROR,
        "the walk over the VMAs mapping the collapsed range is narrowed to a single index: "
        "VMAs mapping the rest of the range are never checked for missing-mode userfaultfd; "
        "walk [start, end)",
    ),
}

# The re-validations a function makes, by kind: where each is made.
Guards = defaultdict[str, list[Node]]


class PagecacheHolesNotRevalidated(FunctionRule):
    id = "PAGECACHE_HOLES_NOT_REVALIDATED"
    severity = Severity.ERROR
    summary = (
        "patch removes the re-count of page-cache holes under the final lock or the "
        "missing-mode userfaultfd check made before holes are filled"
    )
    paths = ("mm/*",)

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        # Only what a patch takes away: without a pre-image there is nothing to lose.
        before, after = change.before_flow, change.flow
        if before is None or change.after.body is None:
            return
        old = _guards(before)
        if not old:
            return
        new = _guards(after, before, change)
        lost = {kind: len(old[kind]) - len(new[kind]) for kind in MESSAGES}
        if lost["missing"] <= 0 and _missing_narrowed(change):
            lost["missing"] = 1
        for kind, (severity, message) in MESSAGES.items():
            if lost[kind] <= 0:
                continue
            if kind == "missing" and not any(
                change.is_removed(site) and syntax.call_name(site) != "userfaultfd_armed"
                for site in old["missing"]
            ):
                continue  # only userfaultfd_armed() went: another lesson's
            # A check that lost its lock but is still there is reported as
            # that, not also as a lost lock of a check that is gone.
            base = kind.removesuffix("-locked")
            if base != kind and lost[base] > 0:
                continue
            removed = [site for site in old[kind] if change.is_removed(site)]
            added = [site for site in new[base] if change.is_added(site)]
            anchor = (
                change.anchor_for(removed[0])
                if removed
                else added[0]
                if added
                else change.first_change()
            )
            yield change.finding(
                anchor,
                message,
                Confidence.HIGH if severity is Severity.ERROR else Confidence.MEDIUM,
                key=f"lost:{kind}",
                severity=severity,
            )


def _missing_narrowed(change: FunctionChange) -> bool:
    """Is a missing-mode check still there, but no longer on every path to
    what it guarded (`wp && userfaultfd_missing(vma)`)?"""
    before, after = change.before_flow, change.flow
    assert before is not None
    lost = lost_checks(
        before,
        after,
        removed=change.is_removed,
        is_check=lambda node: syntax.call_name(node) in MISSING_CHECKS,
        vouches_before=checks_by(before, MISSING_OR_WIDER, ADDED_CALL_DEPTH),
        vouches_after=checks_by(after, MISSING_OR_WIDER, ADDED_CALL_DEPTH),
        proceeds=lambda node, _: False if syntax.call_name(node) in MISSING_OR_WIDER else None,
        key="missing",
    )
    return next(lost, None) is not None


def _guards(
    flow: FunctionFlow, before: FunctionFlow | None = None, change: FunctionChange | None = None
) -> Guards:
    """The re-validations the function makes, itself or through the helpers
    of the tree it calls.  For a post-image (`before` given), each helper
    also as the patch found it, whichever makes more (a helper the patch
    changes is judged on its own), and the calls the patch adds followed
    ADDED_CALL_DEPTH levels for a missing-mode check."""
    guards = _own_guards(flow)
    readings = [flow] if before is None else [flow, before]
    for call in flow.calls():
        name = syntax.call_name(call) or ""
        if name == flow.function.name:
            continue
        made: dict[str, int] = {}
        for reading in readings:
            # Most helpers make no re-validation: whether one may is kept
            # with its header, and the helper is parsed only if it may.
            may_guard = reading.summaries.kept(name, "guard words", _guard_words, _is_bool)
            if may_guard is None:
                continue
            counts: dict[str, int] = {}
            if may_guard and (helper := reading.summaries.located(name)) is not None:
                helper_flow = FunctionFlow(*helper[:2], reading.context, helper[2])
                counts = {
                    kind: len(sites)
                    for kind, sites in _own_guards(
                        helper_flow, lambda call=call: _xa_held(flow, call)
                    ).items()
                }
            if change is not None and change.is_added(call):
                counts["missing"] = max(
                    counts.get("missing", 0), _missing_made(reading, name, ADDED_CALL_DEPTH)
                )
            if counts.get("missing") and _range_walk_locked(flow, call):
                counts["missing-locked"] = counts["missing"]
            for kind, count in counts.items():
                made[kind] = max(made.get(kind, 0), count)
        for kind, count in made.items():
            guards[kind].extend([call] * count)
    return guards


def _guard_words(helper: Function) -> bool | None:
    """Does the helper's body name a re-validation (None: it has no body)?"""
    return bool(GUARD_WORDS.search(syntax.text(helper.body))) if helper.body is not None else None


def _is_bool(known: object) -> bool:
    return known is None or type(known) is bool


def _missing_made(
    flow: FunctionFlow, name: str, depth: int, seen: frozenset[str] = frozenset()
) -> int:
    """How many missing-mode checks a call of `name` makes, down `depth`
    levels of the tree's functions: a new wrapper (`do_pte_missing()` for
    `do_anonymous_page()` and `do_fault()`) makes all of its callees'."""
    helper = flow.summaries.definition(name) if depth > 0 and name not in seen else None
    if helper is None or helper.body is None:
        return 0
    made = 0
    for call in syntax.calls(helper.body):
        callee = syntax.call_name(call) or ""
        if callee in MISSING_OR_WIDER:
            made += 1
        elif callee:
            made += _missing_made(flow, callee, depth - 1, seen | {name})
    return made


def _own_guards(flow: FunctionFlow, xa_held: Callable[[], bool] = lambda: False) -> Guards:
    """The re-validations the function makes itself; `xa_held()`: does its
    caller hold the xarray lock when calling it (asked only of a function
    that counts holes)?"""
    guards: Guards = defaultdict(list)
    for call in flow.calls(MISSING_OR_WIDER):
        guards["missing"].append(call)
        if _range_walk_locked(flow, call):
            guards["missing-locked"].append(call)
    for call in flow.calls("xas_store"):
        arguments = syntax.arguments(call)
        if len(arguments) > 1 and syntax.text(arguments[1]) == "XA_RETRY_ENTRY":
            guards["retry"].append(call)
    for call in flow.calls("vma_interval_tree_foreach"):
        arguments = syntax.arguments(call)
        walk_body = syntax.macro_loop_body(call)
        # Only the walks that ask each VMA about missing-mode userfaultfd.
        if (
            len(arguments) == 4
            and walk_body is not None
            and _asks_missing(flow, walk_body)
            and syntax.text(arguments[2]) != syntax.text(arguments[3])
        ):
            guards["ranged-walk"].append(call)
    counters = _hole_counters(flow, xa_held)
    for statement in syntax.walk(flow.function.body) if flow.function.body else ():
        if statement.type != "if_statement":
            continue
        condition = statement.child_by_field_name("condition")
        if condition is None or not syntax.branch_exits(
            statement.child_by_field_name("consequence")
        ):
            continue
        # A re-count is made under the lock held at the comparison: the
        # scan's own counts were taken under earlier, dropped instances of it.
        if any(
            xa_held()
            or any(
                flow.takings_held(increment, XA_LOCK) & flow.takings_held(condition, XA_LOCK)
                for increment in counters[name]
            )
            for name in _compares_counters(condition, counters)
        ):
            guards["recount"].append(statement)
    return guards


def _asks_missing(flow: FunctionFlow, node: Node) -> bool:
    """Does `node` test missing-mode userfaultfd, itself or in a helper?"""
    asks = checks_by(flow, MISSING_OR_WIDER, 1)
    return any(
        syntax.call_name(call) in MISSING_OR_WIDER or asks(call) for call in syntax.calls(node)
    )


def _xa_held(flow: FunctionFlow, node: Node) -> bool:
    return any(
        kinds == {"held"} and XA_LOCK.fullmatch(lock)
        for lock, kinds in flow.locks_at(node, frozenset({"spin"})).items()
    )


def _range_walk_locked(flow: FunctionFlow, node: Node) -> bool:
    """Inside a `vma_interval_tree_foreach()` walk made under the i_mmap lock?"""
    walk = syntax.enclosing_macro_loop(node, "vma_interval_tree_foreach")
    return walk is not None and flow.holds(walk, "i_mmap")


def _hole_counters(flow: FunctionFlow, xa_held: Callable[[], bool]) -> dict[str, list[Node]]:
    """Locals incremented, under the xarray lock, in a loop that reads the
    xarray (the scan's own limits, counted under RCU, are not re-counts)."""
    counters: dict[str, list[Node]] = defaultdict(list)
    for store in flow.stores:
        if store.operator not in ("++", "+=") or store.target.type != "identifier":
            continue
        loop = syntax.enclosing(store.node, *LOOPS)
        if loop is None or not _reads_xarray(flow, loop):
            continue
        if xa_held() or _xa_held(flow, store.node):
            counters[syntax.text(store.target)].append(store.node)
    return counters


def _reads_xarray(flow: FunctionFlow, loop: Node) -> bool:
    if syntax.calls(loop, XA_READERS):
        return True
    # xas_for_each() and friends were turned into `while` for the parser.
    head = flow.function.image.text[loop.start_byte : loop.start_byte + 16]
    return head.startswith((b"xas_for_each", b"xa_for_each"))


def _compares_counters(condition: Node, counters: dict[str, list[Node]]) -> list[str]:
    """The counts of holes compared with another count in `condition`, when
    it notices every difference (`a != b`, `a < b || a > b`; `a < b` alone
    notices only some), directly or handed to a helper."""
    for node in syntax.walk(condition):
        if node.type == "binary_expression":
            sides = [node.child_by_field_name("left"), node.child_by_field_name("right")]
            names = [syntax.text(s) for s in sides if s is not None and s.type == "identifier"]
            operator = syntax.text(node.child_by_field_name("operator"))
            if operator in ORDERS and len(names) == 2 and _counts(names, counters):
                if notices_every_difference(condition, *names):
                    return [n for n in names if n in counters]
                return []
        elif node.type == "call_expression":
            names = [syntax.text(a) for a in syntax.arguments(node) if a.type == "identifier"]
            if len(names) >= 2 and _counts(names, counters):
                return [n for n in names if n in counters]
    return []


def _counts(names: list[str], counters: dict[str, list[Node]]) -> bool:
    # A count of holes against another count; a counter against a constant
    # (`latency < XA_CHECK_SCHED`) is a rescheduling point, not a re-count.
    if any(name.isupper() for name in names):
        return False
    return any(name in counters for name in names)


RULE = PagecacheHolesNotRevalidated
