"""The bot killed (SIGKILL) at every step of a run, and its servers going
away: every series still gets exactly one reply and one patchwork check per
patch, and what was delayed arrives once the servers are back."""

from __future__ import annotations

import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT
from tests.test_bot import (
    SWAP,
    FakePatchwork,
    SmtpSink,
    archive_template,  # noqa: F401 -- a fixture
    expected_targets,
    make_series,
    replies_by_target,
    world,  # noqa: F401 -- a fixture
)


def outbox_states(bot) -> dict[str, int]:
    with sqlite3.connect(bot.state) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())


CRASH_POINTS = [
    "ingested",
    "series_ready",
    "reviewed",
    "queued",
    "smtp_accepted",
    "sent",
    "check_posted",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_killed_at_any_point_still_replies_exactly_once(world, point: str) -> None:  # noqa: F811
    bot, sink, series = world
    patchwork = FakePatchwork([m for s in series for m in s.patch_msgids])
    bot.write(patchwork=patchwork.url)
    try:
        # Ingesting: commit 3 messages at a time and die after the second
        # batch, with 3 of the 9 messages still to read.
        env = {"MMREVIEW_BOT_CRASH_AT": f"{point}:2", "MMREVIEW_BOT_BATCH": "3"}
        crashed = bot.run(
            "run", "--once", env=env if point == "ingested" else {"MMREVIEW_BOT_CRASH_AT": point}
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        assert f"event=crash_point point={point}" in crashed.stderr
        if point == "ingested":
            with sqlite3.connect(bot.state) as db:
                assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (6,)
        bot.once()

        targets = replies_by_target(sink)
        assert targets.keys() == expected_targets(series)
        assert all(len(set(ids)) == 1 for ids in targets.values())
        if point == "smtp_accepted":
            # The one window no local record closes: the server took the
            # message, the bot died before noting it.  The re-send is the
            # same message (same Message-ID, same bytes), which readers and
            # archives collapse; no other reply is sent twice.
            assert len(sink.received) == 4
            contents = [content for _, _, content in sink.received]
            assert contents[0] == contents[1]
            assert len(set(contents)) == 3
        else:
            assert len(sink.received) == 3
        # Exactly one check per patch, whatever the crash point.
        assert all(len(states) == 1 for states in patchwork.states().values())
        assert len(patchwork.states()) == 6
        assert outbox_states(bot) == {"sent": 9}
    finally:
        patchwork.stop()


def test_crash_after_smtp_with_list_in_copy_is_settled_by_the_archive(world) -> None:  # noqa: F811
    """Replies to the thread reach the list archive the bot follows: after a
    crash between the server's acceptance and the bot's record, the bot
    finds its own Message-ID there and does not send again."""
    bot, sink, series = world
    sink.stop()
    listening = SmtpSink(inbox=bot.inbox).start()  # the list delivers to the archive
    bot.write(recipients="thread", smtp_port=listening.port)
    try:
        crashed = bot.run("run", "--once", env={"MMREVIEW_BOT_CRASH_AT": "smtp_accepted:2"})
        assert crashed.returncode == -signal.SIGKILL
        log = bot.once()
        assert "event=delivery_confirmed" in log and "resending_after_crash" not in log
        assert len(listening.received) == 3
        assert replies_by_target(listening).keys() == expected_targets(series)
        # Its own replies in the archive are mail like any other: not reviewed.
        bot.once()
        assert len(listening.received) == 3
        assert "messages: 1 cover, 1 other, 6 patch, 4 reply" in bot.status()
    finally:
        listening.stop()


def test_a_series_that_kills_the_bot_is_given_up_after_three_tries(world) -> None:  # noqa: F811
    bot, sink, series = world
    for _ in range(3):
        crashed = bot.run("run", "--once", env={"MMREVIEW_BOT_CRASH_AT": "reviewed"})
        assert crashed.returncode == -signal.SIGKILL
    log = bot.once()
    assert "event=series_failed series=1" in log and "stopped the bot 3 times" in log
    status = bot.status()
    assert "1 failed, 2 reviewed" in status
    # The other two series were still reviewed and answered.
    assert replies_by_target(sink).keys() == expected_targets(series[1:])


class Follower:
    """`mmreview bot run --follow` in the background, its log read line by line."""

    def __init__(self, bot, interval: float = 0.2) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "analyzer.cli",
                "bot",
                "run",
                "--follow",
                "--interval",
                str(interval),
                "--config",
                str(bot.config),
            ],
            cwd=ROOT,
            env=bot.env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.log.append(line)
            if text in line:
                return line
        raise AssertionError(f"no '{text}' in the log:\n{''.join(self.log)}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return code


def test_outages_are_retried_until_the_servers_return(world) -> None:  # noqa: F811
    """SMTP goes away in the middle of a --follow run, patchwork answers 503
    throughout: both are retried with growing delays and every reply and
    check arrives, once, when they are back."""
    bot, sink, series = world
    patchwork = FakePatchwork([m for s in series for m in s.patch_msgids])
    patchwork.fail_next = 10**6
    bot.write(patchwork=patchwork.url)
    follower = Follower(bot)
    returned = SmtpSink(port=sink.port)
    try:
        sink.wait_for(3)  # the first replies go out...
        sink.stop()  # ...then the mail server goes down, and a new series comes in
        fresh = make_series(
            bot.tree, "demo-fresh", [("mm/fault.c", *SWAP, "mm/demo: fresh")], flagged=[1]
        )
        patchwork.ids[fresh.patch_msgid(1).strip("<>")] = 99
        bot.inbox.deliver(*fresh.messages)
        follower.wait_for("kind=email attempt=4")  # backing off, still trying
        assert any("kind=check" in line for line in follower.log if "delivery_retry" in line)
        outbox = next(line for line in bot.status().splitlines() if line.startswith("outbox"))
        assert outbox.endswith(" 3 sent") and "failed" not in outbox  # 8 waiting
        returned.start()
        patchwork.fail_next = 0
        returned.wait_for(1)
        deadline = time.monotonic() + 20
        while "outbox: 11 sent" not in bot.status() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert follower.stop() == 0  # SIGTERM: a clean stop
    finally:
        if follower.proc.poll() is None:
            follower.proc.kill()
        returned.stop()
        patchwork.stop()
    log = "".join(follower.log)
    assert "event=stopping signal=SIGTERM" in log and "event=stopped" in log
    assert replies_by_target(sink).keys() == expected_targets(series)
    assert [str(m["In-Reply-To"]) for m in returned.messages] == [fresh.patch_msgid(1)]
    assert len(sink.received) == 3
    assert len(patchwork.states()) == 7
    assert all(len(states) == 1 for states in patchwork.states().values())
    assert "outbox: 11 sent" in bot.status()
    # The retry delays grew: base 0.2 s doubling, capped at 1 s.
    delays = [
        float(part.split("=")[1])
        for line in follower.log
        for part in line.split()
        if part.startswith("delay=")
    ]
    assert delays and max(delays) == 1.0 and min(delays) == 0.2
