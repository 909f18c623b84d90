"""Output formats.  Each module renders a finished `Review`; `FORMATS` maps
the --format name to its renderer.  A reporter is imported only when its
format is asked for: start-up time is paid on every b4 check."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from analyzer.engine import Review

Renderer = Callable[["Review", TextIO], None]

_MODULES = {
    "text": "text",
    "json": "json_report",
    "checkpatch": "checkpatch",
    "email": "email_reply",
    "b4-review": "b4_review",
    "sarif": "sarif",
    "rdjsonl": "rdjsonl",
    "html": "html",
}


class _Renderers(Mapping[str, Renderer]):
    def __getitem__(self, name: str) -> Renderer:
        module = importlib.import_module(f"analyzer.reporters.{_MODULES[name]}")
        return module.render

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


FORMATS: Mapping[str, Renderer] = _Renderers()
