"""The bot's state: one SQLite database (WAL, synchronous=FULL).

    cursors   last commit processed per archive epoch
    seen      content hashes of Maildir/mbox messages already read
    messages  every message ingested: kind (patch, cover, reply, other,
              rejected, duplicate, late), threading headers, and the raw
              bytes of patch mail until its series is reviewed
    series    assembled series: ready -> reviewed | skipped | failed
    outbox    every delivery (reply email or patchwork check), stored with
              its Message-ID before it is sent:
              queued -> sending -> sent | failed  (sending -> queued on retry)

A message, its cursor and the series it completes move together in one
transaction; so do a review's outbox rows and its series' status.  A crash
anywhere therefore leaves either the old or the new state, never half.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from analyzer.bot.config import ConfigError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cursors (
    archive TEXT NOT NULL, epoch TEXT NOT NULL, last_commit TEXT NOT NULL,
    updated REAL NOT NULL, PRIMARY KEY (archive, epoch));
CREATE TABLE IF NOT EXISTS seen (
    archive TEXT NOT NULL, location TEXT NOT NULL, PRIMARY KEY (archive, location));
CREATE TABLE IF NOT EXISTS messages (
    msgid TEXT PRIMARY KEY, archive TEXT, location TEXT, seen_at REAL NOT NULL,
    kind TEXT NOT NULL, reason TEXT, subject TEXT, author TEXT, author_name TEXT,
    in_reply_to TEXT, refs TEXT, counter INTEGER, total INTEGER, version INTEGER,
    flags TEXT, title TEXT, raw BLOB, series_id INTEGER);
CREATE INDEX IF NOT EXISTS messages_waiting ON messages (kind, series_id);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, title TEXT, author TEXT,
    version INTEGER, total INTEGER, status TEXT NOT NULL, created REAL NOT NULL,
    reviewed_at REAL, previous_id INTEGER, missing TEXT, base TEXT, findings INTEGER,
    summary TEXT, reason TEXT, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, series_id INTEGER, kind TEXT NOT NULL, key TEXT UNIQUE NOT NULL,
    message_id TEXT, target TEXT, recipients TEXT, payload BLOB NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
    last_error TEXT, created REAL NOT NULL, sending_since REAL, sent_at REAL, transport TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt);
"""

WAITING_KINDS = ("patch", "cover")


class State:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Autocommit mode: transactions are explicit (transaction()).
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self._depth = 0
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            found = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if found is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0]) > SCHEMA_VERSION:
                raise ConfigError(f"{path}: written by a newer mm-review (schema {found[0]})")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    def _one(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Row | None:
        return self.db.execute(sql, tuple(args)).fetchone()

    def _all(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, tuple(args)).fetchall()

    # -- cursors and seen locations ------------------------------------------

    def cursor(self, archive: str, epoch: str) -> str | None:
        row = self._one(
            "SELECT last_commit FROM cursors WHERE archive=? AND epoch=?", (archive, epoch)
        )
        return row[0] if row else None

    def set_cursor(self, archive: str, epoch: str, commit: str) -> None:
        self.db.execute(
            "INSERT INTO cursors VALUES (?, ?, ?, ?) ON CONFLICT (archive, epoch)"
            " DO UPDATE SET last_commit=excluded.last_commit, updated=excluded.updated",
            (archive, epoch, commit, time.time()),
        )

    def has_cursors(self, archive: str) -> bool:
        return self._one("SELECT 1 FROM cursors WHERE archive=? LIMIT 1", (archive,)) is not None

    def cursors(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM cursors ORDER BY archive, CAST(epoch AS INTEGER)")

    def seen_location(self, archive: str, location: str) -> bool:
        row = self._one("SELECT 1 FROM seen WHERE archive=? AND location=?", (archive, location))
        return row is not None

    def has_locations(self, archive: str) -> bool:
        return self._one("SELECT 1 FROM seen WHERE archive=? LIMIT 1", (archive,)) is not None

    def mark_location(self, archive: str, location: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (archive, location))

    # -- messages ------------------------------------------------------------

    def known(self, msgid: str) -> bool:
        return self._one("SELECT 1 FROM messages WHERE msgid=?", (msgid,)) is not None

    def add_message(self, **fields: Any) -> None:
        if "refs" in fields and not isinstance(fields["refs"], str | None):
            fields["refs"] = json.dumps(fields["refs"])
        for name, value in fields.items():
            if isinstance(value, str):  # no lone surrogates from undecodable mail
                fields[name] = value.encode("utf-8", "replace").decode("utf-8")
        fields.setdefault("seen_at", time.time())
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        self.db.execute(
            f"INSERT OR IGNORE INTO messages ({names}) VALUES ({marks})", tuple(fields.values())
        )

    def waiting_mails(self) -> list[sqlite3.Row]:
        """Patch mail not yet part of a series."""
        return self._all(
            "SELECT * FROM messages WHERE series_id IS NULL AND kind IN (?, ?) ORDER BY seen_at",
            WAITING_KINDS,
        )

    def mails(self, msgids: Iterable[str]) -> list[sqlite3.Row]:
        ids = list(dict.fromkeys(msgids))
        rows: list[sqlite3.Row] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows.extend(self._all(f"SELECT * FROM messages WHERE msgid IN ({marks})", chunk))
        return rows

    def assign(self, msgids: Iterable[str], series_id: int, kind: str | None = None) -> None:
        for msgid in msgids:
            if kind:
                self.db.execute(
                    "UPDATE messages SET series_id=?, kind=? WHERE msgid=?",
                    (series_id, kind, msgid),
                )
            else:
                self.db.execute("UPDATE messages SET series_id=? WHERE msgid=?", (series_id, msgid))

    def series_mails(self, series_id: int) -> list[sqlite3.Row]:
        return self._all(
            "SELECT * FROM messages WHERE series_id=? AND kind IN (?, ?)"
            " ORDER BY COALESCE(counter, 1)",
            (series_id, *WAITING_KINDS),
        )

    def drop_raw(self, series_id: int) -> None:
        self.db.execute("UPDATE messages SET raw=NULL WHERE series_id=?", (series_id,))

    # -- series --------------------------------------------------------------

    def create_series(self, **fields: Any) -> int:
        fields.setdefault("created", time.time())
        fields.setdefault("status", "ready")
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        cursor = self.db.execute(
            f"INSERT INTO series ({names}) VALUES ({marks})", tuple(fields.values())
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def update_series(self, series_id: int, **fields: Any) -> None:
        assignments = ", ".join(f"{name}=?" for name in fields)
        self.db.execute(
            f"UPDATE series SET {assignments} WHERE id=?", (*fields.values(), series_id)
        )

    def series(self, series_id: int) -> sqlite3.Row | None:
        return self._one("SELECT * FROM series WHERE id=?", (series_id,))

    def series_by_status(self, status: str) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM series WHERE status=? ORDER BY id", (status,))

    def previous_version(self, author: str, title: str, version: int) -> int | None:
        row = self._one(
            "SELECT id FROM series WHERE author=? AND lower(title)=lower(?) AND version<?"
            " ORDER BY version DESC, id DESC LIMIT 1",
            (author, title, version),
        )
        return row[0] if row else None

    def recent_series(self, limit: int) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM series ORDER BY id DESC LIMIT ?", (limit,))

    # -- outbox --------------------------------------------------------------

    def queue(self, series_id: int, kind: str, key: str, payload: bytes, **fields: Any) -> bool:
        """Store a delivery; False if one with this key is already stored."""
        now = time.time()
        fields = {
            "series_id": series_id,
            "kind": kind,
            "key": key,
            "payload": payload,
            "state": "queued",
            "next_attempt": now,
            "created": now,
            **fields,
        }
        if isinstance(fields.get("recipients"), list):
            fields["recipients"] = json.dumps(fields["recipients"])
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        cursor = self.db.execute(
            f"INSERT OR IGNORE INTO outbox ({names}) VALUES ({marks})", tuple(fields.values())
        )
        return cursor.rowcount == 1

    def due(self, now: float) -> list[sqlite3.Row]:
        return self._all(
            "SELECT * FROM outbox WHERE state IN ('queued', 'sending') AND next_attempt<=?"
            " ORDER BY id",
            (now,),
        )

    def next_due(self) -> float | None:
        row = self._one("SELECT MIN(next_attempt) FROM outbox WHERE state IN ('queued', 'sending')")
        return row[0] if row else None

    def outbox_row(self, row_id: int) -> sqlite3.Row | None:
        return self._one("SELECT * FROM outbox WHERE id=?", (row_id,))

    def outbox(self, states: Iterable[str] | None = None) -> list[sqlite3.Row]:
        if states is None:
            return self._all("SELECT * FROM outbox ORDER BY id")
        wanted = list(states)
        marks = ", ".join("?" for _ in wanted)
        return self._all(f"SELECT * FROM outbox WHERE state IN ({marks}) ORDER BY id", wanted)

    def update_outbox(self, row_id: int, **fields: Any) -> None:
        assignments = ", ".join(f"{name}=?" for name in fields)
        with self.transaction():
            self.db.execute(
                f"UPDATE outbox SET {assignments} WHERE id=?", (*fields.values(), row_id)
            )

    # -- status --------------------------------------------------------------

    def counts(self, table: str, column: str) -> dict[str, int]:
        assert table in ("messages", "series", "outbox") and column in ("kind", "status", "state")
        rows = self._all(f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}")
        return {row[0]: row[1] for row in rows}
