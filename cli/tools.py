"""Generator commands: simulate a plant history."""

from __future__ import annotations

import click
import orjson
from backflush.cli.app import Fail, cli, output_file


@cli.command("simulate")
@click.option("--orders", type=click.IntRange(min=0), required=True, help="Production orders.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--products", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    help="Switch on a fault: double-flush, scrap, late, no-stock (repeatable).",
)
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True),
              help="File (default stdout); written via a temporary file, never the ledger.")
@click.pass_context
def simulate_cmd(ctx: click.Context, orders: int, seed: int, products: int,
                 faults: tuple[str, ...], output: str):
    """Write a simulated plant history as JSON Lines (deterministic for a seed)."""
    from backflush.ledger.simulate import FAULTS, simulate

    for f in faults:
        if f not in FAULTS:
            raise Fail(f"--fault: unknown fault {f!r} (known: {', '.join(FAULTS)})")
    with output_file(ctx, output, "--output") as out:
        buf: list[bytes] = []
        for ev in simulate(orders, seed, faults, products):
            buf.append(orjson.dumps(ev))
            if len(buf) >= 5000:
                out.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            out.write(b"\n".join(buf) + b"\n")
