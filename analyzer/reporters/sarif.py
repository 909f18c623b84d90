"""SARIF 2.1.0, as GitHub code scanning reads it.

One run; `tool.driver.rules` holds every rule with its summary, the first
paragraph of its documentation, the whole documentation as help text, and
the lore thread of its lesson as `helpUri`.  Each result names its rule,
its level (ERROR error, WARNING warning, CHECK note), a repository-relative
location with region and snippet, the enclosing function, and a stable
`partialFingerprints.primaryLocationLineHash`: the json report's fingerprint
(path + rule + function + abstracted construct, no line number), so an
alert keeps its identity across re-runs and line shifts, with `:n` telling
apart the same construct found twice in one file.

Columns are UTF-16 code units (SARIF's default `columnKind`); mm-review
counts bytes, so they are converted on the flagged line.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TextIO

from analyzer import __version__
from analyzer.engine import Review
from analyzer.registry import all_rules
from analyzer.reporters.email_reply import lesson
from analyzer.reporters.json_report import fingerprint
from analyzer.rule import Finding, Rule, Severity

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.CHECK: "note"}
# GitHub's own ranking, shown next to the alert.
PROBLEM_SEVERITY = {
    Severity.ERROR: "error",
    Severity.WARNING: "warning",
    Severity.CHECK: "recommendation",
}


def rule_descriptor(rule: Rule, severity: Severity | None = None) -> dict:
    severity = severity or rule.severity
    what = rule.doc.partition("## What it does")[2].split("\n## ", 1)[0].strip()
    first_paragraph = " ".join(what.split("\n\n", 1)[0].split()) or rule.summary
    descriptor: dict = {
        "id": rule.id,
        "name": "".join(word.capitalize() for word in rule.id.split("_")),
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": first_paragraph},
        "help": {"text": rule.doc, "markdown": rule.doc},
        "defaultConfiguration": {"level": LEVEL[severity]},
        "properties": {
            "tags": ["linux-kernel", "mm"],
            "problem.severity": PROBLEM_SEVERITY[severity],
        },
    }
    if link := lesson(rule.id).link:
        descriptor["helpUri"] = link
    return descriptor


def _utf16_column(line: str, byte_column: int) -> int:
    prefix = line.encode("utf-8", "surrogateescape")[: byte_column - 1]
    text = prefix.decode("utf-8", "replace")
    return len(text.encode("utf-16-le")) // 2 + 1


def result_object(finding: Finding, rule_index: dict[str, int], occurrence: int) -> dict:
    region: dict = {"startLine": finding.line}
    if finding.source_line:
        region["startColumn"] = _utf16_column(finding.source_line, finding.column)
        region["snippet"] = {"text": finding.source_line}
        if finding.end_line in (0, finding.line) and finding.end_column:
            region["endLine"] = finding.line
            region["endColumn"] = _utf16_column(finding.source_line, finding.end_column)
    location: dict = {
        "physicalLocation": {
            "artifactLocation": {"uri": finding.path, "uriBaseId": "%SRCROOT%"},
            "region": region,
        }
    }
    if finding.function:
        location["logicalLocations"] = [{"name": finding.function, "kind": "function"}]
    message = finding.message + (f" (in {finding.function}())" if finding.function else "")
    result: dict = {
        "ruleId": finding.rule,
        "level": LEVEL[finding.severity],
        "message": {"text": message},
        "locations": [location],
        "partialFingerprints": {"primaryLocationLineHash": f"{fingerprint(finding)}:{occurrence}"},
        "properties": {"confidence": finding.confidence.value.lower()},
    }
    if finding.rule in rule_index:
        result["ruleIndex"] = rule_index[finding.rule]
    if finding.patch is not None:
        result["properties"]["patch"] = str(finding.patch)
    return result


def sarif_log(review: Review, severity: dict[str, Severity] | None = None) -> dict:
    """The log; `severity` holds the rule severities a configuration set."""
    severity = severity or {}
    rules = list(all_rules())
    rule_index = {rule.id: number for number, rule in enumerate(rules)}
    seen: Counter[str] = Counter()
    results = []
    for finding in sorted(review.findings, key=lambda f: (f.path, f.line, f.column, f.rule)):
        seen[fingerprint(finding)] += 1
        results.append(result_object(finding, rule_index, seen[fingerprint(finding)]))
    run: dict = {
        "tool": {
            "driver": {
                "name": "mm-review",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": [rule_descriptor(rule, severity.get(rule.id)) for rule in rules],
            }
        },
        "automationDetails": {"id": "mm-review/"},
        "columnKind": "utf16CodeUnits",
        "results": results,
    }
    notifications = [{"level": "error", "message": {"text": e}} for e in review.errors]
    notifications += [{"level": "note", "message": {"text": n}} for n in review.notes]
    if notifications:
        run["invocations"] = [
            {
                "executionSuccessful": not review.errors,
                "toolExecutionNotifications": notifications,
            }
        ]
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}


def render(review: Review, out: TextIO, severity: dict[str, Severity] | None = None) -> None:
    json.dump(sarif_log(review, severity), out, indent=2)
    out.write("\n")
