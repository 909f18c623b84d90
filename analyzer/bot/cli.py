"""`mmreview bot run|status|retry`."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Annotated

import typer

from analyzer.bot.config import ConfigError

app = typer.Typer(
    no_args_is_help=True,
    help="CI bot: follow a mailing-list archive, review each new series, reply exactly once.",
)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar="MMREVIEW_BOT_CONFIG", help="The bot's TOML configuration."
    ),
]


@app.command()
def run(
    config: ConfigOption,
    once: Annotated[bool, typer.Option("--once", help="One cycle, then exit (cron).")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep polling until SIGTERM (systemd).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between polls with --follow.")
    ] = 60.0,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Write what would be sent to the outbox directory (one .eml per message)"
            " and send nothing; a later run without --dry-run sends those messages.",
        ),
    ] = False,
    outbox: Annotated[
        Path | None, typer.Option("--outbox", help="Outbox directory (default: from config).")
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", help="kv (key=value) or json (JSON lines).")
    ] = "kv",
) -> None:
    """Ingest new mail, review complete series, deliver replies and checks."""
    from analyzer.bot import config as config_module
    from analyzer.bot import log
    from analyzer.bot.runner import Bot, Busy

    if once == follow:
        raise ConfigError("give exactly one of --once (cron) or --follow (long-running)")
    if log_format not in ("kv", "json"):
        raise ConfigError(f"--log-format {log_format}: choose kv or json")
    if interval <= 0:
        raise ConfigError("--interval must be positive")
    log.setup(log_format)
    settings = config_module.load(config)
    try:
        bot = Bot(settings, dry_run=dry_run, outbox=outbox)
    except Busy as err:
        if once:  # an overlapping cron run: the running one will do the work
            log.event("busy", reason=str(err))
            raise typer.Exit(0) from None
        raise ConfigError(str(err)) from None
    except sqlite3.DatabaseError as err:
        raise ConfigError(f"{settings.state}: {err}") from None

    def stop(signum: int, _frame: object) -> None:
        log.event("stopping", signal=signal.Signals(signum).name)
        bot.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        log.event("started", config=str(config), dry_run=dry_run, mode="once" if once else "follow")
        if once:
            bot.run_once()
        else:
            bot.follow(interval)
    finally:
        bot.close()


@app.command()
def status(
    config: ConfigOption,
    limit: Annotated[int, typer.Option("--limit", help="Recent series to list.")] = 10,
) -> None:
    """The queue: cursors, waiting mail, series and deliveries."""
    from analyzer.bot import config as config_module
    from analyzer.bot.state import State

    settings = config_module.load(config)
    if not settings.state.exists():
        typer.echo(f"{settings.state}: no state yet (the bot has not run)")
        return
    try:
        state = State(settings.state)
    except sqlite3.DatabaseError as err:
        raise ConfigError(f"{settings.state}: {err}") from None
    try:
        _print_status(state, limit)
    finally:
        state.close()


def _print_status(state, limit: int) -> None:
    echo = typer.echo
    echo(f"state: {state.path}")
    for row in state.cursors():
        echo(
            f"archive {row['archive']} epoch {row['epoch']}: {row['last_commit'][:12]}"
            f" ({_ago(row['updated'])})"
        )
    echo("messages: " + _counts(state.counts("messages", "kind")))
    echo("series: " + _counts(state.counts("series", "status")))
    echo("outbox: " + _counts(state.counts("outbox", "state")))
    waiting = state.waiting_mails()
    if waiting:
        oldest = min(r["seen_at"] for r in waiting)
        echo(
            f"waiting: {len(waiting)} patch mails not yet in a complete series"
            f" (oldest {_ago(oldest)})"
        )
    queue = state.outbox(("queued", "sending", "failed"))
    if queue:
        echo("")
        echo(
            f"{'id':>5}  {'kind':<5}  {'state':<7}  {'tries':>5}  {'next':<20}  target / last error"
        )
        for row in queue:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["next_attempt"]))
            what = row["target"] or ""
            if row["last_error"]:
                what += f"  [{row['last_error']}]"
            echo(
                f"{row['id']:>5}  {row['kind']:<5}  {row['state']:<7}  {row['attempts']:>5}"
                f"  {when:<20}  {what}"
            )
    recent = state.recent_series(limit)
    if recent:
        echo("")
        for row in recent:
            version = f"v{row['version']} " if (row["version"] or 1) > 1 else ""
            line = f"#{row['id']:<5} {row['status']:<9} {version}{row['title']}"
            if row["previous_id"]:
                line += f" (follows #{row['previous_id']})"
            if row["summary"]:
                line += f" -- {row['summary']}"
            if row["missing"]:
                line += f"; missing {row['missing']}"
            if row["reason"] and row["status"] != "reviewed":
                line += f" -- {row['reason']}"
            echo(line)


@app.command()
def retry(
    config: ConfigOption,
    ids: Annotated[
        list[int] | None, typer.Argument(help="Outbox ids (default: every failed one).")
    ] = None,
) -> None:
    """Queue failed deliveries again (after fixing what made them fail)."""
    from analyzer.bot import config as config_module
    from analyzer.bot.state import State

    settings = config_module.load(config)
    state = State(settings.state)
    try:
        rows = state.outbox(("failed",))
        chosen = [r for r in rows if not ids or r["id"] in ids]
        for row in chosen:
            state.update_outbox(
                row["id"], state="queued", next_attempt=time.time(), created=time.time()
            )
        typer.echo(f"queued {len(chosen)} failed deliver{'y' if len(chosen) == 1 else 'ies'}")
    finally:
        state.close()


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"


def _ago(when: float | None) -> str:
    if not when:
        return "never"
    seconds = max(time.time() - when, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"
