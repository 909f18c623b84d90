"""The bot's TOML configuration.

    state = "/var/lib/mm-review/bot.sqlite3"
    outbox = "/var/lib/mm-review/outbox"      # --dry-run writes here

    [tree]
    path = "/srv/linux"
    base = "mm-unstable"        # when a series has no base-commit the tree knows

    [[archive]]
    path = "/srv/lore/linux-mm"  # public-inbox v2 mirror, Maildir or mbox
    list = "linux-mm@kvack.org"  # the list address this archive records
    start = "end"                # first run: only mail that arrives from now on

    [smtp]
    host = "smtp.example.org"
    port = 587
    starttls = true              # login from $MMREVIEW_SMTP_USER / _PASSWORD

    [policy]
    from = "mm-review bot <mm-review@example.org>"
    min_severity = "warning"
    recipients = "author"        # or "thread"
    max_replies_per_run = 20
    grace_minutes = 60

    [patchwork]
    url = "https://patchwork.example.org"
    project = "linux-mm"         # token from $MMREVIEW_PATCHWORK_TOKEN

Relative paths are relative to the configuration file.  Unknown keys are an
error: a typo must not silently leave a limit at its default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from analyzer.patches import InputError
from analyzer.rule import Severity


class ConfigError(InputError):
    """A configuration problem, said in one line naming the file and key."""


@dataclass
class ArchiveConfig:
    path: Path
    kind: str = "auto"  # auto, public-inbox, maildir, mbox
    name: str = ""
    list: str | None = None
    start: str = "beginning"  # or "end"


@dataclass
class TreeConfig:
    path: Path
    base: str | None = None


@dataclass
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    timeout: float = 60.0
    ca_file: Path | None = None
    user_env: str = "MMREVIEW_SMTP_USER"
    password_env: str = "MMREVIEW_SMTP_PASSWORD"


@dataclass
class PolicyConfig:
    from_address: str = "mm-review <mm-review@localhost>"
    min_severity: Severity = Severity.WARNING
    recipients: str = "author"  # or "thread"
    max_replies_per_run: int = 20
    grace_minutes: float = 60.0
    cc: list[str] = field(default_factory=list)

    @property
    def msgid_domain(self) -> str:
        address = parseaddr(self.from_address)[1]
        return address.rpartition("@")[2] or "localhost"


@dataclass
class PatchworkConfig:
    url: str
    project: str
    context: str = "mm-review"
    token_env: str = "MMREVIEW_PATCHWORK_TOKEN"
    target_url: str | None = None  # may use {message_id} (our reply) and {msgid}
    timeout: float = 30.0


@dataclass
class RetryConfig:
    base_seconds: float = 60.0
    max_seconds: float = 3600.0
    give_up_hours: float = 72.0
    # A reply whose SMTP hand-off was cut short by a crash, sent to a list
    # this bot follows: wait this long for it to show up in the archive
    # before sending it again.
    confirm_minutes: float = 10.0


@dataclass
class LimitsConfig:
    max_message_bytes: int = 4 * 1024 * 1024
    max_mime_parts: int = 64
    max_files_per_patch: int = 300
    max_patches_per_series: int = 100
    # Review time per patch (applying it included); a patch that takes
    # longer is "not fully reviewed" in its reply and the series goes on.
    seconds_per_patch: float = 30.0


@dataclass
class BotConfig:
    source: Path
    state: Path
    outbox: Path
    tree: TreeConfig
    archives: list[ArchiveConfig]
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    patchwork: PatchworkConfig | None = None
    retry: RetryConfig = field(default_factory=RetryConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)

    @property
    def list_addresses(self) -> set[str]:
        return {a.list.lower() for a in self.archives if a.list}


def load(path: Path) -> BotConfig:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"{path}: {(err.strerror or str(err)).lower()}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return _build(data, path)


def _build(data: dict[str, Any], path: Path) -> BotConfig:
    top = _Table(data, path, "")
    here = path.resolve().parent
    tree = top.table("tree", required=True)
    archives = top.array("archive")
    if not archives:
        raise ConfigError(f"{path}: no [[archive]] to follow")
    config = BotConfig(
        source=path,
        state=_path(here, top.str("state", "mmreview-bot.sqlite3")),
        outbox=_path(here, top.str("outbox", "outbox")),
        tree=TreeConfig(path=_path(here, tree.str("path", required=True)), base=tree.str("base")),
        archives=[],
        select=top.str_list("select"),
        ignore=top.str_list("ignore"),
    )
    tree.done()
    names: set[str] = set()
    for number, table in enumerate(archives, 1):
        archive = ArchiveConfig(
            path=_path(here, table.str("path", required=True)),
            kind=table.choice("kind", ("auto", "public-inbox", "maildir", "mbox"), "auto"),
            list=table.str("list"),
            start=table.choice("start", ("beginning", "end"), "beginning"),
        )
        archive.name = table.str("name") or archive.path.name or f"archive{number}"
        if archive.name in names:
            raise ConfigError(f"{path}: two archives named '{archive.name}'; give each a name")
        names.add(archive.name)
        table.done()
        config.archives.append(archive)
    if smtp := top.table("smtp"):
        config.smtp = SmtpConfig(
            host=smtp.str("host", "127.0.0.1"),
            port=smtp.int("port", 25),
            starttls=smtp.bool("starttls", False),
            ssl=smtp.bool("ssl", False),
            timeout=smtp.float("timeout", 60.0),
            ca_file=_path(here, ca) if (ca := smtp.str("ca_file")) else None,
            user_env=smtp.str("user_env", "MMREVIEW_SMTP_USER"),
            password_env=smtp.str("password_env", "MMREVIEW_SMTP_PASSWORD"),
        )
        if config.smtp.ssl and config.smtp.starttls:
            raise ConfigError(f"{path}: [smtp] ssl and starttls exclude each other")
        smtp.done()
    if policy := top.table("policy"):
        severity = policy.choice("min_severity", ("error", "warning", "check"), "warning")
        config.policy = PolicyConfig(
            from_address=policy.str("from", PolicyConfig.from_address),
            min_severity=Severity[severity.upper()],
            recipients=policy.choice("recipients", ("author", "thread"), "author"),
            max_replies_per_run=policy.int("max_replies_per_run", 20),
            grace_minutes=policy.float("grace_minutes", 60.0),
            cc=policy.str_list("cc"),
        )
        if "@" not in parseaddr(config.policy.from_address)[1]:
            raise ConfigError(f"{path}: [policy] from: not an email address")
        policy.done()
    if patchwork := top.table("patchwork"):
        config.patchwork = PatchworkConfig(
            url=patchwork.str("url", required=True).rstrip("/"),
            project=patchwork.str("project", required=True),
            context=patchwork.str("context", "mm-review"),
            token_env=patchwork.str("token_env", "MMREVIEW_PATCHWORK_TOKEN"),
            target_url=patchwork.str("target_url"),
            timeout=patchwork.float("timeout", 30.0),
        )
        patchwork.done()
    if retry := top.table("retry"):
        config.retry = RetryConfig(
            base_seconds=retry.float("base_seconds", 60.0),
            max_seconds=retry.float("max_seconds", 3600.0),
            give_up_hours=retry.float("give_up_hours", 72.0),
            confirm_minutes=retry.float("confirm_minutes", 10.0),
        )
        retry.done()
    if limits := top.table("limits"):
        default = LimitsConfig()
        config.limits = LimitsConfig(
            max_message_bytes=limits.int("max_message_bytes", default.max_message_bytes),
            max_mime_parts=limits.int("max_mime_parts", default.max_mime_parts),
            max_files_per_patch=limits.int("max_files_per_patch", default.max_files_per_patch),
            max_patches_per_series=limits.int(
                "max_patches_per_series", default.max_patches_per_series
            ),
            seconds_per_patch=limits.float("seconds_per_patch", default.seconds_per_patch),
        )
        limits.done()
    top.done()
    return config


def _path(here: Path, value: str) -> Path:
    return here / os.path.expanduser(value)


class _Table:
    """One TOML table, read key by key; done() rejects what was not read."""

    def __init__(self, data: dict[str, Any], path: Path, name: str) -> None:
        self.data, self.path, self.name = data, path, name
        self.read: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}: [{self.name}] {key}" if self.name else f"{self.path}: {key}"

    def _get(self, key: str, kinds: tuple[type, ...], what: str, required: bool) -> Any:
        self.read.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._where(key)}: missing")
            return None
        value = self.data[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{self._where(key)}: expected {what}")
        return value

    def str(self, key: str, default: str | None = None, required: bool = False) -> Any:
        value = self._get(key, (str,), "a string", required)
        return default if value is None else value

    def int(self, key: str, default: int) -> int:
        value = self._get(key, (int,), "an integer", False)
        if value is not None and value < 0:
            raise ConfigError(f"{self._where(key)}: must not be negative")
        return default if value is None else value

    def float(self, key: str, default: float) -> float:
        value = self._get(key, (int, float), "a number", False)
        if value is not None and value < 0:
            raise ConfigError(f"{self._where(key)}: must not be negative")
        return default if value is None else float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key, (bool,), "true or false", False)
        return default if value is None else value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.str(key, default)
        if value.lower() not in choices:
            raise ConfigError(f"{self._where(key)}: '{value}' is not one of {', '.join(choices)}")
        return value.lower()

    def str_list(self, key: str) -> list[str]:
        value = self._get(key, (list,), "a list of strings", False) or []
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self._where(key)}: expected a list of strings")
        return value

    def table(self, key: str, required: bool = False) -> _Table | None:
        value = self._get(key, (dict,), "a table", required)
        return None if value is None else _Table(value, self.path, key)

    def array(self, key: str) -> list[_Table]:
        value = self._get(key, (list,), "an array of tables ([[...]])", False) or []
        if not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{self._where(key)}: expected an array of tables ([[{key}]])")
        return [_Table(v, self.path, key) for v in value]

    def done(self) -> None:
        if unknown := sorted(set(self.data) - self.read):
            raise ConfigError(f"{self._where(unknown[0])}: unknown key")
