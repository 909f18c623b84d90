"""Human output, shaped like a compiler diagnostic:

    mm/memory.c:1234:7: warning: !pmd_present(pmd) leaves early ... [PMD_PRESENT_AS_EMPTY]
      in do_huge_pmd_wp_page(), patch 2/3 "mm: ..." (confidence: medium)
     1234 |	if (!pmd_present(pmd))
          |	    ^~~~~~~~~~~~~~~~

Colour only when writing to a terminal (rich decides; NO_COLOR is honoured).
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from rich.console import Console
from rich.text import Text

from analyzer.engine import Review
from analyzer.rule import Finding, Severity

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold magenta", Severity.CHECK: "bold cyan"}


def render(review: Review, out: TextIO) -> None:
    console = Console(file=out, highlight=False, soft_wrap=True, emoji=False)
    for finding in review.findings:
        _render_finding(console, finding)
    counts = {s: sum(1 for f in review.findings if f.severity is s) for s in Severity}
    if review.scanned_files:
        _render_rule_counts(console, review)
        scope = _count(review.scanned_files, "file")
    else:
        patches = len(review.reviewed_patches)
        scope = f"{patches} patch{'es' if patches != 1 else ''}"
    summary = Text(
        f"{_count(counts[Severity.ERROR], 'error')}, {_count(counts[Severity.WARNING], 'warning')}"
        f", {_count(counts[Severity.CHECK], 'check')} in {scope}"
    )
    if review.base_reason:
        summary.append(f" (base: {review.base_reason})", style="dim")
    console.print(summary)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _render_rule_counts(console: Console, review: Review) -> None:
    """For `mmreview scan`: how many findings each rule made, most first."""
    per_rule: dict[str, Counter[Severity]] = {}
    for finding in review.findings:
        per_rule.setdefault(finding.rule, Counter())[finding.severity] += 1
    for rule, counts in sorted(per_rule.items(), key=lambda item: (-item[1].total(), item[0])):
        detail = ", ".join(
            f"{counts[s]} {s.value.lower()}{'s' if counts[s] != 1 else ''}"
            for s in Severity
            if counts[s]
        )
        console.print(Text(f"{counts.total():>6}  {rule} ({detail})"))


def _render_finding(console: Console, finding: Finding) -> None:
    head = Text()
    head.append(f"{finding.path}:{finding.line}:{finding.column}: ", style="bold")
    head.append(f"{finding.severity.value.lower()}: ", style=_STYLE[finding.severity])
    head.append(finding.message)
    head.append(f" [{finding.rule}]", style="dim")
    console.print(head)
    where = []
    if finding.function:
        where.append(f"in {finding.function}()")
    if finding.patch:
        where.append(f'patch {finding.patch.index}/{finding.patch.total} "{finding.patch.subject}"')
    where.append(f"confidence: {finding.confidence.value.lower()}")
    console.print(Text("  " + ", ".join(where), style="dim"))
    if finding.source_line:
        gutter = f"{finding.line:>5} | "
        console.print(Text(gutter, style="dim") + Text(finding.source_line.expandtabs(8)))
        prefix = finding.source_line[: finding.column - 1].expandtabs(8)
        width = finding.end_column - finding.column if finding.end_line == finding.line else 1
        console.print(
            Text(" " * 5 + " | ", style="dim")
            + Text(" " * len(prefix) + "^" + "~" * max(width - 1, 0), style="bold green")
        )
