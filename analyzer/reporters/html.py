"""One self-contained HTML page for a reviewed series.

An overview (each patch with its counts by severity, and the totals), then
each patch's diff with the findings shown right under the lines they are
about; each finding carries its rule's documentation in a `<details>`
element, one click away.  The page has its stylesheet inline, no scripts,
and a Content-Security-Policy that forbids loading anything: it can be
mailed, archived as a CI artifact, or opened from disk with no network.
A patch without findings has its diff folded away.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from typing import TextIO

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

from analyzer import __version__
from analyzer.engine import Review
from analyzer.patches import FileDiff, Patch, printable_block
from analyzer.patterns import regex
from analyzer.registry import get_rule
from analyzer.reporters.email_reply import lesson
from analyzer.rule import Finding, Severity

# analyzer.rule.COMMIT_MESSAGE_PATH: where findings on the commit message sit.
COMMIT_MESSAGE = "COMMIT_MSG"
SEVERITIES = (Severity.ERROR, Severity.WARNING, Severity.CHECK)
_LABEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.CHECK: "check"}
# Upstream commits, as kernel references cite them (12 or more hex digits).
COMMIT_URL = "https://git.kernel.org/torvalds/c/{sha}"
_REFERENCE_RE = regex(
    r"(?P<url>https?://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]])|(?P<sha>\b[0-9a-f]{12,40}\b)"
)


def _link_references(state: StateCore) -> None:
    """markdown-it core rule: URLs and commit ids in text become links
    (outside links and code)."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        depth = 0
        for token in block.children:
            depth += token.type == "link_open"
            depth -= token.type == "link_close"
            if token.type != "text" or depth or not _REFERENCE_RE.search(token.content):
                children.append(token)
                continue
            position = 0
            for match in _REFERENCE_RE.finditer(token.content):
                children.append(_text(token.content[position : match.start()]))
                link = Token("link_open", "a", 1)
                link.attrSet("href", _href(match))
                children += [link, _text(match.group()), Token("link_close", "a", -1)]
                position = match.end()
            children.append(_text(token.content[position:]))
        block.children = children


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def _href(match: re.Match[str]) -> str:
    return match.group("url") or COMMIT_URL.format(sha=match.group("sha"))


def linked(text: str) -> str:
    """Escaped text with its URLs and commit ids as links."""
    out = []
    position = 0
    for match in _REFERENCE_RE.finditer(text):
        out.append(escape(text[position : match.start()]))
        out.append(f'<a href="{escape(_href(match))}">{escape(match.group())}</a>')
        position = match.end()
    out.append(escape(text[position:]))
    return "".join(out)


# Raw HTML in a rule's documentation is shown as text, never interpreted.
_MARKDOWN = MarkdownIt("commonmark", {"html": False})
_MARKDOWN.core.ruler.push("kernel_references", _link_references)

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1em 2em; color: #1f2328; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; }
h3 { font: 600 0.95em ui-monospace, monospace; margin: 1.2em 0 0.3em; }
.meta { color: #59636e; margin-top: 0; }
table.summary { border-collapse: collapse; margin: 1em 0; }
table.summary th, table.summary td { border: 1px solid #d1d9e0; padding: 0.3em 0.7em; }
table.summary td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.summary tfoot td { font-weight: 600; }
table.diff { border-collapse: collapse; width: 100%; font: 13px/1.4 ui-monospace, monospace;
             tab-size: 8; border: 1px solid #d1d9e0; }
table.diff td { padding: 0 0.5em; vertical-align: top; }
td.ln { color: #59636e; text-align: right; user-select: none; width: 3.5em;
        border-right: 1px solid #d1d9e0; }
td.code { white-space: pre-wrap; word-break: break-all; }
tr.add td.code { background: #dafbe1; } tr.del td.code { background: #ffebe9; }
tr.hunk td { background: #ddf4ff; color: #59636e; }
tr.finding td { padding: 0.4em 0.8em; white-space: normal; font: 14px/1.45 system-ui, sans-serif;
                background: #f6f8fa; }
.note { border-left: 4px solid; padding: 0.2em 0.8em; }
.note.error { border-color: #cf222e; } .note.warning { border-color: #bf8700; }
.note.check { border-color: #0969da; }
.sev { font-weight: 700; text-transform: uppercase; font-size: 0.8em; margin-right: 0.5em; }
.error .sev { color: #cf222e; } .warning .sev { color: #9a6700; } .check .sev { color: #0969da; }
.rule { font: 0.85em ui-monospace, monospace; color: #59636e; margin-left: 0.5em; }
details { margin-top: 0.3em; } summary { cursor: pointer; color: #0969da; }
details .doc { border: 1px solid #d1d9e0; padding: 0 1em; margin-top: 0.4em; background: #fff; }
details .doc pre { background: #f6f8fa; padding: 0.5em; overflow-x: auto; }
pre.message { white-space: pre-wrap; font: 13px/1.4 ui-monospace, monospace; margin: 0; }
.clean { color: #1a7f37; } .problems li { margin: 0.2em 0; }
h4.outside { font: 600 0.9em system-ui, sans-serif; color: #59636e; margin: 0.8em 0 0.3em; }
.lesson { margin-top: 0.3em; font-size: 0.9em; }
"""


def render(review: Review, out: TextIO) -> None:
    out.write(page(review))


def page(review: Review) -> str:
    patches = review.reviewed_patches
    title = _series_title(review)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy"'
        " content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>mm-review: {escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>mm-review: {escape(title)}</h1>",
        f'<p class="meta">mm-review {__version__}'
        + (f"; base {escape(review.base_reason)}" if review.base_reason else "")
        + "</p>",
        _overview(review),
    ]
    numbered = dict(enumerate(review.findings))
    for patch in patches:
        mine = {n: f for n, f in numbered.items() if f.patch and f.patch.index == patch.index}
        parts.append(_patch_section(patch, mine))
    unplaced = {n: f for n, f in numbered.items() if f.patch is None}
    if unplaced:
        parts.append(_loose_findings(unplaced))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _series_title(review: Review) -> str:
    cover = review.series.cover
    if cover is not None and cover.get("Subject"):
        return " ".join(str(cover["Subject"]).split())
    if review.reviewed_patches:
        first = review.reviewed_patches[0]
        return first.title if len(review.reviewed_patches) == 1 else f"{first.title} (series)"
    return f"{review.scanned_files} files scanned"


def _counts(findings: Iterable[Finding]) -> dict[Severity, int]:
    found = list(findings)
    return {s: sum(1 for f in found if f.severity is s) for s in SEVERITIES}


def _overview(review: Review) -> str:
    rows = []
    for patch in review.reviewed_patches:
        counts = _counts(f for f in review.findings if f.patch and f.patch.index == patch.index)
        cells = "".join(f'<td class="n">{counts[s] or ""}</td>' for s in SEVERITIES)
        rows.append(
            f'<tr><td class="n">{patch.index}/{patch.total}</td>'
            f'<td><a href="#patch-{patch.index}">{escape(patch.title)}</a></td>{cells}</tr>'
        )
    totals = _counts(review.findings)
    heads = "".join(f"<th>{_LABEL[s]}s</th>" for s in SEVERITIES)
    foot = "".join(f'<td class="n">{totals[s]}</td>' for s in SEVERITIES)
    html = [
        '<section id="overview"><h2>Overview</h2>',
        f'<table class="summary"><thead><tr><th>#</th><th>patch</th>{heads}</tr></thead>',
        f"<tbody>{''.join(rows)}</tbody>",
        f"<tfoot><tr><td></td><td>total</td>{foot}</tr></tfoot></table>",
    ]
    problems = [f"<li>not reviewed: {escape(e)}</li>" for e in review.errors]
    problems += [f"<li>{escape(n)}</li>" for n in review.notes]
    if problems:
        html.append(f'<ul class="problems">{"".join(problems)}</ul>')
    html.append("</section>")
    return "\n".join(html)


def _patch_section(patch: Patch, findings: dict[int, Finding]) -> str:
    meta = " · ".join(escape(x) for x in (patch.author, patch.date) if x)
    if patch.commit:
        meta += f" · commit {patch.commit[:12]}"
    html = [
        f'<section class="patch" id="patch-{patch.index}">',
        f"<h2>[{patch.index}/{patch.total}] {escape(patch.title)}</h2>",
        f'<p class="meta">{meta}</p>',
    ]
    on_message = {n: f for n, f in findings.items() if f.path == COMMIT_MESSAGE}
    if on_message:
        html.append(_message_block(patch, on_message))
    files = "\n".join(
        _file_block(patch, file, {n: f for n, f in findings.items() if f.path == file.path})
        for file in patch.files
    )
    if findings:
        html.append(files)
    else:
        html.append(
            f'<details><summary class="clean">no findings: show the diff</summary>{files}</details>'
        )
    html.append("</section>")
    return "\n".join(html)


def _message_block(patch: Patch, findings: dict[int, Finding]) -> str:
    lines = [patch.title, "", *_clean(patch.commit_message).split("\n")]
    rows = []
    for number, text in enumerate(lines, 1):
        rows.append(_code_row("ctx", None, number, text, f"p{patch.index}-msg-{number}"))
        rows += [_finding_row(n, f) for n, f in findings.items() if f.line == number]
    placed = {n for n, f in findings.items() if 1 <= f.line <= len(lines)}
    rows += [_finding_row(n, f) for n, f in findings.items() if n not in placed]
    return f'<h3>commit message</h3>\n<table class="diff">{"".join(rows)}</table>'


# unidiff's line types that are diff lines ('' is a blank line between
# hunks, and '' is in every string: a plain `in "+- "` let it through).
_KINDS = {"+": "add", "-": "del", " ": "ctx"}


def _file_block(patch: Patch, file: FileDiff, findings: dict[int, Finding]) -> str:
    prefix = f"p{patch.index}-{_anchor(file.path)}"
    rows = []
    placed: set[int] = set()
    by_line: dict[int, list[int]] = {}
    for number, finding in findings.items():
        by_line.setdefault(finding.line, []).append(number)
    for hunk in file.patched:
        header = f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start},"
        header += f"{hunk.target_length} @@ {hunk.section_header}"
        rows.append(
            f'<tr class="hunk"><td></td><td></td><td>{escape(_clean(header.rstrip()))}</td></tr>'
        )
        for line in hunk:
            kind = _KINDS.get(line.line_type)
            if kind is None:
                continue
            new = line.target_line_no
            row_id = f"{prefix}-{'L' + str(line.source_line_no) if new is None else new}"
            text = line.line_type + _clean(line.value.rstrip("\n"))
            rows.append(_code_row(kind, line.source_line_no, new, text, row_id))
            if new is not None:
                here = [n for n in by_line.get(new, []) if n not in placed]
                rows += [_finding_row(n, findings[n]) for n in here]
                placed.update(here)
    name = file.path if file.old_path in (None, file.path) else f"{file.old_path} → {file.path}"
    html = f'<h3>{escape(name)}</h3>\n<table class="diff">{"".join(rows)}</table>'
    rest = {n: f for n, f in findings.items() if n not in placed}
    if rest:
        # Apart from the diff, under a heading of their own: shown under
        # the last hunk, they read as if they were about it.
        outside = []
        for number, finding in sorted(rest.items(), key=lambda item: item[1].line):
            outside.append(
                _code_row(
                    "ctx", None, finding.line, " " + finding.source_line, f"{prefix}-{number}"
                )
            )
            outside.append(_finding_row(number, finding, outside=True))
        html += (
            f'\n<h4 class="outside">{escape(file.path)}: outside the patch\'s hunks</h4>'
            f'\n<table class="diff outside">{"".join(outside)}</table>'
        )
    return html


def _clean(text: str) -> str:
    # Diff text keeps undecodable bytes as surrogate escapes (git apply
    # needs them); a page shows them as U+FFFD.
    return printable_block(text)


def _anchor(path: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in path)


def _code_row(kind: str, old: int | None, new: int | None, text: str, row_id: str) -> str:
    return (
        f'<tr class="line {kind}" id="{escape(row_id)}">'
        f'<td class="ln">{old or ""}</td><td class="ln">{new or ""}</td>'
        f'<td class="code">{escape(text)}</td></tr>'
    )


def _finding_row(number: int, finding: Finding, outside: bool = False) -> str:
    label = _LABEL[finding.severity]
    where = f" in {escape(finding.function)}()" if finding.function else ""
    if outside:
        where += f", line {finding.line} (outside the patch's hunks)"
    rule = get_rule(finding.rule)
    doc = ""
    if rule is not None:
        doc = (
            f"<details><summary>Why is this a problem? ({escape(rule.summary)})</summary>"
            f'<div class="doc">{_MARKDOWN.render(rule.doc)}</div></details>'
        )
    return (
        f'<tr class="finding" id="f-{number}" data-rule="{escape(finding.rule)}"'
        f' data-line="{finding.line}"><td></td><td></td><td>'
        f'<div class="note {label}"><span class="sev">{label}</span>{linked(finding.message)}'
        f'<span class="rule">{escape(finding.rule)}{where}, confidence '
        f"{finding.confidence.value.lower()}</span>{_lesson(finding.rule)}{doc}</div></td></tr>"
    )


def _lesson(rule_id: str) -> str:
    """The lesson's commit and lore thread, as links."""
    found = lesson(rule_id)
    parts = []
    if found.commit:
        parts.append(f"commit {linked(found.commit)}")
    if found.link:
        parts.append(f'<a href="{escape(found.link)}">the lore thread</a>')
    return f'<div class="lesson">See {" and ".join(parts)}.</div>' if parts else ""


def _loose_findings(findings: dict[int, Finding]) -> str:
    """Findings of `mmreview scan`, which have no patch: by file."""
    by_path: dict[str, list[tuple[int, Finding]]] = {}
    for number, finding in findings.items():
        by_path.setdefault(finding.path, []).append((number, finding))
    html = ['<section id="files"><h2>Findings</h2>']
    for path, items in sorted(by_path.items()):
        rows = []
        for number, finding in sorted(items, key=lambda item: item[1].line):
            rows.append(
                _code_row("ctx", None, finding.line, finding.source_line, f"f-{number}-line")
            )
            rows.append(_finding_row(number, finding))
        html.append(f'<h3>{escape(path)}</h3><table class="diff">{"".join(rows)}</table>')
    html.append("</section>")
    return "\n".join(html)
