"""Per-tree configuration: `.mmreview.toml` at the top of the kernel tree.

    # Only these rules (default: all), and never these.
    select = ["PMD_PRESENT_AS_EMPTY", "COLLAPSE_WITHOUT_UFFD_CHECK"]
    ignore = ["BAD_FIXES_TAG"]

    [severity]                  # error, warning or check
    PMD_PRESENT_AS_EMPTY = "check"

    [hook]
    block-on = "warning"        # error (default), warning, never

    [reply]
    from = "Jane Reviewer <jane@example.org>"

Command-line options win over the file (`--select` or `--ignore` replaces
its rule choice as a whole).  A severity set here is the severity of every finding of that rule,
whatever the rule said, in every output format and in the exit status.
Anything the file gets wrong is a one-line error naming the file and the
key.  (A kernel tree has no pyproject.toml, so there is no
`[tool.mmreview]` table to look for.)
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from analyzer.registry import all_rules, normal_id
from analyzer.rule import Severity

if TYPE_CHECKING:
    from analyzer.engine import Review

FILENAME = ".mmreview.toml"
BLOCK_LEVELS = ("error", "warning", "never")
_TOP_KEYS = {"select", "ignore", "severity", "hook", "reply"}


class ConfigError(Exception):
    """A bad configuration file: one line naming the file and the key."""


class Config:
    """A tree's `.mmreview.toml`, read (not to be changed once read)."""

    def __init__(
        self,
        path: Path | None = None,
        select: list[str] | None = None,
        ignore: list[str] | None = None,
        severity: dict[str, Severity] | None = None,
        block_on: str | None = None,
        reply_from: str | None = None,
    ) -> None:
        self.path = path
        self.select = select
        self.ignore: list[str] = ignore if ignore is not None else []
        self.severity: dict[str, Severity] = severity if severity is not None else {}
        self.block_on = block_on
        self.reply_from = reply_from

    def rules(
        self, select: list[str] | None, ignore: list[str] | None
    ) -> tuple[list[str] | None, list[str] | None]:
        """The rule choice: --select/--ignore when either is given (they
        replace the file's choice as a whole), else the file's."""
        if select or ignore:
            return select, ignore
        return self.select, self.ignore or None

    def apply(self, review: Review) -> Review:
        """The review with the file's severities on its findings."""
        if not self.severity:
            return review
        findings = [
            replace(f, severity=self.severity[f.rule]) if f.rule in self.severity else f
            for f in review.findings
        ]
        return review.replace(findings=findings)

    def severity_of(self, rule_id: str, default: Severity) -> Severity:
        return self.severity.get(rule_id, default)


def find(start: str | None = None) -> Path | None:
    """`.mmreview.toml` at the top of the git tree holding `start` (default:
    the current directory), if there is one."""
    out = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        cwd=start or None,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return None
    path = Path(out.stdout.strip()) / FILENAME
    return path if path.is_file() else None


def load(top: str | None = None, known_top: bool = False) -> Config:
    """The configuration of the tree at (or holding) `top`; defaults if it
    has no file.  `known_top`: git said already that `top` is the top of a
    work tree (KernelTree.top), and is not asked again."""
    if known_top and top is not None:
        path: Path | None = Path(top) / FILENAME
        if not path.is_file():
            path = None
    else:
        path = find(top)
    return parse(path) if path is not None else Config()


def parse(path: Path) -> Config:
    # Imported here: most trees have no file, and every check pays for imports.
    import tomllib
    from email.utils import parseaddr

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from None

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {problem}")

    if unknown := sorted(set(data) - _TOP_KEYS):
        raise fail(unknown[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    known = {rule.id for rule in all_rules()}

    def rule_list(key: str) -> list[str] | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(key, "expected a list of rule ids")
        for rule_id in value:
            if normal_id(rule_id) not in known:
                raise fail(key, f"unknown rule '{rule_id}' (see 'mmreview rules')")
        return [normal_id(v) for v in value]

    severity: dict[str, Severity] = {}
    table = _table(data, "severity", fail)
    for rule_id, value in table.items():
        if normal_id(rule_id) not in known:
            raise fail(f"severity.{rule_id}", "unknown rule (see 'mmreview rules')")
        if not isinstance(value, str) or value.upper() not in Severity.__members__:
            raise fail(f"severity.{rule_id}", f"{value!r} is not one of error, warning, check")
        severity[normal_id(rule_id)] = Severity[value.upper()]

    hook = _table(data, "hook", fail)
    if unknown := sorted(set(hook) - {"block-on"}):
        raise fail(f"hook.{unknown[0]}", "unknown key (known: block-on)")
    block_on = hook.get("block-on")
    if block_on is not None and block_on not in BLOCK_LEVELS:
        raise fail("hook.block-on", f"{block_on!r} is not one of {', '.join(BLOCK_LEVELS)}")

    reply = _table(data, "reply", fail)
    if unknown := sorted(set(reply) - {"from"}):
        raise fail(f"reply.{unknown[0]}", "unknown key (known: from)")
    sender = reply.get("from")
    if sender is not None and (not isinstance(sender, str) or "@" not in parseaddr(sender)[1]):
        raise fail("reply.from", f"{sender!r} is not a mail address")

    return Config(
        path=path,
        select=rule_list("select"),
        ignore=rule_list("ignore") or [],
        severity=severity,
        block_on=block_on,
        reply_from=sender,
    )


def _table(data: dict, key: str, fail) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise fail(key, "expected a table ([" + key + "])")
    return value
