"""Named crash points, for the fault tests.

MMREVIEW_BOT_CRASH_AT=point[:n][,point[:n]...] makes the bot SIGKILL itself
the n-th time (default: first) it reaches `point`: no cleanup, no flushing
of anything but the log line that says so -- the same as a power cut or the
OOM killer at that instant.  Unset, crash_point() costs one dict lookup.

Points, in the order a series passes them:
    ingested        a batch of messages and its cursor committed
    series_ready    a series assembled and recorded, not yet reviewed
    reviewed        reviewed and composed, outbox rows not yet committed
    queued          outbox rows committed, nothing sent
    smtp_accepted   the SMTP server accepted DATA, the row not yet marked sent
    sent            the row marked sent
    check_posted    patchwork answered 201, the row not yet marked sent
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from analyzer.bot import log

_ENV = "MMREVIEW_BOT_CRASH_AT"
_seen: Counter[str] = Counter()


def _wanted() -> dict[str, int]:
    points: dict[str, int] = {}
    for item in os.environ.get(_ENV, "").split(","):
        name, _, nth = item.strip().partition(":")
        if name:
            points[name] = int(nth) if nth.isdigit() else 1
    return points


def crash_point(name: str) -> None:
    if _ENV not in os.environ:
        return
    _seen[name] += 1
    if _wanted().get(name) == _seen[name]:
        log.warn("crash_point", point=name, n=_seen[name])
        log.flush()
        os.kill(os.getpid(), signal.SIGKILL)
