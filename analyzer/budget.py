"""The time budget of the patch under review.

Review work is bounded per patch: the engine opens a budget when it starts a
patch, and the slow steps (applying files in the tree, parsing, each rule on
each function) check it and stop the patch once it has run out, so that one
pathological patch costs its budget and the rest of the series is still
reviewed.  Checking is cooperative: a step that cannot check (one rule call
on one function) runs to its end.  tree-sitter's parser checks through its
progress callback, so a parse of hostile text is cancelled mid-way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Per patch: big enough for every real patch measured (a 2,000-line change
# of mm/memory.c, a tree-wide patch touching 2,002 files; see the README's
# "Limits"), small enough that a series of a few bad patches still ends.
DEFAULT_SECONDS = 10.0

_deadline: ContextVar[float | None] = ContextVar("mmreview_deadline", default=None)


class BudgetExceeded(Exception):
    """The patch's time budget ran out; said as "not fully reviewed"."""


@contextmanager
def patch_budget(seconds: float | None) -> Iterator[None]:
    """Bound what runs inside to `seconds` (None: no bound)."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def expired() -> bool:
    deadline = _deadline.get()
    return deadline is not None and time.monotonic() > deadline


def check() -> None:
    if expired():
        raise BudgetExceeded


def cancel_parse(_offset: int, _has_error: bool) -> bool:
    """tree-sitter's progress_callback: True stops the parse (it then
    raises ValueError), which parsing.py turns into BudgetExceeded."""
    return expired()
