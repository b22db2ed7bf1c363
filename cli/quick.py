"""The click-free path of the read-only queries a script polls: ``onhand``, ``wip``,
``consumption --order``, ``findings --order`` and ``hours --order``, as a table or in a
machine format.

click alone takes longer to import (~20-30 ms: it loads ``inspect``, ``typing``, ``uuid``,
``enum``) than such a query takes to answer from the materialised projections, so a
``backflush --db L onhand --at T --json`` that had to load it spent most of its life
starting. Here the command line is read without click when it is one of these commands with
only their plain options (``--opt VALUE`` or ``--opt=VALUE``, each at most once), in a table
(the default: with its provenance footer, ``cli.provenance.provenance_of``) or one of
``--json``/``--nl``/``--csv``/``--tsv``; the same API call and the same renderer as the click
command produce the same bytes (``tests/test_quick.py`` runs every case both ways).

Anything else returns None and click takes the command line: ``--meta``, ``--policy``,
``--summary``, ``--help``, streamed output, an unknown or repeated option. So does every
error: this path never reports one itself. Before anything
is printed, a failure (a mistyped order, a bad ``--at``, a missing ledger) hands over to
click, which runs the command again and reports it as always (a query has no effects to
repeat: a catch-up it made stays made). Only a failure while printing is reported here, the
way ``cli.app.run`` does.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any


FORMAT_FLAGS = {"--json": "json", "--nl": "nl", "--csv": "csv", "--tsv": "tsv"}

# command -> (options taking a value, options required); the option names are click's.
COMMANDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "onhand": (frozenset({"--item", "--location", "--at", "--known-at"}), frozenset()),
    "wip": (frozenset({"--resource", "--at", "--known-at"}), frozenset()),
    "consumption": (frozenset({"--order", "--at", "--known-at"}), frozenset({"--order"})),
    # Without --order findings replay the whole ledger, streamed: click's command does that.
    "findings": (frozenset({"--order", "--code", "--at", "--known-at", "--fail-on"}),
                 frozenset({"--order"})),
    # (hours of every order: a replay, streamed, click's)
    "hours": (frozenset({"--order", "--resource", "--at", "--known-at"}), frozenset({"--order"})),
}


def parse(argv: list[str]) -> tuple[str | None, str, dict[str, str], str] | None:
    """(``--db`` or None, command, {option: value}, format) for a command line this path
    serves, else None."""
    db = None
    i = 0
    while i < len(argv) and argv[i].startswith("--db"):
        name, eq, value = argv[i].partition("=")
        if name != "--db" or db is not None:
            return None
        if not eq:
            i += 1
            if i == len(argv):
                return None
            value = argv[i]
        db = value
        i += 1
    if i == len(argv) or argv[i] not in COMMANDS:
        return None
    command = argv[i]
    takes, required = COMMANDS[command]
    opts: dict[str, str] = {}
    fmt = None
    i += 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in FORMAT_FLAGS:
            if fmt is not None:  # two formats (or one twice): click words the error
                return None
            fmt = FORMAT_FLAGS[arg]
            continue
        name, eq, value = arg.partition("=")
        if name not in takes or name in opts:
            return None
        if not eq:
            if i == len(argv):
                return None
            value = argv[i]
            i += 1
            if value.startswith("-"):  # an option where a value should be: let click judge
                return None
        opts[name] = value
    if not required <= opts.keys():
        return None
    return db, command, opts, fmt or "table"


def _when(opts: dict[str, str], name: str) -> Any:
    text = opts.get(name)
    if text is None:
        return None
    from backflush.cli.dates import parse_instant

    return parse_instant(text)  # DateError: click words it


def _answer(db: str, command: str, opts: dict[str, str], fmt: str) -> tuple[str, int]:
    from backflush.cli.output import render

    from backflush.api import Ledger

    at, known_at = _when(opts, "--at"), _when(opts, "--known-at")
    fail_on = opts.get("--fail-on")
    if fail_on is not None:
        from backflush.projections.findings import SEVERITIES

        if fail_on not in SEVERITIES:
            raise ValueError(fail_on)  # click's Choice words it
    ledger = Ledger(db)
    try:
        if command == "onhand":
            from backflush.cli.output import ONHAND_COLUMNS as columns

            rows = ledger.onhand(item=opts.get("--item"), location=opts.get("--location"),
                                 at=at, known_at=known_at, policy=None)
        elif command == "wip":
            from backflush.cli.output import WIP_COLUMNS as columns

            rows = ledger.wip(resource=opts.get("--resource"), at=at, known_at=known_at,
                              policy=None)
        elif command == "consumption":
            from backflush.cli.output import CONSUMPTION_COLUMNS as columns

            rows = ledger.consumption(opts["--order"], at=at, known_at=known_at, policy=None)
        elif command == "hours":
            from backflush.cli.output import HOURS_COLUMNS as columns

            rows = ledger.hours(order=opts["--order"], resource=opts.get("--resource"), at=at,
                                known_at=known_at, policy=None)
        else:
            from backflush.cli.output import FINDING_COLUMNS as columns

            rows = ledger.findings(order=opts["--order"], code=opts.get("--code"), at=at,
                                   known_at=known_at, policy=None)
        meta = None
        if fmt == "table":  # its provenance footer, as click's command adds it
            from backflush.cli.provenance import provenance_of

            params = {k.lstrip("-").replace("-", "_"): v for k, v in opts.items()}
            params.update(at=at, known_at=known_at)
            meta = provenance_of(db, command, params, ledger._store)  # noqa: SLF001
    finally:
        ledger.close()
    code = 0
    if fail_on is not None:
        from backflush.projections.findings import SEVERITY_RANK

        if any(SEVERITY_RANK[f["severity"]] >= SEVERITY_RANK[fail_on] for f in rows):
            code = 1  # EXIT_FINDINGS
    text = render(rows, columns, fmt)  # (no click context: a bare table)
    if meta is not None:
        from backflush.cli.output import with_provenance

        text = with_provenance(text, meta)
    return text + "\n", code


def _colour() -> bool:
    from backflush.cli.output import use_colour

    return use_colour()


def run(argv: list[str]) -> int | None:
    """Answer ``argv`` without click and return the exit code; None: click's turn."""
    if os.environ.get("BACKFLUSH_QUICK") == "0":
        return None
    parsed = parse(argv)
    if parsed is None:
        return None
    db, command, opts, fmt = parsed
    db = db or os.environ.get("BACKFLUSH_DB") or "./backflush.db"
    try:
        text, code = _answer(db, command, opts, fmt)
        # What click.echo would change: ANSI sequences it strips off a non-terminal, text the
        # stream's encoding cannot carry (click replaces it). Neither in plain answers; a
        # table is coloured only on a terminal (``use_colour``), where click keeps them.
        if "\x1b" in text and not (fmt == "table" and _colour()):
            return None
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        text.encode(encoding)
    except Exception as exc:  # noqa: BLE001  every error is reported by click's run of the command
        from backflush.ledger.store import _is_lock_timeout

        if not _is_lock_timeout(exc):
            return None
        # ... but a lock held too long: click's run would wait as long again.
        from backflush.cli.app import _Reported, classify

        lines, code = classify(exc) or ([f"Error: {exc}"], 3)
        _Reported(lines, code).show()
        return code
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        from backflush.cli.app import _Reported, _silence_stdout, classify

        lines, code = classify(exc) or ([f"Error: {exc}"], 3)
        _silence_stdout()
        _Reported(lines, code).show()
    return code
