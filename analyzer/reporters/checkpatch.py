"""checkpatch's terse shape, one line per finding:

    mm/memory.c:1234: WARNING:PMD_PRESENT_AS_EMPTY: !pmd_present(pmd) leaves early ...

and nothing at all when the series is clean, as `checkpatch.pl --terse
--showfile --no-summary` prints.  b4 reads "ERROR:" in a line as a failure and
any other line as a warning; reviewdog takes it with -efm="%f:%l: %m".
Findings on a commit message have the path COMMIT_MSG (line 1 = subject)
and, in a series, the patch they belong to:

    COMMIT_MSG:7: WARNING:BAD_FIXES_TAG: Fixes: e1e267c79: ... (patch 2/3)
"""

from __future__ import annotations

from typing import TextIO

from analyzer.engine import Review
from analyzer.rule import COMMIT_MESSAGE_PATH


def render(review: Review, out: TextIO) -> None:
    for finding in review.findings:
        message = finding.message
        if finding.function:
            message += f" (in {finding.function}())"
        elif finding.path == COMMIT_MESSAGE_PATH and finding.patch and finding.patch.total > 1:
            # Every patch has a COMMIT_MSG: say whose.
            message += f" (patch {finding.patch.index}/{finding.patch.total})"
        out.write(
            f"{finding.path}:{finding.line}: {finding.severity.value}:{finding.rule}: {message}\n"
        )
