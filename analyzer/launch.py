"""`mmreview` as installed: the cyclic garbage collector is off while the
program starts.

Start-up (typer, the email package, the rules and the flow analyses they
import) makes some fifty thousand objects that live as long as the process,
and next to no garbage; the collector walked them again and again while they
were made, a twentieth of a cold one-patch check (b4 starts one per patch).
The command turns it back on when its own work starts (`cli.start_collecting`),
and what start-up made is frozen then: never walked again.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    from analyzer import cli

    cli.main()
