"""The `mmreview` command line.

b4 and the send-email hook start one process per patch, so what a command
imports is paid on every patch: a command imports what it uses when it runs
(the bot, the hook, the reply writer, the reporters, GitPython are not
loaded to check a patch).  `python -X importtime -m analyzer.cli check ...`
shows what is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar

import typer
from typer.core import TyperGroup

from analyzer import __version__, checking
from analyzer import b4 as b4_integration
from analyzer import config as tree_config
from analyzer.budget import DEFAULT_SECONDS as DEFAULT_PATCH_SECONDS
from analyzer.checking import CheckOptions, UsageError, start_collecting
from analyzer.registry import all_rules, get_rule, select_rules
from analyzer.reporters import FORMATS
from analyzer.tree import KernelTree


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
    options = CheckOptions(
        inputs=inputs,
        tree=tree,
        base=base,
        revision_range=revision_range,
        show_all=show_all,
        output_format=output_format,
        output=output,
        select=select,
        ignore=ignore,
        quiet=quiet,
        rules_version=rules_version,
        sender=sender,
        time_budget=time_budget,
        debug=debug,
    )
    raise typer.Exit(checking.run(options))


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

    checking.debug(debug)
    output_format = checking.check_format(output_format)
    if not tree.is_dir():
        raise UsageError(f"--tree {tree}: no such directory")
    files = _expand(tree, paths or ["mm"])
    if not files:
        raise UsageError(f"no C files under {', '.join(paths or ['mm'])} in {tree}")
    config = tree_config.load(str(tree))
    result = config.apply(scan_tree(str(tree), files, select_rules(*config.rules(select, ignore))))
    checking.tell(result, quiet=False)
    options = {"severity": config.severity} if output_format == "sarif" else {}
    checking.report(result, output_format, output, quiet=False, **options)
    raise typer.Exit(checking.exit_code(result))


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


@hook_app.command("install")
def hook_install(
    repo: Annotated[Path, typer.Option("--repo", help="Git repository.")] = Path("."),
    block_on: BlockOn = None,
) -> None:
    """Install the sendemail-validate hook (an existing one still runs first)."""
    from analyzer import hooks

    hooks.check_block_level(block_on)
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

    raise typer.Exit(hooks.validate_command(patch, headers, block_on))


def main() -> None:
    """Entry point: every expected failure is one line on stderr and exit 2
    (`checking.guarded`)."""
    sys.exit(checking.guarded(app))


if __name__ == "__main__":
    main()
