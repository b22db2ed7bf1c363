"""Projection commands: onhand, wip, consumption, hours, rebuild (as of any time).

Thin layers over ``backflush.Ledger``: parse options, call the API, render.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

import click
from backflush.cli.app import api_ledger, cli, parse_when
from backflush.cli.output import (
    CONSUMPTION_COLUMNS,
    HOURS_COLUMNS,
    ONHAND_COLUMNS,
    WIP_COLUMNS,
    output_options,
    render,
    render_stream,
)


def load_policy(path: str | None) -> Any:
    """A ``--policy`` file as a ``backflush.Policy`` (None: the recorded parameters)."""
    if path is None:
        return None
    from backflush.cli.provenance import note_policy

    from backflush.policy import Policy

    policy = Policy.from_file(path)  # BadInput: one FILE:LINE: field: reason per problem
    note_policy(policy)
    return policy


def asof_options(*, policy: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--at``, ``--known-at`` (and ``--policy``), parsed into datetimes and a dict."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--at", "at", default=None,
                      help="As of this time on the floor (default: now).")
        @click.option("--known-at", default=None, help="As recorded by the ledger by then.")
        @wraps(f)
        def inner(*args: Any, at: str | None, known_at: str | None, **kw: Any) -> Any:
            kw["at"] = parse_when(at, "--at")
            kw["known_at"] = parse_when(known_at, "--known-at")
            if policy:
                kw["policy"] = load_policy(kw.pop("policy_file", None))
            return f(*args, **kw)

        if policy:
            inner = click.option(
                "--policy",
                "policy_file",
                default=None,
                type=click.Path(dir_okay=False),
                help="Replay under these production parameters (what-if).",
            )(inner)
        return inner

    return deco




@cli.command("onhand")
@click.option("--item", default=None)
@click.option("--location", default=None)
@asof_options()
@output_options
@click.pass_context
def onhand_cmd(ctx: click.Context, item: str | None, location: str | None, at: datetime | None,
               known_at: datetime | None, policy: Any, fmt: str) -> None:
    """On-hand per item, location, batch and license plate (in transit included)."""
    rows = api_ledger(ctx).onhand(item=item, location=location, at=at, known_at=known_at,
                                  policy=policy)
    click.echo(render(rows, ONHAND_COLUMNS, fmt))


@cli.command("wip")
@click.option("--resource", default=None)
@asof_options()
@output_options
@click.pass_context
def wip_cmd(ctx: click.Context, resource: str | None, at: datetime | None,
            known_at: datetime | None, policy: Any, fmt: str) -> None:
    """WIP per resource location: material staged at its input, units waiting at its output."""
    rows = api_ledger(ctx).wip(resource=resource, at=at, known_at=known_at, policy=policy)
    click.echo(render(rows, WIP_COLUMNS, fmt))


@cli.command("consumption")
@click.option("--order", required=True, help="The production order.")
@asof_options()
@output_options
@click.pass_context
def consumption_cmd(ctx: click.Context, order: str, at: datetime | None,
                    known_at: datetime | None, policy: Any, fmt: str) -> None:
    """Consumption per BOM line: expected, posted, posted by trigger kind, variance."""
    rows = api_ledger(ctx).consumption(order, at=at, known_at=known_at, policy=policy)
    click.echo(render(rows, CONSUMPTION_COLUMNS, fmt))


@cli.command("hours")
@click.option("--order", default=None)
@click.option("--resource", default=None)
@asof_options()
@output_options
@click.pass_context
def hours_cmd(ctx: click.Context, order: str | None, resource: str | None, at: datetime | None,
              known_at: datetime | None, policy: Any, fmt: str) -> None:
    """Hours per order, operation and resource: standard (setup + run x units) vs reported."""
    if order is None:
        # Every order: printed while the replay runs (`render_stream`).
        rows = api_ledger(ctx).iter_hours(resource=resource, at=at, known_at=known_at,
                                          policy=policy)
        for piece in render_stream(rows, HOURS_COLUMNS, fmt):
            click.echo(piece, nl=False)
        return
    rows = api_ledger(ctx).hours(order=order, resource=resource, at=at, known_at=known_at,
                                 policy=policy)
    click.echo(render(rows, HOURS_COLUMNS, fmt))


@cli.command("rebuild")
@click.pass_context
def rebuild_cmd(ctx: click.Context) -> None:
    """Drop every projection and rebuild it from the event log."""
    ledger = api_ledger(ctx)
    # Counted only for a progress bar: a COUNT(*) reads the whole events table on PostgreSQL.
    total = ledger.count() if sys.stderr.isatty() else 0
    if total > 10_000:
        with click.progressbar(length=total, label="rebuilding", file=sys.stderr) as bar:
            done = [0]

            def progress(n: int) -> None:
                bar.update(n - done[0])
                done[0] = n

            n = ledger.rebuild(progress)
    else:
        n = ledger.rebuild()
    click.echo(f"rebuilt: {n} events applied")
