"""A long loop that never yields the CPU, never reports an RCU-tasks quiescent state, or never ends.

## What it does
Looks at the loops a patch writes or changes:

- a new loop over every PFN of a zone or node, or over an unbounded set
  (every memcg, every entry of an xarray or idr, a global list) whose
  elements each get a scan of their own (a counted loop over a range, in the
  loop or in a helper of the tree), in sleepable context, none of whose
  iterations passes a rescheduling point (`cond_resched()`,
  `cond_resched_lock()`, a call that may sleep, a helper of the tree that
  does, or a `need_resched()` test it bails out on);
- a new loop over such a set inside `rcu_read_lock()`, a spinlock or with
  preemption disabled, which does a scan of its own per element (a nested
  loop, or a helper of the tree that loops): it cannot yield at all;
- a patch that removes a loop's `cond_resched()` (or another explicit
  rescheduling call) and leaves the rest of its work as it was, or replaces
  `cond_resched_tasks_rcu_qs()` with `cond_resched()`;
- a patch that lets the value a loop's exit waits for grow without bound:
  a doubling (`x *= 2`, `x <<= 1`, `x = max(1, x * 2)`) of a variable the
  exit compares with a bound, no longer capped at that bound;
- a new loop whose exit condition reads only local variables that no
  iteration changes, and that has no other way out.

## Why is this bad?
Without preemption a kernel thread that loops over every object of a large
system keeps its CPU until the soft-lockup watchdog fires; RCU stalls,
other threads bound to that CPU starve.  `cond_resched()` fixes that but is
not a quiescent state for RCU Tasks unless it actually schedules: a scan
that runs for seconds with nothing else to do (kmemleak, reclaim of a huge
LRU, migration of a long list) blocks every `synchronize_rcu_tasks()` (BPF
trampolines, ftrace, kprobes) until it ends; the fixes call
`cond_resched_tasks_rcu_qs()` in those loops.  Inside an RCU read-side
section or under a spinlock the loop cannot reschedule at all: the answer
is to take a reference on the element, drop the lock per element and
yield, then continue from the reference.  A loop whose progress counter
doubles without a cap wraps around before reaching a bound above half its
range, and then never ends.

## Example
```c
        rcu_read_lock();
        for_each_process_thread(g, p) {		/* every thread, under RCU */
                void *stack = try_get_task_stack(p);
                if (stack) {
                        scan_block(stack, stack + THREAD_SIZE, NULL);	/* a scan per thread */
                        put_task_stack(p);
                }
        }
        rcu_read_unlock();

        do {
                merge_regions(t, threshold);
                threshold = max(1, threshold * 2);	/* wraps: the loop may never end */
        } while (nr_regions > max_nr_regions && threshold / 2 < max_thres);
```

## Use instead
```c
        do {				/* one task at a time, with a reference */
                rcu_read_lock();
                pid = find_ge_pid(nr, &init_pid_ns);
                ...get_task_struct(p);
                rcu_read_unlock();
                scan the stack, put_task_struct(p);
                cond_resched();
        } while (pid);

        if (threshold < max_thres / 2)
                threshold = max(1, threshold * 2);
        else
                threshold = max_thres;		/* and break once it is reached */
```

## Known problems
Only loops the patch adds or changes are judged: a whole-file scan reports
nothing.  What a loop iterates over is read from its header, so a loop over
a caller's range that happens to be a whole zone is not known to be long,
and a global list that is always short is taken to be long.  Locks held by
callers are not known: a new loop in a helper called under a spinlock is
judged as sleepable.  Which loops need RCU-tasks quiescent states is not
inferred; only a patch that removes one is reported.

## References
- "mm/kmemleak: avoid soft lockup when scanning task stacks" (Breno Leitao,
  2026): every thread's stack scanned under one `rcu_read_lock()`; now one
  task at a time with a reference and `cond_resched()`.
  https://lore.kernel.org/r/20260611-kmemleak-stack-resched-v1-1-d6248ade5f4a@debian.org (v1)
- "mm/kmemleak: report RCU-tasks quiescent states during the scan",
  "mm/vmscan: report RCU-tasks quiescent states in shrink_lruvec()",
  "mm/migrate: report RCU-tasks quiescent states in migrate_pages_batch()",
  "writeback: report a Tasks-RCU quiescent state per cgwb drain pass":
  `cond_resched()` replaced by `cond_resched_tasks_rcu_qs()` in long scans.
- "mm/damon/core: avoid infinite kdamond_merge_regions() internal loop"
  (SeongJae Park, 2026): the doubling merge threshold had no cap and could
  wrap; series https://lore.kernel.org/r/20260715031002.108504-1-sj@kernel.org
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow import events as ev
from analyzer.flow.cfg import Point
from analyzer.flow.locks import held
from analyzer.flow.loops import Loop, find_loops
from analyzer.flow.sleeping import (
    NO_SLEEP_CLASSES,
    RESCHEDULE,
    Sleepers,
    atomic_callback_contexts,
    function_masks,
)
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

TASKS_RCU_QS = frozenset({"cond_resched_tasks_rcu_qs", "rcu_tasks_qs", "rcu_softirq_qs"})
_RELEASES = regex(
    r"(?:raw_)?spin_unlock\w*|rcu_read_unlock\w*|preempt_enable\w*|"
    r"(?:read|write)_unlock\w*|xa_unlock\w*|xas_unlock\w*|local_irq_\w+"
)
_DOUBLING = regex(r"\*\s*2\b|<<\s*1\b")
_CLAMP = regex(r"\b(?:min|clamp|min_t)\s*\(")


class LoopNoYield(FunctionRule):
    id = "LOOP_NO_YIELD"
    severity = Severity.WARNING
    summary = (
        "a long loop with no rescheduling point or RCU-tasks quiescent state, one that "
        "cannot yield under a lock, or one that may never end"
    )

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        before = change.before_flow
        if not change.added_rows and before is None:
            return  # judged alone: nothing was written or removed
        flow = change.flow
        if before is not None:
            yield from self._lost_quiescent_states(change, before)
        function = change.after
        if function.body is None:
            return
        loops = _loops(flow)
        if not loops:
            return
        sleepers = Sleepers(flow.summaries, function.name)
        masks = function_masks(function)
        atomic_context = atomic_callback_contexts(change.after_file, function.name)
        yield_cache: dict[int, bool] = {}

        def is_yield(point: Point) -> bool:
            found = yield_cache.get(point.id)
            if found is None:
                found = any(
                    isinstance(e, ev.Call) and sleepers.reschedules(e.node, masks)
                    for e in ev.events_of(point)
                )
                yield_cache[point.id] = found
            return found

        old_loops = {loop.key: loop for loop in _loops(before)} if before is not None else {}
        for loop in loops:
            if not loop.points or loop.head is None:
                continue
            old = old_loops.get(loop.key)
            # A header the patch rewrote (`for_each_process (tsk)` to
            # `for_each_process(tsk)`) is not a new loop.
            new = _header_added(change, loop) and old is None
            if new and loop.unbounded and not _yields(flow, loop, is_yield):
                finding = self._unbounded(change, flow, loop, atomic_context)
                if finding is not None:
                    yield finding
                    continue  # one finding per loop
            if old is not None and before is not None:
                finding = self._lost_yield(
                    change,
                    before,
                    old,
                    loop,
                    atomic_context,
                    lambda loop=loop: _yields(flow, loop, is_yield),
                )
                if finding is not None:
                    yield finding
            if before is not None:
                yield from self._unbounded_growth(change, old_loops.values(), loop)
            if new:
                finding = self._never_changes(change, flow, loop)
                if finding is not None:
                    yield finding

    # -- RCU-tasks quiescent states ------------------------------------------------

    def _lost_quiescent_states(
        self, change: FunctionChange, before: FunctionFlow
    ) -> Iterator[Finding]:
        old = before.calls(TASKS_RCU_QS)
        if len(change.flow.calls(TASKS_RCU_QS)) >= len(old):
            return
        removed = [c for c in old if change.is_removed(c) and _in_loop(c)]
        if not removed:
            return
        call = removed[0]
        name = syntax.call_name(call)
        yield change.finding(
            change.anchor_for(call),
            f"patch removes {name}() from this loop: cond_resched() is no RCU-tasks quiescent "
            "state unless it actually schedules, so a long scan blocks "
            "synchronize_rcu_tasks() (BPF, ftrace, kprobes) until it ends; keep "
            f"{name}()",
            Confidence.HIGH,
            key=f"tasks-rcu-qs:{name}",
        )

    # -- long loops ---------------------------------------------------------------------

    def _unbounded(
        self, change: FunctionChange, flow: FunctionFlow, loop: Loop, atomic_context: list[str]
    ) -> Finding | None:
        locks = _held_at(flow, loop.head)
        if locks is None:
            return None
        always = sorted(name for name, kinds in locks.items() if kinds == frozenset({"held"}))
        anchor = loop.header if loop.header is not None else loop.node
        heavy = _scans_per_element(flow, loop)
        if not locks and not atomic_context:
            # A zone's worth of PFNs is long whatever each step does; a list
            # or a set of memcgs only when each element is a scan of its own.
            if not heavy and not loop.unbounded.startswith("every PFN"):
                return None
            return change.finding(
                anchor,
                f"this loop walks {loop.unbounded} and no iteration reschedules: add "
                "cond_resched() (cond_resched_tasks_rcu_qs() in a long-running kernel thread) "
                "to the loop",
                Confidence.MEDIUM,
                key=f"no-yield:{loop.key}",
            )
        if not always or not heavy:
            return None
        if loop.body is not None and syntax.calls_matching(loop.body, _RELEASES):
            return None  # it drops the lock on its way
        lock = always[0]
        section = "rcu_read_lock()" if lock == "rcu" else lock.partition(":")[2] or lock
        return change.finding(
            anchor,
            f"this loop walks {loop.unbounded} under {section} and scans each of them: it "
            "cannot reschedule there; take a reference on each element, drop the lock and "
            "cond_resched() between elements",
            Confidence.MEDIUM,
            key=f"atomic-scan:{loop.key}",
        )

    def _lost_yield(
        self,
        change: FunctionChange,
        before: FunctionFlow,
        old: Loop,
        loop: Loop,
        atomic_context: list[str],
        yields: Callable[[], bool],
    ) -> Finding | None:
        """The loop rescheduled before the patch, through a call the patch
        removed, and no longer does."""
        removed = None
        for i in old.points:
            for event in ev.events_of(before.graph.points[i]):
                if (
                    isinstance(event, ev.Call)
                    and event.name in RESCHEDULE
                    and change.is_removed(event.node)
                ):
                    removed = event.node
                    break
            if removed is not None:
                break
        if removed is None or atomic_context:
            return None
        name = syntax.call_name(removed) or ""
        if loop.body is not None and syntax.calls(loop.body, name):
            return None  # still there: moved, not removed
        # Only the yield went: the loop still does what it did.  A loop whose
        # work changed (cheaper steps) may not need its cond_resched() any more.
        work_before = _callees(old) - RESCHEDULE
        if not work_before or not work_before <= _callees(loop):
            return None
        if yields():
            return None
        locks = _held_at(change.flow, loop.head)
        if locks is None or locks:
            return None
        return change.finding(
            loop.header if loop.header is not None else loop.node,
            f"patch removes {name}() from this loop, and no iteration reschedules any more: "
            "a long run of it is a soft lockup; keep a rescheduling point in the loop",
            Confidence.MEDIUM,
            key=f"lost-yield:{loop.key}",
        )

    # -- loops that may not end -------------------------------------------------------------

    def _unbounded_growth(
        self, change: FunctionChange, old_loops: Iterable[Loop], loop: Loop
    ) -> Iterator[Finding]:
        """A doubling of a variable the loop's exit compares, capped before
        the patch (in whatever loop did it) and not after."""
        old_doublings = [pair for old in old_loops for pair in _doublings(old)]
        for name, statement in _doublings(loop):
            if _capped(statement, name):
                continue
            if not _exit_compares(loop, name):
                continue
            was = [s for n, s in old_doublings if n == name]
            if not was or not all(_capped(s, name) for s in was):
                continue
            yield change.finding(
                statement,
                f"'{name}' doubles on every iteration with nothing capping it at the bound the "
                "loop waits for: it wraps around before reaching a bound above half its range, "
                f"and the loop never ends; cap it (if ({name} < bound / 2) {name} *= 2; else "
                f"{name} = bound;) and leave once it is reached",
                Confidence.MEDIUM,
                key=f"uncapped-growth:{name}",
            )

    def _never_changes(
        self, change: FunctionChange, flow: FunctionFlow, loop: Loop
    ) -> Finding | None:
        """A new loop whose exit reads only locals that no iteration writes,
        with no other way out."""
        if loop.kind not in ("while", "do", "for") or loop.header is None:
            return None
        condition = loop.node.child_by_field_name("condition")
        if condition is None or syntax.calls(condition):
            return None
        names = _plain_names(condition)
        if not names or not names <= _locals(flow.function.node):
            return None
        written: set[str] = set()
        leaves = False
        for i in loop.points:
            point = flow.graph.points[i]
            for edge in point.succs:
                if edge.target.id not in loop.points and not (
                    point.node is not None and syntax.within(point.node, condition)
                ):
                    leaves = True
            for event in ev.events_of(point):
                if isinstance(event, ev.Assign):
                    target = ev.place(event.target)
                    if target is not None:
                        written.add(target.split("->")[0].split(".")[0].lstrip("*"))
                elif isinstance(event, ev.Call):
                    for argument in event.arguments:
                        taken = ev.address_of(argument)
                        if taken is not None:
                            written.add(taken.split("->")[0].split(".")[0])
        update = loop.node.child_by_field_name("update") if loop.kind == "for" else None
        if update is not None:
            written |= syntax.identifiers(update)
        if leaves or names & written or _address_taken(flow.function.node, names):
            return None
        return change.finding(
            condition,
            f"this loop's exit depends only on {', '.join(sorted(names))}, which no iteration "
            "changes, and the loop has no other way out: once entered it never ends",
            Confidence.MEDIUM,
            key=f"never-ends:{loop.key}",
            severity=Severity.ERROR,
        )


def _header_added(change: FunctionChange, loop: Loop) -> bool:
    """Did the patch write the loop's header (its first line, or a line of
    its condition)?  Lines added to its body do not make a loop new."""
    first = loop.node.start_point.row
    last = loop.header.end_point.row if loop.header is not None else first
    return any(row in change.added_rows for row in range(first, max(first, last) + 1))


def _yields(flow: FunctionFlow, loop: Loop, is_yield: Callable[[Point], bool]) -> bool:
    return any(is_yield(flow.graph.points[i]) for i in loop.points)


def _loops(flow: FunctionFlow) -> list[Loop]:
    body = flow.function.body
    if body is None:
        return []
    own = _locals(flow.function.node)
    return find_loops(body, flow.function.image.text, flow.graph, lambda name: name not in own)


def _held_at(flow: FunctionFlow, point: Point | None) -> dict[str, frozenset[str]] | None:
    """Atomic locks that may be held where an iteration starts (None when
    the lock analysis gave up)."""
    if point is None or flow.function.body is None:
        return None
    analysis = flow.locks()
    if not analysis.complete:
        return None
    found: dict[str, frozenset[str]] = {}
    for state in analysis.entry_states.get(point.id, []):
        for name, kinds in held(state, analysis, NO_SLEEP_CLASSES).items():
            found[name] = found.get(name, frozenset()) | kinds
    states = analysis.entry_states.get(point.id, [])
    for name in list(found):
        if any(name not in held(state, analysis, NO_SLEEP_CLASSES) for state in states):
            found[name] = found[name] | {"free"}
    return found


def _callees(loop: Loop) -> set[str]:
    body = loop.body
    return (
        {n for n in (syntax.call_name(c) for c in syntax.calls(body))} - {None} if body else set()
    )


def _scans_per_element(flow: FunctionFlow, loop: Loop) -> bool:
    """Does each iteration scan a range of its own (`for (p = start; p <
    end; p++)`), itself or in a helper of the tree?  A lookup per element
    (an interval-tree or list walk) is not taken for a scan."""
    if loop.body is None:
        return False
    if _has_range_scan(loop.body, flow.function.image.text):
        return True
    for call in syntax.calls(loop.body):
        name = syntax.call_name(call)
        if not name or name == flow.function.name:
            continue
        definition = flow.summaries.definition(name)
        if (
            definition is not None
            and definition.body is not None
            and _has_range_scan(definition.body, definition.image.text)
        ):
            return True
    return False


_RELATIONAL = frozenset({"<", "<=", ">", ">=", "!="})


def _has_range_scan(body: Node, source: bytes) -> bool:
    """A counted loop over a range: `for`/`while`/`do` (not an iterator
    macro) whose condition compares."""
    for node in syntax.walk(body):
        if node.type not in ("for_statement", "while_statement", "do_statement"):
            continue
        if node.type == "while_statement" and not source[node.start_byte :].startswith(b"while"):
            continue  # an iterator macro the sanitizer made a while of
        condition = node.child_by_field_name("condition")
        if condition is None:
            continue
        for inner in syntax.walk(condition):
            if inner.type == "binary_expression" and (
                syntax.text(inner.child_by_field_name("operator")) in _RELATIONAL
            ):
                return True
    return False


def _in_loop(node: Node) -> bool:
    return any(
        a.type in ("while_statement", "for_statement", "do_statement")
        for a in syntax.ancestors(node)
    )


def _doublings(loop: Loop) -> list[tuple[str, Node]]:
    """(variable, statement) for each doubling in the loop's body."""
    found = []
    if loop.body is None:
        return found
    for node in syntax.walk(loop.body):
        if node.type != "assignment_expression":
            continue
        target = node.child_by_field_name("left")
        name = ev.place(target)
        if name is None:
            continue
        operator = syntax.text(node.child_by_field_name("operator"))
        value = node.child_by_field_name("right")
        doubles = (operator == "*=" and syntax.text(value) == "2") or (
            operator == "<<=" and syntax.text(value) == "1"
        )
        if operator == "=" and value is not None and name in _plain_names(value, calls=True):
            doubles = bool(_DOUBLING.search(syntax.text(value)))
        if doubles:
            statement = node.parent if node.parent is not None else node
            found.append((name, statement))
    return found


def _capped(statement: Node, name: str) -> bool:
    """Is the doubling inside a branch that compares the variable with
    something (`if (x < max / 2) x *= 2;`), or followed by a clamp?"""
    for ancestor in syntax.ancestors(statement):
        if ancestor.type in ("while_statement", "for_statement", "do_statement"):
            return False
        if ancestor.type == "if_statement":
            condition = ancestor.child_by_field_name("condition")
            if condition is not None and _compares(condition, name):
                return True
    value = statement.named_children[0] if statement.named_children else statement
    text = syntax.text(value)
    return bool(_CLAMP.search(text))


def _compares(node: Node, name: str) -> bool:
    for inner in syntax.walk(node):
        if (
            inner.type == "binary_expression"
            and syntax.text(inner.child_by_field_name("operator"))
            in ("<", "<=", ">", ">=", "==", "!=")
            and name in _plain_names(inner, calls=True)
        ):
            return True
    return False


def _exit_compares(loop: Loop, name: str) -> bool:
    """Does the loop's condition, or a `break` condition in it, compare
    `name` with a bound?"""
    condition = loop.node.child_by_field_name("condition")
    if condition is not None and _compares(condition, name):
        return True
    if loop.body is None:
        return False
    for node in syntax.walk(loop.body):
        if node.type == "if_statement":
            consequence = node.child_by_field_name("consequence")
            if consequence is not None and any(
                n.type == "break_statement" for n in syntax.walk(consequence)
            ):
                test = node.child_by_field_name("condition")
                if test is not None and _compares(test, name):
                    return True
    return False


def _plain_names(node: Node, calls: bool = False) -> set[str]:
    """Identifiers read in `node` (not callees, not fields); None of them
    may be inside a call unless `calls`."""
    found = set()
    for inner in syntax.walk(node):
        if inner.type == "identifier":
            parent = inner.parent
            if (
                parent is not None
                and parent.type == "call_expression"
                and (parent.child_by_field_name("function") == inner)
            ):
                continue
            if inner.text and inner.text.isupper():
                continue  # a constant
            found.add(syntax.text(inner))
        elif not calls and inner.type in (
            "field_expression",
            "subscript_expression",
            "pointer_expression",
        ):
            return set()
    return found


def _locals(definition: Node) -> set[str]:
    """Names declared in the function: its parameters and its locals."""
    found = set()
    for node in syntax.walk(definition):
        if node.type in ("parameter_declaration", "declaration", "init_declarator"):
            declarator = node.child_by_field_name("declarator")
            while declarator is not None and declarator.type != "identifier":
                declarator = declarator.child_by_field_name("declarator")
            if declarator is not None:
                found.add(syntax.text(declarator))
        if node.type == "declaration":
            for child in node.named_children:
                if child.type == "identifier":
                    found.add(syntax.text(child))
        # `LIST_HEAD(list);`, `DEFINE_XARRAY(xa);`: a macro declaring a local.
        if node.type == "call_expression" and _DECLARING_MACRO.fullmatch(
            syntax.call_name(node) or ""
        ):
            arguments = syntax.arguments(node)
            if arguments and arguments[0].type == "identifier":
                found.add(syntax.text(arguments[0]))
    return found


_DECLARING_MACRO = regex(r"(?:H?LIST|LLIST)_HEAD|DEFINE_[A-Z_]+|DECLARE_[A-Z_]+")


def _address_taken(definition: Node, names: set[str]) -> bool:
    for node in syntax.walk(definition):
        if (
            node.type == "pointer_expression"
            and syntax.text(node.child_by_field_name("operator")) == "&"
        ) and syntax.text(node.child_by_field_name("argument")) in names:
            return True
    return False


RULE = LoopNoYield
