"""The ``backflush`` command (click).

Every query renders as a table, ``--json`` or ``--csv``. Exit codes: 0 success, 1 findings
at or above ``--fail-on``, 2 bad input or usage. Errors are one line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from functools import wraps
from typing import Any

import click
import orjson
from backflush.cli.output import render
from backflush.ledger.store import Ledger, default_db, from_us

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


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` / ``--csv`` flags, folded into one ``fmt`` argument."""

    @click.option("--json", "as_json", is_flag=True, help="Output a JSON array.")
    @click.option("--csv", "as_csv", is_flag=True, help="Output CSV.")
    @wraps(f)
    def inner(*args: Any, as_json: bool, as_csv: bool, **kw: Any) -> Any:
        if as_json and as_csv:
            raise Fail("--json and --csv are mutually exclusive")
        return f(*args, fmt="json" if as_json else "csv" if as_csv else "table", **kw)

    return inner


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


def main() -> None:
    """Console entry point."""
    cli(prog_name="backflush")


# --- ledger commands --------------------------------------------------------------------


def _count_lines(paths: tuple[str, ...]) -> int:
    total = 0
    for p in paths:
        try:
            with open(p, "rb") as fh:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        except OSError:
            pass
    return total


@cli.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Validate and count, append nothing.")
@click.pass_context
def import_cmd(ctx: click.Context, files: tuple[str, ...], dry_run: bool) -> None:
    """Import JSON Lines event files: all or nothing, idempotent by event id."""
    from backflush.ledger.importer import run_import

    ledger = open_ledger(ctx)
    bar = None
    progress = None
    if sys.stderr.isatty():
        total = _count_lines(files)
        if total > 50_000:
            bar = click.progressbar(length=total, label="importing", file=sys.stderr)
            bar.__enter__()
            done = [0]

            def progress(n: int) -> None:
                bar.update(n - done[0])
                done[0] = n

    try:
        result = run_import(ledger, files, dry_run=dry_run, progress=progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if result.errors:
        for e in result.errors:
            click.echo(str(e), err=True)
        n = len(result.errors)
        click.echo(f"Error: {n} problem{'s' if n != 1 else ''}; nothing appended", err=True)
        ctx.exit(EXIT_USAGE)
    verb = "would be appended" if dry_run else "appended"
    click.echo(f"{result.appended} {verb}, {result.duplicates} duplicates")


def _export_line(payload: dict[str, Any]) -> bytes:
    head = {"type": payload["type"], "at": payload["at"], "id": payload["id"]}
    head.update((k, v) for k, v in payload.items() if k not in head)
    return orjson.dumps(head)


@cli.command("export")
@click.option("--order", default=None, help="Only this order's events (and its picks/puts).")
@click.option("-o", "--output", type=click.File("wb"), default="-", help="File (default stdout).")
@click.pass_context
def export_cmd(ctx: click.Context, order: str | None, output: Any) -> None:
    """Write the ledger's events as JSON Lines, in recording order."""
    ledger = open_ledger(ctx)
    buf: list[bytes] = []
    for row in ledger.iter_rows(order=order, by="seq"):
        buf.append(_export_line(orjson.loads(row["state"])["e"]))
        if len(buf) >= 2000:
            output.write(b"\n".join(buf) + b"\n")
            buf.clear()
    if buf:
        output.write(b"\n".join(buf) + b"\n")


EVENT_COLUMNS = ["seq", "stream", "version", "at", "recorded", "type", "id", "order"]


@cli.command("events")
@click.option("--order", default=None, help="Only this order's events.")
@click.option("--type", "type_", default=None, help="Only events of this type.")
@click.option("--at", "at", default=None, help="Only events that happened by then.")
@click.option("--known-at", default=None, help="Only events recorded by then.")
@output_options
@click.pass_context
def events_cmd(
    ctx: click.Context,
    order: str | None,
    type_: str | None,
    at: str | None,
    known_at: str | None,
    fmt: str,
) -> None:
    """List the events the ledger holds (the auditor's raw view), in `at` order."""
    from backflush.ledger.events import EVENT_TYPES
    from backflush.ledger.store import to_us

    if type_ is not None and type_ not in EVENT_TYPES:
        raise Fail(f"--type: unknown event type {type_!r}")
    at_dt, known_dt = parse_when(at, "--at"), parse_when(known_at, "--known-at")
    ledger = open_ledger(ctx)
    rows = []
    for r in ledger.iter_rows(
        order=order,
        types=[type_] if type_ else None,
        at_lte=to_us(at_dt) if at_dt else None,
        rec_lte=to_us(known_dt) if known_dt else None,
    ):
        payload = orjson.loads(r["state"])["e"]
        rows.append(
            {
                "seq": r["seq"],
                "stream": r["stream"],
                "version": r["version"],
                "at": payload["at"],
                "recorded": from_us(r["rec_us"]).isoformat(),
                "type": r["type"],
                "id": r["id"],
                "order": r["ord"],
                "event": payload,
            }
        )
    cols = EVENT_COLUMNS + (["event"] if fmt != "table" else [])
    click.echo(render(rows, cols, fmt))


@cli.command("verify")
@click.pass_context
def verify_cmd(ctx: click.Context) -> None:
    """Check every stream's hash chain: nothing altered, removed or reordered."""
    from backflush.ledger.integrity import verify

    checked, problems = verify(open_ledger(ctx))
    if problems:
        for p in problems:
            click.echo(f"TAMPERED {p}", err=True)
        n = len(problems)
        plural = "s" if n != 1 else ""
        click.echo(f"Error: {n} integrity problem{plural} in {checked} events", err=True)
        ctx.exit(EXIT_USAGE)
    click.echo(f"ok: {checked} events, every stream's chain intact")


# Projection and audit commands register themselves on ``cli``.
from backflush.cli import audit as _audit  # noqa: E402,F401
from backflush.cli import queries as _queries  # noqa: E402,F401
from backflush.cli import tools as _tools  # noqa: E402,F401
