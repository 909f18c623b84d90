"""A moved or copied entry whose uffd-wp state the patch stops handling, or a
wr-protect registration ended without resetting its markers.

## What it does
Looks at the places where a page-table entry read at one place is written
to another (`set_pte_at()`, `set_ptes()`, `set_huge_pte_at()`,
`set_pmd_at()`, `pmd_populate()`, `pud_populate()` with a pointer other than
the one the entry was read through: mremap's moves, fork's copies,
UFFDIO_MOVE, migration and swap restore, hugetlb copies), and at the
places that end a userfaultfd registration (`vm_flags & ~__VM_UFFD_FLAGS`,
`~VM_UFFD_WP`).  It flags one the function as it was reached only after
asking about uffd-wp on every path (`userfaultfd_wp()`,
`vma_has_uffd_without_event_remap()`, `pte_uffd_wp()`,
`pte_swp_clear_uffd_wp()`, `pte_marker_uffd_wp()`, `uffd_wp_range()`, ...),
and that the patch lets some path reach without asking: the bit is now
carried, or dropped, whatever the destination's registration is.

## Why is this bad?
The uffd-wp bit lives in the entry, in a present form and a swap form, and
as a PTE marker where nothing is mapped.  An entry moved to a VMA that is
not registered for write-protect (or whose monitor did not ask for remap
events) must lose the bit, or the next write faults to a monitor that does
not expect it (a WARN, or a process stuck); an entry copied to a registered
VMA must keep it, or the monitor's protection silently disappears.  When a
registration ends (close() of the userfaultfd) the markers and bits left in
the page tables must be reset, or later faults see a protection nobody
handles.

## Example
```c
        pte = ptep_get_and_clear(mm, old_addr, old_pte);
        pte = move_pte(pte, new_vma->vm_page_prot, old_addr, new_addr);
        set_pte_at(mm, new_addr, new_pte, pte);	/* uffd-wp carried blindly */
```

## Use instead
```c
        if (need_clear_uffd_wp && pte_marker_uffd_wp(pte))
                pte_clear(mm, new_addr, new_pte);
        else {
                if (need_clear_uffd_wp) {
                        if (pte_present(pte))
                                pte = pte_clear_uffd_wp(pte);
                        else if (is_swap_pte(pte))
                                pte = pte_swp_clear_uffd_wp(pte);
                }
                set_pte_at(mm, new_addr, new_pte, pte);
        }
```

## Known problems
A regression lesson: a new function, or one that never asked about
uffd-wp, is not judged (`mmreview scan` stays silent).  A question asked
in a helper of the same file counts (one level down); one asked in a helper
of another file or a header is not seen.  Asking is recognised by name
(`*uffd_wp*`, `userfaultfd_wp*`, `vma_has_uffd*`), not by what the answer
does to the entry.

## References
- "mm: clear uffd-wp PTE/PMD state on mremap()" (move_ptes(),
  move_huge_pmd(), move_huge_pte(), and move_normal_pmd()/move_normal_pud()
  falling back to the PTE-level moves)
- "mm/userfaultfd: reset ptes when close() for wr-protected ones"
  (userfaultfd_release())
- "mm/mremap: fix WARN with uffd that has remap events disabled"
- 24bf08c4376b ("mm/userfaultfd: fix uffd-wp handling for THP migration
  entries"); "mm/uffd: fix pte marker when fork() without fork event"
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow.regress import calls_reaching, lost_on_every_path, squeezed
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity
from rules.entry_helper_misfit import HELPERS, level_kinds, misfit

# Writes of an entry: which argument is the destination pointer.
WRITES: dict[str, int] = {
    "set_pte_at": 2,
    "set_ptes": 2,
    "set_huge_pte_at": 2,
    "set_pmd_at": 2,
    "set_pud_at": 2,
    "pmd_populate": 1,
    "pud_populate": 1,
}
# Reads of an entry from a place: which argument is the source pointer.
SOURCES: dict[str, int] = {
    "ptep_get": 0,
    "ptep_get_and_clear": 2,
    "ptep_get_and_clear_full": 2,
    "huge_ptep_get": -1,
    "huge_ptep_get_and_clear": 2,
    "pmdp_get": 0,
    "pmdp_get_lockless": 0,
    "pmdp_huge_get_and_clear": 2,
    "pmdp_huge_get_and_clear_full": 2,
    "pudp_get": 0,
    "pudp_huge_get_and_clear": 2,
}
ENTRY_TYPES = frozenset({"pte_t", "pmd_t", "pud_t"})
# Asking about uffd-wp: its tests and clears, the registration tests, and
# the copy of a PTE marker (which keeps the uffd-wp marker only for a
# registered destination).
ASKS = regex(r"uffd_wp|userfaultfd_wp|vma_has_uffd|copy_pte_marker")
REGISTRATION_END = regex(r"~\(?\s*(?:__VM_UFFD_FLAGS|VM_UFFD_WP)\b")


def _entry_pointers_declared(flow: FunctionFlow) -> dict[str, str]:
    """Names the function declares `pte_t *`, `pmd_t *` or `pud_t *`
    (parameters and locals), with their entry type."""
    names: dict[str, str] = {}
    for node in syntax.walk(flow.function.node):
        if node.type not in ("parameter_declaration", "declaration"):
            continue
        kind = node.child_by_field_name("type")
        if kind is None or syntax.text(kind) not in ENTRY_TYPES:
            continue
        for declarator in node.children_by_field_name("declarator"):
            if declarator.type == "init_declarator":
                declarator = declarator.child_by_field_name("declarator")
            if declarator is None or declarator.type != "pointer_declarator":
                continue
            inner = declarator.child_by_field_name("declarator")
            if inner is not None and inner.type == "identifier":
                names[syntax.text(inner)] = syntax.text(kind)
    return names


def _level(callee: str) -> str | None:
    for prefix, level in (
        ("huge_pte", "pte_t"),
        ("pte", "pte_t"),
        ("pmd", "pmd_t"),
        ("pud", "pud_t"),
    ):
        if callee.startswith(prefix) or callee.startswith(f"set_{prefix}"):
            return level
    return None


def _moves(flow: FunctionFlow) -> list[Node]:
    """Entry writes through a pointer other than one of the same level the
    function reads an entry through or holds: an entry goes somewhere new
    (a move, a copy from a source table to a destination one), not back
    where it was read."""
    declared = _entry_pointers_declared(flow)
    others: set[tuple[str, str | None]] = set(declared.items())
    for call in flow.calls(frozenset(SOURCES)):
        arguments = syntax.arguments(call)
        name = syntax.call_name(call) or ""
        index = SOURCES[name]
        if arguments and -len(arguments) <= index < len(arguments):
            others.add((squeezed(arguments[index]), _level(name.removeprefix("__"))))
    body = flow.function.body
    for node in syntax.walk(body) if body is not None else ():
        if (
            node.type == "pointer_expression"
            and syntax.text(node.child_by_field_name("operator")) == "*"
        ):
            argument = node.child_by_field_name("argument")
            if argument is not None:
                pointer = squeezed(argument)
                others.add((pointer, declared.get(pointer)))
    found = []
    for call in flow.calls(frozenset(WRITES)):
        arguments = syntax.arguments(call)
        name = syntax.call_name(call) or ""
        index = WRITES[name]
        if len(arguments) <= index:
            continue
        destination = squeezed(arguments[index])
        level = _level(name.removeprefix("set_")) or declared.get(destination)
        if any(p != destination and (lv is None or lv == level) for p, lv in others):
            found.append(call)
    return found


def _registration_ends(flow: FunctionFlow) -> list[Node]:
    body = flow.function.body
    if body is None:
        return []
    return [
        node
        for node in syntax.walk(body)
        if node.type == "unary_expression"
        and syntax.text(node.child_by_field_name("operator")) == "~"
        and REGISTRATION_END.search(syntax.text(node))
    ]


def _works(flow: FunctionFlow) -> list[Node]:
    return _moves(flow) + _registration_ends(flow)


def _removes_misfits(change: FunctionChange, before: FunctionFlow) -> bool:
    """Did the patch remove uffd-wp handling that applied an entry helper to
    an entry it cannot fit on any path (`huge_pte_uffd_wp()` of a hwpoison
    entry)?  Removing that is ENTRY_HELPER_MISFIT's fix, not a lost bit."""
    removed = [
        call
        for call in before.calls(HELPERS)
        if ASKS.search(syntax.call_name(call) or "") and change.is_removed(call)
    ]
    if not removed:
        return False
    analysis = before.entries()
    if not analysis.complete:
        return False
    for call in removed:
        name = syntax.call_name(call) or ""
        index, bad, _wants = misfit(name)
        arguments = syntax.arguments(call)
        if len(arguments) > index:
            kinds = level_kinds(name, analysis.kinds_at(call, arguments[index]))
            if kinds and kinds <= bad:
                return True
    return False


def _asked_by_callers(flow: FunctionFlow, depth: int = 2) -> bool:
    """Does a function of the file calling this one, or one calling that,
    ask about uffd-wp?  (A caller deciding for the whole move.)"""
    file = flow.file
    if file is None:
        return False
    names = {flow.function.name}
    for _level_up in range(depth):
        callers = [
            function
            for function in file.functions
            if function.name not in names
            and function.body is not None
            and syntax.calls(function.body, names)
        ]
        if not callers:
            return False
        if any(
            ASKS.search(syntax.call_name(call) or "")
            for function in callers
            for call in syntax.calls(function.body)
        ):
            return True
        names |= {function.name for function in callers}
    return False


class UffdWpNotCarried(FunctionRule):
    id = "UFFD_WP_NOT_CARRIED"
    severity = Severity.WARNING
    summary = (
        "a moved or copied entry no longer has its uffd-wp state carried or cleared, or a "
        "registration ends without resetting its markers"
    )
    paths = ()
    api = r"\buffd|\buserfaultfd_wp\b|__VM_UFFD_FLAGS|VM_UFFD_WP"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        before = change.before_flow
        if before is None or not change.removed_rows:
            return  # a regression lesson: only what a patch takes away
        removed = " ".join(before.function.image.line_text(row) for row in change.removed_rows)
        if not ASKS.search(removed):
            return  # the patch took no uffd-wp question away
        flow = change.flow
        lost = list(lost_on_every_path(before, flow, _works, calls_reaching(ASKS, headers=True)))
        if lost and _removes_misfits(change, before):
            return  # the handling removed read the entry with the wrong helpers: a fix
        if lost and _asked_by_callers(flow):
            return  # the question moved up to a caller, which decides for the whole move
        for node, _old in lost:
            if node.type == "call_expression":
                name = syntax.call_name(node)
                message = (
                    f"{name}() writes an entry read elsewhere, but some path now reaches it "
                    "without asking about uffd-wp (the function as it was did on every path): "
                    "carry the bit to a wr-protected VMA, clear it (and drop markers) for one "
                    "that is not, present and swap forms alike"
                )
                key = f"{name}:{squeezed(node)}"
            else:
                message = (
                    "the userfaultfd registration ends here, but some path no longer resets "
                    "the wr-protect markers and bits first (the function as it was did, "
                    "e.g. uffd_wp_range(..., false) under userfaultfd_wp())"
                )
                key = f"registration-end:{squeezed(node)}"
            yield change.finding(node, message, Confidence.MEDIUM, key=key)


RULE = UffdWpNotCarried
