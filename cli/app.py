"""The ``backflush`` command group and what every command shares (click).

Command modules register on ``cli``; ``backflush.cli.main`` imports them all.

Every query renders as a table, ``--json`` or ``--csv``. Exit codes: 0 success, 1 findings
at or above ``--fail-on``, 2 bad input or usage. Errors are one line on stderr.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
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
    """``--at``/``--known-at`` value: ISO 8601; a bare date means the end of that day (UTC).

    A time without offset is read as UTC (a planner's shorthand; events themselves must
    carry an offset).
    """
    if text is None:
        return None
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime.combine(d, time(23, 59, 59, 999999), tzinfo=UTC)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Fail(f"{option}: not an ISO 8601 date or timestamp: {text!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def open_ledger(ctx: click.Context, *, readonly: bool = False) -> Ledger:
    """The ledger named by ``--db`` (opened once per command; ``readonly``: SQLite read-only)."""
    obj = ctx.find_root().obj
    if obj.get("ledger") is None:
        try:
            obj["ledger"] = Ledger(obj["db"], readonly=readonly)
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
