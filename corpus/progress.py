"""Progress of corpus/fetch-kernel's steps, drawn with rich on stderr.

fetch-kernel (bash) starts this when its stderr is a terminal and writes
events to its stdin, one per line (or per carriage return):

    step N M TITLE          a new step (N of M)
    total COUNT UNIT        the size of the step, when known (bytes, files)
    set COUNT               done so far
    dlstatus:1:PERCENT:...  apt-get's -o APT::Status-Fd lines
    NNN bytes (...) copied  GNU dd's status=progress lines
    done                    the step is over

Anything else is ignored.  With MMREVIEW_PROGRESS=bar the bar is drawn even
when stderr is not a terminal (the tests' fixture relays it to one).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_DD_RE = re.compile(r"^(\d+) bytes")
_DLSTATUS_RE = re.compile(r"^dlstatus:\d+:([\d.]+):")


def main() -> None:
    console = Console(stderr=True, force_terminal=os.environ.get("MMREVIEW_PROGRESS") == "bar")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task: TaskID | None = None
        unit = ""
        for raw in sys.stdin.buffer:
            for event in raw.decode("utf-8", "replace").replace("\r", "\n").splitlines():
                words = event.split(" ", 3)
                if words[0] == "step" and len(words) == 4:
                    if task is not None:
                        finished = progress.tasks[task].total or 1
                        progress.update(task, total=finished, completed=finished)
                    # The whole title (paths, sizes) once; the bar is named
                    # by its first word, so that it fits on the line.
                    number = f"[{words[1]}/{words[2]}]"
                    progress.console.print(f"{number} {words[3]}", highlight=False, markup=False)
                    task = progress.add_task(
                        f"{number} {words[3].split()[0]:<11}", total=None, amount=""
                    )
                    unit = ""
                elif task is None:
                    continue
                elif words[0] == "total" and len(words) >= 2 and words[1].isdigit():
                    unit = words[2] if len(words) > 2 else ""
                    progress.update(task, total=int(words[1]))
                elif words[0] == "set" and len(words) == 2 and words[1].isdigit():
                    _advance(progress, task, int(words[1]), unit)
                elif match := _DD_RE.match(event):
                    _advance(progress, task, int(match.group(1)), unit)
                elif match := _DLSTATUS_RE.match(event):
                    progress.update(task, total=100, completed=float(match.group(1)), amount="")
                elif words[0] == "done":
                    finished = progress.tasks[task].total or 1
                    progress.update(task, total=finished, completed=finished)
                    task = None


def _advance(progress: Progress, task: TaskID, done: int, unit: str) -> None:
    total = progress.tasks[task].total
    if unit == "bytes":
        amount = f"{done / 1e6:,.0f}" + (f"/{total / 1e6:,.0f} MB" if total else " MB")
    else:
        amount = f"{done:,}" + (f"/{int(total):,} {unit}" if total else f" {unit}")
    progress.update(task, completed=done, amount=amount)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        main()
