"""Output formats.  Each module renders a finished `Review`; `FORMATS` maps
the --format name to its renderer.  A reporter is imported only when its
format is asked for: start-up time is paid on every b4 check."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from analyzer.engine import Review
    from analyzer.patches import Patch

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


def format_name(name: str) -> str | None:
    """The format called `name`, in any letter case (None if unknown)."""
    return next((known for known in _MODULES if known == name.lower()), None)


class ReportError(Exception):
    """No report could be written (said in one line)."""


class _Buffer(io.StringIO):
    """Collects a report before anything is written, so that a reporter
    failing half-way leaves no half report; says it is a terminal when the
    report goes to one (the text format colours only then)."""

    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self._terminal = terminal

    def isatty(self) -> bool:
        return self._terminal


def render_report(review: Review, name: str, terminal: bool = False, **options: Any) -> str:
    """The report in format `name`, as text.

    A reporter bug must not cost the user the report: when rendering fails,
    each patch is rendered alone to find the ones it fails on; those are
    left out, each with an error line in the review naming the patch, and
    the rest is reported.  ReportError when not even that can be rendered."""
    renderer = functools.partial(FORMATS[name], **options)
    try:
        return _rendered(renderer, review, terminal)
    except Exception as err:  # any reporter bug
        first_failure = err
        _debug_traceback()
    failing = [p for p in review.reviewed_patches if not _renders(renderer, _alone(review, p))]
    if failing:
        reduced = _without(review, failing)
        for patch in failing:
            reduced.errors.append(
                f"{patch.label()}: the {name} report cannot show it"
                f" ({_one_line(first_failure)}); left out of the report"
            )
        try:
            text = _rendered(renderer, reduced, terminal)
        except Exception:  # not one patch's fault after all
            _debug_traceback()
        else:
            review.errors[:] = reduced.errors
            return text
    raise ReportError(
        f"--format {name}: internal error ({_one_line(first_failure)}); no report written"
        + ("" if _debugging() else " (--debug shows the traceback)")
    )


def write_report(text: str, output: Path | None) -> None:
    """The report to stdout, or to `output` atomically: a temporary file in
    the same directory renamed over it, so that a failed run never leaves
    an empty or half-written report (an old one stays as it was)."""
    data = text.encode("utf-8", "replace")
    if output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    import tempfile  # -o only: b4 and the hook read stdout

    directory = output.parent if str(output.parent) else Path(".")
    try:
        if output.is_dir():
            raise ReportError(f"--output {output}: is a directory")
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as err:
        raise ReportError(f"--output {output}: {_reason(err)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        mode = output.stat().st_mode & 0o7777 if output.exists() else _default_mode()
        os.chmod(temporary, mode)
        os.replace(temporary, output)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ReportError(f"--output {output}: {_reason(err)}") from None


def _reason(err: OSError) -> str:
    return err.strerror.lower() if err.strerror else str(err)


def _default_mode() -> int:
    # What open() would have given the file: 0666 less the umask.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _rendered(renderer: Callable[..., None], review: Review, terminal: bool) -> str:
    buffer = _Buffer(terminal)
    renderer(review, buffer)
    return buffer.getvalue()


def _renders(renderer: Callable[..., None], review: Review) -> bool:
    try:
        _rendered(renderer, review, False)
    except Exception:  # the reporter bug being looked for
        return False
    return True


def _alone(review: Review, patch: Patch) -> Review:
    return review.replace(
        reviewed_patches=[patch],
        findings=[f for f in review.findings if f.patch and f.patch.index == patch.index],
        notes=[],
        errors=[],
    )


def _without(review: Review, patches: list[Patch]) -> Review:
    left_out = {p.index for p in patches}
    return review.replace(
        reviewed_patches=[p for p in review.reviewed_patches if p.index not in left_out],
        findings=[f for f in review.findings if not (f.patch and f.patch.index in left_out)],
        notes=list(review.notes),
        errors=list(review.errors),
    )


def _one_line(err: BaseException) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= 120 else text[:117].rsplit(" ", 1)[0] + " ..."


def _debugging() -> bool:
    return "MMREVIEW_DEBUG" in os.environ


def _debug_traceback() -> None:
    if _debugging():
        import traceback  # only under --debug

        traceback.print_exc()
