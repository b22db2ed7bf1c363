"""``backflush moves``: the stock-ledger register of one item (in, out, running balance)."""

from __future__ import annotations

import click
from backflush.cli.app import Fail, cli, open_ledger, output_file, parse_when
from backflush.cli.dates import FORMATS_HELP
from backflush.cli.output import output_options

from backflush.errors import BackflushError


@cli.command("moves")
@click.option("--item", required=True, help="The item (required).")
@click.option("--location", default=None, help="Only this location (balance per location).")
@click.option("--from", "from_", default=None, metavar="WHEN",
              help=f"Start here, with the opening balance ({FORMATS_HELP}; a bare date is "
                   "its first moment).")
@click.option("--to", "to", default=None, metavar="WHEN", help="Up to and including then.")
@output_options
@click.pass_context
def moves_cmd(ctx: click.Context, item: str, location: str | None, from_: str | None,
              to: str | None, fmt: str) -> None:
    """Every on-hand move of an item: when it happened and was recorded, the event, in, out
    and the running balance (of the item at --location, else over every location and
    transit), like ERPNext's Stock Ledger or `hledger register`. With --from the first row
    is the opening balance (type "opening")."""
    from backflush.cli.ledger_cmds import write_chunks
    from backflush.projections.moves import COLUMNS, iter_stock_moves

    start, end = parse_when(from_, "--from"), parse_when(to, "--to")
    if start is not None and end is not None and start > end:
        raise Fail(f"--from {from_} is after --to {to}")
    try:
        rows = iter_stock_moves(open_ledger(ctx), item, location, start, end)
    except BackflushError as exc:
        option = "--location" if getattr(exc, "kind", "") == "location" else "--item"
        raise Fail(f"{option}: {exc}") from None
    with output_file(ctx, None, "stdout") as out:  # streamed: an item's history can be long
        write_chunks(out, rows, COLUMNS, fmt)
