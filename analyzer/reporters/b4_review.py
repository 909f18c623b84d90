"""`b4 review`'s check protocol (b4.review-perpatch-check-cmd, b4 >= 0.15):
a JSON array with one result for the patch on stdin,

    [{"tool": "mm-review", "status": "pass" | "warn" | "fail",
      "summary": "1 error, 1 warning", "url": "<lore link of the lesson>",
      "details": "<JSON-encoded list of findings>"}]

where each finding is {"status", "description", "srcline"?, "url"?}: b4
renders such a list as coloured lines, the description in checkpatch's
shape (`mm/fault.c:34: WARNING:RULE: message`), the flagged source line
under it and the lesson's lore thread after it.  ERROR is "fail";
WARNING and CHECK are "warn", as b4 reads checkpatch.
"""

from __future__ import annotations

import json
from typing import TextIO

from analyzer.engine import Review
from analyzer.reporters.email_reply import lesson
from analyzer.rule import Finding, Severity

TOOL = "mm-review"
_STATUS = {Severity.ERROR: "fail", Severity.WARNING: "warn", Severity.CHECK: "warn"}


def finding_entry(finding: Finding) -> dict[str, str]:
    description = f"{finding.path}:{finding.line}: {finding.severity.value}:{finding.rule}: "
    description += finding.message
    if finding.function:
        description += f" (in {finding.function}())"
    entry = {"status": _STATUS[finding.severity], "description": description}
    if finding.source_line.strip():
        entry["srcline"] = finding.source_line.strip()
    if link := lesson(finding.rule).link:
        entry["url"] = link
    return entry


def result(review: Review) -> dict[str, str]:
    details = [{"status": "fail", "description": error} for error in review.errors]
    details += [finding_entry(f) for f in review.findings]
    counts = {s: sum(1 for f in review.findings if f.severity is s) for s in Severity}
    parts = [
        f"{counts[s]} {name}{'s' if counts[s] != 1 else ''}"
        for s, name in ((Severity.ERROR, "error"), (Severity.WARNING, "warning"))
        if counts[s]
    ]
    if counts[Severity.CHECK]:
        parts.append(f"{counts[Severity.CHECK]} check{'s' if counts[Severity.CHECK] != 1 else ''}")
    if review.errors:
        parts.insert(0, f"{len(review.errors)} not reviewable")
    statuses = {d["status"] for d in details}
    status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    entry = {
        "tool": TOOL,
        "status": status,
        "summary": ", ".join(parts) if parts else "passed all checks",
    }
    links = {d["url"] for d in details if "url" in d}
    if len(links) == 1:
        entry["url"] = links.pop()
    if details:
        entry["details"] = json.dumps(details)
    return entry


def render(review: Review, out: TextIO) -> None:
    json.dump([result(review)], out)
    out.write("\n")
