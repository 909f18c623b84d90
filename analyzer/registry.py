"""Finds the rules: every module in `rules/` whose name does not start with
an underscore defines one rule class, exported as `RULE`."""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

import rules as rules_package
from analyzer.patterns import regex
from analyzer.rule import FunctionRule, PatchRule, Rule

REQUIRED_SECTIONS = (
    "## What it does",
    "## Why is this bad?",
    "## Example",
    "## Use instead",
    "## References",
)
_ID_RE = regex(r"^[A-Z][A-Z0-9_]+$")


class RuleError(Exception):
    pass


@lru_cache(maxsize=1)
def all_rules() -> tuple[Rule, ...]:
    found: dict[str, Rule] = {}
    for name in _rule_modules():
        module = importlib.import_module(f"rules.{name}")
        rule_class = getattr(module, "RULE", None)
        if rule_class is None or not issubclass(rule_class, FunctionRule | PatchRule):
            raise RuleError(f"rules/{name}.py: no RULE = <FunctionRule or PatchRule subclass>")
        rule_class.doc = (module.__doc__ or "").strip()
        rule = rule_class()
        if not _ID_RE.match(rule.id):
            raise RuleError(f"rules/{name}.py: rule id {rule.id!r} is not UPPER_SNAKE")
        if rule.id in found:
            raise RuleError(f"rules/{name}.py: duplicate rule id {rule.id}")
        if missing := [s for s in REQUIRED_SECTIONS if s not in rule.doc]:
            raise RuleError(f"rules/{name}.py: docstring lacks {', '.join(missing)}")
        found[rule.id] = rule
    return tuple(found.values())


def _rule_modules() -> list[str]:
    """The names of the modules in rules/, sorted.  A listing of the
    directory: pkgutil.iter_modules() asks inspect for each file's module
    name, and a check has no other use for inspect (see analyzer.launch)."""
    names = set()
    for directory in rules_package.__path__:
        with os.scandir(directory) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix == ".py" and stem.isidentifier() and not stem.startswith("_"):
                    names.add(stem)
    return sorted(names)


def normal_id(text: str) -> str:
    """A rule id as given (any case, `-` for `_`) as the rules spell it."""
    return text.upper().replace("-", "_")


def get_rule(rule_id: str) -> Rule | None:
    wanted = normal_id(rule_id)
    return next((r for r in all_rules() if r.id == wanted), None)


def _ids(given: list[str] | None) -> list[str]:
    # checkpatch.pl takes `--ignore A,B` as well as the option repeated.
    return [part.strip() for item in given or [] for part in item.split(",") if part.strip()]


def select_rules(select: list[str] | None = None, ignore: list[str] | None = None) -> list[Rule]:
    """Rules after --select/--ignore (repeated or comma-separated); unknown
    ids are an error."""
    select, ignore = _ids(select), _ids(ignore)
    known = {r.id for r in all_rules()}
    for rule_id in [*select, *ignore]:
        if normal_id(rule_id) not in known:
            raise RuleError(f"unknown rule '{rule_id}' (see 'mmreview rules')")
    chosen = [r for r in all_rules() if not select or r.id in {normal_id(s) for s in select}]
    ignored = {normal_id(i) for i in ignore}
    return [r for r in chosen if r.id not in ignored]
