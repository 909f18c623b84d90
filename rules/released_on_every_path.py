"""A reference, isolation, mapping, allocation, sysfs entry or lock taken and
not released on one of the paths out of the function.

## What it does
Follows what the function takes along every path, with the flow layer's
ownership analysis (`analyzer/flow/ownership.py`, whose tables pair each
acquisition with its releases: `folio_get()`/`folio_try_get()`/
`get_page()` with `folio_put()`/`put_page()`, `folio_isolate_lru()` with
`folio_putback_lru()`, `get_pid()`/`find_get_pid()` with `put_pid()`,
`get_task_struct()` with `put_task_struct()`, `kobject_init_and_add()` with
`kobject_put()`, `kobject_add()` with `kobject_del()`, `pte_offset_map*()`
with `pte_unmap*()`, `k*alloc()`/`kvmalloc*()`/`alloc_percpu()` with
`kfree()`/`kvfree()`/`free_percpu()`, ...) and with the lock analysis
(`spin_lock()`, `mmap_read_lock()`, `folio_lock()`, ... and their unlocks).
It flags:

- a path that leaves the function on an error (a negative errno, `NULL`,
  `false`, an `ERR_PTR()`, a nonzero error code, or any exit of a `void`
  function) still holding what the function took, when the function
  releases it on another path (or did before the patch): the patch removed
  a release, or added an early return before it;
- `kobject_put()` of a kobject the function added to sysfs and did not
  `kobject_del()` on that path, and a patch that drops the `kobject_del()`
  that every path used to make before a `kobject_put()`.

Ownership handed over is not a leak: the object returned, stored into a
structure or a list (`x->f = p`, `arr[i] = p`, `*out = p`,
`list_add(&folio->lru, ...)`), or passed to a callee that may keep it (a
function of the tree whose code releases or queues it, or any callee the
review cannot see).  Conditional acquisitions follow the call's result, not
the text: `folio_try_get()` holds only where it returned true,
`kobject_init_and_add()` adds to sysfs only where it returned 0 (and needs
`kobject_put()` either way), `kmalloc()` owns only where the pointer is not
NULL; `if (err)`, `if (ret < 0)`, `if (!p)` narrow them.

## Why is this bad?
Error paths are the least run code in the kernel.  A reference never
dropped pins a folio forever (memory that can never be freed, a split or
migration that always fails on its elevated refcount); an isolated folio
never put back is lost to reclaim; an unmapped PTE table under
CONFIG_HIGHPTE leaks a kmap slot; a lock held on return deadlocks the next
taker; a sysfs directory left behind by `kobject_put()` alone makes the
next `kobject_add()` of the same name fail with -EEXIST (with
CONFIG_DEBUG_KOBJECT_RELEASE, or while a reader holds a reference).

## Example
```c
        if (!folio_isolate_lru(folio))
                return -EBUSY;
        err = demo_prepare(folio);
        if (err)
                return err;             /* the isolated folio is lost */
        list_add_tail(&folio->lru, &pagelist);
```

## Use instead
```c
        if (!folio_isolate_lru(folio))
                return -EBUSY;
        err = demo_prepare(folio);
        if (err) {
                folio_putback_lru(folio);
                return err;
        }
        list_add_tail(&folio->lru, &pagelist);
```
and for sysfs directories, `kobject_del()` before the `kobject_put()`:
```c
        err = kobject_init_and_add(&dir->kobj, &demo_ktype, parent, "%d", i);
        if (err)
                goto put;               /* not added: put only */
        err = demo_add_files(dir);
        if (err)
                goto del;
        return 0;
del:
        kobject_del(&dir->kobj);
put:
        kobject_put(&dir->kobj);
        return err;
```

## Known problems
An object is known by its name in the function (`folio`, `&x->kobj` stands
for `x`) and by aliases made by assignment; one reached through another
object (a folio on a list) is not followed.  Reference counts are one per
object and family: a function that takes two references and drops one on
a path is not judged.  Callees in other files are assumed to keep what
they are handed, and leaks after such a call are missed.  A successful
return that hands a reference to the caller is not judged (only error
returns and `void` functions are).  Locks are judged only when the
function took them itself.

## References
- "mm/damon/sysfs: put target pids for damon_start() failure" (SeongJae
  Park), a `get_pid()` not put on an error path.
- "mm/madvise: reclaim isolated folios if PTE restart fails", isolated
  folios left off the LRU when a walk bails out.
- The series "mm/damon/sysfs: kobject_del() directories that users can
  create/remove" (SJ Park, 2026),
  https://lore.kernel.org/r/20260628220121.97360-1-sj@kernel.org :
  "mm/damon/sysfs: kobject_del() target (normal), context and kdamond
  dirs", "mm/damon/sysfs: kobject_del() region and target (error) dirs",
  "mm/damon/sysfs-schemes: kobject_del() scheme dirs" and eight more (the
  6.1 stable backports are 66ededcbe978, 9356e9b0688e and cf52c750bd96).
- "unshare: fix nsproxy leak in ksys_unshare() on set_cred_ucounts()
  failure", an error path jumping past the label that puts the nsproxy.
- "mm/mm_init: handle alloc_percpu failure in free_area_init_core_hotplug"
  and "mm/hugetlb_vmemmap: fix incorrect vmemmap restore in rollback", the
  error-path class these lessons come with.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow, vocabulary
from analyzer.flow import events as ev
from analyzer.flow import ownership as own
from analyzer.flow.locks import HELD
from analyzer.flow.values import ERR, FALSE, NULL, TRUE, Analysis
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# What makes the rule worth running on a function: it takes something.
TRIGGERS = frozenset(own.ACQUIRES) | frozenset(
    name for name, spec in vocabulary.LOCK_CALLS.items() if not spec.release
)
# kobject_put() must follow kobject_del() of an added kobject.
PRECEDED_BY: dict[str, str] = {"kobject_put": "kobject_del"}
# Lock classes whose leaks are judged (rcu and friends have no object).
LOCK_CLASSES = frozenset({"spin", "mutex", "rwsem", "mmap", "i_mmap", "folio"})

_FAILURE_CONSTANT = ("FAIL", "ERR", "BUSY", "OOM", "SIGBUS", "SIGSEGV", "NOMEM", "AGAIN")


class ReleasedOnEveryPath(FunctionRule):
    id = "RELEASED_ON_EVERY_PATH"
    severity = Severity.WARNING
    summary = (
        "a reference, isolation, mapping, allocation, sysfs entry or lock taken and not "
        "released on an error path (or kobject_put() without kobject_del())"
    )
    # mm code, and the mm code that lives elsewhere.
    paths = (
        "mm/*",
        "include/linux/*",
        "fs/userfaultfd.c",
        "fs/proc/task_mmu.c",
        "fs/dax.c",
        "kernel/fork.c",
        "kernel/events/uprobes.c",
    )

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        if flow.calls(TRIGGERS):
            analysis = own.ownership(flow)
            if analysis.complete:
                yield from self._leaks(change, flow, analysis)
                yield from self._put_in_sysfs(change, analysis)
            yield from self._lock_leaks(change, flow)
        yield from self._dropped_teardown(change)

    # -- resources left owned at an error exit ---------------------------------------------

    def _leaks(
        self, change: FunctionChange, flow: FunctionFlow, analysis: Analysis
    ) -> Iterator[Finding]:
        tracker = own.tracker_of(analysis)
        released_before = _released_before(change)
        returns = _return_kind(change.after.node)
        reported: set[tuple[int, int]] = set()
        compared = own.compared_objects(flow.graph)
        for exit in own.exits(analysis):
            if not _failure(exit, returns, analysis):
                continue
            for _place, family, values in own.resource_places(exit.state):
                if not own.on_this_path(exit.state, values, {own.OWNED}):
                    continue
                for value in values:
                    resource = tracker.resources.get(value)
                    if resource is None or family == "sysfs":
                        continue  # sysfs entries: the kobject_put() check
                    if resource.object in compared:
                        continue  # `if (p != stack_buffer) kfree(p)`: not followed
                    if _returned(exit, resource, analysis):
                        continue
                    evidence = _same_resource(tracker.released, tracker, resource)
                    if not evidence and _signature(resource) not in released_before:
                        continue
                    where = exit.node.id if exit.node is not None else -1
                    if (resource.site.id, where) in reported:
                        continue
                    reported.add((resource.site.id, where))
                    yield self._leak(change, resource, exit, evidence)

    def _leak(
        self, change: FunctionChange, resource: own.Resource, exit: own.Exit, evidence: bool
    ) -> Finding:
        family = own.FAMILIES[resource.family]
        acquire = syntax.call_name(resource.site) or "?"
        line = change.after.image.real_line(resource.site.start_point.row)
        releases = "/".join(f"{r}()" for r in list(family.releases)[:2])
        others = "as the other paths do" if evidence else "as the function did before the patch"
        anchor = exit.node if exit.node is not None else _last_statement(change)
        where = "this return" if exit.node is not None else "the end of the function"
        message = (
            f"{family.what} taken by {acquire}() on line {line} ({resource.object}) is still "
            f"held at {where}: release it ({releases}) on this error path too, {others}"
        )
        key = f"leak:{resource.family}:{acquire}:{syntax.node_key(anchor)}"
        return change.finding(anchor, message, Confidence.MEDIUM, key=key)

    # -- kobject_put() of a kobject still in sysfs --------------------------------------

    def _put_in_sysfs(self, change: FunctionChange, analysis: Analysis) -> Iterator[Finding]:
        """Only what the patch makes: `kobject_put()` alone cleans up the
        directory when the last reference goes, so the old instances of
        this (init-time error paths) are smells, not the lesson."""
        before = change.before_flow
        if before is None:
            return
        old = Counter(
            syntax.node_key(node) for node, _ in _puts_in_sysfs(before, own.ownership(before))
        )
        for node, message in _puts_in_sysfs(change.flow, analysis):
            key = syntax.node_key(node)
            if old[key] > 0:
                old[key] -= 1
                continue
            yield change.finding(node, message, Confidence.HIGH, key=f"put-in-sysfs:{key}")

    # -- locks ---------------------------------------------------------------------------

    def _lock_leaks(self, change: FunctionChange, flow: FunctionFlow) -> Iterator[Finding]:
        taken = flow.calls(frozenset(n for n, s in vocabulary.LOCK_CALLS.items() if not s.release))
        if not taken or any(_ZERO_IS_TAKEN.fullmatch(syntax.call_name(c) or "") for c in taken):
            return
        analysis = flow.locks()
        if not analysis.complete:
            return
        returns = _return_kind(change.after.node)
        if returns == "void":
            return  # lock helpers return holding what they took
        released = _released_locks(flow)
        released_before = _released_locks(change.before_flow) if change.before_flow else set()
        callers = _callers_locks(flow, analysis)
        seen: set[tuple[str, int]] = set()
        for exit in own.exits(analysis):
            if not _failure(exit, returns, analysis):
                continue
            for name, values in exit.state.places.items():
                lock_class = name.split(":", 1)[0]
                if lock_class not in LOCK_CLASSES:
                    continue
                if exit.state.kinds_of_values(values) != frozenset({HELD}):
                    continue
                if not all(isinstance(v, int) or str(v).startswith("lock:") for v in values):
                    continue  # held since before the function: the caller's
                if name not in released and name not in released_before:
                    continue
                if name in callers:
                    continue  # dropped and re-taken for a caller that holds it
                if _handed_lock(flow, name):
                    continue  # a callee handed the lock (or its object) may drop it
                where = exit.node.id if exit.node is not None else -1
                if (name, where) in seen:
                    continue
                seen.add((name, where))
                anchor = exit.node if exit.node is not None else _last_statement(change)
                lock = name.split(":", 1)[1] if ":" in name else name
                message = (
                    f"{lock} ({lock_class} lock) is still held at this error exit, and released on "
                    f"the function's other paths: unlock it here too"
                )
                yield change.finding(
                    anchor,
                    message,
                    Confidence.MEDIUM,
                    key=f"lock:{lock_class}:{syntax.node_key(anchor)}",
                )

    # -- a patch that drops the kobject_del() before kobject_put() ----------------------------

    def _dropped_teardown(self, change: FunctionChange) -> Iterator[Finding]:
        before = change.before_flow
        if before is None:
            return
        flow = change.flow
        for release, teardown in PRECEDED_BY.items():
            now = _preceded(flow, release, teardown)
            then = _preceded(before, release, teardown)
            for key, (call, preceded) in now.items():
                if preceded or not then.get(key, (None, False))[1]:
                    continue
                argument = syntax.text(syntax.arguments(call)[0]) if syntax.arguments(call) else ""
                message = (
                    f"the patch drops the {teardown}({argument}) that came before this "
                    f"{release}(): the sysfs directory outlives the put, and re-creating it "
                    f"fails with -EEXIST"
                )
                yield change.finding(
                    call,
                    message,
                    Confidence.HIGH,
                    key=f"teardown:{release}:{syntax.node_key(call)}",
                )


def _puts_in_sysfs(flow: FunctionFlow, analysis: Analysis) -> Iterator[tuple[Node, str]]:
    """Each `kobject_put()` reached on a path where its kobject is still in
    sysfs (added by this function, not deleted)."""
    if not analysis.complete:
        return
    tracker = own.tracker_of(analysis)
    seen: set[int] = set()
    for _point, event, state, results in analysis.states():
        if not isinstance(event, ev.Call) or event.name not in own.ENDS:
            continue
        family = own.ENDS[event.name]
        if not event.arguments or event.node.id in seen:
            continue
        for place in tracker._places_of(analysis, state, event.arguments[0], results, family):
            values = state.places[place]
            if not own.on_this_path(state, values, {own.OWNED, own.HANDED}):
                continue
            seen.add(event.node.id)
            site = next(
                (tracker.resources[v].site for v in state.places[place] if v in tracker.resources),
                None,
            )
            added = (
                f"added by {syntax.call_name(site)}() on line "
                f"{flow.function.image.real_line(site.start_point.row)}"
                if site is not None
                else "added to sysfs"
            )
            argument = syntax.text(event.arguments[0])
            message = (
                f"kobject_put({argument}) on a path where it is still in sysfs ({added}) "
                f"and not kobject_del()ed: the directory outlives the put and the next "
                f"kobject_add() of that name fails with -EEXIST; kobject_del() it first"
            )
            yield event.node, message
            break


def _preceded(
    flow: FunctionFlow, release: str, teardown: str
) -> dict[tuple[str, int], tuple[Node, bool]]:
    """Each `release(x)` call (keyed by argument text and occurrence): is a
    `teardown(x)` on every path to it?"""
    found: dict[tuple[str, int], tuple[Node, bool]] = {}
    counts: dict[str, int] = {}
    teardowns = flow.calls(teardown)
    for call in flow.calls(release):
        arguments = syntax.arguments(call)
        if not arguments:
            continue
        text = _normal(arguments[0])
        counts[text] = counts.get(text, 0) + 1
        point = flow.point(call)
        if point is None or not flow.reachable(point):
            continue
        targets = {
            id(p)
            for t in teardowns
            if syntax.arguments(t) and _normal(syntax.arguments(t)[0]) == text
            for p in [flow.point(t)]
            if p is not None
        }
        preceded = bool(targets) and flow.every_path(
            None, point, lambda p, targets=targets: id(p) in targets
        )
        found[(text, counts[text])] = (call, preceded)
    return found


def _normal(node: Node) -> str:
    return "".join(syntax.text(node).split())


def _released_before(change: FunctionChange) -> set[tuple[str, str, str]]:
    """(family, acquiring call, object) the function as it was released."""
    before = change.before_flow
    if before is None or not before.calls(TRIGGERS):
        return set()
    analysis = own.ownership(before)
    if not analysis.complete:
        return set()
    tracker = own.tracker_of(analysis)
    return {_signature(tracker.resources[v]) for v in tracker.released if v in tracker.resources}


def _signature(resource: own.Resource) -> tuple[str, str, str]:
    return (resource.family, syntax.call_name(resource.site) or "", resource.object)


def _same_resource(released: set, tracker: own.Ownership, resource: own.Resource) -> bool:
    wanted = _signature(resource)
    return any(
        v in tracker.resources and _signature(tracker.resources[v]) == wanted for v in released
    )


def _released_locks(flow: FunctionFlow | None) -> set[str]:
    """Lock places some call of the function releases."""
    if flow is None:
        return set()
    from analyzer.flow.locks import _lock_name  # the lock tracker's naming

    names: set[str] = set()
    releases = frozenset(n for n, s in vocabulary.LOCK_CALLS.items() if s.release)
    for call in flow.calls(releases):
        spec = vocabulary.LOCK_CALLS[syntax.call_name(call) or ""]
        name = _lock_name(
            spec, ev.Call(call, syntax.call_name(call), tuple(syntax.arguments(call)))
        )
        if name is not None:
            names.add(name)
    return names


def _callers_locks(flow: FunctionFlow, analysis: Analysis) -> set[str]:
    """Locks the function is called with: asserted held, or released on a
    path where it had not taken them."""
    from analyzer.flow.locks import _lock_name

    found: set[str] = set()
    for call in flow.calls(_ASSERT_HELD):
        arguments = syntax.arguments(call)
        if arguments:
            lock = ev.address_of(arguments[0]) or ev.place(arguments[0])
            if lock is not None:
                found.update(f"{cls}:{lock}" for cls in LOCK_CLASSES)
    for _point, event, state, _results in analysis.states():
        if not isinstance(event, ev.Call) or event.name is None:
            continue
        spec = vocabulary.LOCK_CALLS.get(event.name)
        if spec is None or not spec.release:
            continue
        name = _lock_name(spec, event)
        if name is None:
            continue
        values = state.places.get(name)
        if not values or any(str(v).startswith("top:") for v in values):
            found.add(name)
    return found


def _handed_lock(flow: FunctionFlow, name: str) -> bool:
    """Is the lock, or the object it is the lock of, handed to a call that
    is no lock call (`migration_entry_wait_on_locked(entry, ptl)`,
    `pin_user_pages_remote(mm, ..., &locked)`, `filemap_read_folio(file,
    filler, folio)`)?"""
    lock = name.split(":", 1)[1] if ":" in name else name
    roots = {lock, lock.split("->", 1)[0].split(".", 1)[0]}
    for call in flow.calls():
        callee = syntax.call_name(call) or ""
        if callee in vocabulary.LOCK_CALLS or vocabulary.ASSERTIONS.fullmatch(callee):
            continue
        for argument in syntax.arguments(call):
            target = ev.address_of(argument) or ev.place(argument)
            if target is not None and (
                target in roots or target.split("->", 1)[0].split(".", 1)[0] in roots
            ):
                return True
    return False


# Taken only when they return 0; the lock tracker reads them as always taken.
_ZERO_IS_TAKEN = re.compile(r"\w+_(killable|interruptible)")

_ASSERT_HELD = frozenset(
    {
        "lockdep_assert_held",
        "lockdep_assert_held_write",
        "lockdep_assert_held_read",
        "mmap_assert_locked",
        "mmap_assert_write_locked",
        "assert_spin_locked",
    }
)


def _return_kind(function: Node) -> str:
    """void, pointer, bool, signed (an error code) or other."""
    declarator = function.child_by_field_name("declarator")
    pointer = False
    while declarator is not None and declarator.type in (
        "pointer_declarator",
        "parenthesized_declarator",
    ):
        pointer = pointer or declarator.type == "pointer_declarator"
        declarator = declarator.child_by_field_name("declarator")
    if pointer:
        return "pointer"
    kind = syntax.text(function.child_by_field_name("type"))
    if kind == "void":
        return "void"
    if kind in ("bool", "_Bool"):
        return "bool"
    if kind in ("int", "long", "ssize_t", "vm_fault_t", "long long", "s64", "s32"):
        return "signed"
    return "other"


def _failure(exit: own.Exit, returns: str, analysis: Analysis) -> bool:
    """Does this exit leave on an error?"""
    if returns == "void":
        return True
    value = exit.value
    if value is None:
        return False
    node = ev.strip(value)
    text = syntax.text(node)
    if node.type in ("null",) or text == "NULL":
        return returns == "pointer"
    if node.type == "false":
        return returns == "bool"
    if node.type == "unary_expression" and text.startswith("-"):
        return True
    if node.type == "call_expression" and syntax.call_name(node) in ("ERR_PTR", "ERR_CAST"):
        return True
    if node.type == "identifier" and text.isupper():
        return any(word in text for word in _FAILURE_CONSTANT) and "SUCCE" not in text
    values = analysis.value_of(exit.state, value, exit.results)
    if not values:
        return False
    kinds = exit.state.kinds_of_values(values)
    constants = {k for k in kinds if k.startswith("=")}
    if constants:
        return all(
            c.startswith("=-") or any(w in c for w in _FAILURE_CONSTANT) for c in constants
        ) and "SUCCE" not in "".join(constants)
    if returns == "pointer":
        return bool(kinds) and kinds <= {NULL, ERR, FALSE}
    if returns == "bool":
        return kinds == {FALSE}
    if returns == "signed":
        return kinds == {TRUE}
    return False


def _returned(exit: own.Exit, resource: own.Resource, analysis: Analysis) -> bool:
    """Does this exit hand the object to the caller?"""
    if exit.value is None:
        return False
    names = own.objects_in(exit.value)
    root = resource.object
    if any(n == root or n.startswith((root + "->", root + ".")) for n in names):
        return True
    tracker = own.tracker_of(analysis)
    values = analysis.value_of(exit.state, exit.value, exit.results) or frozenset()
    return any(
        resource in [tracker.resources.get(r) for r in tracker.by_pointer.get(v, ())]
        for v in values
    )


def _last_statement(change: FunctionChange) -> Node:
    body = change.after.body
    assert body is not None
    statements = [c for c in body.named_children if c.type != "comment"]
    return statements[-1] if statements else body


RULE = ReleasedOnEveryPath
