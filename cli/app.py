"""The ``backflush`` command group and what every command shares (click).

Command modules register on ``cli``; ``backflush.cli.main`` imports them all.

Every query renders as a table, ``--json`` or ``--csv``. Exit codes: 0 success, 1 findings
at or above ``--fail-on``, 2 bad input or usage. Errors are one line on stderr.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from backflush.ledger.store import Ledger, default_db

from backflush import __version__

EXIT_FINDINGS = 1
EXIT_USAGE = 2


class Fail(click.ClickException):
    """A clear one-line error with exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def parse_when(text: str | None, option: str) -> datetime | None:
    """``--at``/``--known-at``/``--to`` value (``--from``: a bare date is its start).

    The accepted formats are documented once, in `backflush.cli.dates`.
    """
    if text is None:
        return None
    from backflush.cli.dates import DateError, parse_instant

    try:
        return parse_instant(text, start_of_day=option == "--from")
    except DateError as exc:
        raise Fail(f"{option}: {exc}") from None


def open_ledger(ctx: click.Context) -> Ledger:
    """The ledger named by ``--db`` (opened once per command)."""
    obj = ctx.find_root().obj
    if obj.get("ledger") is None:
        try:
            obj["ledger"] = Ledger(obj["db"])
        except Exception as exc:  # the store's errors vary by backend; say which db failed
            raise Fail(f"cannot open ledger {obj['db']!r}: {exc}") from None
        ctx.call_on_close(obj["ledger"].close)
    return obj["ledger"]


@click.group()
@click.option(
    "--db",
    default=None,
    metavar="PATH|URL",
    help="Ledger: a SQLite file (default ./backflush.db, env BACKFLUSH_DB) or postgresql:// URL.",
)
@click.version_option(version=__version__, prog_name="backflush")
@click.pass_context
def cli(ctx: click.Context, db: str | None) -> None:
    """backflush: an event-sourced shop-floor ledger for backflushing."""
    ctx.ensure_object(dict)
    ctx.obj["db"] = db or default_db()
