"""Deliveries: reply emails over SMTP, patchwork checks over its REST API,
or (--dry-run) files in an outbox directory.

Exactly-once, as far as a crash can be survived:

1. A review's deliveries are planned, composed and stored in the outbox
   table, each email with a Message-ID derived from the series and the patch
   it answers, in the same transaction that marks the series reviewed.
   Re-reviewing after a crash before that commit composes the same
   Message-IDs; the outbox key is unique, so nothing is stored twice.
2. Before a row is handed to the server it is marked `sending` (committed);
   after the server accepted it, `sent`.
3. A row found `sending` at the next start is the only uncertain case: the
   process died between handing the message over and recording that.  If
   the reply went to a list this bot follows, the archive answers the
   question: the row is marked sent when its Message-ID shows up there, and
   sent again only if it has not after [retry] confirm_minutes.  Otherwise it
   is sent again -- the same bytes with the same Message-ID, which the list
   archive, lore, patchwork and mail readers collapse into one.  For
   patchwork, the patch's checks are read back first.

The residual window is step 3 for a reply that does not go to a followed
list (the default, author-only replies): the server's 250 reply to DATA and
our commit of `sent` are two events, and a crash between them leads to one
byte-identical re-delivery.  Nothing short of a two-phase commit with the
mail server closes it; the deterministic Message-ID makes it harmless.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from pathlib import Path
from sqlite3 import Row
from typing import Any

from analyzer.bot import log
from analyzer.bot.config import BotConfig, PatchworkConfig, SmtpConfig
from analyzer.bot.faults import crash_point
from analyzer.bot.state import State
from analyzer.engine import Review
from analyzer.patterns import regex
from analyzer.rule import Severity

Composer = Callable[[Review], list[EmailMessage]]
_SAFE_RE = regex(r"[^A-Za-z0-9._@+-]")
_EOL_RE = regex(rb"\r?\n")


class Temporary(Exception):
    """Try again later (connection refused, 4xx, 5xx from patchwork)."""


class Permanent(Exception):
    """Will never work (5xx from SMTP for every recipient, 4xx from patchwork)."""


def list_composer(config: BotConfig) -> Composer:
    """Replies in the list's conventions, from analyzer.reporters.email_reply."""
    from analyzer.reporters import email_reply

    return functools.partial(email_reply.compose_replies, sender=config.policy.from_address)


@dataclass
class Outgoing:
    kind: str  # "email" or "check"
    key: str
    payload: bytes
    target: str  # the Message-ID of the patch answered or checked
    message_id: str | None = None
    recipients: list[str] = field(default_factory=list)


def plan(review: Review, series_key: str, config: BotConfig, compose: Composer) -> list[Outgoing]:
    """Everything one review sends, composed now so it can be stored."""
    out: list[Outgoing] = []
    threshold = config.policy.min_severity.rank
    worthy = [f for f in review.findings if f.severity.rank >= threshold]
    replies: dict[str, str] = {}
    if worthy:
        for number, message in enumerate(compose(review.replace(findings=worthy))):
            email_out = _finish(message, number, series_key, config)
            out.append(email_out)
            replies[email_out.target] = email_out.message_id or ""
    if config.patchwork is not None:
        for patch in review.series.patches:
            if patch.message_id:
                out.append(_check(review, patch, series_key, config.patchwork, replies))
    return out


def reply_msgid(series_key: str, target: str, number: int, domain: str) -> str:
    digest = hashlib.sha256(f"{series_key}\0{target}\0{number}".encode()).hexdigest()[:24]
    return f"<mmreview-{digest}@{domain}>"


def _finish(message: EmailMessage, number: int, series_key: str, config: BotConfig) -> Outgoing:
    policy = config.policy
    target = " ".join(str(message.get("In-Reply-To", "")).split())
    message_id = reply_msgid(series_key, target, number, policy.msgid_domain)
    del message["Message-ID"]
    message["Message-ID"] = message_id
    if policy.recipients == "author":
        del message["Cc"]
    if policy.cc:
        cc = [str(v) for v in message.get_all("Cc") or []] + policy.cc
        del message["Cc"]
        message["Cc"] = ", ".join(cc)
    recipients = [
        addr
        for _, addr in getaddresses(
            [str(v) for v in (message.get_all("To") or []) + (message.get_all("Cc") or [])]
        )
        if addr
    ]
    return Outgoing(
        kind="email",
        key=f"email:{message_id}",
        payload=message.as_bytes(),
        target=target,
        message_id=message_id,
        recipients=list(dict.fromkeys(recipients)),
    )


def _check(
    review: Review, patch: Any, series_key: str, config: PatchworkConfig, replies: dict[str, str]
) -> Outgoing:
    findings = [f for f in review.findings if f.patch and f.patch.index == patch.index]
    if patch.error:
        state, description = "warning", f"not reviewed: {patch.error}"
    elif why := review.unfinished.get(patch.index):
        state, description = "warning", f"not fully reviewed: {why}"
    elif not findings:
        state, description = "success", "no findings"
    else:
        worst = max(f.severity.rank for f in findings)
        state = "fail" if worst >= Severity.ERROR.rank else "warning"
        counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
        summary = ", ".join(f"{n} {s.value.lower()}" for s, n in counts.items() if n)
        rules = ", ".join(sorted({f.rule for f in findings}))
        description = f"{summary}: {rules}"
    target_url = None
    if config.target_url:
        reply = replies.get(patch.message_id, "")
        target_url = config.target_url.format(
            message_id=urllib.parse.quote(reply.strip("<>"), safe="@"),
            msgid=urllib.parse.quote(patch.message_id.strip("<>"), safe="@"),
        )[:200]
    body = {
        "msgid": patch.message_id,
        "state": state,
        "context": config.context,
        "description": description[:1000],
        "target_url": target_url,
    }
    return Outgoing(
        kind="check",
        key=f"check:{series_key}:{patch.message_id}",
        payload=json.dumps(body, sort_keys=True).encode(),
        target=patch.message_id,
    )


# -- transports -------------------------------------------------------------


class SmtpSender:
    """One SMTP connection, opened when first needed and reused."""

    def __init__(self, config: SmtpConfig, envelope_from: str) -> None:
        self.config = config
        self.envelope_from = envelope_from
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        context = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
        if c.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                c.host, c.port, timeout=c.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        try:
            if c.starttls:
                smtp.starttls(context=context)
            user, password = os.environ.get(c.user_env), os.environ.get(c.password_env)
            if user and password:
                smtp.login(user, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, payload: bytes, recipients: list[str]) -> None:
        if not recipients:
            raise Permanent("no recipients")
        data = _EOL_RE.sub(b"\r\n", payload)
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            refused = self._smtp.sendmail(self.envelope_from, recipients, data)
        except smtplib.SMTPRecipientsRefused as err:
            codes = [code for code, _ in err.recipients.values()]
            raise (Permanent if all(c >= 500 for c in codes) else Temporary)(
                f"recipients refused: {_smtp_codes(err.recipients)}"
            ) from None
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as err:
            self.close()
            kind = Permanent if 500 <= err.smtp_code < 600 else Temporary
            raise kind(f"{err.smtp_code} {_decode(err.smtp_error)}") from None
        except smtplib.SMTPAuthenticationError as err:
            self.close()
            # A configuration problem: keep the mail until it is fixed.
            raise Temporary(f"login refused: {err.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as err:
            self.close()
            raise Temporary(f"{type(err).__name__}: {err}"[:200]) from None
        if refused:
            log.warn("smtp_partly_refused", refused=_smtp_codes(refused))

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _smtp_codes(refused: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{addr} {code}" for addr, (code, _) in refused.items())


class PatchworkClient:
    def __init__(self, config: PatchworkConfig) -> None:
        self.config = config
        self._ids: dict[str, int] = {}

    def _request(self, method: str, url: str, body: dict | None = None) -> Any:
        headers = {"Accept": "application/json", "User-Agent": "mm-review-bot"}
        token = os.environ.get(self.config.token_env)
        if token:
            headers["Authorization"] = f"Token {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            kind = Temporary if err.code >= 500 or err.code == 429 else Permanent
            raise kind(
                f"patchwork {method} {urllib.parse.urlsplit(url).path}: {err.code}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise Temporary(f"patchwork: {err}"[:200]) from None

    def patch_id(self, msgid: str) -> int:
        if msgid not in self._ids:
            query = urllib.parse.urlencode(
                {"project": self.config.project, "msgid": msgid.strip("<>")}
            )
            found = self._request("GET", f"{self.config.url}/api/1.3/patches/?{query}")
            if not found:
                # Patchwork may not have read the list yet.
                raise Temporary(f"patchwork has no patch {msgid} yet")
            self._ids[msgid] = int(found[0]["id"])
        return self._ids[msgid]

    def _checks_url(self, msgid: str) -> str:
        return f"{self.config.url}/api/1.3/patches/{self.patch_id(msgid)}/checks/"

    def post(self, check: dict) -> None:
        body = {k: check[k] for k in ("state", "context", "description", "target_url")}
        self._request("POST", self._checks_url(check["msgid"]), body)

    def has(self, check: dict) -> bool:
        query = urllib.parse.urlencode({"context": check["context"]})
        found = self._request("GET", f"{self._checks_url(check['msgid'])}?{query}") or []
        return any(
            c.get("state") == check["state"] and c.get("description") == check["description"]
            for c in found
        )


# -- the delivery loop ------------------------------------------------------


class Deliverer:
    def __init__(self, state: State, config: BotConfig, dry_run: bool, outbox: Path) -> None:
        self.state = state
        self.config = config
        self.dry_run = dry_run
        self.outbox = outbox
        envelope = parseaddr(config.policy.from_address)[1]
        self.smtp = SmtpSender(config.smtp, envelope)
        self.patchwork = PatchworkClient(config.patchwork) if config.patchwork else None

    def deliver_due(self, should_stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
        """Send what is due; at most max_replies_per_run emails."""
        stats = {"sent": 0, "retry": 0, "failed": 0, "held": 0, "deferred": 0}
        blocked: set[str] = set()  # transports that failed this round
        emails = 0
        try:
            for row in self.state.due(time.time()):
                if should_stop():
                    break
                if row["kind"] in blocked:
                    continue
                if (
                    row["kind"] == "email"
                    and emails >= self.config.policy.max_replies_per_run
                    and not self.dry_run
                ):
                    stats["deferred"] += 1
                    continue
                outcome = self._deliver(row)
                stats[outcome] = stats.get(outcome, 0) + 1
                if outcome == "retry":
                    blocked.add(row["kind"])
                if row["kind"] == "email" and outcome == "sent":
                    emails += 1
        finally:
            self.smtp.close()
        if stats["deferred"]:
            log.event(
                "replies_deferred",
                count=stats["deferred"],
                cap=self.config.policy.max_replies_per_run,
            )
        return stats

    def _deliver(self, row: Row) -> str:
        if self.dry_run:
            # What would be sent, for a human to read: the row stays queued,
            # so a later run without --dry-run sends exactly this.
            if not (row["transport"] or "").startswith("outbox"):
                self._write_outbox(row)
                self.state.update_outbox(row["id"], transport="outbox (dry run)")
            return "previewed"
        now = time.time()
        if row["state"] == "sending":
            settled = self._settle(row, now)
            if settled:
                return settled
        self.state.update_outbox(row["id"], state="sending", sending_since=now)
        try:
            transport = self._send(row)
        except Temporary as err:
            return self._retry(row, str(err))
        except Permanent as err:
            self.state.update_outbox(row["id"], state="failed", last_error=str(err))
            log.event(
                "delivery_failed", logging.ERROR, id=row["id"], kind=row["kind"], error=str(err)
            )
            return "failed"
        self.state.update_outbox(
            row["id"], state="sent", sent_at=time.time(), transport=transport, last_error=None
        )
        crash_point("sent")
        log.event(
            "delivered",
            id=row["id"],
            kind=row["kind"],
            series=row["series_id"],
            target=row["target"],
            message_id=row["message_id"],
            via=transport,
        )
        return "sent"

    def _send(self, row: Row) -> str:
        payload: bytes = row["payload"]
        if row["kind"] == "email":
            self.smtp.send(payload, json.loads(row["recipients"] or "[]"))
            crash_point("smtp_accepted")
            return "smtp"
        if self.patchwork is None:
            raise Permanent("patchwork is not configured any more")
        self.patchwork.post(json.loads(payload))
        crash_point("check_posted")
        return "patchwork"

    def _settle(self, row: Row, now: float) -> str | None:
        """A row left `sending` by a crash: was it delivered?"""
        if row["kind"] == "email":
            if self.state.known(row["message_id"]):
                self.state.update_outbox(
                    row["id"], state="sent", sent_at=now, transport="smtp (seen in archive)"
                )
                log.event("delivery_confirmed", id=row["id"], message_id=row["message_id"])
                return "sent"
            to_list = {r.lower() for r in json.loads(row["recipients"] or "[]")}
            hold_until = (row["sending_since"] or now) + self.config.retry.confirm_minutes * 60
            if to_list & self.config.list_addresses and now < hold_until:
                self.state.update_outbox(row["id"], next_attempt=hold_until)
                log.event("delivery_unconfirmed", id=row["id"], wait_until=_stamp(hold_until))
                return "held"
            log.warn("resending_after_crash", id=row["id"], message_id=row["message_id"])
            return None
        if self.patchwork is not None:
            try:
                if self.patchwork.has(json.loads(row["payload"])):
                    self.state.update_outbox(
                        row["id"], state="sent", sent_at=now, transport="patchwork (found)"
                    )
                    log.event("delivery_confirmed", id=row["id"], target=row["target"])
                    return "sent"
            except Temporary as err:
                return self._retry(row, str(err))
            except Permanent:
                pass  # post again; its own error will say what is wrong
        return None

    def _retry(self, row: Row, error: str) -> str:
        now = time.time()
        retry = self.config.retry
        attempts = row["attempts"] + 1
        if now - row["created"] > retry.give_up_hours * 3600:
            self.state.update_outbox(row["id"], state="failed", attempts=attempts, last_error=error)
            log.event(
                "delivery_given_up", logging.ERROR, id=row["id"], kind=row["kind"], error=error
            )
            return "failed"
        delay = min(retry.base_seconds * 2 ** (attempts - 1), retry.max_seconds)
        self.state.update_outbox(
            row["id"],
            state="queued",
            attempts=attempts,
            next_attempt=now + delay,
            last_error=error,
        )
        log.warn(
            "delivery_retry",
            id=row["id"],
            kind=row["kind"],
            attempt=attempts,
            delay=delay,
            error=error,
        )
        return "retry"

    def _write_outbox(self, row: Row) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        name = _SAFE_RE.sub("_", (row["message_id"] or row["target"] or "").strip("<>"))[:100]
        suffix = ".eml" if row["kind"] == "email" else ".check.json"
        path = self.outbox / f"{row['id']:06d}-{name}{suffix}"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(row["payload"])
        os.replace(temporary, path)  # a crash leaves the old file or the new one


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
