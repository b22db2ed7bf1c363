"""Generator commands: simulate a plant history (with injected faults and their truth)."""

from __future__ import annotations

from typing import Any

import click
import orjson
from backflush.cli.app import Fail, cli, output_file


def _fault_help() -> str:
    from backflush.ledger.simulate import FINDING_FAULTS, HARMLESS_FAULTS, PLANT_FAULTS

    def names(d):
        return ", ".join(f"{k} ({v:g})" for k, v in d.items())

    return (
        "Inject a fault into a share of the orders, NAME or NAME:RATE (repeatable). "
        f"Faults that cause findings, default rate in brackets: {names(FINDING_FAULTS)}; "
        "they are exclusive within an order, so their rates add up to at most 1. "
        f"Harmless disturbances that must cause no finding: {names(HARMLESS_FAULTS)}. "
        f"Plant-level: {', '.join(PLANT_FAULTS)}."
    )


@cli.command("simulate")
@click.option("--orders", type=click.IntRange(min=0), required=True, help="Production orders.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--products", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--fault", "faults", multiple=True, metavar="NAME[:RATE]", help=_fault_help())
@click.option(
    "--truth",
    "truth_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="Write, one JSON object a line, every injected fault with the findings DESIGN §5 "
    "says it must cause (code, order, line, item, qty).",
)
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True),
              help="File (default stdout); written via a temporary file, never the ledger.")
@click.pass_context
def simulate_cmd(ctx: click.Context, orders: int, seed: int, products: int,
                 faults: tuple[str, ...], truth_file: str | None, output: str) -> None:
    """Write a simulated plant history as JSON Lines (deterministic for a seed).

    Without --fault the plant has no findings at all; each --fault hits a random share of
    the orders, and --truth records what the findings must be.
    """
    from backflush.ledger.simulate import parse_faults, simulate

    try:
        rates = parse_faults(faults)
    except ValueError as exc:
        raise Fail(f"--fault: {exc}") from None
    truth: list[dict[str, Any]] = []
    with output_file(ctx, output, "--output") as out:
        buf: list[bytes] = []
        for ev in simulate(orders, seed, rates, products, truth=truth):
            buf.append(orjson.dumps(ev))
            if len(buf) >= 5000:
                out.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            out.write(b"\n".join(buf) + b"\n")
    if truth_file is not None:
        with output_file(ctx, truth_file, "--truth") as out:
            out.write(b"".join(orjson.dumps(t) + b"\n" for t in truth))
