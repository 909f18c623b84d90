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

from analyzer import cache
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
