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
`kfree()`/`kvfree()`/`free_percpu()`, `mmget()` with `mmput()`,
`css_get()` with `css_put()`, ...) and with the lock analysis
(`spin_lock()`, `mutex_lock()`, `mmap_read_lock()`, `folio_lock()`, ...).
It flags:

- a path that leaves the function on an error (a negative errno, `NULL`,
  `false`, an `ERR_PTR()`, an error code a test showed nonzero, a
  `SCAN_*` result other than the function's `SCAN_SUCCEED`, or any exit of
  a `void` function) still holding what the function took, when there is
  evidence that the function answers for it: it releases it on another
  path, hands it on (to its caller on success, to a list or a structure) on
  another path of a function that returns a value, or released it on this
  path before the patch;
- a lock the function took still held at an error exit of a function that
  returns a value, when the function releases it on another path, is not
  called with it held (`lockdep_assert_held()`, or an unlock on a path that
  never took it) and hands neither the lock nor its object to a callee
  that may drop it;
- as a change only: a `kobject_put()` reached with its kobject still added
  to sysfs by this function (the `kobject_del()` removed or skipped), and a
  patch that drops the `kobject_del()` every path made before a
  `kobject_put()` of a kobject from elsewhere;
- as a change only: a call whose error the function acted on (a test of
  its result, or of the name it was stored in, leading to an error exit:
  `return -E...`, `return NULL`, `return err`, `goto out_free`) made as a
  bare statement: its error, and the error path with its releases, is
  ignored (unless the callee, in the same file, now returns `void`); or
  whose result is now stored where nothing tests it afterwards (no
  condition, `return` or further store reads what was stored), when that
  result says whether the call failed: an allocation's, a table lookup's
  (`find_vma()`), or a helper's of the tree that may return NULL or an
  `ERR_PTR()` (`x->stats = alloc_percpu(...)` followed only by
  `per_cpu_ptr(x->stats, cpu)`).  A stored result counts as tested only by a test of its truth or
  sign (`!p`, `err`, `ret < 0`, `IS_ERR(p)`), not by a comparison with
  another value;
- as a change only: on the error path of a call that was handed the
  address of where to store what it makes (`err = demo_add_dir(x,
  &x->dir); if (err) goto put_dir;`), a release of that object
  (`kobject_put(&x->dir->kobj)`, `kfree(x->dir)`) with no store to it on
  the way: the call failed, so it made nothing (or released what it made).

Ownership handed over is not a leak: the object returned, stored into a
structure, a global or a list (`x->f = p`, `arr[i] = p`, `*out = p`,
`list_add(&folio->lru, ...)`), or passed to a callee of the tree that
stores it, releases it or queues it.  Conditional acquisitions follow the
call's result, not the text: `folio_try_get()` holds only where it
returned true, `kobject_init_and_add()` adds to sysfs only where it
returned 0 (and needs `kobject_put()` either way), `kmalloc()` owns only
where the pointer is not NULL; `if (err)`, `if (ret < 0)`, `if (!p)`
narrow them.

## Why is this bad?
Error paths are the least run code in the kernel.  A reference never
dropped pins a folio forever (memory that can never be freed, a split or
migration that always fails on its elevated refcount); an isolated folio
never put back is lost to reclaim; an unmapped PTE table under
CONFIG_HIGHPTE leaks a kmap slot; a lock held on return deadlocks the next
taker; a sysfs directory left behind by `kobject_put()` alone makes the
next `kobject_add()` of the same name fail with -EEXIST (with
CONFIG_DEBUG_KOBJECT_RELEASE, or while a reader holds a reference).  An
allocation whose failure nobody tests is a NULL dereference under memory
pressure (a per-CPU base of NULL turns every `per_cpu_ptr()` into a wild
pointer), and a put of what a failed call never made puts NULL plus an
offset, or another directory's reference.

## Example
```c
        if (!folio_isolate_lru(folio))
                return -EBUSY;
        err = demo_prepare(folio);
        if (err)
                return err;             /* the isolated folio is lost */
        list_add_tail(&folio->lru, &pagelist);
```

and on the error paths of calls that make an object each:
```c
        err = demo_add_range(pattern, &pattern->low, "low");
        if (err)
                goto put_low;           /* nothing was made: put of NULL */
        err = demo_add_range(pattern, &pattern->high, "high");
        if (err)
                goto put_high;          /* puts the 'high' that failed */
        return 0;
put_high:
        kobject_put(&pattern->high->kobj);
put_low:
        kobject_put(&pattern->low->kobj);
        return err;
```
and an allocation no longer tested:
```c
        if (node->stats == &demo_boot_stats)
                node->stats = alloc_percpu(struct demo_stats);
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

each error label releases only what the calls before the failed one made
(`if (err) return err;` for the first, `goto put_low;` for the second),
and an allocation is tested before it is used:
```c
        if (node->stats == &demo_boot_stats) {
                p = alloc_percpu(struct demo_stats);
                if (!p)
                        return -ENOMEM;
                node->stats = p;
        }
```

## Known problems
An object is known by its name in the function (`folio`, `&x->kobj` stands
for `x`) and by aliases made by assignment; one released through another
name (`cma->cma_kobj` for `cma_kobj`) or reached through another object (a
folio on a list) is not followed.  Reference counts are one per object and
family.  Callees the review cannot read (other `.c` files) are taken to
borrow what they are handed unless their name says they keep it
(`list_add*()`, `*_store()`, `queue_*()`, `*rmap*()`, ...).  Success
returns are not judged (a reference kept on success is the caller's), nor
objects compared with other pointers (`if (pages != stack) kfree(pages)`).
Large functions merge paths (past six path states per point, and in loops):
a leak on one of many similar error paths of a function such as
`collapse_file()` may be lost in the merge, and the rule stays silent
rather than guess.  Locks whose taking call can fail by returning nonzero
(`mutex_lock_killable()`) are not judged in that function.  A kobject
whose failed `kobject_init_and_add()` is cleaned up with `kfree()` is
judged only in code a patch adds or changes: `mmreview scan` stays quiet
on the old instances in mm/ (in v6.12: `thpsize_create()`,
`add_weighted_interleave_group()` and `mempolicy_sysfs_init()`, the last
two fixed upstream by the weighted interleave fix below).  A release of
what a failed call was to make relies on the convention that a call which
fails leaves its output unset (or releases what it made itself); a callee
that stores an object and then fails, leaving it to its caller, would make
such a release right, and a patch adding it would be flagged.  A result
tested only through another name (`if (!node->stats)` after `p =
alloc_percpu(); node->stats = p;` counts, `if (demo_stats_ok(node))` does
not) is taken as untested, but only where the function tested it before.

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
- "mm/mempolicy: fix memory leaks in weighted interleave sysfs" (Rakie Kim,
  2025; Fixes: dce41f5ae253),
  https://lore.kernel.org/r/20250417072839.711-2-rakie.kim@sk.com : a
  failed `kobject_init_and_add()` cleaned up with `kfree()` instead of
  `kobject_put()`.
- "mm/mm_init: handle alloc_percpu failure in free_area_init_core_hotplug"
  (the `alloc_percpu()` result stored untested, and its caller
  `hotadd_init_pgdat()` ignoring the new error) and "mm/hugetlb_vmemmap: fix
  incorrect vmemmap restore in rollback", the error-path class these
  lessons come with.
- "mm/damon/sysfs-schemes: fix dir put orders in access_pattern_add_dirs()"
  (SeongJae Park): each error label put the directory whose creation had
  just failed instead of those already made.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow, paths, vocabulary
from analyzer.flow import events as ev
from analyzer.flow import ownership as own
from analyzer.flow.locks import HELD
from analyzer.flow.results import failure_kinds
from analyzer.flow.values import ERR, FALSE, NULL, TRUE, Analysis
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# What makes the rule worth running on a function: it takes something.
RESOURCES = frozenset(own.ACQUIRES)
LOCKS_TAKEN = frozenset(name for name, spec in vocabulary.LOCK_CALLS.items() if not spec.release)
LOCKS_DROPPED = frozenset(name for name, spec in vocabulary.LOCK_CALLS.items() if spec.release)

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
        "released on an error path, kobject_put() without kobject_del(), an error or "
        "allocation no longer checked, a put of what a failed call never made"
    )
    paths = vocabulary.MM_CODE

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        if flow.calls(RESOURCES):
            analysis = own.ownership(flow)
            if analysis.complete:
                yield from self._leaks(change, flow, analysis)
                yield from self._put_in_sysfs(change, analysis)
        yield from self._lock_leaks(change, flow)
        yield from self._dropped_teardown(change)
        yield from self._dropped_error_check(change)
        yield from self._release_of_unmade(change)

    # -- resources left owned at an error exit ---------------------------------------------

    def _leaks(
        self, change: FunctionChange, flow: FunctionFlow, analysis: Analysis
    ) -> Iterator[Finding]:
        tracker = own.tracker_of(analysis)
        # The function as it was is analysed only when a leak needs it as
        # evidence (its paths cost as much as the function's own).
        released_before = functools.cache(lambda: _released_before(change))
        returns = _return_kind(change.after.node)
        successes = _successes(change.after.node)
        compared = own.compared_objects(flow.graph)
        parameters = set(own.parameter_names(change.after.node))
        held: list[tuple[own.Exit, own.Resource]] = []
        kept_on_success: set[tuple[str, str, str]] = set()
        for exit in own.exits(analysis):
            failure = _failure(exit, returns, analysis, successes)
            for _place, _family, values in own.resource_places(exit.state):
                handed = own.on_this_path(exit.state, values, {own.HANDED})
                if not handed and not own.on_this_path(exit.state, values, {own.OWNED}):
                    continue
                for value in values:
                    resource = tracker.resources.get(value)
                    if resource is None or resource.object in compared:
                        continue  # `if (p != stack_buffer) kfree(p)`: not followed
                    if handed or not failure:
                        # Handed over, or kept for the caller on success: the
                        # function answers for it.  Not judged for an object
                        # the caller handed in whose lifetime is its
                        # container's (the caller releases it either way:
                        # `kmem_cache_release()` puts the cache's kobject).
                        local = (
                            resource.family not in ("kobject", "sysfs")
                            or _root(resource.object) not in parameters
                        )
                        # (A void function has no success to tell apart: what
                        # it stores on one path only may depend on the
                        # configuration, `#ifdef CONFIG_MEMCG`.)
                        if local and returns != "void" and (handed or exit.value is not None):
                            kept_on_success.add(_signature(resource))
                        continue
                    if not _returned(exit, resource, analysis):
                        held.append((exit, resource))
        reported: set[tuple[int, str, int]] = set()
        alone = change.before is None and not change.added_rows
        for exit, resource in held:
            signature = _signature(resource)
            if alone and resource.family == "kobject" and resource.creates:
                # A failed kobject_init_and_add() freed with kfree() leaks
                # only the kobject's name, on init-time error paths: judged
                # where a patch writes it, not in a whole-tree scan (where
                # mm/ has old instances; see Known problems).
                continue
            if _same_resource(tracker.released, tracker, resource):
                evidence = "and the other paths release it"
            elif signature in kept_on_success:
                evidence = "and the other paths hand it on (to the caller, a list, a structure)"
            elif signature in released_before():
                evidence = "and the function released it here before the patch"
            else:
                continue
            where = exit.node.id if exit.node is not None else -1
            if (resource.site.id, resource.family, where) in reported:
                continue
            reported.add((resource.site.id, resource.family, where))
            yield self._leak(change, resource, exit, evidence)

    def _leak(
        self, change: FunctionChange, resource: own.Resource, exit: own.Exit, evidence: str
    ) -> Finding:
        family = own.FAMILIES[resource.family]
        acquire = syntax.call_name(resource.site) or "?"
        line = change.after.image.real_line(resource.site.start_point.row)
        releases = "/".join(f"{r}()" for r in list(family.releases)[:2])
        anchor = exit.node if exit.node is not None else _last_statement(change)
        where = "this return" if exit.node is not None else "the end of the function"
        message = (
            f"{family.what} taken by {acquire}() on line {line} ({resource.object}) is still "
            f"held at {where}, {evidence}: release it ({releases}) on this error path too"
        )
        if resource.family == "kobject" and acquire == "kobject_init_and_add":
            message += (
                " (even when kobject_init_and_add() failed: kobject_put(), not kfree(), frees "
                "the name it set)"
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
        # The function as it was is analysed only once it makes such a put.
        made_before = functools.cache(
            lambda: Counter(
                syntax.node_key(n) for n, _ in _puts_in_sysfs(before, own.ownership(before))
            )
        )
        for node, message in _puts_in_sysfs(change.flow, analysis):
            key = syntax.node_key(node)
            if (old := made_before())[key] > 0:
                old[key] -= 1
                continue
            yield change.finding(node, message, Confidence.HIGH, key=f"put-in-sysfs:{key}")

    # -- locks ---------------------------------------------------------------------------

    def _lock_leaks(self, change: FunctionChange, flow: FunctionFlow) -> Iterator[Finding]:
        returns = _return_kind(change.after.node)
        if returns == "void":
            return  # lock helpers return holding what they took
        body = change.after.body
        if body is None or not _ERROR_EXITS.search(body.text or b""):
            return  # no error exit to judge
        taken = flow.calls(LOCKS_TAKEN)
        if not taken or any(_ZERO_IS_TAKEN.fullmatch(syntax.call_name(c) or "") for c in taken):
            return
        if change.before_flow is None and not flow.calls(LOCKS_DROPPED):
            return  # never released here: no other path releases it
        analysis = own.exit_locks(flow)
        if not analysis.complete:
            return
        released = _released_locks(flow)
        released_before = _released_locks(change.before_flow) if change.before_flow else set()
        callers = _callers_locks(flow, analysis)
        successes = _successes(change.after.node)
        seen: set[tuple[str, int]] = set()
        for exit in own.exits(analysis):
            if not _failure(exit, returns, analysis, successes):
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

    # -- a patch that stops checking what a call returns ---------------------------------

    def _dropped_error_check(self, change: FunctionChange) -> Iterator[Finding]:
        """`if (free_area_init_core_hotplug(pgdat)) return NULL;` become a
        bare call: the error the function used to act on (and its error
        path, with the releases on it) is ignored."""
        before = change.before_flow
        if before is None:
            return
        flow = change.flow
        tested_before = _tested_calls(before)
        if not tested_before:
            return
        tested_now = _tested_calls(flow)
        for call in _discarded_calls(flow) + _unlooked_results(flow):
            spelled = _normal(call)
            if tested_before.get(spelled, 0) <= tested_now.get(spelled, 0):
                continue
            callee = syntax.call_name(call) or ""
            if vocabulary.ASSERTIONS.fullmatch(callee) or callee in vocabulary.TRANSPARENT_TESTS:
                continue
            definition = flow.summaries.definition(callee)
            if definition is not None and _return_kind(definition.node) == "void":
                continue  # it cannot fail any more: the patch changed it too
            message = (
                f"the patch stops checking what {callee}() returns: the function acted on its "
                "error before (returned, unwound), and now carries on as if it had succeeded"
            )
            yield change.finding(
                call, message, Confidence.MEDIUM, key=f"unchecked:{syntax.node_key(call)}"
            )

    # -- a patch that releases what a failed call was to make --------------------------------

    def _release_of_unmade(self, change: FunctionChange) -> Iterator[Finding]:
        """`err = make_dir(x, &x->dir); if (err) goto put_dir; ...
        put_dir: kobject_put(&x->dir->kobj);`: the call that failed made no
        directory (or put the one it made itself): the error path puts one
        that is not there, or another's.  Only as a change: the error path
        of that call released nothing of its product before the patch."""
        before = change.before_flow
        if before is None:
            return
        now = _releases_of_unmade(change.flow)
        if not now:
            return
        then = Counter(key for key, _call, _release in _releases_of_unmade(before))
        for key, call, release in now:
            if then[key] > 0:
                then[key] -= 1
                continue
            callee = syntax.call_name(call) or "?"
            released = syntax.call_name(release) or "?"
            argument = syntax.text(syntax.arguments(release)[0])
            line = change.after.image.real_line(call.start_point.row)
            message = (
                f"{released}({argument}) on the path where {callee}() on line {line} failed: "
                f"that call was to make the object (it is handed where to store it) and made "
                f"none, or released its own; release only what the calls before it made"
            )
            yield change.finding(release, message, Confidence.MEDIUM, key=f"unmade:{'|'.join(key)}")

    # -- a patch that drops the kobject_del() before kobject_put() ----------------------------

    def _dropped_teardown(self, change: FunctionChange) -> Iterator[Finding]:
        before = change.before_flow
        if before is None:
            return
        flow = change.flow
        # Objects the function adds to sysfs itself are followed along paths
        # (a failed kobject_init_and_add() needs no kobject_del()).
        added: set[str] = set()
        if flow.calls(RESOURCES):
            analysis = own.ownership(flow)
            added = {
                r.object for r in own.tracker_of(analysis).resources.values() if r.family == "sysfs"
            }
        for release, teardown in PRECEDED_BY.items():
            now = _preceded(flow, release, teardown)
            then = _preceded(before, release, teardown)
            for key, (call, preceded) in now.items():
                if preceded or not then.get(key, (None, False))[1]:
                    continue
                arguments = syntax.arguments(call)
                if arguments and own.object_of(arguments[0]) in added:
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
        for place in tracker.places_of(analysis, state, event.arguments[0], results, family):
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


def _tested_calls(flow: FunctionFlow) -> dict[str, int]:
    """Calls (callee and arguments, spelled one way) whose error the
    function acts on: tested by an `if` that leaves on one of its branches
    (`if (f(x)) return NULL;`, `err = f(x); if (err) goto out;`).  A test
    that only picks what to remember (`if (!f(on)) last = on; else ...`)
    is no error handling."""
    return dict(Counter(_normal(call) for call, _branch in _error_tests(flow)))


def _error_exit(branch: Node | None) -> bool:
    """Does this branch end in an error exit: `return -ENOMEM;`,
    `return NULL;`, `return err;`, `goto out_free;`?  Not a `goto next;` or
    a `continue` of a walk (`if (!pmdp_test_and_clear_young(...)) goto
    next;` tests a predicate, not an error)."""
    if branch is None or not syntax.branch_exits(branch):
        return False
    last = branch
    while last.type == "compound_statement":
        body = [c for c in last.named_children if c.type != "comment"]
        if not body:
            return False
        last = body[-1]
    if last.type == "goto_statement":
        return bool(_ERROR_LABEL.match(syntax.text(last.child_by_field_name("label"))))
    if last.type == "return_statement":
        value = next((c for c in last.named_children if c.type != "comment"), None)
        return value is not None and bool(_ERROR_VALUE.match(syntax.text(value)))
    return False


_ERROR_LABEL = regex(r"(err|out|fail|free|put|unlock|undo|clean|bad|release|abort)", re.I)
_ERROR_VALUE = regex(
    r"(-\s*E[A-Z]|NULL\b|ERR_|(ret|err|error|rc|result)\b|[A-Z][A-Z0-9_]*(FAIL|ERR|NOMEM|OOM))"
)


def _else_branch(node: Node) -> Node | None:
    alternative = node.child_by_field_name("alternative")
    if alternative is None:
        return None
    inner = [c for c in alternative.named_children if c.type != "comment"]
    return inner[0] if inner else None


def _outermost_call(call: Node) -> bool:
    """Is the call's value what its condition tests (`if (f(x))`,
    `if (!f(x))`, `if (f(x) < 0)`), not an argument of another call?"""
    node = call.parent
    while node is not None:
        if node.type in (
            "parenthesized_expression",
            "unary_expression",
            "binary_expression",
            "cast_expression",
        ):
            node = node.parent
        elif (
            node.type == "argument_list"
            and node.parent is not None
            and syntax.call_name(node.parent) in vocabulary.TRANSPARENT_TESTS
        ):
            node = node.parent.parent  # `unlikely(f(x))`
        else:
            break
    return node is not None and node.type in (
        "if_statement",
        "while_statement",
        "do_statement",
        "for_statement",
        "condition_clause",
        "parenthesized_expression",
    )


def _discarded_calls(flow: FunctionFlow) -> list[Node]:
    """Calls made as statements of their own: their result is dropped."""
    found = []
    for call in flow.calls():
        parent = call.parent
        if parent is not None and parent.type == "expression_statement":
            found.append(call)
    return found


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
            p.id
            for t in teardowns
            if syntax.arguments(t) and _normal(syntax.arguments(t)[0]) == text
            for p in [flow.point(t)]
            if p is not None
        }
        preceded = bool(targets) and flow.every_path(
            None, point, lambda p, targets=targets: p.id in targets
        )
        found[(text, counts[text])] = (call, preceded)
    return found


def _normal(node: Node) -> str:
    return "".join(syntax.text(node).split())


def _released_before(change: FunctionChange) -> set[tuple[str, str, str]]:
    """(family, acquiring call, object) the function as it was released."""
    before = change.before_flow
    if before is None or not before.calls(RESOURCES):
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
    for call in flow.calls(LOCKS_DROPPED):
        spec = vocabulary.LOCK_CALLS[syntax.call_name(call) or ""]
        name = _lock_name(
            spec, ev.Call(call, syntax.call_name(call), tuple(syntax.arguments(call)))
        )
        if name is None or name in found:
            continue
        for state, _results in analysis.before_each(call):
            values = state.places.get(name)
            if not values or any(str(v).startswith("top:") for v in values):
                found.add(name)
                break
    return found


def _handed_lock(flow: FunctionFlow, name: str) -> bool:
    """Is the lock, or the object it is the lock of, handed to a call that
    may drop it: one of the tree that reaches an unlock (or calls through a
    function pointer), or one the review cannot read whose name or
    arguments say it may (`migration_entry_wait_on_locked(entry, ptl)`,
    `pin_user_pages_remote(mm, ..., &locked)`)?"""
    lock_class, _, lock = name.partition(":")
    roots = {lock, _root(lock)}
    # A lock some call returned is the lock of what it was handed:
    # `ptl = pmd_trans_huge_lock(src_pmd, vma)` is src_pmd's table's.
    for call in flow.calls(frozenset(vocabulary.LOCK_CALLS)):
        if lock in ev.destinations(call):
            for argument in syntax.arguments(call):
                target = ev.address_of(argument) or ev.place(argument)
                if target is not None:
                    roots.add(_root(target))
    unlocks = frozenset(
        n for n, s in vocabulary.LOCK_CALLS.items() if s.release and s.lock_class == lock_class
    )
    for call in flow.calls():
        callee = syntax.call_name(call) or ""
        if callee in vocabulary.LOCK_CALLS or vocabulary.ASSERTIONS.fullmatch(callee):
            continue
        arguments = syntax.arguments(call)
        handed = False
        for argument in arguments:
            target = ev.address_of(argument) or ev.place(argument)
            if target is not None and (target in roots or _root(target) in roots):
                handed = True
        if handed and _may_drop(flow, callee, arguments, unlocks):
            return True
    return False


def _reaches_any(
    flow: FunctionFlow, name: str, wanted: frozenset[str], depth: int, seen: set[str]
) -> bool:
    if depth <= 0 or name in seen:
        return False
    seen.add(name)
    calls = own.callees_of(flow, name)
    if calls is None:
        return False
    return bool(calls & wanted) or any(
        _reaches_any(flow, c, wanted, depth - 1, seen) for c in calls
    )


def _root(place: str) -> str:
    return place.split("->", 1)[0].split(".", 1)[0]


_DROPS = regex(r"\w*(unlock|drop|release|wait|sleep|retry|fault|pin_user|get_user_pages)\w*")


def _may_drop(
    flow: FunctionFlow, callee: str, arguments: list[Node], unlocks: frozenset[str]
) -> bool:
    if not callee or callee == flow.function.name:
        return not callee
    definition = flow.summaries.definition(callee)
    if definition is None or definition.body is None:
        if _DROPS.fullmatch(callee):
            return True
        # `&locked`: the callee reports whether it dropped the lock.
        return any(
            (target := ev.address_of(a)) is not None and "->" not in target and "." not in target
            for a in arguments
        )
    if _reaches_any(flow, callee, unlocks, 2, set()):
        return True
    # A call through a function pointer (`filler(file, folio)`, `ops->fn()`)
    # may do anything.
    parameters = set(own.parameter_names(definition.node))
    for call in syntax.calls(definition.body):
        function = call.child_by_field_name("function")
        if function is None:
            continue
        if function.type != "identifier" or syntax.text(function) in parameters:
            return True
    return False


# What an error exit looks like in the text, to skip the lock analysis of
# functions that have none.
_ERROR_EXITS = regex(rb"return\s+(-|NULL|false|ERR_)|=\s*-E[A-Z]|\bgoto\b|_FAIL|\berr\b")

# Taken only when they return 0; the lock tracker reads them as always taken.
_ZERO_IS_TAKEN = regex(r"\w+_(killable|interruptible)")

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


def _failure(exit: own.Exit, returns: str, analysis: Analysis, successes: frozenset[str]) -> bool:
    """Does this exit leave on an error?"""
    if returns == "void":
        return True
    value = exit.value
    if value is None:
        return False
    node = ev.strip(value)
    text = syntax.text(node)
    if node.type == "conditional_expression":
        # `error ? : unmapped_error`, `err ? err : ret`: the first error
        # code that is set.
        condition = node.child_by_field_name("condition")
        consequence = node.child_by_field_name("consequence")
        alternative = node.child_by_field_name("alternative")
        if (
            condition is None
            or alternative is None
            or (consequence is not None and syntax.text(consequence) != syntax.text(condition))
            or returns != "signed"
        ):
            return False
        # An error code when set (`error ? : unmapped_error`); a count
        # when not known to be one (`moved ? moved : err`).
        if _failure(
            own.Exit(exit.node, condition, exit.state, exit.results), returns, analysis, successes
        ):
            return True
        values = analysis.value_of(exit.state, condition, exit.results)
        kinds = exit.state.kinds_of_values(values) if values else frozenset()
        if not kinds or not kinds <= {"=0", FALSE}:
            return False
        return _failure(
            own.Exit(exit.node, alternative, exit.state, exit.results), returns, analysis, successes
        )
    if node.type in ("null",) or text == "NULL":
        return returns == "pointer"
    if node.type == "false":
        return returns == "bool"
    if node.type == "unary_expression" and text.startswith("-"):
        return True
    if node.type == "call_expression" and syntax.call_name(node) in ("ERR_PTR", "ERR_CAST"):
        return True
    if node.type == "identifier" and text.isupper():
        return _failing_constant(text, successes)
    values = analysis.value_of(exit.state, value, exit.results)
    if not values:
        return False
    kinds = exit.state.kinds_of_values(values)
    constants = {k[1:] for k in kinds if k.startswith("=")}
    if constants:
        return all(_failing_constant(c, successes) for c in constants)
    if returns == "pointer":
        return bool(kinds) and kinds <= {NULL, ERR, FALSE}
    if returns == "bool":
        return kinds == {FALSE}
    if returns == "signed":
        return kinds == {TRUE}
    return False


def _failing_constant(constant: str, successes: frozenset[str]) -> bool:
    """`-EAGAIN`, `VM_FAULT_OOM`, and in a function that names its success
    (`SCAN_SUCCEED`) every other constant of that family (`SCAN_FAIL`,
    `SCAN_PAGE_LRU`)."""
    if constant.startswith("-"):
        return True
    if constant in successes or not constant[:1].isupper():
        return False
    if any(word in constant for word in _FAILURE_CONSTANT):
        return True
    family = constant.split("_", 1)[0]
    return any(success.split("_", 1)[0] == family for success in successes)


def _successes(function: Node) -> frozenset[str]:
    """The constants a function names its success by (`SCAN_SUCCEED`)."""
    return frozenset(
        syntax.text(node)
        for node in syntax.walk(function)
        if node.type == "identifier" and _SUCCESS.fullmatch(syntax.text(node))
    )


_SUCCESS = regex(r"[A-Z][A-Z0-9]*_\w*SUCCE\w*|[A-Z][A-Z0-9]*_OK")


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


def _unlooked_results(flow: FunctionFlow) -> list[Node]:
    """Calls whose result is stored where nothing looks at it afterwards:
    no condition, `return` or other store reads what the store wrote
    (`x->buf = alloc_percpu(...)` then only `per_cpu_ptr(x->buf, cpu)`)."""
    found = []
    for store in flow.stores:
        value = ev.strip(store.value) if store.value is not None else None
        if value is None or value.type != "call_expression" or store.operator != "=":
            continue
        if not _may_fail(flow, value):
            continue  # a value, not an outcome (`size = resource_size(res)`)
        if not any(_looked_at(use) for use in flow.uses_of(store)):
            found.append(value)
    return found


def _may_fail(flow: FunctionFlow, call: Node) -> bool:
    """Does the call say it failed through its pointer result: an
    allocation, a lookup of the tables (`find_vma()`), a helper of the tree
    that may return NULL or an `ERR_PTR()`?"""
    name = syntax.call_name(call)
    if name is None:
        return False
    if any(a.object == own.RESULT and a.success == own.NONNULL for a in own.ACQUIRES.get(name, ())):
        return True
    if name in failure_kinds(flow.version):
        return True
    summary = flow.summaries.of(name)
    returns = summary.returns if summary is not None else None
    return bool(returns and returns & {NULL, ERR})


def _looked_at(use: Node) -> bool:
    """Is this read a test of the value, or does it pass the value on
    (returned, stored elsewhere)?"""
    if syntax.condition_owner(use) is not None:
        return True
    child = use
    for parent in syntax.ancestors(use):
        kind = parent.type
        if kind in ("return_statement", "switch_statement"):
            return True
        if kind == "conditional_expression" and child == parent.child_by_field_name("condition"):
            return True
        operator = parent.child_by_field_name("operator")
        if kind == "binary_expression" and syntax.text(operator) in ("&&", "||"):
            return True
        # Stored as it is into another place: passed on, not followed.
        if kind == "assignment_expression" and child == parent.child_by_field_name("right"):
            return ev.strip(child) == use
        if kind == "init_declarator" and child == parent.child_by_field_name("value"):
            return ev.strip(child) == use
        if kind in ("expression_statement", "compound_statement", "function_definition"):
            return False
        child = parent
    return False


def _releases_of_unmade(flow: FunctionFlow) -> list[tuple[tuple[str, str], Node, Node]]:
    """Releases on the error path of a call of what that call was handed
    the address of, to store what it makes (`&x->dir`, then
    `kobject_put(&x->dir->kobj)` or `kfree(x->dir)`), with no store to it
    in between: ((call, release) spelled one way, call, release)."""
    releases = [c for c in flow.calls(frozenset(own.RELEASES)) if syntax.arguments(c)]
    if not releases:
        return []
    found = []
    for call, branch in _error_tests(flow):
        outputs = [
            place
            for argument in syntax.arguments(call)
            if (place := ev.address_of(argument)) is not None and ("->" in place or "." in place)
        ]
        if not outputs:
            continue
        start = flow.graph.point_of(branch)
        if start is None:
            continue
        for output in outputs:
            stores = {
                point.id
                for store in flow.assignments(output)
                if (point := flow.point(store.node)) is not None
            }
            reached = paths.reachable_from(flow.graph, [start], lambda p, s=stores: p.id in s)
            for release in releases:
                point = flow.point(release)
                if point is None or point.id not in reached or point.id in stores:
                    continue
                argument = _normal(syntax.arguments(release)[0])
                if argument == output or argument.startswith(
                    (f"{output}->", f"&{output}->", f"&({output})->")
                ):
                    found.append(((_normal(call), _normal(release)), call, release))
    return found


def _error_tests(flow: FunctionFlow) -> Iterator[tuple[Node, Node]]:
    """Each call whose failure an `if` acts on, with the branch that leaves
    on the error (`if (f(x)) goto out;`, `err = f(x); if (err) goto out;`)."""
    exiting: list[tuple[Node, Node]] = []
    for node in syntax.walk(flow.function.body):
        if node.type != "if_statement":
            continue
        for branch in (node.child_by_field_name("consequence"), _else_branch(node)):
            if branch is not None and _error_exit(branch):
                exiting.append((node, branch))
                break
    if not exiting:
        return
    for call in flow.calls():
        owner = syntax.condition_owner(call)
        if owner is not None and _outermost_call(call):
            branch = next((b for i, b in exiting if i == owner), None)
            if branch is not None:
                yield call, branch
            continue
        names = set(ev.destinations(call))
        if not names:
            continue
        # The first `if` after the call that tests where it was stored.
        for node, branch in exiting:
            if node.start_byte <= call.end_byte:
                continue
            condition = node.child_by_field_name("condition")
            if any(
                child.type in ("identifier", "field_expression")
                and ev.place(child) in names
                and _tests_for_error(child)
                for child in syntax.walk(condition)
            ):
                yield call, branch
                break


def _tests_for_error(read: Node) -> bool:
    """Is this read of a name in a condition a test of its truth or sign
    (`!p`, `err`, `ret < 0`, `p == NULL`, `IS_ERR(p)`), not a comparison with
    another value (`vma->vm_file != file`, `nr > max`)?"""
    child = read
    for parent in syntax.ancestors(read):
        kind = parent.type
        if kind in ("parenthesized_expression", "unary_expression", "cast_expression"):
            child = parent
            continue
        if kind == "binary_expression":
            operator = syntax.text(parent.child_by_field_name("operator"))
            if operator in ("&&", "||"):
                return True
            if operator in ("==", "!=", "<", "<=", ">", ">="):
                other = parent.child_by_field_name(
                    "right" if child == parent.child_by_field_name("left") else "left"
                )
                return other is not None and bool(_ZERO_OR_ERROR.fullmatch(syntax.text(other)))
            return False
        return True  # the condition itself, or an argument of a test (`IS_ERR(p)`)
    return True


_ZERO_OR_ERROR = regex(r"\(?\s*(0|NULL|-\s*\w+|\(\w+\s*\*\)\s*0)\s*\)?")
