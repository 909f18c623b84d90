"""`mmreview` as installed: the first thing that runs.

b4 and the send-email hook start one `mmreview check` per patch, so what
start-up costs is paid on every patch.  Two things here keep it small:

- The cyclic garbage collector is off while the program starts.  Start-up
  (the email package, the rules and the flow analyses they import) makes
  some fifty thousand objects that live as long as the process, and next to
  no garbage; the collector walked them again and again while they were
  made.  The command turns it back on when its own work starts
  (`checking.start_collecting`), and what start-up made is frozen then:
  never walked again.
- A `check` or `hook sendemail-validate` command line made only of
  options spelled the plain way (`--tree=.`, `--format checkpatch`, `-q`,
  files) is read here, and typer is not loaded: typer and what it imports
  are a third of the start-up of such a process.  Anything else (`--help`, an unknown or misspelled
  option, `-qf`, a value that looks like an option, every other command)
  goes to typer's command line in `analyzer.cli`, which says what is wrong
  as users expect.  The two readings of a command line are the same
  (tests/test_launch.py compares them).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from analyzer import patterns

# The options of `mmreview check` (analyzer.cli.check) by spelling: the
# CheckOptions field, and how its value is read (None: a flag).
_FLAG, _TEXT, _PATH, _LIST, _SECONDS = None, "text", "path", "list", "seconds"
CHECK_OPTIONS: dict[str, tuple[str, str | None]] = {
    "--tree": ("tree", _PATH),
    "-t": ("tree", _PATH),
    "--base": ("base", _TEXT),
    "--range": ("revision_range", _TEXT),
    "--all": ("show_all", _FLAG),
    "--format": ("output_format", _TEXT),
    "-f": ("output_format", _TEXT),
    "--output": ("output", _PATH),
    "-o": ("output", _PATH),
    "--select": ("select", _LIST),
    "--types": ("select", _LIST),
    "--ignore": ("ignore", _LIST),
    "--quiet": ("quiet", _FLAG),
    "-q": ("quiet", _FLAG),
    "--rules-version": ("rules_version", _TEXT),
    "--from": ("sender", _TEXT),
    "--time-budget": ("time_budget", _SECONDS),
    "--debug": ("debug", _FLAG),
}


# The options of `mmreview hook sendemail-validate` (analyzer.cli), which the
# hook runs once per file git send-email sends.
HOOK_OPTIONS: dict[str, tuple[str, str | None]] = {
    "--headers": ("headers", _TEXT),
    "--block-on": ("block_on", _TEXT),
}


def check_line(argv: list[str]) -> dict[str, Any] | None:
    """The CheckOptions fields a plain `check ...` command line gives, or
    None when typer must read it."""
    if not argv or argv[0] != "check" or (read := _read(argv[1:], CHECK_OPTIONS)) is None:
        return None
    fields, inputs = read
    if inputs:
        fields["inputs"] = inputs
    return fields


def hook_line(argv: list[str]) -> dict[str, Any] | None:
    """The arguments of hooks.validate a plain `hook sendemail-validate
    FILE ...` command line gives (patch, headers, block_on), or None."""
    if (
        argv[:2] != ["hook", "sendemail-validate"]
        or (read := _read(argv[2:], HOOK_OPTIONS)) is None
    ):
        return None
    fields, files = read
    if len(files) != 1:
        return None
    return {"patch": files[0], "headers": None, "block_on": None, **fields}


def _read(
    words: list[str], options: dict[str, tuple[str, str | None]]
) -> tuple[dict[str, Any], list[str]] | None:
    """The options' fields and the other words, or None for typer."""
    fields: dict[str, Any] = {}
    positional: list[str] = []
    rest = iter(words)
    for word in rest:
        if word == "-" or not word.startswith("-"):
            positional.append(word)
            continue
        spelling, equals, value = word.partition("=")
        known = options.get(spelling)
        if known is None or (equals and spelling[1] != "-"):
            return None  # unknown, --help, --, -qf, -t=x: typer's to judge
        name, kind = known
        if kind is _FLAG:
            if equals:
                return None
            fields[name] = True
            continue
        if not equals:
            value = next(rest, None)
            if value is None:
                return None
        read = _value(kind, value)
        if read is None:
            return None
        if kind == _LIST:
            fields.setdefault(name, []).append(read)
        else:
            fields[name] = read
    return fields, positional


def _value(kind: str, value: str) -> object | None:
    # A value typer would take differently or refuse (a leading dash, an
    # empty path, a negative or unreadable number) is typer's to judge.
    if value.startswith("-") or (kind == _PATH and not value):
        return None
    if kind == _PATH:
        return Path(value)
    if kind == _SECONDS:
        try:
            seconds = float(value)
        except ValueError:
            return None
        return seconds if seconds >= 0 else None
    return value


def main() -> None:
    gc.disable()
    argv = sys.argv[1:]
    if (fields := check_line(argv)) is not None:
        _load_on_first_use()
        patterns.keep_while_starting()
        from analyzer import checking

        _exit(checking.guarded(lambda: checking.run(checking.CheckOptions(**fields))))
    if (arguments := hook_line(argv)) is not None:
        _load_on_first_use()
        patterns.keep_while_starting()
        from analyzer import checking, hooks

        checking.start_collecting()
        _exit(checking.guarded(lambda: hooks.validate_command(**arguments)))
    from analyzer import cli

    cli.main()


class _OnFirstUse(ModuleType):
    """A module loaded when one of its names is first asked for.  The
    import statement finds it in sys.modules and asks nothing of it (it
    has no __spec__ to be initialising), so `import inspect` alone loads
    nothing; `inspect.signature` loads the real module, which then stands
    in sys.modules and in this one's place."""

    def __getattr__(self, name: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


# Modules a check imports for what it never does, each loaded where
# something first uses it (see _OnFirstUse).
ON_FIRST_USE = (
    # dataclasses imports inspect as it is imported, for one case: a class
    # without a docstring gets its signature as one.  Every dataclass a
    # check makes has a docstring, and nothing else a check runs asks
    # inspect; yet inspect (with ast, dis and tokenize) was a twentieth of a
    # cold check's instructions.
    "inspect",
    # email.utils imports socket and random for make_msgid(), and
    # email._parseaddr calendar for mktime_tz(): a check reads mail and
    # makes none (with copy below, 1% of a one-patch check).
    "socket",
    "random",
    "calendar",
    # dataclasses imports copy for asdict() and astuple(); a check copies a
    # review only where the tree's configuration or a failing reporter
    # changes one (Review.replace()).
    "copy",
)


def _load_on_first_use() -> None:
    for name in ON_FIRST_USE:
        if name not in sys.modules:
            sys.modules[name] = _OnFirstUse(name)


def _exit(code: int) -> NoReturn:
    """Exit once the output is out, without tearing the interpreter down:
    freeing every module and object a review made one by one was a twentieth
    of a one-patch check.  Nothing is left to it: the reports and the cache
    are written, temporary files removed and git waited for by then, but
    for the patterns compiled for the first time (what atexit would do)."""
    for stream in (sys.stdout, sys.stderr):
        # A reader that went away or a closed stream: nothing more to say.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    patterns.keep()
    os._exit(code)


if __name__ == "__main__":
    main()
