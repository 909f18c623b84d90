"""The page table from `pte_offset_map*()` used without a NULL check.

## What it does
Follows the pointer returned by `pte_offset_map()`, `pte_offset_map_lock()`,
`pte_offset_map_nolock()`, `pte_offset_map_ro_nolock()`,
`pte_offset_map_rw_nolock()` (and their `__` forms) to its first use, and
flags that use when it is not a NULL test: a dereference, `ptep_get()`,
pointer arithmetic or a loop over it, `pte_unmap_unlock()`, `set_pte_at()`.
The kernel's idioms are recognised as checks: `if (!pte)`, `if (!start_pte)`
after `start_pte = pte = ...`, `if (unlikely(!vmf->pte))`, `if (pte) {...}`,
`WARN_ON(!ptep)`, `return !!pvmw->pte`.  A helper of the same file that
is handed the pointer (or the struct holding it, `vmf` for `vmf->pte`) is
followed one level: its first use of it counts.  Returning the pointer, or
handing it to a function from elsewhere that is not a page-table accessor,
leaves the check to the caller or that function and is not flagged.  When
the patch removed the NULL check the function had, the finding says so.

## Why is this bad?
Since v6.5 these helpers return NULL when the PMD did not point to a page
table by the time they looked: it was none, became a huge PMD or a migration
entry, or khugepaged retracted the table under a caller that holds only the
mmap (or VMA) lock for reading.  This is a normal race, not an error: the
caller must back off (`-EAGAIN`, `ACTION_AGAIN`, retry the fault, skip the
range).  Using the pointer unchecked is a NULL dereference, or worse a walk
from address 0 when arithmetic is done first.

## Example
```c
        pte = pte_offset_map_lock(mm, pmd, addr, &ptl);
        if (!pte_none(ptep_get(pte)))	/* NULL when the PMD changed */
                goto out_unlock;
```

## Use instead
```c
        pte = pte_offset_map_lock(mm, pmd, addr, &ptl);
        if (!pte)
                return -EAGAIN;		/* or walk->action = ACTION_AGAIN */
        if (!pte_none(ptep_get(pte)))
                goto out_unlock;
```

## Known problems
"First use" is the first reference after the assignment in text order, not
along control flow: a use in a branch that cannot follow the assignment is
taken for one.  Helpers in other files are trusted to check.

## References
- 0d940a9b270b ("mm/pgtable: allow pte_offset_map[_lock]() to fail"),
  Hugh Dickins, v6.5, posted as
  https://lore.kernel.org/r/8218ffdc-8be-54e5-0a8-83f5542af283@google.com
  in the series "mm: allow pte_offset_map[_lock]() to fail",
  https://lore.kernel.org/linux-mm/c1c9a74a-bc5b-15ea-e5d2-8ec34bc921d@google.com/
- 04dee9e85cf5 ("mm/various: give up if pte_offset_map[_lock]() fails")
- 71c186efc1b2 ("userfaultfd: fix checks for huge PMDs"), which NULL-checks
  pte_offset_map_lock() in mfill_atomic_install_pte()'s callers' paths
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

MAPPERS = frozenset(
    {
        "pte_offset_map",
        "pte_offset_map_lock",
        "pte_offset_map_nolock",
        "pte_offset_map_ro_nolock",
        "pte_offset_map_rw_nolock",
        "__pte_offset_map",
        "__pte_offset_map_lock",
    }
)
# Callees that dereference the pte_t * they are given.
ACCESSORS = re.compile(
    r"ptep_\w+|huge_ptep_\w+|pte_unmap(_unlock)?|set_ptes?|set_pte_at|pte_clear|"
    r"update_mmu_(cache|tlb)(_range)?|folio_pte_batch|pte_range_none|clear_(not_present_)?full_ptes"
)
CHECKERS = frozenset(
    {
        "likely",
        "unlikely",
        "WARN_ON",
        "WARN_ON_ONCE",
        "VM_WARN_ON",
        "VM_WARN_ON_ONCE",
        "BUG_ON",
        "VM_BUG_ON",
    }
)
_TRANSPARENT = ("parenthesized_expression", "cast_expression")


class PteOffsetMapUnchecked(FunctionRule):
    id = "PTE_OFFSET_MAP_UNCHECKED"
    severity = Severity.ERROR
    summary = "pte_offset_map*() may return NULL (v6.5+): check it before using the page table"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        body = change.after.body
        if body is None:
            return
        checked_before = self._checked_names(change)
        helpers = {
            f.name: f.node
            for f in (change.after_file.functions if change.after_file else [])
            if f.name != change.after.name
        }
        for call in syntax.calls(body, MAPPERS):
            mapper = syntax.call_name(call)
            names, holder = _receivers(call)
            if not names:
                use = _direct_use(holder)
                name = "the page table"
            else:
                # `if (!(pte = pte_offset_map(...)))` tests it on the spot
                use = (
                    None
                    if _is_null_test(holder)
                    else _first_unchecked_use(body, holder, names, helpers)
                )
                name = names[-1]
            if use is None:
                continue
            via = (
                f"; {syntax.call_name(use)}() uses it"
                if use.type == "call_expression" and syntax.call_name(use) in helpers
                else ""
            )
            if names and checked_before & set(names):
                message = (
                    f"patch removes the NULL check of {name} = {mapper}(){via}: it returns NULL "
                    "when the PMD changed under us (none, huge, migration, retracted); back "
                    "off (-EAGAIN, retry, ACTION_AGAIN) before using it"
                )
            else:
                message = (
                    f"{name} from {mapper}() is used without a NULL check{via}: it returns NULL "
                    "when the PMD changed under us (none, huge, migration, retracted); test "
                    "it and back off (-EAGAIN, retry, ACTION_AGAIN) first"
                )
            yield change.finding(use, message, Confidence.HIGH, key=f"{mapper}:{name}")

    @staticmethod
    def _checked_names(change: FunctionChange) -> set[str]:
        """Receivers whose NULL test the patch removed."""
        if change.before is None or change.before.body is None:
            return set()
        removed = set()
        for call in syntax.calls(change.before.body, MAPPERS):
            names, holder = _receivers(call)
            for node in syntax.walk(change.before.body):
                if (
                    node.start_byte >= holder.end_byte
                    and _reference_name(node) in names
                    and _is_null_test(node)
                    and change.is_removed(node)
                ):
                    removed.add(_reference_name(node))
        return removed


def _receivers(call: Node) -> tuple[list[str], Node]:
    """Where the returned pointer goes: the names it is assigned to
    (`start_pte = pte = ...`, `pte_t *pte = ...`, `vmf->pte = ...`), and the
    outermost expression holding the call."""
    names: list[str] = []
    node = call
    while (parent := node.parent) is not None:
        if parent.type in _TRANSPARENT or (
            # either arm of `cond ? pte_offset_kernel() : pte_offset_map_lock()`
            parent.type == "conditional_expression"
            and node != parent.child_by_field_name("condition")
        ):
            pass
        elif (
            parent.type == "assignment_expression"
            and node == parent.child_by_field_name("right")
            and syntax.text(parent.child_by_field_name("operator")) == "="
        ):
            names.append(_normalized(parent.child_by_field_name("left")))
        elif parent.type == "init_declarator" and node == parent.child_by_field_name("value"):
            declarator = parent.child_by_field_name("declarator")
            while declarator is not None and declarator.type == "pointer_declarator":
                declarator = declarator.child_by_field_name("declarator")
            names.append(_normalized(declarator))
            node = parent
            break
        else:
            break
        node = parent
    return names, node


def _normalized(node: Node | None) -> str:
    return re.sub(r"\s+", "", syntax.text(node))


def _reference_name(node: Node) -> str | None:
    if node.type == "identifier":
        parent = node.parent
        # `pte` in `vmf->pte` is a field_identifier; an identifier that is
        # the object of a field expression is only part of a longer name.
        if (
            parent is not None
            and parent.type == "field_expression"
            and (parent.child_by_field_name("argument") == node)
        ):
            return None
        return syntax.text(node)
    if node.type == "field_expression":
        return _normalized(node)
    return None


def _first_unchecked_use(
    body: Node, holder: Node | None, names: list[str], helpers: dict[str, Node], depth: int = 1
) -> Node | None:
    """The first reference to one of `names` after `holder`, if it uses
    the pointer before any NULL test.  A same-file helper handed the pointer
    (or the struct holding it, `vmf` for `vmf->pte`) is followed one level:
    what it does first with it counts as done at the call."""
    aliases = set(names)
    start = holder.end_byte if holder is not None else body.start_byte
    for node in syntax.walk(body):
        if node.start_byte < start:
            continue
        if node.type == "call_expression" and depth > 0:
            verdict = _through_helper(node, aliases, helpers, depth)
            if verdict == "checked":
                return None
            if verdict == "used":
                return node
            continue
        name = _reference_name(node)
        if name is None or name not in aliases:
            continue
        if _is_null_test(node):
            return None
        parent = _outer(node).parent
        if parent is None:
            return None
        if parent.type == "assignment_expression":
            if parent.child_by_field_name("left") == _outer(node):
                return None  # overwritten before use
            if parent.child_by_field_name("right") == _outer(node):
                aliases.add(_normalized(parent.child_by_field_name("left")))
                continue
        if parent.type == "return_statement":
            return None  # the caller's to check
        if parent.type == "argument_list":
            callee = parent.parent
            callee_name = syntax.call_name(callee) if callee is not None else None
            if callee_name is None or not ACCESSORS.fullmatch(callee_name):
                return None  # a helper from elsewhere; it may check
        return node
    return None


def _through_helper(call: Node, names: set[str], helpers: dict[str, Node], depth: int) -> str:
    """ "checked", "used" or "" (not handed over / helper does not look)."""
    definition = helpers.get(syntax.call_name(call) or "")
    if definition is None:
        return ""
    parameters = _parameter_names(definition)
    for index, argument in enumerate(syntax.arguments(call)):
        if index >= len(parameters):
            break
        passed = _normalized(_strip(argument))
        for name in names:
            if passed == name:
                inner = parameters[index]
            elif name.startswith(passed + "->"):
                inner = parameters[index] + name[len(passed) :]
            else:
                continue
            helper_body = definition.child_by_field_name("body")
            if helper_body is None:
                return ""
            use = _first_unchecked_use(helper_body, None, [inner], helpers, depth - 1)
            if use is not None:
                return "used"
            if _tests(helper_body, inner):
                return "checked"
    return ""


def _tests(body: Node, name: str) -> bool:
    return any(_reference_name(n) == name and _is_null_test(n) for n in syntax.walk(body))


def _parameter_names(definition: Node) -> list[str]:
    declarator = definition.child_by_field_name("declarator")
    while declarator is not None and declarator.type != "function_declarator":
        declarator = declarator.child_by_field_name("declarator")
    parameters = declarator.child_by_field_name("parameters") if declarator else None
    names = []
    for parameter in parameters.named_children if parameters is not None else []:
        inner = parameter.child_by_field_name("declarator")
        while inner is not None and inner.type != "identifier":
            inner = inner.child_by_field_name("declarator")
        names.append(syntax.text(inner))
    return names


def _strip(node: Node) -> Node:
    while node.type in _TRANSPARENT and node.named_children:
        node = node.named_children[-1]
    return node


def _direct_use(holder: Node) -> Node | None:
    """`ptep_get(pte_offset_map(...))` and the like, with no receiver."""
    if _is_null_test(holder):
        return None
    parent = holder.parent
    if parent is None or parent.type in ("return_statement", "expression_statement"):
        return None
    if parent.type == "argument_list":
        callee = parent.parent
        name = syntax.call_name(callee) if callee is not None else None
        return holder if name is not None and ACCESSORS.fullmatch(name) else None
    if parent.type in ("pointer_expression", "subscript_expression", "field_expression"):
        return holder
    return None


def _outer(node: Node) -> Node:
    while node.parent is not None and node.parent.type in _TRANSPARENT:
        node = node.parent
    return node


def _is_null_test(node: Node) -> bool:
    current = _outer(node)
    while (parent := current.parent) is not None:
        if (
            parent.type == "unary_expression"
            and syntax.text(parent.child_by_field_name("operator")) == "!"
        ):
            return True
        if parent.type == "binary_expression":
            return syntax.text(parent.child_by_field_name("operator")) in ("==", "!=", "&&", "||")
        if parent.type in ("if_statement", "while_statement", "do_statement", "for_statement"):
            return parent.child_by_field_name("condition") == current
        if parent.type == "conditional_expression":
            return parent.child_by_field_name("condition") == current
        if parent.type == "argument_list":
            call = parent.parent
            if call is not None and syntax.call_name(call) in CHECKERS:
                current = _outer(call)
                continue
            return False
        return False
    return False


RULE = PteOffsetMapUnchecked
