"""The time budget of the patch under review.

Review work is bounded per patch: the engine opens a budget when it starts a
patch, and the slow steps (applying files in the tree, parsing, each rule on
each function) check it and stop the patch once it has run out, so that one
pathological patch costs its budget and the rest of the series is still
reviewed.  tree-sitter's parser checks through its progress callback, so a
parse of hostile text is cancelled mid-way.  A rule's check on one function
cannot check for itself: it runs `interruptible()`, where a timer signal
stops it at the deadline (in the main thread; elsewhere it runs to its end).

The budget is the process's CPU time, not the wall clock: a review is the
same review on an idle machine and on a CI runner shared with other jobs
(a wall-clock budget cut patches short only when the machine was busy).
The wall clock still has a ceiling, WALL_FACTOR times the budget, so that
git's own work (not this process's CPU) and a starved machine cannot make
a patch take unboundedly long.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType

# Per patch: big enough for every real patch measured (a 2,000-line change
# of mm/memory.c, a tree-wide patch touching 2,002 files; see the README's
# "Limits"), small enough that a series of a few bad patches still ends.
DEFAULT_SECONDS = 10.0

# The wall-clock ceiling, as a multiple of the CPU budget.
WALL_FACTOR = 1.5

_deadline: ContextVar[tuple[float, float] | None] = ContextVar("mmreview_deadline", default=None)


def clock() -> float:
    """What the budget counts: this process's CPU time, in seconds."""
    return time.process_time()


class BudgetExceeded(BaseException):
    """The patch's time budget ran out; said as "not fully reviewed".  Not
    an Exception: a rule's own `except Exception` must not swallow it."""


@contextmanager
def patch_budget(seconds: float | None) -> Iterator[None]:
    """Bound what runs inside to `seconds` (None: no bound)."""
    token = _deadline.set(
        None if seconds is None else (clock() + seconds, time.monotonic() + seconds * WALL_FACTOR)
    )
    try:
        yield
    finally:
        _deadline.reset(token)


def expired() -> bool:
    deadline = _deadline.get()
    return deadline is not None and (clock() > deadline[0] or time.monotonic() > deadline[1])


_checks = 0
# Reading the CPU clock is a system call; the engine asks between every
# rule and function, thousands of times for a small patch.
_CHECK_EVERY = 16


def check() -> None:
    global _checks
    _checks += 1
    if _checks % _CHECK_EVERY == 0 and expired():
        raise BudgetExceeded


def cancel_parse(_offset: int, _has_error: bool) -> bool:
    """tree-sitter's progress_callback: True stops the parse (it then
    raises ValueError), which parsing.py turns into BudgetExceeded.  Called
    about every hundred parser operations (900 times for a small patch's
    two parses of mm/khugepaged.c): the clocks are read every few calls."""
    global _checks
    _checks += 1
    return _checks % _CHECK_PARSE_EVERY == 0 and expired()


_CHECK_PARSE_EVERY = 8


@contextmanager
def interruptible() -> Iterator[None]:
    """Run pure-Python work (a rule's check) so that the deadline stops it
    mid-way: a rule slow on one huge function costs the budget, not more."""
    deadline = _deadline.get()
    if deadline is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    cpu_left = deadline[0] - clock()
    wall_left = deadline[1] - time.monotonic()
    if cpu_left <= 0 or wall_left <= 0:
        raise BudgetExceeded
    # ITIMER_PROF counts the process's CPU time, as clock() does;
    # ITIMER_REAL the wall-clock ceiling.
    previous_prof = signal.signal(signal.SIGPROF, _stop)
    previous_alarm = signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_PROF, cpu_left)
    signal.setitimer(signal.ITIMER_REAL, wall_left)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGPROF, previous_prof)
        signal.signal(signal.SIGALRM, previous_alarm)


# Where the timer may raise: the rules' and the analyzer's own code.  Not in
# library code, which may be a finalizer or a gc callback (where an exception
# is "ignored" with a traceback on stderr), and not in this module.
_OURS = ("analyzer.", "rules.")
_RETRY_SECONDS = 0.01


def _stop(signum: int, frame: FrameType | None) -> None:
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    if module.startswith(_OURS) and module != __name__:
        raise BudgetExceeded
    # In someone else's code: soon again, on the timer that fired.
    timer = signal.ITIMER_REAL if signum == signal.SIGALRM else signal.ITIMER_PROF
    signal.setitimer(timer, _RETRY_SECONDS)
