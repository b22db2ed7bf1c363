"""Ledger commands: import, export, events (verify and anchor: ``cli.integrity_cmds``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, BinaryIO

import click
from backflush.cli.app import api_ledger, cli, output_file, parse_when
from backflush.cli.output import output_options, render_stream

STREAM_CHUNK = 2000  # rows rendered at a time by the streaming commands


def _count_lines(paths: tuple[str, ...]) -> int:
    from backflush.ledger.importer import content_of

    total = 0
    for p in paths:
        if p == "-":  # standard input: not known in advance
            continue
        try:
            with open(p, "rb") as fh:
                src = content_of(fh)  # (a gzip-compressed file: its lines, not its bytes)
                while chunk := src.read(1 << 20):
                    total += chunk.count(b"\n")
        except OSError:
            pass
    return total


@cli.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Validate and count, append nothing.")
@click.option(
    "--anchor", "anchor_file", default=None, type=click.Path(dir_okay=False),
    help="After the import, append an anchor line (see `backflush anchor`) to this file.",
)
@click.option(
    "--anchor-key", default=None, type=click.Path(dir_okay=False),
    help="Sign that anchor with this Ed25519 private key (PEM).",
)
@click.pass_context
def import_cmd(
    ctx: click.Context, files: tuple[str, ...], dry_run: bool, anchor_file: str | None,
    anchor_key: str | None,
) -> None:
    """Import JSON Lines event files (- reads stdin), plain or gzip-compressed: all or
    nothing, idempotent by id.

    Creates the ledger if needed (and removes it again if the import fails). Events dated
    more than 24 h after the import are accepted with a warning naming FILE:LINE.
    """
    from backflush.cli.integrity_cmds import check_key

    check_key(anchor_key)
    ledger = api_ledger(ctx)
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

    from backflush.errors import CatchUpFailed, ImportInterrupted, interruption

    stopped: KeyboardInterrupt | None = None
    try:
        report = ledger.import_files(files, dry_run=dry_run, progress=progress)
    except KeyboardInterrupt as exc:
        stopped = exc
    except CatchUpFailed as exc:
        if bar is not None:
            bar.__exit__(None, None, None)
            bar = None
        for w in exc.warnings:
            click.echo(f"warning: {w}", err=True)
        if anchor_file is not None:
            _anchor_after_failure(ledger, anchor_file, anchor_key)
        raise  # the group reports it: "N appended ... (recorded); ... failed: ...", exit 3
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if isinstance(stopped, ImportInterrupted):
        said, code = interruption(stopped)
        for w in stopped.warnings:
            click.echo(f"warning: {w}", err=True)
        # Committed: "Aborted!" would read as "nothing happened", and the anchor asked for
        # is owed all the same.
        click.echo(f"{said}: {stopped.appended} appended, {stopped.duplicates}"
                   " duplicates (recorded); the projections catch up on the next command",
                   err=True)
        if anchor_file is not None:
            from backflush.cli.integrity_cmds import append_anchor

            append_anchor(ledger.store(), anchor_file, anchor_key)
        ctx.exit(code)
    if stopped is not None:
        said, code = interruption(stopped)
        click.echo(f"{said}: nothing was imported", err=True)
        ctx.exit(code)
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    verb = "would be appended" if dry_run else "appended"
    click.echo(f"{report.appended} {verb}, {report.duplicates} duplicates")
    if anchor_file is not None and not dry_run:
        from backflush.cli.integrity_cmds import append_anchor

        append_anchor(ledger.store(), anchor_file, anchor_key)


def _anchor_after_failure(ledger: Any, anchor_file: str, anchor_key: str | None) -> None:
    """The anchor an import was asked for, after its events were committed and its catch-up
    failed: owed all the same (it covers the events, not the projections). Its own failure is
    a warning, so the error that follows still says what was recorded."""
    from backflush.cli.app import classify
    from backflush.cli.integrity_cmds import append_anchor

    try:
        append_anchor(ledger.store(), anchor_file, anchor_key)
    except Exception as exc:  # noqa: BLE001  reported, below
        found = classify(exc)
        if found is None:
            raise
        why = found[0][-1].removeprefix("Error: ")
        click.echo(f"warning: no anchor was appended to {anchor_file}: {why}", err=True)


def write_chunks(out: BinaryIO, rows: Iterable[dict[str, Any]], columns: list[str],
                 fmt: str) -> None:
    """Render rows as they come, a chunk at a time: the first line appears at once and memory
    stays bounded whatever the number of rows (see `render_stream`)."""
    for piece in render_stream(rows, columns, fmt, STREAM_CHUNK):
        out.write(piece.encode())
        out.flush()


@cli.command("export")
@click.option("--order", default=None, help="Only this order's events (and its picks/puts).")
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True),
              help="File (default stdout); written via a temporary file, never the ledger.")
@click.pass_context
def export_cmd(ctx: click.Context, order: str | None, output: str) -> None:
    """Write the ledger's events as JSON Lines, in recording order (streamed)."""
    lines = api_ledger(ctx).export(order=order)
    with output_file(ctx, output, "--output") as out:
        for chunk in _batches(lines, 2000):
            out.write(b"\n".join(chunk) + b"\n")


def _batches(it: Iterable[bytes], n: int) -> Iterator[list[bytes]]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


EVENT_COLUMNS = ["seq", "stream", "version", "at", "recorded", "type", "id", "order"]


@cli.command("events")
@click.option("--order", default=None, help="Only this order's events.")
@click.option("--type", "type_", default=None, help="Only events of this type.")
@click.option("--at", "at", default=None, help="Only events that happened by then (default now).")
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
    """List the events the ledger holds (the auditor's raw view), in `at` order (streamed)."""
    rows = api_ledger(ctx).events(order=order, type=type_, at=parse_when(at, "--at"),
                                  known_at=parse_when(known_at, "--known-at"))
    cols = EVENT_COLUMNS + (["event"] if fmt != "table" else [])
    with output_file(ctx, None, "stdout") as out:
        write_chunks(out, rows, cols, fmt)
