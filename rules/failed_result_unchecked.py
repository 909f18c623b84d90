"""A result that is NULL (or an ERR_PTR()) on failure, used unchecked or checked the wrong way.

## What it does
Follows the pointer a failing call returns along every path and flags:

- a dereference (`vma->vm_start`, `find_vm_area(addr)->page_order`, or a
  call that dereferences it: `folio_lock(folio)`, a helper of the tree
  whose summary does) while it may still be NULL or an error pointer;
- `IS_ERR()` applied to a result that is NULL on failure and never an error
  pointer (NULL passes the test);
- a NULL test as the only check of a result that is an error pointer on
  failure (the error passes the test and is used).

What a call returns on failure comes from a table of kernel APIs: lookups
(`find_vma()`, `vma_lookup()`, `find_vm_area()`, `xa_load()`,
`pfn_to_online_page()`, `get_task_mm()`), allocators (`kmalloc()` and
friends, `alloc_pages()`, `folio_alloc()`, `vmalloc()`; not with
`__GFP_NOFAIL`), error-pointer APIs (`memdup_user()`, `kthread_create()`,
`shmem_read_folio()`), and `__filemap_get_folio()` with its wrappers
(`filemap_get_folio()`, `filemap_lock_folio()`, `filemap_grab_folio()`),
which return NULL before v6.3 and `ERR_PTR(-ENOENT)` since (the version is
read from the tree's Makefile; without a tree they are not judged).  Functions
of the tree under review (same file, included headers) are read through their
summaries: a helper that may return NULL is tracked like `find_vma()`.
Returning the pointer hands the check to the caller and is not a use.
When the patch removed the check the function had, the finding says so.

## Why is this bad?
A lookup that finds nothing is not an error the caller may ignore: an mm
with no VMA (a process exiting, or one that unmapped everything), an
address with no vmalloc area, an empty page-cache slot.  Dereferencing the
NULL oopses in the kernel, and an error pointer is worse: it points near
the top of the address space, and `IS_ERR()` on a NULL result or `!folio`
on an `ERR_PTR()` one lets exactly the failure through.  The page-cache
lookups changed their failure value in v6.3, so code written (or
backported) for one side of it is wrong on the other.

## Example
```c
        vma = find_vma(mm, 0);
        queue_pages_range(mm, vma->vm_start, mm->task_size, ...);	/* NULL: no VMA */

        return find_vm_area(addr)->page_order > 0;	/* NULL: not a vmalloc address */

        folio = filemap_get_folio(mapping, index);	/* v6.3+: ERR_PTR(-ENOENT) */
        if (!folio)
                return;
        folio_lock(folio);
```

## Use instead
```c
        vma = find_vma(mm, 0);
        if (unlikely(!vma))
                return 0;

        struct vm_struct *area = find_vm_area(addr);
        return area && area->page_order > 0;

        folio = filemap_get_folio(mapping, index);
        if (IS_ERR(folio))
                return;
```

## Known problems
Only what the patch writes, or a check it removes, is reported: a whole-file
scan reports nothing.  A pointer the function tests somewhere is taken to be
handled (a use under a correlated condition is not judged); allocations in
`__init` functions and KUnit tests are not judged.  A pointer known to be
valid by context (an address the caller just looked up, a VMA the mmap lock
pins) is still reported when the patch writes its use without a word; assert
it (`VM_WARN_ON_ONCE(!vma)`) or check it.  Helpers in other `.c` files are
unknown unless the table names them; helpers of the tree count only when
they return NULL or an error pointer themselves, and only when the patch
drops a check of theirs.  A pointer stored in a struct and read back through
another name is not followed.

## References
- 091c1dd2d4df ("mm/mempolicy: fix migrate_to_node() assuming there is at
  least one VMA in a MM"), David Hildenbrand, v6.13-rc, a syzbot report:
  `find_vma(mm, 0)` dereferenced unchecked; Fixes: 39743889aaf7.
  https://lore.kernel.org/r/20241120201151.9518-1-david@redhat.com
- "vmalloc: fix NULL pointer dereference in is_vm_area_hugepages()":
  `find_vm_area(addr)->page_order` for an address with no area.
- "mm: fix possible NULL pointer dereference in __swap_duplicate": a swap
  device lookup used unchecked.
- 66dabbb65d67 ("mm: return an ERR_PTR from __filemap_get_folio"),
  Christoph Hellwig, v6.3: the page-cache lookups fail with
  `ERR_PTR(-ENOENT)`, not NULL; several later fixes carry
  `Fixes: 66dabbb65d67` for callers that still tested NULL.
  https://lore.kernel.org/r/20230121065755.1140136-8-hch@lst.de
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow import events as ev
from analyzer.flow.nullness import ERROR_TESTS, risky_uses
from analyzer.flow.results import Results, failure_kinds
from analyzer.flow.sleeping import ALLOCATORS
from analyzer.flow.values import ERR, NULL, Analysis, Kinds
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# Calls that dereference the object they are handed (besides what the
# tree's summaries say).
ACCESSORS = regex(
    r"folio_\w+|put_page|get_page|lock_page|unlock_page|page_folio|mmput|mmget|"
    r"mmap_(?:read|write)_(?:un)?lock\w*|vma_pages|vma_is_\w+|vma_start_\w+"
)
_BAD = frozenset({NULL, ERR})


class FailedResultUnchecked(FunctionRule):
    id = "FAILED_RESULT_UNCHECKED"
    severity = Severity.ERROR
    summary = (
        "a result that is NULL or ERR_PTR() on failure (find_vma, kmalloc, "
        "filemap_get_folio, ...) dereferenced unchecked, or checked with the wrong test"
    )

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        if not change.added_rows and change.before_flow is None:
            return  # a whole function judged alone: nothing was written or removed
        if _TESTS.search(change.path):
            return  # KUnit asserts end the test on failure
        flow = change.flow
        table = failure_kinds(flow.version)
        checked_before = _checked_before(change)
        if not checked_before and not flow.calls(set(table)):
            return
        helpers = {c for callees in checked_before.values() for c in callees} - set(table)
        analysis = _analysis(flow, table, helpers)
        if not analysis.complete:
            return
        body = flow.function.body
        test_nodes: dict[str, list[Node]] = {}
        tests = _tests_of(body, test_nodes) if body is not None else {}
        asserted = _asserted(body)
        boot = _is_init(change)
        wrong_tests = list(self._wrong_error_tests(change, flow, table, analysis))
        yield from (finding for finding, _ in wrong_tests)
        # The test is the bug there; its uses are not reported again.
        asserted |= {name for _, name in wrong_tests}
        reported: set[tuple[int, ...]] = set()
        for use in risky_uses(analysis, flow.dereferences(ACCESSORS), bad=_BAD):
            sources = [s for s in use.sources if syntax.call_name(s)]
            name = ev.place(use.pointer)
            if not sources or name in asserted:
                continue
            origin = tuple(sorted(s.id for s in sources))
            if origin in reported:
                continue
            callees = {syntax.call_name(s) or "" for s in sources}
            tested = tests.get(name, set()) if name is not None else set()
            # Code the patch wrote: a known failing call whose failure the
            # function never tests for.  A pointer it does test somewhere,
            # and uses elsewhere under a condition of its own, is context
            # the rule cannot read.
            known = callees <= set(table)
            needed = {k for k in (NULL, ERR) if k in use.kinds}
            # The use, the call, or the (wrong) test of it.
            written = (
                change.is_added(use.node)
                or any(change.is_added(s) for s in sources)
                or any(change.is_added(t) for t in test_nodes.get(name or "", []))
            )
            unchecked = not needed & tested
            if boot and callees <= set(ALLOCATORS):
                unchecked = False  # boot allocations do not fail
            # A check the patch removed: the same call's result, tested
            # before, tested no more, and dereferenced here.
            direct = use.node.type != "call_expression" or bool(
                ACCESSORS.fullmatch(syntax.call_name(use.node) or "")
            )
            removed = (
                name is not None
                and bool(callees & checked_before.get(name, set()))
                and not tested
                and direct
            )
            if not removed and not (known and written and unchecked):
                continue
            reported.add(origin)
            yield self._use_finding(
                change, table, use.node, use.pointer, use.kinds, sources, tested, removed
            )

    def _use_finding(
        self,
        change: FunctionChange,
        table: dict[str, Kinds],
        node: Node,
        pointer: Node,
        kinds: Kinds,
        sources: list[Node],
        tested: set[str],
        removed: bool,
    ) -> Finding:
        source = sources[0]
        callee = syntax.call_name(source) or "the call"
        named = ev.place(pointer)
        name = named or f"the result of {callee}()"
        via = (
            f" ({syntax.call_name(node)}() dereferences it)"
            if node.type == "call_expression" and syntax.call_name(node)
            else ""
        )
        if ERR in kinds and NULL not in kinds:
            failure, test = "an ERR_PTR()", f"IS_ERR({named})"
        elif NULL in kinds and ERR not in kinds:
            failure, test = "NULL", f"!{named}"
        else:
            failure, test = "NULL or an ERR_PTR()", f"IS_ERR_OR_NULL({named})"
        if removed:
            lead = f"patch removes the check of {name} = {callee}(), which may return {failure}"
        elif "null" in tested:
            lead = f"{name} is tested for NULL, but {callee}() returns {failure} on failure"
        elif "err" in tested:
            lead = f"{name} is tested with IS_ERR(), but {callee}() returns {failure} on failure"
        else:
            lead = f"{name} may be {failure} ({callee}() failed) and is used unchecked"
        advice = f"test {test} and bail out first" if named else "store it and test it first"
        known = callee in table
        return change.finding(
            node,
            f"{lead}{via}; {advice}",
            Confidence.HIGH if known else Confidence.MEDIUM,
            key=f"{callee}:{name}",
            severity=None if known else Severity.WARNING,
        )

    def _wrong_error_tests(
        self,
        change: FunctionChange,
        flow: FunctionFlow,
        table: dict[str, Kinds],
        analysis: Analysis,
    ) -> Iterator[tuple[Finding, str]]:
        """`IS_ERR()` of a result that is only ever NULL on failure (with the
        name tested)."""
        for call in flow.calls({"IS_ERR", "IS_ERR_VALUE"}):
            arguments = syntax.arguments(call)
            if not arguments:
                continue
            kinds, sources = _kinds_and_sources(analysis, call, arguments[0])
            names = {syntax.call_name(s) for s in sources}
            if not sources or not kinds or ERR in kinds or NULL not in kinds:
                continue
            if not all(n in table for n in names):
                continue
            if not change.is_added(call) and not any(change.is_added(s) for s in sources):
                continue
            if "null" in _tests_in(flow.function.body, ev.place(arguments[0]) or ""):
                continue
            callee = sorted(n for n in names if n)[0]
            name = ev.place(arguments[0]) or syntax.text(arguments[0])
            finding = change.finding(
                call,
                f"{callee}() returns NULL on failure, never an ERR_PTR(): IS_ERR({name}) lets "
                f"the failure through; test !{name}",
                Confidence.HIGH,
                key=f"is-err:{callee}:{name}",
            )
            yield finding, name


def _analysis(flow: FunctionFlow, table: dict[str, Kinds], helpers: set[str]) -> Analysis:
    """The failing results along paths: the table's calls, and `helpers`,
    functions of the tree that may fail, by their summaries."""
    key = ("failed-results", flow.version, frozenset(helpers))
    summaries = flow.summaries

    def returns(name: str) -> Kinds | None:
        summary = summaries.of(name) if name in helpers else None
        return summary.returns if summary is not None else None

    def predicates(name: str) -> tuple[Node, list[str]] | None:
        summary = summaries.of(name) if name in helpers else None
        if summary is None or summary.predicate is None:
            return None
        return summary.predicate, list(summary.parameters)

    return flow.analysis(Results(table, returns, predicates), key)


def _may_fail(flow: FunctionFlow, table: dict[str, Kinds], name: str | None) -> bool:
    if not name or name == flow.function.name:
        return False
    if name in table:
        return True
    summary = flow.summaries.of(name)
    if summary is None or summary.returns is None or not summary.returns & _BAD:
        return False
    # A failure it returns itself (`return NULL;`, `return ERR_PTR(-E...)`),
    # not a field it passes through (`return f->f_inode;`).
    definition = flow.summaries.definition(name)
    return definition is not None and _returns_failure(definition.body)


def _returns_failure(body: Node | None) -> bool:
    if body is None:
        return False
    for node in syntax.walk(body):
        if node.type != "return_statement":
            continue
        for inner in syntax.walk(node):
            if syntax.text(inner) == "NULL" or (
                inner.type == "call_expression"
                and syntax.call_name(inner) in ("ERR_PTR", "ERR_CAST")
            ):
                return True
    return False


def _kinds_and_sources(
    analysis: Analysis, node: Node, expression: Node
) -> tuple[Kinds, list[Node]]:
    kinds: set[str] = set()
    sources: list[Node] = []
    for state, results in analysis.before_each(node):
        values = analysis.value_of(state, expression, results)
        if not values:
            return frozenset(), []
        kinds |= state.kinds_of_values(values)
        for value in values:
            site = analysis.graph.nodes_by_id.get(value) if isinstance(value, int) else None
            if site is None:
                return frozenset(), []
            sources.append(site)
    return frozenset(kinds), sources


def _tests_in(body: Node | None, name: str) -> set[str]:
    """Which tests the function applies to `name`: "null" (`!p`, `p ==
    NULL`, `if (p)`, `p && ...`), "err" (`IS_ERR(p)`); `IS_ERR_OR_NULL()`
    is both."""
    if body is None:
        return set()
    return _tests_of(body).get(name, set())


def _tests_of(body: Node, nodes: dict[str, list[Node]] | None = None) -> dict[str, set[str]]:
    """What `_tests_in()` says of every name at once; `nodes` gets where."""
    found: dict[str, set[str]] = {}
    nodes = nodes if nodes is not None else {}
    for node in syntax.walk(body):
        if node.type == "call_expression" and syntax.call_name(node) in ERROR_TESTS:
            arguments = syntax.arguments(node)
            name = ev.place(arguments[0]) if arguments else None
            if name is not None:
                found.setdefault(name, set()).add("err")
                nodes.setdefault(name, []).append(node)
                if syntax.call_name(node) == "IS_ERR_OR_NULL":
                    found[name].add("null")
        elif node.type in ("identifier", "field_expression"):
            name = ev.place(node)
            if name is not None and _truth_tested(node):
                found.setdefault(name, set()).add("null")
                nodes.setdefault(name, []).append(node)
        elif node.type == "binary_expression" and syntax.text(
            node.child_by_field_name("operator")
        ) in ("==", "!="):
            sides = [node.child_by_field_name("left"), node.child_by_field_name("right")]
            if any(syntax.text(s) in ("NULL", "0") for s in sides if s is not None):
                for side in sides:
                    name = ev.place(side)
                    if name is not None:
                        found.setdefault(name, set()).add("null")
                        nodes.setdefault(name, []).append(node)
    return found


def _truth_tested(node: Node) -> bool:
    """Is `node`'s value used as a truth value (`!p`, `if (p)`, `p && q`,
    `p ? a : b`, `while (p)`)?"""
    child, parent = node, node.parent
    while parent is not None and parent.type == "parenthesized_expression":
        child, parent = parent, parent.parent
    if parent is None:
        return False
    if parent.type == "unary_expression":
        return syntax.text(parent.child_by_field_name("operator")) == "!"
    if parent.type == "binary_expression":
        return syntax.text(parent.child_by_field_name("operator")) in ("&&", "||")
    if parent.type in ("if_statement", "while_statement", "do_statement", "for_statement"):
        return parent.child_by_field_name("condition") == child
    if parent.type == "conditional_expression":
        return parent.child_by_field_name("condition") == child
    if parent.type == "call_expression":
        return syntax.call_name(parent) in ("likely", "unlikely", "WARN_ON", "WARN_ON_ONCE")
    if parent.type == "argument_list" and parent.parent is not None:
        return syntax.call_name(parent.parent) in ("likely", "unlikely", "WARN_ON", "WARN_ON_ONCE")
    return False


# Statements that assert a pointer is valid: the author's claim, not a
# missing check (`VM_BUG_ON(!vma)`, `KUNIT_ASSERT_NOT_ERR_OR_NULL(test, p)`).
_ASSERTS = regex(r"(?:VM_)?(?:BUG|WARN)_ON(?:_ONCE)?(?:_\w+)?|KUNIT_(?:ASSERT|EXPECT)_\w+")


def _asserted(body: Node | None) -> set[str]:
    found: set[str] = set()
    if body is None:
        return found
    for call in syntax.calls_matching(body, _ASSERTS):
        statement = call.parent
        if statement is None or statement.type != "expression_statement":
            continue
        for argument in syntax.arguments(call):
            for node in syntax.walk(argument):
                name = ev.place(node)
                if name is not None and node.type in ("identifier", "field_expression"):
                    found.add(name)
    return found


def _checked_before(change: FunctionChange) -> dict[str, set[str]]:
    """Pointers the function as it was took from a failing call, tested,
    and never used unchecked: name -> the calls they came from."""
    before = change.before_flow
    if before is None or before.function.body is None:
        return {}
    table = failure_kinds(before.version)
    tested = _tests_of(before.function.body)
    body = change.after.body
    still = _tests_of(body) if body is not None else {}
    candidates: dict[str, set[str]] = {}
    for call in before.calls():
        callee = syntax.call_name(call)
        for name in ev.destinations(call):
            # Only pointers the patch stops testing can have lost a check.
            if name in tested and name not in still and callee:
                candidates.setdefault(name, set()).add(callee)
    callees = {c for found in candidates.values() for c in found}
    failing = {c for c in callees if _may_fail(before, table, c)}
    if not failing:
        return {}
    analysis = _analysis(before, table, failing - set(table))
    unchecked = {
        ev.place(u.pointer) for u in risky_uses(analysis, before.dereferences(ACCESSORS), bad=_BAD)
    }
    return {
        name: found & failing
        for name, found in candidates.items()
        if found & failing and name not in unchecked
    }


def _is_init(change: FunctionChange) -> bool:
    """An `__init` function (boot code)."""
    node = change.after.node
    declarator = node.child_by_field_name("declarator")
    head = change.after.image.text[node.start_byte : declarator.start_byte if declarator else 0]
    return b"__init" in head and b"__meminit" not in head


_TESTS = regex(r"(?:^|/)(?:tests?/|\w*_test\w*\.c$|\w*kunit\w*)")


RULE = FailedResultUnchecked
