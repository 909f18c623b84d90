"""reviewdog's rdjsonl: one JSON diagnostic per line,

    {"message": "...", "location": {"path": "mm/fault.c", "range": {"start":
     {"line": 34, "column": 6}, "end": {...}}}, "severity": "WARNING",
     "code": {"value": "PMD_PRESENT_AS_EMPTY", "url": "<lesson's lore thread>"},
     "source": {"name": "mm-review"}, "original_output": "<checkpatch line>"}

Lines and columns are 1-based, columns in UTF-8 bytes (what mm-review counts).
CHECK findings are INFO.  Use:

    mmreview check -f rdjsonl series.mbox --tree . | reviewdog -f=rdjsonl -name=mm-review \\
        -reporter=github-pr-review -filter-mode=added
"""

from __future__ import annotations

import json
from typing import TextIO

from analyzer.engine import Review
from analyzer.reporters.email_reply import lesson
from analyzer.rule import Finding, Severity

SEVERITY = {Severity.ERROR: "ERROR", Severity.WARNING: "WARNING", Severity.CHECK: "INFO"}


def diagnostic(finding: Finding) -> dict:
    message = finding.message + (f" (in {finding.function}())" if finding.function else "")
    start = {"line": finding.line, "column": finding.column}
    location: dict = {"path": finding.path, "range": {"start": start}}
    if finding.end_line and finding.end_column:
        location["range"]["end"] = {"line": finding.end_line, "column": finding.end_column}
    code: dict = {"value": finding.rule}
    if link := lesson(finding.rule).link:
        code["url"] = link
    return {
        "message": message,
        "location": location,
        "severity": SEVERITY[finding.severity],
        "code": code,
        "source": {"name": "mm-review"},
        "original_output": (
            f"{finding.path}:{finding.line}: {finding.severity.value}:{finding.rule}: {message}"
        ),
    }


def render(review: Review, out: TextIO) -> None:
    for finding in review.findings:
        out.write(json.dumps(diagnostic(finding)) + "\n")
