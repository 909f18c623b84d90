"""checkpatch's terse shape, one line per finding:

    mm/memory.c:1234: WARNING:PMD_PRESENT_AS_EMPTY: !pmd_present(pmd) leaves early ...

and nothing at all when the series is clean, as `checkpatch.pl --terse
--showfile --no-summary` prints.  b4 reads "ERROR:" in a line as a failure and
any other line as a warning; reviewdog takes it with -efm="%f:%l: %m".
"""

from __future__ import annotations

from typing import TextIO

from analyzer.engine import Review


def render(review: Review, out: TextIO) -> None:
    for finding in review.findings:
        message = finding.message
        if finding.function:
            message += f" (in {finding.function}())"
        out.write(
            f"{finding.path}:{finding.line}: {finding.severity.value}:{finding.rule}: {message}\n"
        )
