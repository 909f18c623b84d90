"""The CI bot: follow a mailing-list archive, review each new series once it
has arrived, and reply exactly once.

    archive.py   where mail comes from: public-inbox v2 epochs, Maildir, mbox
    mail.py      one untrusted message, inspected within limits
    threads.py   patch mails grouped into series (pure; no I/O)
    state.py     the SQLite database: cursors, messages, series, outbox
    reviewer.py  a series reviewed against the configured kernel tree
    delivery.py  composed replies and patchwork checks, sent once
    runner.py    one cycle (ingest, assemble, review, deliver) and the loop
    config.py    the TOML configuration
    log.py       key=value / JSON-lines logging
    faults.py    named crash points for the fault tests
    cli.py       `mmreview bot run|status|retry`
"""
