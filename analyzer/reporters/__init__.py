"""Output formats.  Each module renders a finished `Review`; `FORMATS` maps
the --format name to its renderer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from analyzer.engine import Review
from analyzer.reporters import (
    b4_review,
    checkpatch,
    email_reply,
    html,
    json_report,
    rdjsonl,
    sarif,
    text,
)

Renderer = Callable[[Review, TextIO], None]

FORMATS: dict[str, Renderer] = {
    "text": text.render,
    "json": json_report.render,
    "checkpatch": checkpatch.render,
    "email": email_reply.render,
    "b4-review": b4_review.render,
    "sarif": sarif.render,
    "rdjsonl": rdjsonl.render,
    "html": html.render,
}
