"""PTE-level work on a PMD that may map a huge page.

## What it does
Follows what each PMD may be (a table, none, a THP, a devmap page, a
migration entry) along every path to PTE-level work under it:
`pte_offset_map*()`, `pte_lockptr()`, `pmd_pgtable()`, `pmd_clear_bad()`,
or a function of the tree that does such work on a PMD it is handed
(`mfill_atomic_pte(dst_pmd, ...)`).  Tests narrow it on each branch
(`pmd_trans_huge()`, `pmd_leaf()`, `pmd_devmap()`, `!pmd_present()`,
`is_swap_pmd()`, `pmd_trans_huge_lock()`, a helper that only returns such a
test), and so do `split_huge_pmd()` and waiting.  It flags:

- PTE-level work that a huge or migrating PMD can now reach, where the
  function as it was kept every such PMD away: a guard removed, narrowed
  (a term dropped from `!pmd_present(x) || pmd_trans_huge(x)`), turned
  into a bare assertion, or no longer on every path;
- PTE-level work on a PMD the function looked up itself (`pmd_offset()`,
  `pmd_alloc()`, `mm_find_pmd()`, ...) that a huge or migrating PMD can
  reach;
- a PMD migration entry no longer waited for (`pmd_migration_entry_wait()`):
  now answered with an error, or spun on by a retry loop.

Since v6.5 a `pte_offset_map*()` of a PMD that is not a table returns NULL:
such a map in the function itself is the guard when its NULL makes the
function leave, and the patch only removed a bail-out (a huge PMD is sent
away either way).  A map whose NULL is retried (`goto again` on the same
PMD, `walk->action = ACTION_AGAIN`) spins on a huge PMD forever, and a
split that was removed changes what happens to a THP (it is now skipped):
both are still reported.  A test inside an assertion statement
(`VM_BUG_ON(pmd_trans_huge(*pmd));`, `WARN_ON_ONCE(...)` alone) steers
nothing.

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

## Known problems
A PMD handed in by the caller is judged only against the function as it
was (the caller may have checked).  Work under a PMD the function looks up
itself is flagged without a regression only where the function tests or
splits no PMD anywhere, and once.  Functions defined in other `.c` files
are not looked into: work done there is not seen.

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

import functools
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow import events as ev
from analyzer.flow.cfg import Point
from analyzer.flow.entries import DEVICE, DEVMAP, HUGE, MAPS, MIGRATION
from analyzer.flow.paths import reaches
from analyzer.flow.values import NULL, Analysis
from analyzer.flow.vocabulary import TRANSPARENT_TESTS
from analyzer.patterns import regex
from analyzer.records import Record
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# PTE-level work: which argument is the PMD, and whether it is a pointer to
# the entry or the entry's value.
POINTER, VALUE = "pointer", "value"
PTE_WORK: dict[str, tuple[int, str]] = {
    **{name: (index, POINTER) for name, index in MAPS.items()},
    "pte_lockptr": (1, POINTER),
    "__pte_map": (0, POINTER),
    "pmd_clear_bad": (0, POINTER),
    "pmd_pgtable": (0, VALUE),
    # Allocation does nothing on a present PMD (it does not fail on a THP):
    # work for a PMD kept from huge ones, not for one merely looked up.
    "pte_alloc": (1, POINTER),
    "__pte_alloc": (1, POINTER),
}
ALLOCATIONS = frozenset({"pte_alloc", "__pte_alloc"})
# What must not reach PTE-level work.
HUGE_KINDS = frozenset({HUGE, DEVMAP})
MIGRATING = frozenset({MIGRATION, DEVICE})
DANGER = HUGE_KINDS | MIGRATING
PMD_LOOKUPS = frozenset(
    {"pmd_offset", "pmd_alloc", "mm_find_pmd", "walk_to_pmd", "mm_alloc_pmd", "pmd_off"}
)
# Guards whose removal the finding points at.
GUARDS = frozenset(
    {
        "pmd_trans_huge",
        "pmd_leaf",
        "pmd_devmap",
        "pmd_is_huge",
        "pmd_present",
        "pmd_none",
        "pmd_trans_huge_lock",
        "is_swap_pmd",
        "is_pmd_migration_entry",
        "pmd_is_migration_entry",
        "pmd_trans_unstable",
        "pmd_none_or_trans_huge_or_clear_bad",
        "split_huge_pmd",
        "__split_huge_pmd",
        "split_huge_pmd_address",
        "pmd_migration_entry_wait",
    }
)
SPLITS = frozenset({"split_huge_pmd", "__split_huge_pmd", "split_huge_pmd_address"})
# A fresh look that stops a huge PMD (pmd_none() and pmd_present() let one by).
HUGE_LOOKS = GUARDS - {
    "pmd_present",
    "pmd_none",
    "is_swap_pmd",
    "is_pmd_migration_entry",
    "pmd_is_migration_entry",
    "pmd_migration_entry_wait",
}
WAIT = "pmd_migration_entry_wait"
HANDLER = regex(r"huge_pmd|split_huge")
WARNING = regex(r"(?:VM_)?WARN(?:_ON)?(?:_ONCE)?")
RETRY_ACTION = regex(r"\bACTION_AGAIN\b")
# The map's failure is the guard only since it fails: 0d940a9b270b, v6.5.
MAPS_FAIL_SINCE = (6, 5)


class Work(Record):
    node: Node  # the call
    name: str
    pmd: str  # the place of the entry (`*pmd`, `dst_pmdval`)
    key: tuple[str, str, int]
    # What the work cannot take (a callee's own tests narrow it).
    reaching: frozenset[str] = DANGER


class PteWorkOnHugePmd(FunctionRule):
    id = "PTE_WORK_ON_HUGE_PMD"
    severity = Severity.WARNING
    summary = "PTE-level work without handling a huge or migrating PMD (split or bail first)"
    paths = ()
    api = r"\bpmd_|\bpte_offset_map|\bpte_lockptr"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        work = _work(flow)
        if not work and not flow.calls(WAIT) and not _calls_wait_before(change):
            return
        analysis = flow.entries()
        if not analysis.complete:
            return
        before = change.before_flow
        # The function as it was is analysed only once something is exposed.
        before_exposed = functools.cache(
            lambda: _exposed_kinds(before) if before is not None else None
        )
        removed = _removed_guards(change)
        # Whole-function state ("a PMD it looked up may be huge") only where
        # the function never thinks of huge PMDs: one that tests or splits
        # them somewhere knows its walk better than a path analysis can say.
        lookups = (
            set()
            if flow.calls(GUARDS) or _handlers(flow)
            else {name for call in flow.calls(PMD_LOOKUPS) for name in ev.destinations(call)}
        )
        stated = False
        # A split, or a call that handles the huge PMD (zap_huge_pmd(),
        # madvise_free_huge_pmd()), the patch removes: what went there now
        # reaches the work, though other paths let such PMDs through already.
        handler_removed = any(_handles_huge(g) for g in removed) and _handlers(flow) < (
            _handlers(before) if before is not None else 0
        )
        for item, kinds in _exposed(flow, analysis, work):
            exposed_before = before_exposed()
            if exposed_before is not None and item.key in exposed_before:
                # Only what the function as it was kept away is new.
                new = kinds - exposed_before[item.key]
                regression = bool(new) or handler_removed
                kinds = new or kinds
            else:
                regression = False
            looked_up = (
                not stated
                and item.name in PTE_WORK
                and item.name not in ALLOCATIONS
                and item.pmd.lstrip("*") in lookups
            )
            if not (regression or looked_up):
                continue
            # A map that fails and leaves stands for removed bail-outs on
            # its PMD; not for a removed split or handler of it, which
            # dealt with the huge PMD rather than leave it.
            bail_outs_only = all(_bails_out(g) for g in removed if _about(g, item.pmd))
            if _map_that_leaves(flow, analysis, item) and (not regression or bail_outs_only):
                continue
            anchor = change.anchor_for(removed[0]) if regression and removed else item.node
            what = _what(kinds)
            if regression:
                message = (
                    f"{what} now reaches PTE-level work ({item.name}()) that the function kept it "
                    f"away from: {_advice(kinds)}"
                )
            else:
                stated = True
                message = (
                    f"{item.name}() under a PMD from {_lookup_name(flow, item)}, which may be "
                    f"{what}: {_advice(kinds)}"
                )
            yield change.finding(
                anchor,
                message,
                Confidence.HIGH if regression else Confidence.MEDIUM,
                # A regression is new by definition; the function as it was
                # may have had the looked-up PMD finding at the same work.
                key=f"{'newly' if regression else 'work'}:{item.key[0]}:{item.key[1]}",
            )
        yield from _unwaited(change, analysis)


def _work(flow: FunctionFlow, depth: int = 2) -> list[Work]:
    """PTE-level work in the function: the primitives, and calls to
    functions of the tree that do such work on a PMD they are handed."""
    found: list[Work] = []
    seen: dict[tuple[str, str], int] = {}
    for call in flow.calls():
        name = syntax.call_name(call) or ""
        arguments = syntax.arguments(call)
        pmds: list[tuple[str, frozenset[str]]] = []
        if name in PTE_WORK:
            index, kind = PTE_WORK[name]
            place = _entry(arguments[index], kind) if index < len(arguments) else None
            if place is not None:
                pmds.append((place, DANGER))
        elif name != flow.function.name and depth > 0:
            for index, kinds in _callee_work(flow, name, depth).items():
                place = _entry(arguments[index], POINTER) if index < len(arguments) else None
                if place is not None:
                    pmds.append((place, kinds))
        for place, reaching in pmds:
            occurrence = seen.get((name, place), 0)
            seen[(name, place)] = occurrence + 1
            found.append(Work(call, name, place, (name, place, occurrence), reaching))
    return found


def _entry(argument: Node, kind: str) -> str | None:
    if kind == VALUE:
        return ev.place(argument)
    address = ev.address_of(argument)
    if address is not None:
        return address
    name = ev.place(argument)
    return f"*{name}" if name is not None else None


def _callee_work(flow: FunctionFlow, name: str, depth: int = 2) -> dict[int, frozenset[str]]:
    """What entries a function of the tree lets reach PTE-level work under
    a PMD it is handed, by parameter (it relies on its caller for those)."""
    if not flow.summaries.reaches(name, PTE_WORK, depth):
        return {}
    found = flow.summaries.fact(name, "pte-work-on-parameter", _parameters_worked_on, depth)
    return found or {}


def _parameters_worked_on(callee: FunctionFlow, depth: int) -> dict[int, frozenset[str]]:
    parameters = callee.parameters()
    analysis = callee.entries(callers=False)
    if not analysis.complete:
        return {}
    work = _work(callee, depth - 1)
    found: dict[int, frozenset[str]] = {}
    for item, kinds in _exposed(callee, analysis, work):
        if _map_that_leaves(callee, analysis, item) and _leaves_with_nothing_done(callee, item):
            continue  # its map fails on a PMD that is not a table, and it says "nothing here"
        root = item.pmd.lstrip("*").split("->")[0]
        if root in parameters:
            index = parameters.index(root)
            found[index] = found.get(index, frozenset()) | kinds
    # `if (WARN_ON_ONCE(pmd_trans_huge(*pmd))) return -EINVAL;` in the callee
    # states its contract: what it warns about, its callers must keep away.
    for index, name in enumerate(parameters):
        warned = _warned_about(analysis, f"*{name}") & _danger(callee)
        if warned:
            found[index] = found.get(index, frozenset()) | warned
    return found


def _warned_about(analysis: Analysis, entry: str) -> frozenset[str]:
    """Kinds of `entry` for which a warning in a condition fires."""
    found: set[str] = set()
    for point in analysis.graph.reverse_postorder():
        if point.kind != "branch" or point.node is None or not _inside_warning(point.node):
            continue
        for state in analysis.entry_states.get(point.id, ()):
            out, results = analysis.transfer(point, state)
            for edge in point.succs:
                if edge.taken is not True:
                    continue
                refined = analysis.refine(edge, out, results)
                values = refined.places.get(entry) if refined is not None else None
                if values:
                    found |= refined.kinds_of_values(values)
    return frozenset(found)


def _inside_warning(node: Node) -> bool:
    for ancestor in syntax.ancestors(node):
        if ancestor.type == "call_expression" and WARNING.fullmatch(
            syntax.call_name(ancestor) or ""
        ):
            return True
        if ancestor.type in ("if_statement", "expression_statement", "compound_statement"):
            return False
    return False


def _danger(flow: FunctionFlow) -> frozenset[str]:
    """What must not reach PTE-level work in this tree: devmap PMDs exist
    only while the tree has pmd_devmap() (it went in v6.15)."""
    return DANGER if flow.declarations.declares("pmd_devmap") else DANGER - {DEVMAP}


def _exposed(
    flow: FunctionFlow, analysis: Analysis, work: list[Work]
) -> Iterator[tuple[Work, frozenset[str]]]:
    """Work a huge or migrating PMD may reach, with what it may be there."""
    danger = _danger(flow)
    for item in work:
        kinds = analysis.place_kinds_at(item.node, item.pmd)
        if kinds:
            kinds = kinds & danger & item.reaching
            if kinds:
                yield item, kinds


def _exposed_kinds(flow: FunctionFlow) -> dict[tuple[str, str, int], frozenset[str]] | None:
    """What could reach each piece of work in the function as it was (None:
    not known, the analysis gave up)."""
    analysis = flow.entries()
    if not analysis.complete:
        return None
    found = {item.key: frozenset[str]() for item in _work(flow)}
    for item, kinds in _exposed(flow, analysis, _work(flow)):
        found[item.key] = kinds
    return found


def _map_that_leaves(flow: FunctionFlow, analysis: Analysis, item: Work) -> bool:
    """A map of the function's own that fails on a PMD that is not a table,
    and whose NULL makes the function leave rather than retry."""
    if item.name not in MAPS:
        return False
    if item.node.parent is not None and item.node.parent.type == "return_statement":
        # Its NULL is the caller's to test, in a tree where the map fails.
        return (flow.version or MAPS_FAIL_SINCE) >= MAPS_FAIL_SINCE
    # A function that tests the map's NULL is written for a map that fails,
    # whatever the tree's version says (a series may bring both).
    value = item.node.id
    tested = False
    for _point, event, state, _results in analysis.states():
        failed = state.kinds.get(value)
        if not failed or not failed <= {NULL}:
            continue
        tested = True
        # The failed map's NULL path asks the walker to come back...
        if isinstance(event, ev.Assign) and RETRY_ACTION.search(syntax.text(event.value)):
            return False
        # ...or comes round to the same map of the same entry.
        if event.node == item.node:
            targets = {link.target for link in state.links.get(value, ())}
            if targets & set(state.places.get(item.pmd, ())):
                tested = False
                break
    # Path states joined where the NULL side meets the others hide a test;
    # then the test is found in the graph.
    return tested or _null_leaves(flow, item)


def _null_leaves(flow: FunctionFlow, item: Work) -> bool:
    """Is the map's result tested for NULL, and does the NULL side never
    come round to the map again without testing or splitting a PMD on the
    way (`goto again` back to the huge-PMD checks is a fresh look)?"""
    point = flow.point(item.node)
    if point is None:
        return False

    def rechecks(candidate: Point) -> bool:
        node = candidate.node
        return (
            candidate is not point
            and node is not None
            and any(
                syntax.call_name(c) in HUGE_LOOKS or _handles_huge(c) for c in syntax.calls(node)
            )
        )

    tests = flow.null_tests(item.node)
    return bool(tests) and not any(
        flow.some_path_avoids(edge.target, point, avoiding=rechecks) for edge in tests
    )


def _about(guard: Node, pmd: str) -> bool:
    """Is the guard handed the PMD, or its entry (`pmd`, `*pmd`)?"""
    plain = pmd.lstrip("*")
    return any(
        (place := ev.place(ev.strip(argument))) is not None and place.lstrip("*") == plain
        for argument in syntax.arguments(guard)
    )


def _leaves_with_nothing_done(flow: FunctionFlow, item: Work) -> bool:
    """Does the map's NULL make the function answer 0 on every path
    (`return 0;`, `ret = 0; goto out;`, a `break` out of the walk to its
    `return 0;`): nothing to do here, as for an empty range?  Leaving with an
    error (`-EAGAIN`) hands the huge PMD back to a caller that may retry on
    it, and is not such an answer."""
    for edge in flow.null_tests(item.node):
        answers = flow.answers_after(edge)
        if answers and answers <= {"0", ""}:
            return True
    return False


def _removed_guards(change: FunctionChange) -> list[Node]:
    """Guards and huge-PMD handlers on the lines the patch removes."""
    if change.before is None or change.before.body is None:
        return []
    return [
        c
        for c in syntax.calls(change.before.body)
        if change.is_removed(c) and (syntax.call_name(c) in GUARDS or _handles_huge(c))
    ]


def _handlers(flow: FunctionFlow) -> int:
    """How many splits and huge-PMD handlers the function calls (a split
    spelled another way is still one)."""
    return sum(1 for call in flow.calls() if _handles_huge(call))


def _handles_huge(call: Node) -> bool:
    """A split, or a function named for the huge PMD it is handed
    (`zap_huge_pmd(tlb, vma, pmd, addr)`, `copy_huge_pmd()`), which deals
    with it at the PMD level."""
    name = syntax.call_name(call) or ""
    return name in SPLITS or bool(HANDLER.search(name))


def _bails_out(guard: Node) -> bool:
    """Did the removed `guard` only send the odd PMD away: the test of an
    `if` whose branch (taken when it holds) only leaves, unlocking on the
    way, or only sets an answer while the `else` does the work?"""
    owner = syntax.condition_owner(guard)
    if owner is None or owner.type != "if_statement":
        return False
    # The odd PMD is the one pmd_present() says no to, or the others say yes.
    odd = syntax.call_name(guard) != "pmd_present"
    if _implied(guard, odd, owner.child_by_field_name("condition")) is not True:
        return False
    consequence = owner.child_by_field_name("consequence")
    steers_around = owner.child_by_field_name("alternative") is not None
    # Unlocking on the way out, and what the return hands back
    # (`return migrate_vma_collect_skip(...)`), is still leaving.
    returned = {
        c.id
        for statement in syntax.walk(consequence)
        if statement.type == "return_statement"
        for c in syntax.calls(statement)
    }
    return (syntax.branch_exits(consequence) or steers_around) and all(
        c.id in returned or any(word in (syntax.call_name(c) or "") for word in ("unlock", "unmap"))
        for c in syntax.calls(consequence)
    )


def _implied(test: Node, value: bool, condition: Node) -> bool | None:
    """The value `condition` takes when `test` has `value`, or None when
    `test` alone does not decide it."""
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
            if call is None or syntax.call_name(call) not in TRANSPARENT_TESTS:
                return None
            if arguments[:1] != [node]:
                return None
            parent = call
        elif parent.type != "parenthesized_expression":
            return None
        node = parent
    return value


def _calls_wait_before(change: FunctionChange) -> bool:
    before = change.before_flow
    return before is not None and bool(before.calls(WAIT))


def _unwaited(change: FunctionChange, analysis: Analysis) -> Iterator[Finding]:
    """A removed pmd_migration_entry_wait(): a migration entry is now
    answered without waiting (an error returned, or a retry that spins)."""
    before = change.before_flow
    if before is None or before.function.body is None:
        return
    waits = [c for c in syntax.calls(before.function.body, WAIT) if change.is_removed(c)]
    if not waits or len(change.flow.calls(WAIT)) >= len(syntax.calls(before.function.body, WAIT)):
        return  # a rewritten line still waits
    before_analysis = before.entries()
    if not before_analysis.complete:
        return
    for wait in waits:
        arguments = syntax.arguments(wait)
        entry = _entry(arguments[1], POINTER) if len(arguments) > 1 else None
        if entry is None:
            continue
        returned_before = _migration_returns(before_analysis, entry)
        returned_after = _migration_returns(analysis, entry)
        spins_before = _spins(before_analysis, entry)
        spins_after = _spins(analysis, entry)
        if spins_after - spins_before:
            how = "retried without waiting: the retry spins on the entry until migration ends"
        elif returned_after - returned_before:
            how = "answered without waiting for it: the caller gets an error or retries at once"
        else:
            continue
        yield change.finding(
            change.anchor_for(wait),
            f"patch removes {WAIT}(): a PMD migration entry is now {how}; wait for it "
            "(pmd_migration_entry_wait()) and retry",
            Confidence.HIGH,
            key=f"wait:{entry}",
        )


def _migration_returns(analysis: Analysis, entry: str) -> set[tuple[str, int]]:
    """Returns reached while the entry may still be a migration entry."""
    found = set()
    counts: dict[str, int] = {}
    for point in analysis.graph.reverse_postorder():
        if point.kind != "return" or point.node is None:
            continue
        text = _returned(point.node)
        counts[text] = counts.get(text, 0) + 1
        kinds = analysis.place_kinds_at(point.node, entry)
        if kinds and MIGRATION in kinds:
            found.add((text, counts[text]))
    return found


def _returned(statement: Node) -> str:
    """A return spelled by what it returns: the callee's name for a call
    (`return no_page_table(vma, flags)` is the same answer with another
    argument list), else the value's text."""
    value = statement.named_children[0] if statement.named_children else None
    if value is not None and (value := ev.strip(value)).type == "call_expression":
        return f"{syntax.call_name(value)}()"
    return " ".join(syntax.text(value).split()) if value is not None else "return"


def _spins(analysis: Analysis, entry: str) -> set[tuple[str, int]]:
    """Reads of the entry reached again, around a loop, with the migration
    entry read last time still there: a retry that did not wait."""
    found = set()
    for point, event, state, _results in analysis.states():
        if not isinstance(event, ev.Call) or event.name not in ("pmdp_get_lockless", "pmdp_get"):
            continue
        if not event.arguments or _entry(event.arguments[0], POINTER) != entry:
            continue
        values = state.places.get(entry)
        if values and MIGRATION in state.kinds_of_values(values) and _in_cycle(analysis, point):
            found.add((event.name, point.id))
    return found


def _in_cycle(analysis: Analysis, point: Point) -> bool:
    return any(reaches(analysis.graph, edge.target, point) for edge in point.succs)


def _what(kinds: frozenset[str]) -> str:
    if kinds & HUGE_KINDS and kinds & MIGRATING:
        return "a huge PMD or a PMD migration entry"
    if kinds & MIGRATING:
        return "a PMD migration entry"
    return "a PMD mapping a THP" if HUGE in kinds else "a devmap PMD"


def _advice(kinds: frozenset[str]) -> str:
    if kinds & MIGRATING and not kinds & HUGE_KINDS:
        return "wait for it (pmd_migration_entry_wait()) and retry, or bail out"
    return "bail out on pmd_trans_huge()/!pmd_present(), or split_huge_pmd() first"


def _lookup_name(flow: FunctionFlow, item: Work) -> str:
    root = item.pmd.lstrip("*")
    for call in flow.calls(PMD_LOOKUPS):
        if root in ev.destinations(call):
            return f"{syntax.call_name(call)}()"
    return "a lookup"


RULE = PteWorkOnHugePmd
