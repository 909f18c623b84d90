"""Structured logs: one line per event, `key=value` (logfmt) or JSON lines.

    ts=2026-11-02T10:00:01Z level=info event=series_reviewed series=12 findings=2

Values come from untrusted mail (subjects, Message-IDs): they are quoted,
control characters escaped and long values cut, so that one line stays one
line.  Secrets are never passed here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from analyzer.patterns import regex

LOGGER = logging.getLogger("mmreview.bot")
_MAX_VALUE = 300
_BARE = regex(r"^[A-Za-z0-9_./:@<>+-]+$")


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, name, extra={"fields": fields})


def warn(name: str, **fields: Any) -> None:
    event(name, logging.WARNING, **fields)


def _clean(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    if len(text) > _MAX_VALUE:
        text = text[:_MAX_VALUE] + "..."
    return text


def _logfmt(value: Any) -> str:
    value = _clean(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if _BARE.match(text):
        return text
    return json.dumps(text, ensure_ascii=True)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        parts = [f"ts={stamp}", f"level={record.levelname.lower()}", f"event={record.msg}"]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_logfmt(value)}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "event": record.msg,
        }
        for key, value in getattr(record, "fields", {}).items():
            line[key] = _clean(value)
        return json.dumps(line, ensure_ascii=True)


def setup(style: str = "kv", stream: TextIO | None = None, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else KeyValueFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def flush() -> None:
    for handler in LOGGER.handlers:
        handler.flush()
