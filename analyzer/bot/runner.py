"""One bot cycle -- ingest new mail, assemble series, review what is ready,
deliver what is due -- and the loop around it.

Every step commits before the next starts, so a crash (or SIGKILL) at any
point resumes from the last commit: mail is re-read from the cursor (and
dropped by Message-ID if it was already ingested), a series recorded but
not reviewed is reviewed, a stored reply not yet sent is sent (see
delivery.py for the one uncertain case).  A series whose review kills the
process three times is marked failed instead of crashing the bot forever.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import traceback
from pathlib import Path

from analyzer.bot import log
from analyzer.bot.archive import Item, Source, open_source
from analyzer.bot.config import BotConfig, ConfigError
from analyzer.bot.delivery import Composer, Deliverer, list_composer, plan
from analyzer.bot.faults import crash_point
from analyzer.bot.mail import Rejected, inspect
from analyzer.bot.reviewer import Mail, Reviewer, SeriesSkipped
from analyzer.bot.state import State
from analyzer.bot.threads import Candidate, PatchMail, assemble
from analyzer.engine import Review
from analyzer.patches import InputError
from analyzer.rule import Severity

# Messages per ingest transaction (the fault tests make it small, so that a
# crash lands in the middle of an archive).
_BATCH = int(os.environ.get("MMREVIEW_BOT_BATCH", "200"))
_BATCH_SECONDS = 2.0
_PROGRESS_SECONDS = 5.0
_MAX_REVIEW_ATTEMPTS = 3


class Busy(Exception):
    """Another bot process holds the state."""


class Bot:
    def __init__(
        self,
        config: BotConfig,
        dry_run: bool = False,
        outbox: Path | None = None,
        compose: Composer | None = None,
    ) -> None:
        self.config = config
        self._lock = _lock(config.state)
        self.state = State(config.state)
        self.sources: list[Source] = [
            open_source(a, config.limits.max_message_bytes) for a in config.archives
        ]
        self.reviewer = Reviewer(config)
        self.compose = compose or list_composer(config)
        self.deliverer = Deliverer(self.state, config, dry_run, outbox or config.outbox)
        self.stop = threading.Event()
        self._check_tree()

    def _check_tree(self) -> None:
        try:
            tree = self.reviewer.open_tree()
        except InputError as err:
            raise ConfigError(f"{self.config.source}: [tree] {err}") from None
        base = self.config.tree.base or "HEAD"
        found = tree.resolve(base)
        tree.close()
        if found is None:
            raise ConfigError(f"{self.config.source}: [tree] base {base}: no such revision")

    def close(self) -> None:
        self.state.close()
        self._lock.close()

    # -- the loop ---------------------------------------------------------------

    def run_once(self) -> None:
        self.cycle()

    def follow(self, interval: float) -> None:
        log.event("following", interval=interval)
        while not self.stop.is_set():
            try:
                self.cycle()
            except Exception as err:  # keep following: the next cycle may do better
                log.event("cycle_failed", logging.ERROR, error=f"{type(err).__name__}: {err}")
                if "MMREVIEW_DEBUG" in os.environ:
                    traceback.print_exc()
            wait = interval
            # With --dry-run nothing leaves the queue: poll at the interval.
            due = None if self.deliverer.dry_run else self.state.next_due()
            if due is not None:
                wait = min(interval, max(due - time.time(), 0.05))
            self.stop.wait(wait)
        log.event("stopped")

    def cycle(self) -> None:
        for source in self.sources:
            if self.stop.is_set():
                return
            self.ingest(source)
        if self.stop.is_set():
            return
        self.assemble()
        self.review_ready()
        if not self.stop.is_set():
            self.deliverer.deliver_due(self.stop.is_set)

    # -- ingest -----------------------------------------------------------------

    def ingest(self, source: Source) -> int:
        """Read what is new, committing every _BATCH messages (or
        _BATCH_SECONDS) together with the cursor that covers them."""
        poll = source.poll(self.state)
        if not poll.total:
            return 0
        items = iter(poll.items)
        started = last_progress = time.monotonic()
        done = 0
        more = True
        while more and not self.stop.is_set():
            more = False
            deadline = time.monotonic() + _BATCH_SECONDS
            with self.state.transaction():
                for count, item in enumerate(items, 1):
                    try:
                        self._ingest_one(source, item)
                    except Exception as err:  # one bad message must not stop the archive
                        self._reject(source, item, f"cannot ingest: {type(err).__name__}: {err}")
                    done += 1
                    if count >= _BATCH or time.monotonic() >= deadline or self.stop.is_set():
                        more = True
                        break
            crash_point("ingested")
            now = time.monotonic()
            if more and now - last_progress >= _PROGRESS_SECONDS:
                rate = done / max(now - started, 1e-6)
                log.event(
                    "progress",
                    archive=source.name,
                    done=done,
                    total=poll.total,
                    rate=round(rate, 1),
                    eta=round((poll.total - done) / max(rate, 1e-6)),
                )
                last_progress = now
        elapsed = time.monotonic() - started
        log.event("ingested", archive=source.name, messages=done, seconds=round(elapsed, 2))
        return done

    def _ingest_one(self, source: Source, item: Item) -> None:
        if item.cursor:
            self.state.set_cursor(source.name, *item.cursor)
        else:
            self.state.mark_location(source.name, item.location)
        if item.data is None:
            if item.reason:
                self._reject(source, item, item.reason)
            return
        try:
            info = inspect(item.data, self.config.limits)
            subject = info.subject
            total = subject.total or 1
            if subject.is_patch and not subject.is_reply:
                limit = self.config.limits.max_patches_per_series
                if total > limit:
                    raise Rejected(f"series of {total} patches (limit {limit})")
                if (subject.counter or 0) > total:
                    raise Rejected(f"patch {subject.counter}/{total}: number beyond the total")
        except Rejected as why:
            self._reject(source, item, str(why))
            return
        fresh = [m for m in (info.msgid, *info.aliases) if not self.state.known(m)]
        if not fresh:
            log.event("duplicate_message", archive=source.name, msgid=info.msgid)
            return
        if fresh[0] != info.msgid:
            # A reused Message-ID: keyed by the one the archive added.
            log.event("reused_message_id", msgid=info.msgid, stored_as=fresh[0])
            info.msgid = fresh[0]
        kind = info.kind
        flags = ",".join(p for p in ("RFC", "RESEND") if p in subject.prefixes)
        self.state.add_message(
            msgid=info.msgid,
            archive=source.name,
            location=item.location,
            kind=kind,
            subject=info.raw_subject,
            author=info.author,
            author_name=info.author_name,
            in_reply_to=info.in_reply_to,
            refs=info.references,
            counter=subject.counter if subject.counter is not None else 1,
            total=total,
            version=subject.version,
            flags=flags,
            title=subject.text,
            raw=item.data if kind in ("patch", "cover") else None,
        )
        if kind in ("patch", "cover"):
            log.event("patch_mail", msgid=info.msgid, subject=info.raw_subject)

    def _reject(self, source: Source, item: Item, reason: str) -> None:
        self.state.add_message(
            msgid=f"rejected:{source.name}:{item.location}",
            archive=source.name,
            location=item.location,
            kind="rejected",
            reason=reason,
        )
        log.warn("message_skipped", archive=source.name, location=item.location, reason=reason)

    # -- assemble ---------------------------------------------------------------

    def assemble(self) -> None:
        waiting = self.state.waiting_mails()
        if not waiting:
            return
        ids = {r["msgid"] for r in waiting}
        referenced = set()
        for row in waiting:
            referenced.update(json.loads(row["refs"] or "[]"))
            if row["in_reply_to"]:
                referenced.add(row["in_reply_to"])
        context = [r for r in self.state.mails(referenced - ids) if r["kind"] in ("patch", "cover")]
        mails = [_patch_mail(r) for r in [*waiting, *context]]
        grace = self.config.policy.grace_minutes * 60
        now = time.time()
        for candidate in assemble(mails):
            if not candidate.mails:
                continue
            if candidate.existing_series is not None:
                self._late(candidate)
                continue
            why = candidate.readiness(now, grace, self.state.known)
            if why is not None:
                self._record(candidate, why)

    def _late(self, candidate: Candidate) -> None:
        late = [m.msgid for m in candidate.mails + candidate.duplicates]
        with self.state.transaction():
            self.state.assign(late, candidate.existing_series or 0, kind="late")
        for msgid in late:
            log.event("late_mail", msgid=msgid, series=candidate.existing_series)

    def _record(self, candidate: Candidate, why: str) -> None:
        first = candidate.anchor
        with self.state.transaction():
            previous = self.state.previous_version(first.author, candidate.title, first.version)
            series_id = self.state.create_series(
                key=candidate.key,
                title=candidate.title,
                author=first.author,
                version=first.version,
                total=candidate.total,
                status="ready" if candidate.patches else "skipped",
                reason=None if candidate.patches else why,
                previous_id=previous,
                missing=",".join(map(str, candidate.missing)) or None,
            )
            self.state.assign([m.msgid for m in candidate.mails], series_id)
            self.state.assign([m.msgid for m in candidate.duplicates], series_id, kind="duplicate")
        log.event(
            "series_ready" if candidate.patches else "series_skipped",
            series=series_id,
            title=candidate.title,
            version=first.version,
            patches=len(candidate.patches),
            total=candidate.total,
            missing=",".join(map(str, candidate.missing)) or None,
            why=why,
            previous=previous,
        )
        crash_point("series_ready")

    # -- review -----------------------------------------------------------------

    def review_ready(self) -> None:
        for series in self.state.series_by_status("ready"):
            if self.stop.is_set():
                return
            self._review(series)

    def _review(self, series) -> None:
        series_id = series["id"]
        attempts = series["attempts"] + 1
        with self.state.transaction():
            self.state.update_series(series_id, attempts=attempts)
        if attempts > _MAX_REVIEW_ATTEMPTS:
            self._give_up(series_id, f"reviewing it stopped the bot {attempts - 1} times")
            return
        mails = [Mail(r["msgid"], r["raw"]) for r in self.state.series_mails(series_id) if r["raw"]]
        started = time.monotonic()
        try:
            result = self.reviewer.review(mails)
            if series["missing"]:
                result.notes.append(f"patches {series['missing']} never arrived")
            outgoing = plan(result, series["key"], self.config, self.compose)
        except SeriesSkipped as why:
            with self.state.transaction():
                self.state.update_series(series_id, status="skipped", reason=str(why))
                self.state.drop_raw(series_id)
            log.warn("series_skipped", series=series_id, reason=str(why))
            return
        except Exception as err:  # a bug or hostile input we did not foresee
            if "MMREVIEW_DEBUG" in os.environ:
                traceback.print_exc()
            self._give_up(series_id, f"{type(err).__name__}: {err}")
            return
        crash_point("reviewed")
        with self.state.transaction():
            for out in outgoing:
                self.state.queue(
                    series_id,
                    out.kind,
                    out.key,
                    out.payload,
                    message_id=out.message_id,
                    target=out.target,
                    recipients=out.recipients,
                )
            self.state.update_series(
                series_id,
                status="reviewed",
                reviewed_at=time.time(),
                base=result.base_reason,
                findings=len(result.findings),
                summary=_summary(result),
                reason="; ".join(result.errors)[:2000] or None,
            )
            self.state.drop_raw(series_id)
        crash_point("queued")
        for error in result.errors:
            log.warn("patch_not_reviewed", series=series_id, reason=error)
        log.event(
            "series_reviewed",
            series=series_id,
            title=series["title"],
            base=result.base_reason,
            findings=_summary(result),
            replies=sum(1 for o in outgoing if o.kind == "email"),
            checks=sum(1 for o in outgoing if o.kind == "check"),
            seconds=round(time.monotonic() - started, 2),
        )

    def _give_up(self, series_id: int, reason: str) -> None:
        with self.state.transaction():
            self.state.update_series(series_id, status="failed", reason=reason[:2000])
            self.state.drop_raw(series_id)
        log.event("series_failed", logging.ERROR, series=series_id, reason=reason)


def _patch_mail(row) -> PatchMail:
    return PatchMail(
        msgid=row["msgid"],
        counter=row["counter"] if row["kind"] == "patch" else 0,
        total=row["total"] or 1,
        version=row["version"] or 1,
        flags=row["flags"] or "",
        author=row["author"] or "",
        title=row["title"] or "",
        in_reply_to=row["in_reply_to"],
        references=tuple(json.loads(row["refs"] or "[]")),
        seen_at=row["seen_at"],
        series_id=row["series_id"],
    )


def _summary(result: Review) -> str:
    counts = {s: sum(1 for f in result.findings if f.severity is s) for s in Severity}
    return ", ".join(
        f"{counts[s]} {s.value.lower()}{'' if counts[s] == 1 else 's'}" for s in Severity
    )


def _lock(state_path: Path):
    """One bot per state database."""
    state_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{state_path}.lock", "w")  # noqa: SIM115 -- held for the bot's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise Busy(f"{state_path}: another bot process is running on this state") from None
    return handle
