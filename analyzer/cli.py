"""The `mmreview` command line.

b4 and the send-email hook start one process per patch, so what a command
imports is paid on every patch: a command imports what it uses when it runs
(the bot, the hook, the reply writer, the reporters, GitPython are not
loaded to check a patch).  `python -X importtime -m analyzer.cli check ...`
shows what is.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

import typer
from typer.core import TyperGroup

from analyzer import __version__
from analyzer import b4 as b4_integration
from analyzer import config as tree_config
from analyzer.budget import DEFAULT_SECONDS as DEFAULT_PATCH_SECONDS
from analyzer.patches import LIMITS, InputError, Limits, printable, read_series
from analyzer.registry import RuleError, all_rules, get_rule, select_rules
from analyzer.reporters import FORMATS, ReportError, format_name, render_report, write_report
from analyzer.rule import Severity
from analyzer.tree import KernelTree

if TYPE_CHECKING:
    from analyzer.engine import Review

# At exit Python walks every object the review made (syntax trees and all)
# for cycles just before the process gives the memory back: a fifth of a
# one-patch check's CPU time.  A frozen object is not walked; reference
# counting still frees what it frees, finalizers still run, output is
# still flushed.
atexit.register(gc.freeze)


class _Commands(TyperGroup):
    """The top-level commands.  Typer builds every command's options from
    its signature on each start, so the groups (`bot`, `corpus`, `b4`,
    `hook`) are built only when a command line names one or the help lists
    them; `bot` is not even imported before that."""

    # name -> the group's Typer, in the order the help lists them.
    groups: ClassVar[dict[str, Callable[[], typer.Typer]]] = {}

    def list_commands(self, ctx) -> list[str]:
        return [*super().list_commands(ctx), *(g for g in self.groups if g not in self.commands)]

    def resolve_command(self, ctx, args):
        found = super().resolve_command(ctx, args)
        if found[0] != "check":  # check starts collecting once its rules are loaded
            start_collecting()
        return found

    def get_command(self, ctx, cmd_name: str):
        if cmd_name in self.groups and cmd_name not in self.commands:
            group = typer.main.get_group(self.groups[cmd_name]())
            group.name = cmd_name
            self.add_command(group, cmd_name)
        return super().get_command(ctx, cmd_name)


def _bot_app() -> typer.Typer:
    from analyzer.bot.cli import app as bot_app

    return bot_app


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Review Linux mm patches against the lessons of past review threads.",
)

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2

# Options `check` and `scan` share.
FormatOption = Annotated[
    str, typer.Option("--format", "-f", help=f"Output format: {', '.join(FORMATS)}.")
]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")]
SelectOption = Annotated[
    list[str] | None,
    typer.Option("--select", "--types", help="Only these rules (repeatable, or comma-separated)."),
]
IgnoreOption = Annotated[
    list[str] | None,
    typer.Option("--ignore", help="Not these rules (repeatable, or comma-separated)."),
]
DebugOption = Annotated[
    bool,
    typer.Option("--debug", help="Show the traceback of an internal error (a rule's, a report's)."),
]


class UsageError(Exception):
    """Bad command line or input: one line to stderr, exit 2."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmreview {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


@app.command()
def check(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Patch files, mbox files (b4/lore, .gz too), or '-' for stdin.", show_default=False
        ),
    ] = None,
    tree: Annotated[
        Path | None, typer.Option("--tree", "-t", help="Kernel git tree to apply the series to.")
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            help="Revision to apply to (default: the base-commit: trailer if the tree has it,"
            " else HEAD)."
        ),
    ] = None,
    revision_range: Annotated[
        str | None, typer.Option("--range", help="Review commits A..B of --tree instead of files.")
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also report problems the touched functions already had.")
    ] = False,
    output_format: FormatOption = "text",
    output: OutputOption = None,
    select: SelectOption = None,
    ignore: IgnoreOption = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No notes on stderr (patches that did not apply, skipped mail)."
        ),
    ] = False,
    rules_version: Annotated[
        str | None,
        typer.Option(
            "--rules-version",
            help="Ignored; put it in b4's check command so that a rule-set change"
            " invalidates b4's cache.",
        ),
    ] = None,
    sender: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="From: of --format email replies (default: git config user.name/email).",
        ),
    ] = None,
    time_budget: Annotated[
        float,
        typer.Option(
            "--time-budget",
            min=0,
            help="Seconds of review per patch (0: no limit); a patch that takes longer"
            " is reported as not fully reviewed and the series goes on.",
        ),
    ] = DEFAULT_PATCH_SECONDS,
    debug: DebugOption = False,
) -> None:
    """Review a patch, a series or a commit range."""
    from analyzer.engine import review

    _debug(debug)
    output_format = _check_format(output_format)
    if base is not None and tree is None:
        raise UsageError("--base needs --tree")
    if revision_range and tree is None:
        raise UsageError("--range needs --tree")
    if revision_range and inputs:
        raise UsageError("give either patch files or --range, not both")
    kernel = KernelTree(str(tree)) if tree is not None else None
    config = tree_config.load(kernel.top if kernel is not None else None)
    rules = select_rules(*config.rules(select, ignore))
    start_collecting()
    if revision_range:
        assert kernel is not None
        kernel.range_commits(revision_range)
        series = read_series(
            ["-"], stdin=kernel.format_patches(revision_range), limits=_limits(time_budget)
        )
    else:
        if not inputs:
            raise UsageError(
                "no input: give patch or mbox files, '-' for stdin, or --tree DIR --range A..B"
            )
        stdin = sys.stdin.buffer.read() if "-" in inputs else None
        series = read_series(inputs, stdin=stdin, limits=_limits(time_budget))
    if kernel is not None and base is None and not revision_range:
        # A b4 prep branch's commit on stdin: review it as it sits in HEAD.
        b4_integration.find_own_commits(kernel, series)
    result = config.apply(
        review(
            series,
            rules,
            tree=kernel,
            base=base,
            show_all=show_all,
            patch_seconds=time_budget or None,
        )
    )
    options: dict = {}
    if output_format == "email":
        from analyzer.reporters import email_reply

        where = str(tree) if tree is not None else None
        options["sender"] = sender or config.reply_from or email_reply.default_sender(where)
    if output_format == "sarif":
        options["severity"] = config.severity
    _report(result, output_format, output, quiet, **options)
    if output_format == "checkpatch" and (
        stale := b4_integration.stale_token_warning(rules_version, config.path)
    ):
        typer.echo(stale)
    raise typer.Exit(exit_code(result))


def _check_format(output_format: str) -> str:
    """The format's name as FORMATS spells it (-f JSON is -f json)."""
    name = format_name(output_format)
    if name is None:
        raise UsageError(
            f"--format {output_format}: unknown format (choose from {', '.join(FORMATS)})"
        )
    return name


def _limits(time_budget: float) -> Limits:
    return LIMITS._replace(seconds_per_patch=time_budget or None)


def _debug(enabled: bool) -> None:
    # The engine and the reporters read it where a failure is caught.
    if enabled:
        os.environ["MMREVIEW_DEBUG"] = "1"


def exit_code(result: Review) -> int:
    if result.errors:
        return EXIT_USAGE
    blocking = (Severity.ERROR, Severity.WARNING)
    return EXIT_FINDINGS if any(f.severity in blocking for f in result.findings) else EXIT_CLEAN


def _tell(result: Review, quiet: bool) -> None:
    for error in result.errors:
        typer.echo(f"mmreview: error: {printable(error)}", err=True)
    if not quiet:
        for note in result.notes:
            typer.echo(f"mmreview: note: {printable(note)}", err=True)


def _report(
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
        _tell(result, quiet)
        raise UsageError(str(err)) from None
    _tell(result, quiet)
    try:
        write_report(text, output)
    except ReportError as err:
        raise UsageError(str(err)) from None


@app.command()
def scan(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files, directories or globs, relative to the tree top (default: mm/).",
            show_default=False,
        ),
    ] = None,
    tree: Annotated[Path, typer.Option("--tree", "-t", help="Kernel tree to scan.")] = Path("."),
    output_format: FormatOption = "text",
    output: OutputOption = None,
    select: SelectOption = None,
    ignore: IgnoreOption = None,
    debug: DebugOption = False,
) -> None:
    """Run every rule on whole files (not diff-aware): what upstream code already has."""
    from analyzer.engine import scan as scan_tree

    _debug(debug)
    output_format = _check_format(output_format)
    if not tree.is_dir():
        raise UsageError(f"--tree {tree}: no such directory")
    files = _expand(tree, paths or ["mm"])
    if not files:
        raise UsageError(f"no C files under {', '.join(paths or ['mm'])} in {tree}")
    config = tree_config.load(str(tree))
    result = config.apply(scan_tree(str(tree), files, select_rules(*config.rules(select, ignore))))
    _tell(result, quiet=False)
    options = {"severity": config.severity} if output_format == "sarif" else {}
    _report(result, output_format, output, quiet=False, **options)
    raise typer.Exit(exit_code(result))


def _expand(tree: Path, patterns: list[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        matches = (
            sorted(tree.glob(pattern)) if any(c in pattern for c in "*?[") else [tree / pattern]
        )
        for match in matches:
            if match.is_dir():
                files.extend(str(p.relative_to(tree)) for p in sorted(match.rglob("*.[ch]")))
            elif match.suffix in (".c", ".h") and match.exists():
                files.append(str(match.relative_to(tree)))
            elif not match.exists():
                raise UsageError(f"{pattern}: no such file in {tree}")
    return list(dict.fromkeys(files))


@app.command("rules")
def list_rules(
    version_token: Annotated[
        bool,
        typer.Option(
            "--version-token",
            help="Print a token of the installed rules, for b4's check command line.",
        ),
    ] = False,
) -> None:
    """List the rules (id, severity, summary)."""
    if version_token:
        typer.echo(b4_integration.version_token(tree_config.find()))
        return
    width = max(len(rule.id) for rule in all_rules())
    for rule in all_rules():
        typer.echo(f"{rule.id:<{width}}  {rule.severity.value:<8} {rule.summary}")


@app.command()
def explain(
    rule_id: Annotated[str, typer.Argument(help="Rule id, e.g. PMD_PRESENT_AS_EMPTY.")],
) -> None:
    """Print a rule's documentation."""
    rule = get_rule(rule_id)
    if rule is None:
        raise UsageError(f"unknown rule '{rule_id}' (see 'mmreview rules')")
    typer.echo(f"{rule.id} ({rule.severity.value}): {rule.summary}\n")
    typer.echo(rule.doc)


corpus_app = typer.Typer(no_args_is_help=True, help="Measure the rules on a real kernel tree.")
_Commands.groups.update(bot=_bot_app, corpus=lambda: corpus_app)


@corpus_app.command("eval")
def corpus_eval(
    tree: Annotated[Path, typer.Option("--tree", "-t", help="Kernel git tree to mutate.")],
    recipes: Annotated[
        Path | None,
        typer.Option(help="Recipe file or directory (default: corpus/mutations)."),
    ] = None,
    select: Annotated[
        list[str] | None, typer.Option("--select", help="Only these rules' recipes.")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
    patches: Annotated[
        Path | None, typer.Option(help="Also write each recipe's patch into this directory.")
    ] = None,
) -> None:
    """Apply every mutation recipe, review the patches, score each rule."""
    from corpus.evaluation import run

    raise typer.Exit(run(tree, recipes, select, output_format, sys.stdout, patches))


stable_app = typer.Typer(no_args_is_help=True, help="The corpus of real 6.1 stable mm fixes.")
corpus_app.add_typer(stable_app, name="stable")
CacheOption = Annotated[
    Path | None,
    typer.Option(help="Cache directory (default: $MMREVIEW_KERNEL_CACHE or ~/.cache/mm-review)."),
]


@stable_app.command("build")
def corpus_stable_build(cache: CacheOption = None) -> None:
    """Download two 6.1 point releases, cut their mm changes into units."""
    from corpus.stable import run_build

    raise typer.Exit(run_build(cache))


@stable_app.command("score")
def corpus_stable_score(
    cache: CacheOption = None,
    select: Annotated[list[str] | None, typer.Option("--select", help="Only these rules.")] = None,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
    manifest: Annotated[
        Path | None, typer.Option(help="Labels (default: corpus/stable/manifest-6.1.toml).")
    ] = None,
) -> None:
    """Review every unit's forward and reverse patch; score per class."""
    from corpus.stable import run_score

    raise typer.Exit(run_score(cache, manifest, select, output_format, sys.stdout))


b4_app = typer.Typer(no_args_is_help=True, help="Wire mm-review into b4's check commands.")
_Commands.groups["b4"] = lambda: b4_app


@b4_app.command("setup")
def b4_setup(
    tree: Annotated[Path, typer.Option("--tree", "-t", help="Kernel git tree.")] = Path("."),
    which: Annotated[
        list[str] | None,
        typer.Option("--for", help="prep, am, review (repeatable; default: prep and review)."),
    ] = None,
    command: Annotated[
        str | None, typer.Option(help="How b4 should run mmreview (default: this one).")
    ] = None,
    global_: Annotated[
        bool, typer.Option("--global", help="Write ~/.gitconfig, not the tree's config.")
    ] = False,
) -> None:
    """Set (or refresh the rules token of) b4's check commands in git config."""
    chosen = which or ["prep", "review"]
    if bad := [w for w in chosen if w not in b4_integration.CHECK_KEYS]:
        raise UsageError(f"--for {bad[0]}: choose from prep, am, review")
    kernel = KernelTree(str(tree))
    scope = "--global" if global_ else "--local"
    for line in b4_integration.setup(kernel.top, chosen, command, scope):
        typer.echo(line)


hook_app = typer.Typer(no_args_is_help=True, help="The git send-email pre-send hook.")
_Commands.groups["hook"] = lambda: hook_app

BlockOn = Annotated[
    str | None,
    typer.Option(
        "--block-on", help="Stop the send on findings of this level: error, warning, never."
    ),
]


def _block_level(value: str | None) -> None:
    from analyzer import hooks

    if value is not None and value not in hooks.BLOCK_LEVELS:
        raise UsageError(f"--block-on {value}: choose from {', '.join(hooks.BLOCK_LEVELS)}")


@hook_app.command("install")
def hook_install(
    repo: Annotated[Path, typer.Option("--repo", help="Git repository.")] = Path("."),
    block_on: BlockOn = None,
) -> None:
    """Install the sendemail-validate hook (an existing one still runs first)."""
    from analyzer import hooks

    _block_level(block_on)
    try:
        done = hooks.install(str(repo), b4_integration.mmreview_command(), block_on)
    except hooks.HookError as err:
        raise UsageError(str(err)) from None
    typer.echo(f"mmreview: {done}")


@hook_app.command("uninstall")
def hook_uninstall(
    repo: Annotated[Path, typer.Option("--repo", help="Git repository.")] = Path("."),
) -> None:
    """Remove the hook and put back the one that was there before."""
    from analyzer import hooks

    try:
        typer.echo(f"mmreview: {hooks.uninstall(str(repo))}")
    except hooks.HookError as err:
        raise UsageError(str(err)) from None


@hook_app.command("sendemail-validate")
def hook_sendemail_validate(
    patch: Annotated[str, typer.Argument(help="The file git send-email is about to send.")],
    headers: Annotated[
        str | None, typer.Option(help="The SMTP headers file (git >= 2.41 passes it).")
    ] = None,
    block_on: BlockOn = None,
) -> None:
    """Run by the hook for each file: review it, stop the send if it must."""
    from analyzer import hooks

    _block_level(block_on)
    raise typer.Exit(hooks.validate(patch, headers, block_on, sys.stderr))


def start_collecting() -> None:
    """Start-up is over (see analyzer.launch): what it made is frozen, and
    the garbage collector is on again."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main() -> None:
    """Entry point: every expected failure is one line on stderr and exit 2;
    so is an unexpected one (a bug), with the traceback only under --debug."""
    try:
        app()
    except InputError as err:
        for line in err.lines:
            typer.echo(f"mmreview: error: {printable(line)}", err=True)
        sys.exit(EXIT_USAGE)
    except (UsageError, RuleError, tree_config.ConfigError) as err:
        typer.echo(f"mmreview: error: {printable(str(err))}", err=True)
        sys.exit(EXIT_USAGE)
    except _git_command_error() as err:
        stderr = " ".join(str(err.stderr).split()).strip("' ")
        typer.echo(
            f"mmreview: error: git {err.command[1] if len(err.command) > 1 else ''}: "
            f"{printable(stderr)}",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_CLEAN)
    except Exception as err:  # a bug: one line, never a traceback by default
        if "MMREVIEW_DEBUG" in os.environ or "--debug" in sys.argv:
            traceback.print_exc()
        detail = printable(" ".join(f"{type(err).__name__}: {err}".split()))[:200]
        hint = "" if "--debug" in sys.argv else " (--debug shows the traceback)"
        typer.echo(f"mmreview: internal error: {detail}{hint}", err=True)
        sys.exit(EXIT_USAGE)


class _NoGitError(Exception):
    """Stands for GitPython's error while nothing has imported GitPython."""


def _git_command_error() -> type[Exception]:
    # Evaluated only when an exception reaches main(): GitPython is not
    # imported just in case one might.
    module = sys.modules.get("git")
    return module.GitCommandError if module is not None else _NoGitError


if __name__ == "__main__":
    main()
