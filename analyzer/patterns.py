"""Regular expressions compiled when first used.

A cold `mmreview check` imports every rule, and compiling the ninety-odd
patterns the rules and the engine define at module level took 8 ms of each
run, though a patch to one file uses about half of them (b4 starts one
process per patch).  `regex(...)` stands for `re.compile(...)` there: the
first method call compiles the pattern, and from then on its methods are
the compiled pattern's own, looked up as plainly as before.
"""

from __future__ import annotations

import re
from typing import Any, AnyStr, cast

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
            compiled = self._compiled = re.compile(self.pattern, self._flags)
            self.__dict__.update({method: getattr(compiled, method) for method in _METHODS})
        return getattr(compiled, name)

    def __repr__(self) -> str:
        return f"regex({self.pattern!r})"


def regex(pattern: AnyStr, flags: int = 0) -> re.Pattern[AnyStr]:
    """re.compile(pattern, flags), done when the pattern is first used."""
    return cast("re.Pattern[AnyStr]", _Deferred(pattern, flags))
