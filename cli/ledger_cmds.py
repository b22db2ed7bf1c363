"""Ledger commands: import, export, events, verify."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson
from backflush.cli.app import EXIT_USAGE, Fail, cli, open_ledger, parse_when
from backflush.cli.output import output_options, render
from backflush.ledger.store import from_us


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
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Validate and count, append nothing.")
@click.pass_context
def import_cmd(ctx: click.Context, files: tuple[str, ...], dry_run: bool) -> None:
    """Import JSON Lines event files (- reads stdin): all or nothing, idempotent by id."""
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
