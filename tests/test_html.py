"""--format html, opened in a real headless Chromium: the findings sit under
the lines they are about, and the page loads with no network at all."""

from __future__ import annotations

import json
import re
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from tests.conftest import Tree, mmreview, require_program

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Chromium's own background requests (updates, accounts) go nowhere.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
]


def chromium(tmp_path: Path, page: Path, *args: str) -> tuple[str, list[dict]]:
    """Run Chromium on `page`; returns stdout and the requests in its net log."""
    binary = require_program("chromium", "chromium")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    netlog = profile.with_suffix(".netlog.json")
    out = subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--log-net-log={netlog}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    log = json.loads(netlog.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    requests = [
        event["params"]
        for event in log["events"]
        if names.get(event["type"]) == "URL_REQUEST_START_JOB" and "url" in event.get("params", {})
    ]
    return out.stdout, requests


def page_requests(requests: list[dict]) -> list[str]:
    """Requests the page made (Chromium's own have no origin)."""
    return [r["url"] for r in requests if r.get("initiator") != "not an origin"]


class Rows(HTMLParser):
    """The rows of every table, in document order, with their text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.details: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self.rows.append({**dict(attrs), "text": ""})
        elif tag == "details":
            self.details.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        if self.rows:
            self.rows[-1]["text"] += data


def report(tree: Tree, tmp_path: Path) -> Path:
    tree.edit(
        "mm/fault.c",
        "\tif (pmd_none(_pmd))\n\t\tgoto out;\n\n\tret = false;",
        "\tif (!pmd_present(_pmd))\n\t\tgoto out;\n\n\tret = false;",
    )
    tree.commit("mm/demo: treat a non-present PMD as empty")
    tree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
    tree.commit("mm/demo: drop the uffd-wp re-check")
    tree.edit("mm/fault.c", "\tint present = 0;", "\tint present = 0; /* PMDs <seen> */")
    tree.commit("mm/demo: say what is counted")
    series = tree.format_patch("--cover-letter", "--thread", "-3")
    tree.git("reset", "-q", "--hard", "HEAD~3")
    out = tmp_path / "report.html"
    result = mmreview(
        "check", "-", "--tree", str(tree.path), "-f", "html", "-o", str(out), input=series
    )
    assert result.returncode == 1 and result.stderr == b"", result.stderr
    return out


def test_page_is_self_contained(minitree: Tree, tmp_path: Path) -> None:
    html = report(minitree, tmp_path).read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""\s(src|srcset|poster|data)=|<link|@import|url\(""", html)
    # Only in-page anchors and plain links to the lessons; nothing is loaded.
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs and all(
        h.startswith(("#", "https://lore.kernel.org/", "https://git.kernel.org/torvalds/c/"))
        for h in hrefs
    )
    assert "content=\"default-src 'none'; style-src 'unsafe-inline'\"" in html
    # Code is escaped, not interpreted.
    assert "/* PMDs &lt;seen&gt; */" in html


def test_findings_sit_under_their_lines_in_chromium(minitree: Tree, tmp_path: Path) -> None:
    page = report(minitree, tmp_path)
    dom, requests = chromium(tmp_path, page, "--dump-dom")
    assert page_requests(requests) == []
    parser = Rows()
    parser.feed(dom)
    rows = parser.rows
    ids = [r.get("id") for r in rows]

    flagged = rows[ids.index("p1-mm-fault-c-34") + 1]
    assert flagged["class"] == "finding" and flagged["data-rule"] == "PMD_PRESENT_AS_EMPTY"
    assert "pmd_none(_pmd) replaced by !pmd_present(_pmd)" in flagged["text"]
    assert "+\tif (!pmd_present(_pmd))" in rows[ids.index("p1-mm-fault-c-34")]["text"]
    flagged = rows[ids.index("p2-mm-khugepaged-c-32") + 1]
    assert flagged["data-rule"] == "COLLAPSE_WITHOUT_UFFD_CHECK"
    assert "error" in flagged["text"]
    # The removed line is shown, with no finding under it.
    removed = rows[ids.index("p2-mm-khugepaged-c-L32")]
    assert removed["class"] == "line del" and "userfaultfd_wp(vma)" in removed["text"]
    assert sum(1 for r in rows if r.get("class") == "finding") == 2
    # The explanation is one click away: folded, with the rule's documentation.
    assert len(parser.details) == 3  # two findings, one folded clean patch
    assert all("open" not in d for d in parser.details)
    assert "Why is this bad?" in flagged["text"] and "deb4c93a9871" in flagged["text"]
    # The overview counts.
    overview = dom[dom.index('id="overview"') : dom.index("</section>")]
    assert re.search(r"total</td>\s*<td[^>]*>1</td>\s*<td[^>]*>1</td>\s*<td[^>]*>0</td>", overview)


def test_screenshot(minitree: Tree, tmp_path: Path) -> None:
    page = report(minitree, tmp_path)
    shot = tmp_path / "report.png"
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,1800")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 1800)
    assert len(data) > 50_000  # a rendered page, not a blank one


def test_the_request_check_sees_a_page_that_loads_something(tmp_path: Path) -> None:
    """The net-log check is not vacuous: an image on a page shows up."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">')
    _, requests = chromium(tmp_path, page, "--dump-dom")
    assert page_requests(requests) == ["http://127.0.0.1:9/x.png"]


def test_clean_series_page(minitree: Tree, tmp_path: Path) -> None:
    minitree.edit("mm/fault.c", "\tint present = 0;", "\tint present = 0; /* PMDs */")
    minitree.commit("mm/demo: say what is counted")
    out = tmp_path / "clean.html"
    result = mmreview("check", "-", "-f", "html", "-o", str(out), input=minitree.format_patch("-1"))
    assert result.returncode == 0
    html = out.read_text()
    assert "no findings: show the diff" in html and 'class="finding"' not in html
