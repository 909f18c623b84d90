#!/usr/bin/env python3
"""A day of linux-mm-sized traffic through the CI bot, end to end.

    python bench/bot_bench.py [--series 40] [--patches 150] [--replies 150]
                              [--smtp] [--keep DIR]

Series are made with real `git format-patch` against tests/minitree (each
on its own branch from the base; every patch adds or changes a function,
some make the mistakes the rules know), posted as `git send-email --thread`
would, together with review replies, into a real public-inbox v2 archive by
`public-inbox-mda` (needs `apt-get install public-inbox`).  Then the bot
catches up in one `mmreview bot run --once`, replies going to the outbox
(--dry-run, the default) or to an aiosmtpd sink on 127.0.0.1 (--smtp), and
once more with nothing new.  Prints a markdown table; not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Tree, build_minitree  # noqa: E402

LIST = "linux-mm@kvack.org"
SWAP = ("\tif (pmd_none(_pmd))\n\t\tgoto out;", "\tif (!pmd_present(_pmd))\n\t\tgoto out;")
UFFD = ("vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")

FUNCTION = """
static int demo_{name}(struct vm_area_struct *vma, pmd_t *pmd, unsigned long addr)
{{
	struct mm_struct *mm = vma->vm_mm;
	spinlock_t *ptl;
	pte_t *pte;
	int nr = 0;

	pte = pte_offset_map_lock(mm, pmd, addr, &ptl);
	if (!pte)
		return -EAGAIN;
	for (; addr < vma->vm_end && nr < {limit}; addr += PAGE_SIZE, pte++) {{
		pte_t val = ptep_get(pte);

		if (pte_none(val))
			continue;
		if (!pte_present(val) && is_migration_entry(pte_to_swp_entry(val)))
			continue;
		nr++;
	}}
	pte_unmap_unlock(pte - 1, ptl);
	return nr;
}}
"""


def sizes(series: int, patches: int, rng: random.Random) -> list[int]:
    """Series lengths summing to `patches`: many singles, a few long ones."""
    counts = [1] * series
    for _ in range(patches - series):
        counts[min(int(rng.expovariate(1 / 6)), series - 1)] += 1
    rng.shuffle(counts)
    return counts


def make_traffic(root: Path, args: argparse.Namespace) -> tuple[Tree, list[bytes], dict]:
    rng = random.Random(args.seed)
    tree = build_minitree(root)
    path = tree.path
    messages: list[bytes] = []
    patch_ids: list[tuple[str, str]] = []
    counts = sizes(args.series, args.patches, rng)
    flawed = 0
    for number, count in enumerate(counts):
        branch = f"series-{number}"
        tree.git("checkout", "-q", "-b", branch, "master")
        new_file = f"mm/bench_{number}.c"
        (path / new_file).write_text("// SPDX-License-Identifier: GPL-2.0\n#include <linux/mm.h>\n")
        tree.git("add", new_file)
        for k in range(count):
            text = (path / new_file).read_text()
            (path / new_file).write_text(
                text + FUNCTION.format(name=f"walk_{number}_{k}", limit=k + 8)
            )
            subject = f"mm/bench: add demo_walk_{number}_{k}()"
            if k == count - 1 and number % 4 == 1:
                tree.edit("mm/fault.c", *SWAP)
                subject = f"mm/bench: walk {number} and relax the PMD test"
                flawed += 1
            elif k == count - 1 and number % 5 == 2:
                tree.edit("mm/khugepaged.c", *UFFD)
                subject = f"mm/bench: walk {number} and simplify retract"
                flawed += 1
            tree.git("add", "-A")
            tree.commit(subject, "A walker for the bot benchmark.\n\nMore words " * 3)
        out = root / "out" / branch
        options = ["--cover-letter"] if count > 1 else []
        if number % 7 == 3:
            options.append("-v2")
        tree.git(
            "format-patch",
            "-q",
            "--thread",
            f"--to={LIST}",
            "--base=master",
            "-o",
            str(out),
            *options,
            f"-{count}",
        )
        tree.git("checkout", "-q", "master")
        for file in sorted(out.iterdir()):
            data = file.read_bytes().replace(
                b"*** SUBJECT HERE ***", f"bench series {number}".encode()
            )
            # format-patch names a cover letter after the current second
            # only; series formatted within one second would share it.
            data = data.replace(b"<cover.", f"<cover.s{number}.".encode())
            messages.append(data)
            for line in data.splitlines():
                if line.lower().startswith(b"message-id:"):
                    subject = next(x for x in data.splitlines() if x.startswith(b"Subject:"))
                    patch_ids.append(
                        (line.split(b":", 1)[1].strip().decode(), subject[9:].decode())
                    )
                    break
    # Replies arrive after the patch they answer, interleaved with the rest.
    timeline = [(float(n), m) for n, m in enumerate(messages)]
    for n in range(args.replies):
        at = rng.randrange(len(patch_ids))
        msgid, subject = patch_ids[at]
        reply = (
            f"From: Reviewer {n % 9} <rev{n % 9}@example.org>\nTo: {LIST}\n"
            f"Subject: Re: {subject}\nDate: Mon, 02 Nov 2026 12:00:00 +0000\n"
            f"Message-ID: <reply-{n}@example.org>\nIn-Reply-To: {msgid}\n"
            f"References: {msgid}\n\nOn the patch above: what about THP migration?\n"
        ).encode()
        timeline.append((rng.uniform(at, len(messages)), reply))
    messages = [m for _, m in sorted(timeline, key=lambda t: t[0])]
    facts = {
        "series": len(counts),
        "patches": sum(counts),
        "flawed": flawed,
        "covers": sum(1 for c in counts if c > 1),
        "replies": args.replies,
    }
    return tree, messages, facts


def make_inbox(root: Path, messages: list[bytes], workers: int) -> Path:
    home = root / "pi-home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "PI_CONFIG": str(home / "config"),
        "ORIGINAL_RECIPIENT": LIST,
    }
    inbox = root / "inbox"
    subprocess.run(
        [
            "public-inbox-init",
            "-V2",
            "-L",
            "basic",
            "linux-mm",
            str(inbox),
            "http://lore.example/linux-mm",
            LIST,
        ],
        env=env,
        check=True,
    )
    subprocess.run(
        ["git", "config", "-f", env["PI_CONFIG"], "publicinboxmda.spamcheck", "none"], check=True
    )

    def deliver(message: bytes) -> None:
        subprocess.run(["public-inbox-mda"], input=message, env=env, check=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(deliver, messages))
    return inbox


def run_bot(config: Path, dry_run: bool) -> tuple[float, str, float]:
    """Wall time, log and peak RSS (MiB) of one `bot run --once`."""
    args = [sys.executable, "-m", "analyzer.cli", "bot", "run", "--once", "--config", str(config)]
    if dry_run:
        args.append("--dry-run")
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            args, cwd=ROOT, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read().decode()
    if proc.returncode != 0:
        sys.exit(f"bot failed:\n{text[-3000:]}")
    return elapsed, text, usage.ru_maxrss / 1024


def _seconds(log: str, event: str) -> list[float]:
    return [
        float(part.split("=")[1])
        for line in log.splitlines()
        if event in line
        for part in line.split()
        if part.startswith("seconds=")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--patches", type=int, default=150)
    parser.add_argument("--replies", type=int, default=150)
    parser.add_argument("--workers", type=int, default=4, help="parallel public-inbox-mda")
    parser.add_argument("--smtp", action="store_true", help="send to an aiosmtpd sink")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="work here and keep it")
    args = parser.parse_args()
    if not shutil.which("public-inbox-mda"):
        sys.exit("bot_bench: public-inbox-mda not found (apt-get install public-inbox)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="mmreview-botbench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        tree, messages, facts = make_traffic(root, args)
        made = time.perf_counter() - started
        started = time.perf_counter()
        inbox = make_inbox(root, messages, args.workers)
        injected = time.perf_counter() - started
        sink = None
        port = 25
        if args.smtp:
            from tests.test_bot import SmtpSink

            sink = SmtpSink().start()
            port = sink.port
        config = root / "bot.toml"
        config.write_text(
            f'state = "{root}/state.sqlite3"\noutbox = "{root}/outbox"\n'
            f'[tree]\npath = "{tree.path}"\nbase = "master"\n'
            f'[[archive]]\npath = "{inbox}"\nlist = "{LIST}"\n'
            f"[smtp]\nport = {port}\n"
            "[policy]\nfrom = 'mm-review bot <bot@bench.example>'\n"
            "grace_minutes = 0\nmax_replies_per_run = 1000\n"
        )
        first, log, rss = run_bot(config, dry_run=not args.smtp)
        second, _, _ = run_bot(config, dry_run=not args.smtp)
        with sqlite3.connect(root / "state.sqlite3") as db:
            series = dict(db.execute("SELECT status, COUNT(*) FROM series GROUP BY status"))
            sent = db.execute("SELECT COUNT(*) FROM outbox WHERE state='sent'").fetchone()[0]
        if not args.smtp:
            sent = len(list((root / "outbox").glob("*.eml")))
        review_seconds = _seconds(log, "event=series_reviewed")
        ingest_seconds = _seconds(log, "event=ingested")
        if sink is not None:
            sink.stop()
        total = len(messages)
        print(
            f"traffic: {facts['series']} series, {facts['patches']} patches "
            f"({facts['covers']} cover letters, {facts['flawed']} series with a flaw), "
            f"{facts['replies']} replies = {total} messages"
        )
        print(
            f"made with git format-patch in {made:.1f} s; "
            f"injected with public-inbox-mda in {injected:.1f} s ({args.workers} at a time)\n"
        )
        print("| step | wall time | rate |")
        print("|---|---|---|")
        print(
            f"| catch-up run (`bot run --once{' --dry-run' if not args.smtp else ''}`) "
            f"| {first:.2f} s | {total / first:.0f} messages/s |"
        )
        print(
            f"| of which ingesting {total} messages | {sum(ingest_seconds):.2f} s | "
            f"{total / max(sum(ingest_seconds), 1e-6):.0f} messages/s |"
        )
        print(
            f"| of which reviewing {len(review_seconds)} series | {sum(review_seconds):.2f} s | "
            f"{sum(review_seconds) / max(len(review_seconds), 1) * 1000:.0f} ms/series |"
        )
        print(f"| idle run (nothing new) | {second:.2f} s | |")
        print(
            f"\nseries: {series}; deliveries: {sent} "
            f"({'SMTP sink got ' + str(len(sink.received)) if sink else 'outbox files'}); "
            f"peak RSS of the catch-up run: {rss:.0f} MiB"
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
