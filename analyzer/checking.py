"""What `mmreview check` does once its command line is read: read the
series, review it, report, and say how it went in the exit code.

Two command lines lead here.  Typer's (`analyzer.cli`) is the command line
users read and get help from; b4 and the send-email hook start a process per
patch with a command line of their own (`analyzer.launch` reads that one
directly, without loading typer: a third of such a process's start-up).
Both build the same `CheckOptions`, and everything after is this module, so
an error reads the same either way: one line on stderr, exit 2.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from analyzer import b4 as b4_integration
from analyzer import config as tree_config
from analyzer import patterns
from analyzer.budget import DEFAULT_SECONDS
from analyzer.patches import LIMITS, InputError, Limits, printable, read_series
from analyzer.records import Record
from analyzer.registry import RuleError, select_rules
from analyzer.reporters import FORMATS, ReportError, format_name, render_report, write_report
from analyzer.rule import Severity
from analyzer.tree import KernelTree

if TYPE_CHECKING:
    from analyzer.engine import Review

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2

# At exit Python walks every object the review made (syntax trees and all)
# for cycles just before the process gives the memory back: a fifth of a
# one-patch check's CPU time.  A frozen object is not walked; reference
# counting still frees what it frees, finalizers still run, output is
# still flushed.
atexit.register(gc.freeze)


class UsageError(Exception):
    """Bad command line or input: one line to stderr, exit 2."""


class CheckOptions(Record):
    """`mmreview check`'s command line, read."""

    inputs: list[str] | None = None
    tree: Path | None = None
    base: str | None = None
    revision_range: str | None = None
    show_all: bool = False
    output_format: str = "text"
    output: Path | None = None
    select: list[str] | None = None
    ignore: list[str] | None = None
    quiet: bool = False
    rules_version: str | None = None
    sender: str | None = None
    time_budget: float = DEFAULT_SECONDS
    debug: bool = False


def run(options: CheckOptions) -> int:
    """Review what the options name; the exit code."""
    debug(options.debug)
    output_format = check_format(options.output_format)
    tree, inputs = options.tree, options.inputs
    if options.base is not None and tree is None:
        raise UsageError("--base needs --tree")
    if options.revision_range and tree is None:
        raise UsageError("--range needs --tree")
    if options.revision_range and inputs:
        raise UsageError("give either patch files or --range, not both")
    kernel = KernelTree(str(tree)) if tree is not None else None
    try:
        return _review_and_report(options, output_format, kernel)
    finally:
        if kernel is not None:
            # git cat-file --batch is waited for here, not left to the
            # interpreter's teardown (which the launcher skips).
            kernel.close()


def _review_and_report(options: CheckOptions, output_format: str, kernel: KernelTree | None) -> int:
    from analyzer.engine import review

    tree, inputs = options.tree, options.inputs
    config = (
        tree_config.load(kernel.top, known_top=not kernel.bare)
        if kernel is not None
        else tree_config.load()
    )
    rules = select_rules(*config.rules(options.select, options.ignore))
    start_collecting()
    limits = _limits(options.time_budget)
    if options.revision_range:
        assert kernel is not None
        kernel.range_commits(options.revision_range)
        series = read_series(
            ["-"], stdin=kernel.format_patches(options.revision_range), limits=limits
        )
    else:
        if not inputs:
            raise UsageError(
                "no input: give patch or mbox files, '-' for stdin, or --tree DIR --range A..B"
            )
        stdin = sys.stdin.buffer.read() if "-" in inputs else None
        series = read_series(inputs, stdin=stdin, limits=limits)
    if kernel is not None and options.base is None and not options.revision_range:
        # A b4 prep branch's commit on stdin: review it as it sits in HEAD.
        b4_integration.find_own_commits(kernel, series)
    # What the review compiles may be made from the patch (a function's
    # name): not worth keeping.
    patterns.started()
    result = config.apply(
        review(
            series,
            rules,
            tree=kernel,
            base=options.base,
            show_all=options.show_all,
            patch_seconds=options.time_budget or None,
        )
    )
    extra: dict = {}
    if output_format == "email":
        from analyzer.reporters import email_reply

        where = str(tree) if tree is not None else None
        extra["sender"] = options.sender or config.reply_from or email_reply.default_sender(where)
    if output_format == "sarif":
        extra["severity"] = config.severity
    report(result, output_format, options.output, options.quiet, **extra)
    if output_format == "checkpatch" and (
        stale := b4_integration.stale_token_warning(options.rules_version, config.path)
    ):
        print(stale)
    return exit_code(result)


def exit_code(result: Review) -> int:
    if result.errors:
        return EXIT_USAGE
    blocking = (Severity.ERROR, Severity.WARNING)
    return EXIT_FINDINGS if any(f.severity in blocking for f in result.findings) else EXIT_CLEAN


def check_format(output_format: str) -> str:
    """The format's name as FORMATS spells it (-f JSON is -f json)."""
    name = format_name(output_format)
    if name is None:
        raise UsageError(
            f"--format {output_format}: unknown format (choose from {', '.join(FORMATS)})"
        )
    return name


def _limits(time_budget: float) -> Limits:
    return LIMITS._replace(seconds_per_patch=time_budget or None)


def debug(enabled: bool) -> None:
    # The engine and the reporters read it where a failure is caught.
    if enabled:
        os.environ["MMREVIEW_DEBUG"] = "1"


def tell(result: Review, quiet: bool) -> None:
    for error in result.errors:
        say(f"mmreview: error: {printable(error)}")
    if not quiet:
        for note in result.notes:
            say(f"mmreview: note: {printable(note)}")


def report(
    result: Review, output_format: str, output: Path | None, quiet: bool, **options: object
) -> None:
    """Render the whole report first (a reporter that fails on one patch
    leaves that patch out and says so), then say what went wrong, then
    write the report: to stdout, or atomically to `output`."""
    try:
        text = render_report(
            result, output_format, terminal=output is None and sys.stdout.isatty(), **options
        )
    except ReportError as err:
        tell(result, quiet)
        raise UsageError(str(err)) from None
    tell(result, quiet)
    try:
        write_report(text, output)
    except ReportError as err:
        raise UsageError(str(err)) from None


def say(line: str) -> None:
    """One line on stderr, as it is (the caller made it printable)."""
    print(line, file=sys.stderr, flush=True)


def start_collecting() -> None:
    """Start-up is over (see analyzer.launch): what it made is frozen, and
    the garbage collector is on again."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def guarded(command: Callable[[], int | None]) -> int:
    """Run a command; every expected failure is one line on stderr and exit
    2, and so is an unexpected one (a bug), with the traceback only under
    --debug.  The exit code."""
    try:
        return command() or EXIT_CLEAN
    except InputError as err:
        for line in err.lines:
            say(f"mmreview: error: {printable(line)}")
    except (UsageError, RuleError, tree_config.ConfigError) as err:
        say(f"mmreview: error: {printable(str(err))}")
    except _git_command_error() as err:
        stderr = " ".join(str(err.stderr).split()).strip("' ")
        command_name = err.command[1] if len(err.command) > 1 else ""
        say(f"mmreview: error: git {command_name}: {printable(stderr)}")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_CLEAN
    except Exception as err:  # a bug: one line, never a traceback by default
        if "MMREVIEW_DEBUG" in os.environ or "--debug" in sys.argv:
            import traceback  # only under --debug

            traceback.print_exc()
        detail = printable(" ".join(f"{type(err).__name__}: {err}".split()))[:200]
        hint = "" if "--debug" in sys.argv else " (--debug shows the traceback)"
        say(f"mmreview: internal error: {detail}{hint}")
    return EXIT_USAGE


class _NoGitError(Exception):
    """Stands for GitPython's error while nothing has imported GitPython."""


def _git_command_error() -> type[Exception]:
    # Evaluated only when an exception reaches guarded(): GitPython is not
    # imported just in case one might.
    module = sys.modules.get("git")
    return module.GitCommandError if module is not None else _NoGitError
