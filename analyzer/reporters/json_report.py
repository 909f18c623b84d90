"""JSON report, schema "mm-review/report" version 1.

    {
      "schema": "mm-review/report", "version": 1,
      "tool": {"name": "mm-review", "version": "0.1.0"},
      "base": "<sha>" | null, "base_reason": "..." | null,
      "patches": [{"index", "total", "subject", "message_id", "commit", "author"}],
      "findings": [{"rule", "severity", "confidence", "file", "line", "column",
                    "end_line", "end_column", "function", "message", "source_line",
                    "fingerprint", "patch": {"index", "total", "subject"} | null}],
      "notes": ["..."], "errors": ["..."]
    }

New keys may be added within a version; a key is never removed or
re-purposed without bumping "version".
"""

from __future__ import annotations

import hashlib
import json
from typing import TextIO

from analyzer import __version__
from analyzer.engine import Review
from analyzer.rule import Finding

SCHEMA_VERSION = 1


def fingerprint(finding: Finding) -> str:
    """Stable across re-runs and line shifts: rule, file, function and the
    abstracted construct, not the line number."""
    return hashlib.sha256(f"{finding.path}\0{finding.key}".encode()).hexdigest()[:16]


def finding_dict(finding: Finding) -> dict:
    return {
        "rule": finding.rule,
        "severity": finding.severity.value,
        "confidence": finding.confidence.value,
        "file": finding.path,
        "line": finding.line,
        "column": finding.column,
        "end_line": finding.end_line or finding.line,
        "end_column": finding.end_column or finding.column,
        "function": finding.function,
        "message": finding.message,
        "source_line": finding.source_line,
        "fingerprint": fingerprint(finding),
        "patch": None
        if finding.patch is None
        else {
            "index": finding.patch.index,
            "total": finding.patch.total,
            "subject": finding.patch.subject,
        },
    }


def report_dict(review: Review) -> dict:
    return {
        "schema": "mm-review/report",
        "version": SCHEMA_VERSION,
        "tool": {"name": "mm-review", "version": __version__},
        "base": review.base,
        "base_reason": review.base_reason,
        "patches": [
            {
                "index": p.index,
                "total": p.total,
                "subject": p.title,
                "message_id": p.message_id or None,
                "commit": p.commit,
                "author": p.author or None,
            }
            for p in review.reviewed_patches
        ],
        "findings": [finding_dict(f) for f in review.findings],
        "notes": review.notes,
        "errors": review.errors,
    }


def render(review: Review, out: TextIO) -> None:
    json.dump(report_dict(review), out, indent=2)
    out.write("\n")
