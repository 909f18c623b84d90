"""Regular expressions compiled when first used, and kept compiled on disk.

A cold `mmreview check` imports every rule, and compiling the ninety-odd
patterns the rules and the engine define at module level took 8 ms of each
run, though a patch to one file uses about half of them (b4 starts one
process per patch).  `regex(...)` stands for `re.compile(...)` there: the
first method call compiles the pattern, and from then on its methods are
the compiled pattern's own, looked up as plainly as before.

Compiling even that half is the work of sre's parser and code generator,
which are Python: 5% of a one-patch check.  What they make of a pattern
(the program the regular expression engine runs, and its group names)
depends on the pattern, its flags and the interpreter alone, so it is kept
on disk as byte code is, one table per interpreter: a pattern compiled once
is from then on only handed to the engine, which checks the program as it
takes it (`_sre.compile` refuses an invalid one).  Any trouble reading the
table, or an entry the engine refuses, and the pattern is compiled as usual.
"""

from __future__ import annotations

import _sre
import atexit
import marshal
import re
import sys
from re import _compiler, _parser  # type: ignore[attr-defined]
from typing import Any, AnyStr, cast

from analyzer.digests import sha1

# What a compiled pattern's users call on it: bound to the instance once
# compiled, so that a call in a hot loop finds it without __getattr__.
_METHODS = ("search", "match", "fullmatch", "finditer", "findall", "sub", "subn", "split")


class _Deferred:
    def __init__(self, pattern: str | bytes, flags: int) -> None:
        self.pattern = pattern  # the source, readable without compiling
        self._flags = flags

    def __getattr__(self, name: str) -> Any:
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            compiled = self._compiled = compile_kept(self.pattern, self._flags)
            self.__dict__.update({method: getattr(compiled, method) for method in _METHODS})
        return getattr(compiled, name)

    def __repr__(self) -> str:
        return f"regex({self.pattern!r})"


def regex(pattern: AnyStr, flags: int = 0) -> re.Pattern[AnyStr]:
    """re.compile(pattern, flags), done when the pattern is first used."""
    return cast("re.Pattern[AnyStr]", _Deferred(pattern, int(flags)))


# The arguments of _sre.compile() after the pattern, by (pattern, flags).
Program = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]
_programs: dict[tuple[str | bytes, int], Program] | None = None
_learned = False


def compile_kept(pattern: AnyStr, flags: int = 0) -> re.Pattern[AnyStr]:
    """re.compile(pattern, flags) for a pattern the program spells out (not
    one made from input: every pattern compiled here is kept)."""
    global _learned
    flags = int(flags)
    programs = _table()
    known = programs.get((pattern, flags))
    if known is not None:
        try:
            return _sre.compile(pattern, *known)
        except Exception:  # a table another interpreter build wrote, or damaged
            pass
    # As re._compiler.compile() does, keeping what it hands the engine.
    parsed = _parser.parse(pattern, flags)
    names = [None] * parsed.state.groups
    for name, index in parsed.state.groupdict.items():
        names[index] = name
    program = (
        flags | parsed.state.flags,
        [int(op) for op in _compiler._code(parsed, flags)],  # opcodes are int subclasses
        parsed.state.groups - 1,
        dict(parsed.state.groupdict),
        tuple(names),
    )
    compiled = _sre.compile(pattern, *program)
    if not _learned:
        _learned = True
        atexit.register(keep)  # the launcher's quick exit calls keep() itself
    programs[(pattern, flags)] = program
    return compiled


def keep_while_starting() -> None:
    """Until `started()`, re.compile() takes the programs of the patterns it
    compiles from the table: what the modules being imported and the
    reading of the mail spell out (the email package, unidiff and json
    compile some forty in every process, 6 ms of a one-patch check).  A
    review may make patterns of what it reads, and compiles them as usual.

    The first process to start so keeps what it compiled; later ones only
    take from the table.  A few of the email package's patterns are built
    from sets, whose order changes with every process's string hashing:
    learning them each time would write the table in every process."""
    global _learning_start_up
    programs = _table()
    _learning_start_up = _START_UP_KEPT not in programs
    _compiler.compile = _compile_spelled_out
    # Every check reads the derived cache, which is JSON (analyzer.cache
    # imports json where it reads, so that the table is read without it).
    import json  # noqa: F401


def started() -> None:
    _compiler.compile = _compile_as_usual


_compile_as_usual = _compiler.compile
# In the table once a process has kept what its start-up compiled: no
# pattern re.compile() is given has negative flags.
_START_UP_KEPT = ("", -1)
_learning_start_up = False


def _compile_spelled_out(pattern: Any, flags: int = 0) -> re.Pattern[Any]:
    if isinstance(pattern, str | bytes) and not flags & re.DEBUG:
        programs = _table()
        if _learning_start_up:
            programs[_START_UP_KEPT] = (0, [], 0, {}, ())
            return compile_kept(pattern, flags)
        if (pattern, flags) in programs:
            return compile_kept(pattern, flags)
    return _compile_as_usual(pattern, flags)


def keep() -> None:
    """Write the table if this run compiled patterns it lacked."""
    global _learned
    if not _learned or _programs is None:
        return
    _learned = False
    on_disk = _read()
    if len(on_disk) > _MAX_KEPT:
        on_disk = {}  # patterns of versions long gone: start again
    on_disk.update(_programs)
    try:
        data = marshal.dumps(on_disk)
    except ValueError:  # a damaged table read back: compiled again next time
        return
    from analyzer import cache  # imported by then: this module comes first

    cache.store_bytes(_NAMESPACE, _table_key(), data)


_NAMESPACE = "patterns"
# The table holds the patterns every version run here ever compiled: the
# program defines some two hundred.
_MAX_KEPT = 2000


def _table() -> dict[tuple[str | bytes, int], Program]:
    global _programs
    if _programs is None:
        _programs = _read()
    return _programs


def _read() -> dict[tuple[str | bytes, int], Program]:
    # Not at the top: the launcher imports this module before all others,
    # and cache imports json, whose patterns are worth keeping too.
    from analyzer import cache

    data = cache.load_bytes(_NAMESPACE, _table_key())
    if data is None:
        return {}
    try:
        table = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return {}
    return table if isinstance(table, dict) else {}


def _table_key() -> str:
    # The programs are the interpreter's: its version and build, and the
    # engine's own version of its code.
    interpreter = f"{sys.version}|{sys.implementation.cache_tag}|{_sre.MAGIC}|{_sre.CODESIZE}"
    return sha1(interpreter.encode()).hexdigest()[:16]
